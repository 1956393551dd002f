"""gpumix down for 10 simulated minutes under load, with KEDA as upstream implements it (sim/keda_emulator.py,
every release gpumix supports), on the ScaledObjects `gpumix render` writes (scenario: sim/outage.py).

The documented outage behaviour (deploy/README.md, "When gpumix is down"): every serving variant keeps at
least the replicas it had, no idle variant is started, and after the outage the fleet follows gpumix again.
The same scenario on what render wrote before (fallback replicas 0) scales serving variants to zero, and a
fallback with replicas > 0 wakes idle variants from KEDA 2.19: both are checked, so the test can tell.
"""

from __future__ import annotations

import pytest

from sim.outage import BEFORE, DURING, rendered, run_outage

VERSIONS = [(2, 17), (2, 18), (2, 19), (2, 20)]


@pytest.mark.parametrize("mode", ["killed", "stale"])
@pytest.mark.parametrize("push", [False, True])
@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: f"keda-{v[0]}.{v[1]}")
def test_outage_keeps_serving_variants_and_wakes_nothing(version: tuple[int, int], push: bool, mode: str) -> None:
    result = run_outage(rendered(push=push), version, mode)
    for name, before in BEFORE.items():
        assert min(result.during[name]) >= before, f"{name} dropped to {min(result.during[name])} during the outage"
        if before == 0:
            assert max(result.during[name]) == 0, f"idle {name} was started during the outage"
    assert (result.serving_lost, result.idle_started) == (0, 0)
    # After recovery gpumix's recommendation (raised during the outage) is applied.
    assert result.after == DURING


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: f"keda-{v[0]}.{v[1]}")
def test_old_rendered_fallback_scaled_serving_variants_to_zero(version: tuple[int, int]) -> None:
    """What render wrote before: fallback {failureThreshold: 3, replicas: 0, currentReplicasIfHigher}. With
    gpumix unreachable, RequestScale takes the scale-to-zero path once cooldownPeriod (300 s) has passed."""
    old = rendered()
    for m in old:
        m["spec"]["fallback"] = {"failureThreshold": 3, "replicas": 0, "behavior": "currentReplicasIfHigher"}
    result = run_outage(old, version, "killed")
    assert min(result.during["m-l4"]) == 0 and min(result.during["m-a10g"]) == 0
    assert result.serving_lost == sum(BEFORE.values())


@pytest.mark.parametrize(("version", "woken"), [((2, 18), False), ((2, 19), True), ((2, 20), True)])
def test_nonzero_fallback_wakes_idle_variants_from_2_19(version: tuple[int, int], woken: bool) -> None:
    with_fallback = rendered()
    for m in with_fallback:
        m["spec"]["fallback"] = {"failureThreshold": 3, "replicas": 1, "behavior": "currentReplicasIfHigher"}
    result = run_outage(with_fallback, version, "stale")
    assert (result.idle_started > 0) == woken
