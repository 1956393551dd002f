from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optimizer.profile import (
    SLO,
    Grid,
    ProfileError,
    derive_capacity,
    load_benchmark_rows,
    load_profile,
    parse_profile,
    resample,
    with_slo,
)

from .fixtures import BIG

AIBRIX = Path(__file__).resolve().parents[2] / "data" / "aibrix"


@pytest.mark.parametrize("gpu", ["a100", "a40"])
def test_aibrix_profile_imports_as_shipped(gpu: str) -> None:
    p = load_profile(AIBRIX / f"simulator-llama2-7b-{gpu}.json", model="llama2-7b")
    raw = json.loads((AIBRIX / f"simulator-llama2-7b-{gpu}.json").read_text())
    assert p.variant == raw["gpu"] and p.model == "llama2-7b"
    assert p.grid.outputs == tuple(raw["indexes"][0]) and p.grid.inputs == tuple(raw["indexes"][1])
    np.testing.assert_array_equal(p.capacity, np.array(raw["tputs"]))


def test_deriving_aibrix_slo_from_its_jsonl_reproduces_its_tputs() -> None:
    """The A100 file records its SLO (E2E P99 ≤ 5 s); our derivation from the raw rows must match."""
    shipped = load_profile(AIBRIX / "simulator-llama2-7b-a100.json")
    rows = load_benchmark_rows(AIBRIX / "simulator-llama2-7b-a100.jsonl")
    _, capacity = derive_capacity(rows, SLO("99", e2e=5.0), shipped.grid)
    np.testing.assert_allclose(capacity, shipped.capacity, rtol=1e-9, atol=1e-9)


def test_changing_the_slo_needs_no_reprofiling() -> None:
    rows = load_benchmark_rows(AIBRIX / "simulator-llama2-7b-a100.jsonl")
    grid, loose = derive_capacity(rows, SLO("99", e2e=5.0))
    _, tight = derive_capacity(rows, SLO("99", e2e=1.0), grid)
    assert np.all(tight <= loose + 1e-12) and tight.sum() < loose.sum()


def test_with_slo_uses_the_profiles_own_rows() -> None:
    rows = load_benchmark_rows(AIBRIX / "simulator-llama2-7b-a40.jsonl")
    grid, cap = derive_capacity(rows, SLO("99", e2e=5.0))
    doc = _ours(grid.inputs, grid.outputs, cap.tolist(), rows=[r.to_json() for r in rows])
    p = parse_profile(json.loads(json.dumps(doc)))
    assert with_slo(p, SLO("90", e2e=2.0)).capacity.sum() < p.capacity.sum()


def test_round_trip_our_format_and_aibrix_export() -> None:
    again = parse_profile(json.loads(json.dumps(BIG.to_json())))
    assert again.to_json() == BIG.to_json()
    aib = parse_profile(BIG.to_aibrix(), model="m")
    np.testing.assert_array_equal(aib.capacity, BIG.capacity)


def _ours(inputs: Any = (128, 256), outputs: Any = (4, 8), capacity: Any = None, **over: Any) -> dict[str, Any]:
    doc = {
        "format": "gpumix.profile/v1", "model": "m", "variant": "v", "accelerator": "L4", "cost_per_hour": 1.0,
        "slo": {"percentile": 99, "tpot": 0.05},
        "grid": {"input_tokens": list(inputs), "output_tokens": list(outputs)},
        "capacity_rps": capacity if capacity is not None else [[1.0, 2.0], [3.0, 4.0]],
    }
    doc.update(over)
    return doc


BAD = [
    ("NaN capacity", _ours(capacity=[[1.0, float("nan")], [1.0, 1.0]]), "capacity_rps[0][1]"),
    ("negative capacity", _ours(capacity=[[1.0, -2.0], [1.0, 1.0]]), "capacity_rps[0][1]"),
    ("ragged matrix", _ours(capacity=[[1.0, 2.0], [3.0]]), "capacity_rps[1]"),
    ("rows do not match output ticks", _ours(capacity=[[1.0, 2.0]]), "capacity_rps: must be a list of 2 rows"),
    ("unknown SLO metric", _ours(slo={"percentile": 99, "latency": 1}), "slo.latency: unknown SLO metric"),
    ("bad percentile", _ours(slo={"percentile": 95, "tpot": 1}), "slo.percentile"),
    ("empty grid", _ours(inputs=[]), "grid.input_tokens"),
    ("ticks not increasing", _ours(inputs=[256, 128]), "strictly increasing"),
    ("cost is a string", _ours(cost_per_hour="1.0"), "cost_per_hour: must be a number"),
    ("zero cost", _ours(cost_per_hour=0), "cost_per_hour"),
    ("missing variant", {k: v for k, v in _ours().items() if k != "variant"}, "variant: missing"),
    ("wrong format tag", _ours(format="other"), "format"),
    ("aibrix ragged tputs", {"gpu": "a", "cost": 1, "tputs": [[1, 2], [3]], "indexes": [[4, 8], [1, 2]]}, "tputs[1]"),
    ("aibrix missing indexes", {"gpu": "a", "cost": 1, "tputs": [[1]]}, "indexes"),
]


@pytest.mark.parametrize("name, doc, field", BAD, ids=[b[0] for b in BAD])
def test_bad_profiles_are_rejected_naming_file_and_field(name: str, doc: dict[str, Any], field: str,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ProfileError) as err:
        parse_profile(_ours(cost_per_hour=-1, inputs=[], slo={"percentile": 99, "bogus": 1}), "p.json")
    assert len(err.value.problems) >= 3


def test_benchmark_rows_with_bad_lines_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"input_tokens": 1, "output_tokens": 1, "request_rate": 1, "metric": "TPUT", "mean": 1}\n'
                    '{"input_tokens": 1}\n')
    with pytest.raises(ProfileError, match="line 2: missing output_tokens"):
        load_benchmark_rows(path)


def test_resample_is_conservative() -> None:
    """A coarse profile on a finer grid: each bucket takes the measured cell at or above it; buckets past
    what was measured get 0; nothing exceeds the measured cell it came from."""
    coarse = parse_profile(_ours(inputs=(256, 1024), outputs=(64,), capacity=[[8.0, 2.0]]))
    fine = Grid(inputs=(128, 256, 512, 1024, 2048), outputs=(32, 64, 128))
    r = resample(coarse, fine).capacity
    np.testing.assert_array_equal(r, [[8, 8, 2, 2, 0], [8, 8, 2, 2, 0], [0, 0, 0, 0, 0]])


def test_resample_to_same_grid_is_identity() -> None:
    assert resample(BIG, BIG.grid) is BIG
