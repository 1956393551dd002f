"""Profiles from a real Redis: parsed once per stored value, re-read when the value changes."""

from __future__ import annotations

import json

import redis

from optimizer.ids import VariantId
from optimizer.profile import load_profile
from scaler.inventory import parse_inventory
from scaler.store import ProfileStore, connect, our_key
from tests.conftest import DATA

INVENTORY = parse_inventory({"models": [{"name": "llama2-7b", "namespace": "llm",
                                          "variants": [{"name": "a100"}]}]})


async def test_profile_is_reparsed_only_when_its_value_changes(redis_url: str) -> None:
    profile = load_profile(DATA / "aibrix/simulator-llama2-7b-a100.json", model="llama2-7b")
    doc = {**profile.to_json(), "variant": "a100"}
    plain = redis.Redis.from_url(redis_url)
    plain.set(our_key("llama2-7b", "a100"), json.dumps(doc))
    client = connect(redis_url)
    store = ProfileStore(None, client)
    try:
        first = (await store.lookup(INVENTORY))[VariantId("llm", "a100")]
        again = (await store.lookup(INVENTORY))[VariantId("llm", "a100")]
        assert first.status == "ok" and again.profile is first.profile  # same bytes: not parsed again
        plain.set(our_key("llama2-7b", "a100"), json.dumps({**doc, "cost_per_hour": 9.5}))
        changed = (await store.lookup(INVENTORY))[VariantId("llm", "a100")]
        assert changed.profile is not None and changed.profile.cost_per_hour == 9.5
        plain.set(our_key("llama2-7b", "a100"), b"{not json")
        broken = (await store.lookup(INVENTORY))[VariantId("llm", "a100")]  # overwritten in use: the last good stands
        assert broken.status == "ok" and broken.last_good and broken.profile is changed.profile
        assert "not JSON" in broken.detail
    finally:
        await client.aclose()
        plain.close()
