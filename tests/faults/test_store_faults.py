"""Garbage in profile files, in Redis profile keys and in the state hash: each row is one fault, and each
asserts what the operator sees (the variant's status naming key/file and field, one log line) and that the
other variants are unaffected. Real Redis (tests/conftest.py); files in a temporary directory."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog

from optimizer.ids import VariantId
from optimizer.profile import load_profile
from scaler.inventory import Inventory, parse_inventory
from scaler.store import STATE_KEY, ProfileState, ProfileStore, StateStore, aibrix_key, connect, our_key
from tests.conftest import DATA

MODEL, BAD, GOOD = "llama2-7b", "bad-a40", "good-a100"
INVENTORY: Inventory = parse_inventory({"models": [{"name": MODEL, "namespace": "llm", "variants": [
    {"name": BAD}, {"name": GOOD}]}]})
AIBRIX_DOC: dict[str, Any] = json.loads((DATA / "aibrix/simulator-llama2-7b-a40.json").read_text())
OURS_DOC: dict[str, Any] = {
    **load_profile(DATA / "aibrix/simulator-llama2-7b-a100.json", model=MODEL).to_json(), "variant": BAD,
    "rows": [{"input_tokens": 100, "output_tokens": 10, "request_rate": 1.0, "metric": "E2E", "mean": 0.5}],
}


def ours(**changes: Any) -> bytes:
    return json.dumps({**OURS_DOC, **changes}).encode()


def aibrix(**changes: Any) -> bytes:
    return json.dumps({**AIBRIX_DOC, "gpu": BAD, **changes}).encode()


def cell(doc: dict[str, Any], key: str, value: Any) -> list[list[Any]]:
    """The document's capacity table with its first cell replaced."""
    table = [list(r) for r in doc[key]]
    table[0][0] = value
    return table


def row(**changes: Any) -> dict[str, Any]:
    return {**OURS_DOC["rows"][0], **changes}


# (fault, stored bytes, words the status detail must contain besides the key/file name)
BAD_PROFILES: list[tuple[str, bytes, tuple[str, ...]]] = [
    ("not UTF-8", b"\xff\xfe{}", ("not UTF-8", "0xff")),
    ("empty", b"", ("not JSON",)),
    ("truncated", ours()[:200], ("not JSON",)),
    ("100,000-deep nesting", b"[" * 100_000 + b"]" * 100_000, ("nested too deeply",)),
    ("5000-digit integer", b'{"cost": ' + b"9" * 5000 + b"}", ("not usable JSON", "digits")),
    ("400-digit capacity cell", ours(capacity_rps=cell(OURS_DOC, "capacity_rps", 10**400)),
     ("capacity_rps[0][0]", "finite")),
    ("400-digit cost", ours(cost_per_hour=10**400), ("cost_per_hour",)),
    ("aibrix 400-digit tput", aibrix(tputs=cell(AIBRIX_DOC, "tputs", 10**400)), ("tputs[0][0]",)),
    ("rows with mean null", ours(rows=[row(mean=None)]), ("rows[0]", "mean")),
    ("rows request_rate null", ours(rows=[row(request_rate=None)]), ("rows[0]", "request_rate")),
    ("row tokens a list", ours(rows=[row(input_tokens=[1])]), ("rows[0]", "input_tokens")),
    ("row tokens 1e300", ours(rows=[row(output_tokens=1e300)]), ("rows[0]", "output_tokens")),
    ("row not an object", ours(rows=[[1, 2]]), ("rows[0]", "JSON object")),
    ("rows an object", ours(rows={"a": 1}), ("rows", "list")),
    ("document a list", b"[1, 2, 3]", ("document", "JSON object")),
    ("document null", b"null", ("document",)),
    ("document a string", b'"profile"', ("document",)),
    ("capacity strings", ours(capacity_rps=cell(OURS_DOC, "capacity_rps", "1")), ("capacity_rps[0][0]",)),
    ("capacity wrong shape", ours(capacity_rps=[[1.0]]), ("capacity_rps", "rows")),
    ("tick 400 digits", ours(grid={"input_tokens": [10**400], "output_tokens": [1]}), ("grid.input_tokens",)),
    ("ticks negative", ours(grid={"input_tokens": [-1], "output_tokens": [1]}), ("grid.input_tokens",)),
    ("grid a string", ours(grid="big"), ("grid.input_tokens",)),
    ("slo a list", ours(slo=[1]), ("slo",)),
    ("gpus_per_replica 1.5", ours(gpus_per_replica=1.5), ("gpus_per_replica",)),
    ("aibrix indexes null", aibrix(indexes=None), ("indexes",)),
    ("aibrix tputs null cells", aibrix(tputs=cell(AIBRIX_DOC, "tputs", None)), ("tputs[0][0]",)),
    ("aibrix slos a string", aibrix(slos="fast"), ("slos",)),
]


@pytest.fixture()
def plain(redis_url: str) -> Any:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


async def _lookup(store: ProfileStore) -> tuple[Any, Any]:
    out = await store.lookup(INVENTORY)
    return out[VariantId("llm", BAD)], out[VariantId("llm", GOOD)]


def _seed_good(directory: Path) -> None:
    good = load_profile(DATA / "aibrix/simulator-llama2-7b-a100.json", model=MODEL)
    (directory / f"{GOOD}.json").write_text(json.dumps({**good.to_json(), "variant": GOOD}))


@pytest.mark.parametrize(("fault", "raw", "words"), BAD_PROFILES, ids=[r[0] for r in BAD_PROFILES])
async def test_bad_profile_file_is_that_variants_status(tmp_path: Path, fault: str, raw: bytes,
                                                        words: tuple[str, ...]) -> None:
    _seed_good(tmp_path)
    (tmp_path / f"{BAD}.json").write_bytes(raw)
    store = ProfileStore(str(tmp_path), None)
    with structlog.testing.capture_logs() as logs:
        bad, good = await _lookup(store)
        await _lookup(store)  # the second cycle logs nothing new
    assert good.status == ProfileState.OK
    assert bad.status == ProfileState.INVALID and bad.profile is None and not bad.last_good
    assert str(tmp_path / f"{BAD}.json") in bad.detail
    for word in words:
        assert word in bad.detail, (word, bad.detail[:400])
    assert len(bad.detail) < 3000
    lines = [e for e in logs if e.get("what") == f"profile:{tmp_path / f'{BAD}.json'}"]
    assert len(lines) == 1, logs


@pytest.mark.parametrize(("fault", "raw", "words"), BAD_PROFILES, ids=[r[0] for r in BAD_PROFILES])
async def test_bad_profile_in_redis_is_that_variants_status(plain: Any, redis_url: str, tmp_path: Path, fault: str,
                                                            raw: bytes, words: tuple[str, ...]) -> None:
    _seed_good(tmp_path)
    key = aibrix_key(MODEL, BAD) if b'"tputs"' in raw else our_key(MODEL, BAD)
    plain.set(key, raw)
    client = connect(redis_url)
    try:
        bad, good = await _lookup(ProfileStore(str(tmp_path), client))
    finally:
        await client.aclose()
    assert good.status == ProfileState.OK
    assert bad.status == ProfileState.INVALID and f"redis {key}" in bad.detail
    for word in words:
        assert word in bad.detail, (word, bad.detail[:400])


WRONG_TYPES: list[tuple[str, Callable[[Any, str], object], str]] = [
    ("hash", lambda c, k: c.hset(k, mapping={"gpu": BAD}), "holds a hash"),
    ("list", lambda c, k: c.rpush(k, "a", "b"), "holds a list"),
    ("set", lambda c, k: c.sadd(k, "a"), "holds a set"),
    ("zset", lambda c, k: c.zadd(k, {"a": 1.0}), "holds a zset"),
]


@pytest.mark.parametrize(("kind", "write", "words"), WRONG_TYPES, ids=[r[0] for r in WRONG_TYPES])
@pytest.mark.parametrize("which", ["ours", "aibrix"])
async def test_wrong_redis_type_is_reported_as_that_type(plain: Any, redis_url: str, kind: str, which: str,
                                                         write: Callable[[Any, str], object], words: str) -> None:
    key = our_key(MODEL, BAD) if which == "ours" else aibrix_key(MODEL, BAD)
    write(plain, key)
    client = connect(redis_url)
    try:
        bad, good = await _lookup(ProfileStore(None, client))
    finally:
        await client.aclose()
    assert bad.status == ProfileState.INVALID and f"redis {key}: {words}" in bad.detail
    assert good.status == ProfileState.MISSING and "no Redis key" in good.detail


@pytest.mark.parametrize(("fault", "raw", "words"), BAD_PROFILES[:6], ids=[r[0] for r in BAD_PROFILES[:6]])
async def test_last_good_profile_is_kept_and_said(plain: Any, redis_url: str, tmp_path: Path, fault: str,
                                                  raw: bytes, words: tuple[str, ...]) -> None:
    """An in-use profile overwritten with garbage keeps its variant planned on the last good one, reported
    as such (status ok, last_good, the problem in the detail, one log line), in Redis and in a file."""
    client = connect(redis_url)
    plain.set(our_key(MODEL, BAD), ours())
    (tmp_path / f"{GOOD}.json").write_bytes(ours(variant=GOOD))
    store = ProfileStore(str(tmp_path), client)
    try:
        bad, good = await _lookup(store)
        assert bad.status == good.status == ProfileState.OK and not bad.last_good
        plain.set(our_key(MODEL, BAD), raw)
        (tmp_path / f"{GOOD}.json").write_bytes(raw)
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                kept_bad, kept_good = await _lookup(store)
        for kept, first, where in ((kept_bad, bad, f"redis {our_key(MODEL, BAD)}"),
                                   (kept_good, good, str(tmp_path / f"{GOOD}.json"))):
            assert kept.status == ProfileState.OK and kept.last_good and kept.profile is first.profile
            assert where in kept.detail and "using the last good profile" in kept.detail
            assert all(w in kept.detail for w in words)
        said = [e for e in logs if e.get("state") == "last_good"]
        assert len(said) == 2, logs  # one per variant, not one per cycle
        # Fixed: back to the stored value, no longer flagged. Removed: no longer planned (deliberate).
        plain.set(our_key(MODEL, BAD), ours(cost_per_hour=7.0))
        fixed, _ = await _lookup(store)
        assert fixed.status == ProfileState.OK and not fixed.last_good and fixed.profile.cost_per_hour == 7.0
        plain.set(our_key(MODEL, BAD), raw)
        assert (await _lookup(store))[0].profile.cost_per_hour == 7.0
        plain.delete(our_key(MODEL, BAD))
        gone, _ = await _lookup(store)
        assert gone.status == ProfileState.MISSING and gone.profile is None
    finally:
        await client.aclose()


async def test_profile_directory_removed_keeps_the_last_listing(tmp_path: Path) -> None:
    directory = tmp_path / "profiles"
    directory.mkdir()
    _seed_good(directory)
    store = ProfileStore(str(directory), None)
    assert (await _lookup(store))[1].status == ProfileState.OK
    (directory / f"{GOOD}.json").rename(tmp_path / "moved.json")
    directory.rmdir()
    assert (await _lookup(store))[1].status == ProfileState.OK


# ------------------------------------------------------------------------------------------ state

GOOD_STATE = json.dumps({"history": [[1000.0, 3]], "replicas": 3, "at": 1000.0})
BAD_STATES: list[tuple[str, bytes | str, str]] = [
    ("a list", "[]", "JSON object"),
    ("replicas 1e999", '{"history": [], "replicas": 1e999, "at": 1}', "replicas"),
    ("replicas negative", '{"history": [], "replicas": -2, "at": 1}', "replicas"),
    ("replicas 2.5", '{"history": [], "replicas": 2.5, "at": 1}', "replicas"),
    ("replicas a string", '{"history": [], "replicas": "3", "at": 1}', "replicas"),
    ("replicas true", '{"history": [], "replicas": true, "at": 1}', "replicas"),
    ("replicas 400 digits", '{"history": [], "replicas": ' + "9" * 400 + ', "at": 1}', "replicas"),
    ("at NaN", '{"history": [], "replicas": 1, "at": NaN}', "at"),
    ("at a string", '{"history": [], "replicas": 1, "at": "now"}', "at"),
    ("at 400 digits", '{"history": [], "replicas": 1, "at": ' + "9" * 400 + "}", "at"),
    ("history a dict", '{"history": {"a": 1}, "replicas": 1}', "history"),
    ("history entry short", '{"history": [[1]], "replicas": 1}', "history[0]"),
    ("history count -1", '{"history": [[1, -1]], "replicas": 1}', "history[0][1]"),
    ("history time null", '{"history": [[null, 1]], "replicas": 1}', "history[0][0]"),
    ("not JSON", "{replicas: 3", "not JSON"),
    ("not UTF-8", b"\xff\xfe", "not UTF-8"),
    ("deep nesting", "[" * 50_000 + "]" * 50_000, "nested"),
    ("null", "null", "JSON object"),
]


@pytest.mark.parametrize(("fault", "raw", "words"), BAD_STATES, ids=[r[0] for r in BAD_STATES])
async def test_bad_state_entry_is_skipped_for_that_variant(plain: Any, redis_url: str, fault: str,
                                                           raw: bytes | str, words: str) -> None:
    plain.hset(STATE_KEY, mapping={"llm/bad": raw, "llm/good": GOOD_STATE})
    client = connect(redis_url)
    store = StateStore(client)
    try:
        with structlog.testing.capture_logs() as logs:
            assert await store.load() is True
        good = store.variants[VariantId("llm", "good")]
        assert good.recommendation == 3 and good.history == [(1000.0, 3)]
        assert "llm/bad" not in store.variants
        skipped = [e for e in logs if e["event"] == "state_entry_skipped"]
        assert len(skipped) == 1 and skipped[0]["variant"] == "llm/bad" and words in skipped[0]["error"]
        store.put(VariantId("llm", "bad"), [(2000.0, 2)], 2000.0)  # the next save repairs the entry
        assert await store.save()
        assert json.loads(plain.hget(STATE_KEY, "llm/bad"))["replicas"] == 2
    finally:
        await client.aclose()


async def test_state_key_of_the_wrong_type_does_not_block_planning(plain: Any, redis_url: str) -> None:
    plain.set(STATE_KEY, "not a hash")
    client = connect(redis_url)
    store = StateStore(client)
    try:
        with structlog.testing.capture_logs() as logs:
            assert await store.load() is True
            store.put(VariantId("llm", "x"), [(1.0, 1)], 1.0)
            assert await store.save() is False
            assert await store.save() is False
        assert [e["event"] for e in logs if e["log_level"] in ("warning", "error")] == [
            "state_unreadable", "observation_problem"]
        assert "WRONGTYPE" in logs[0]["error"] and plain.get(STATE_KEY) == b"not a hash"
    finally:
        await client.aclose()


# A profile directory's listing: the files `Path.rglob("*.json")` finds, in `sorted(Path)`'s order (which of two
# files naming one variant wins depends on it). (case, files to create, symlinks name -> target)
LISTINGS: list[tuple[str, list[str], dict[str, str]]] = [
    ("flat", ["b.json", "a.json", "c.txt"], {}),
    ("components sort before characters", ["a/b.json", "a-b/c.json", "a.json"], {}),
    ("dotfiles and ConfigMap-style dirs", [".hidden.json", "..2026_12_03/x.json", "x.json"],
     {"..data": "..2026_12_03"}),
    ("a symlinked directory is not entered", ["real/p.json"], {"link": "real"}),
    ("a directory named *.json is listed, as rglob lists it", ["dir.json/inner.json", "z.json"], {}),
    ("empty", [], {}),
]


@pytest.mark.parametrize(("case", "files", "links"), LISTINGS, ids=[c for c, _, _ in LISTINGS])
def test_profile_directory_lists_what_rglob_lists(tmp_path: Path, case: str, files: list[str],
                                                  links: dict[str, str]) -> None:
    from scaler.store import _json_files

    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    for name, target in links.items():
        (tmp_path / name).symlink_to(tmp_path / target, target_is_directory=True)
    assert _json_files(tmp_path) == [str(p) for p in sorted(tmp_path.rglob("*.json"))]
