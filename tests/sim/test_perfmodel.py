"""The analytical model: catalog facts, MIG shares, TPOT = a·B + c, the knee, AutoFit recommend."""

from __future__ import annotations

import pytest

from optimizer.perfmodel import CATALOG, Calibration, PerfModelError, accelerator, mig_slices, perf_model, right_size

REQUIRED = ("V100", "T4", "A10", "A10G", "L4", "L20", "L40S", "A40", "A100-40GB", "A100-80GB", "H100-80GB")


def test_catalog_has_the_required_gpus_and_mig_profiles():
    for name in REQUIRED:
        assert accelerator(name).memory_gb > 0
    assert [a.name.split("/")[1] for a in mig_slices("A100-40GB")] == ["1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb",
                                                                      "7g.40gb"]
    assert len(mig_slices("H100-80GB")) == 6 and len(mig_slices("A100-80GB")) == 6
    s = accelerator("A100-80GB/3g.40gb")
    assert s.resource == "nvidia.com/mig-3g.40gb" and s.parent == "A100-80GB"
    assert s.memory_gb == pytest.approx(40) and s.fp16_tflops == pytest.approx(312 * 3 / 7)
    assert s.bandwidth_gbps == pytest.approx(2039 / 2)
    assert accelerator("A100").name == "A100-80GB"
    with pytest.raises(PerfModelError, match="not in the catalog"):
        accelerator("B300")
    assert all(a.cost_per_hour > 0 for a in CATALOG.values())


def test_tpot_is_linear_in_batch_and_bandwidth_sets_c():
    a100 = perf_model("llama2-7b", "A100-80GB")
    a40 = perf_model("llama2-7b", "A40")
    assert a40.c > a100.c  # less bandwidth, slower step
    ctx = 1000.0
    assert a100.tpot(10, ctx) - a100.tpot(9, ctx) == pytest.approx(a100.a(ctx))
    assert a100.tpot(0, ctx) == pytest.approx(a100.c)
    cal = Calibration(bandwidth_efficiency=0.5, step_overhead_s=0.0)
    pm = perf_model("llama2-7b", "A100-80GB", cal)
    assert pm.c == pytest.approx(6.74e9 * 2 / (2039e9 * 0.5))


def test_knee_from_kv_memory_and_fit():
    pm = perf_model("llama2-7b", "A100-80GB")
    kv_per_token = 2 * 32 * 32 * 128 * 2
    free = 80e9 * 0.9 - 6.74e9 * 2 - 1e9
    assert pm.kv_capacity_tokens == int(free // kv_per_token)
    assert pm.knee(2000) == pm.kv_capacity_tokens // 2000
    assert pm.knee(10) == 256  # max_num_seqs caps short sequences
    assert not perf_model("llama2-7b", "T4").fits  # 16 GB cannot hold 13.5 GB of weights plus a cache
    assert not perf_model("llama2-70b", "A100-80GB").fits and perf_model("llama2-70b", "A100-80GB", gpus=2).fits


def test_recommend_picks_the_smallest_slice_that_meets_the_slo():
    slices = [a.name for a in mig_slices("A100-80GB")]
    small = right_size("llama3-8b", 8, 0.05, 1000, slices)
    large = right_size("llama3-8b", 64, 0.05, 1000, slices)
    assert small.meets_slo and large.meets_slo
    assert accelerator(small.accelerator).sm_share < accelerator(large.accelerator).sm_share
    impossible = right_size("llama3-8b", 10_000, 0.05, 1000, slices)
    assert not impossible.meets_slo and impossible.accelerator == "A100-80GB/7g.80gb"
