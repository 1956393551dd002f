"""`make mutation`: remove or invert each safety rule, one at a time, and check that a test notices.

A small script rather than mutmut: mutmut mutates every operator in a file, which here means hundreds of
mutants of arithmetic nobody guards with a rule, and hours of runs; what must be proven is that each *named*
rule has a test that fails without it. Each mutation is an exact snippet replaced in one file of a copy of the
tree (the working tree is never touched); the listed tests run against that copy and must fail. The score
goes to BENCHMARKS.md (`--write`).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAST = ["tests/optimizer", "tests/service/test_answer.py", "tests/service/test_activation.py"]
CAL = ("tests/calibration/test_cycle_calibration.py", "tests/calibration/test_rules.py")
FAST_PATH_VOICE = "            if self._cycle_answered > self._fast_failing_after and"
FAST_PATH_TESTS = ("tests/faults/test_prometheus_faults.py", "-k", "fast_path_speaks")


@dataclass(frozen=True)
class Mutation:
    rule: str
    path: str
    before: str
    after: str
    tests: tuple[str, ...] = tuple(FAST)


MUTATIONS = (
    Mutation("stale-sample guard", "optimizer/cycle.py",
             "if age is not None and age > settings.max_sample_age_s:", "if False:"),
    Mutation("idleness (forced true)", "optimizer/cycle.py",
             "idle = all(v.current_replicas == 0 for v in model.variants)", "idle = True"),
    Mutation("scale-down tolerance in the reported value", "scaler/metric.py",
             "tolerance = tolerance_up if current is None or desired >= current else tolerance_down",
             "tolerance = tolerance_up"),
    Mutation("keep last recommendation on missing data", "optimizer/decide.py",
             "                    recommendations[v.name] = last\n", "                    pass\n"),
    Mutation("missing series are not zero demand", "optimizer/cycle.py",
             "        return Verdict.MISSING, \"no vLLM series", "        return Verdict.IDLE, \"no vLLM series"),
    Mutation("no completion rate yet is not zero demand", "optimizer/cycle.py",
             "        return Verdict.WARMING,", "        return Verdict.FRESH,"),
    Mutation("partial data never lowers", "optimizer/cycle.py",
             "    if verdict is Verdict.PARTIAL and last is not None:", "    if False:"),
    Mutation("per-variant gaps make data partial", "optimizer/cycle.py", "    if gaps:\n", "    if False:\n"),
    Mutation("rate-window coverage guard", "optimizer/cycle.py",
             "elif s.window_coverage is not None and s.window_coverage < settings.min_window_coverage:",
             "elif False:"),
    Mutation("unknown demand does not renew the decision time", "optimizer/cycle.py",
             "            if verdict.planned:\n                decided.add(v.id)", "            decided.add(v.id)"),
    Mutation("min_replicas only without workload", "optimizer/cycle.py",
             "    return min_replicas if demand.total <= 0 else 0", "    return min_replicas"),
    Mutation("min_replicas applied at all", "optimizer/cycle.py",
             "    return min_replicas if demand.total <= 0 else 0", "    return 0"),
    Mutation("backlog drained over the lead of capacity on its way", "optimizer/cycle.py",
             "    return settings.drain_time_s + arrival_lead_s(model.variants, settings)",
             "    return settings.drain_time_s"),
    Mutation("replicas on their way kept while the backlog waits", "optimizer/cycle.py",
             "    if backlog > 0 and starting(v) > 0 and v.current_replicas is not None:", "    if False:"),
    Mutation("a falling or poorly fitting trend is not projected", "optimizer/forecast.py",
             "if slope <= 0 or explained < MIN_TREND_FIT or projected <= held.total or latest.total <= 0:",
             "if projected <= held.total or latest.total <= 0:"),
    Mutation("a flattening ramp projects its recent slope", "optimizer/forecast.py",
             "        slope = min(slope, float(np.polyfit(times[late] - now, totals[late], 1)[0]))",
             "        pass"),
    Mutation("no release window shorter than the cold start (rent or buy)", "scaler/render.py",
             "        if v.cold_start_s is not None and v.scale_down_window_s < v.cold_start_s\n",
             "        if False\n", ("tests/deploy/test_render_windows.py",)),
    Mutation("hold ageing (hold lead time)", "optimizer/decide.py",
             "window = max(0.0, v.scale_down_window_s - lead)", "window = v.scale_down_window_s"),
    Mutation("a hold is relied on only while its replacement could still arrive in time", "optimizer/cycle.py",
             "    return forecast_lead_s(variants, settings) + settings.interval_s", "    return 15.0"),
    Mutation("held replicas within the window only", "optimizer/stabilize.py",
             "        if not in_window(t, now, window_s):\n            in_force_at_start = n\n        elif t <= now:",
             "        if t <= now:"),
    Mutation("hysteresis", "optimizer/stabilize.py", "        if p is None or n >= p:", "        if True:"),
    Mutation("NOT_FOUND for unprofiled variants", "scaler/answer.py",
             "    if view.profile_status != \"ok\":", "    if False:"),
    Mutation("UNAVAILABLE when stale", "scaler/answer.py", "    if age > stale_after_s:", "    if False:"),
    Mutation("UNAVAILABLE before any recommendation", "scaler/answer.py",
             "    if view.recommendation is None or view.decided_at is None:", "    if view.recommendation is None:"),
    Mutation("waiting wakes only the first responder", "scaler/answer.py",
             "(mview.idle and trigger.variant == (mview.first_responder or trigger.variant))", "True"),
    Mutation("trigger target floor (HPA milli-units)", "scaler/answer.py",
             "MIN_TARGET <= target <= MAX_TARGET", "0 < target <= MAX_TARGET"),
    Mutation("unknown trigger keys refused", "scaler/answer.py", "    if unknown:\n", "    if False:\n"),
    Mutation("push streams end with OK on shutdown", "scaler/keda.py",
             "        self.scaler.stopping.set()", "        pass", ("tests/service/test_stream_shutdown.py",)),
    Mutation("calibration learns only from FRESH cycles", "optimizer/cycle.py",
             "        if verdicts[m.id] is not Verdict.FRESH or not evidence:", "        if not evidence:", CAL),
    Mutation("corrected profiles planned", "optimizer/cycle.py",
             "    corrected = apply(variant.profile, state.correction(str(variant.id), calibration))",
             "    corrected = variant.profile", CAL),
    Mutation("headroom lowered once per window of evidence", "optimizer/calibrate.py",
             "if verdict.outcome is Outcome.DERATED and m.lowered_at is not None and now - m.lowered_at < mw.window_s:",
             "if False:", CAL),
    Mutation("headroom not lowered for misses while capacity was starting", "optimizer/calibrate.py",
             "        if window.capacity_arriving:", "        if False:", CAL),
    Mutation("a variant missing on lengths its profile cannot serve is derated", "optimizer/calibrate.py",
             "        if missed and att is not None and outside is not None and outside > MAX_UNSERVABLE_SHARE:",
             "        if False:",
             CAL),
    Mutation("a significant miss is judged however few the completions", "optimizer/calibrate.py",
             "    if completions < settings.min_completions and not missed:",
             "    if completions < settings.min_completions:", CAL),
    Mutation("no capacity claimed past the load that fills the KV cache", "optimizer/calibrate.py",
             "    if peaks:\n", "    if False:\n", CAL),
    Mutation("a queue on a variant given no load is not demand for others", "optimizer/cycle.py",
             "    return sum(s.waiting or 0.0 for vid, s in model.series.variants.items() if vid not in apart)",
             "    return sum(s.waiting or 0.0 for vid, s in model.series.variants.items())"),
    Mutation("calibration skips warming replicas", "optimizer/calibrate.py",
             "    mature = [r for r in window.replicas if r.age_s >= settings.warmup_s + window.window_s]",
             "    mature = list(window.replicas)", CAL),
    Mutation("out of time, the models behind are searched first", "optimizer/program.py",
             "        alone.sort(key=lambda k: request.models[k].demand.model not in self._behind)", "        pass",
             ("tests/optimizer/test_partial_fallback.py",)),
    Mutation("HiGHS's time limit counted from its instance's total run time", "optimizer/program.py",
             'solver.setOptionValue("time_limit", solver.getRunTime() + max(seconds, 0.0))',
             'solver.setOptionValue("time_limit", max(seconds, 0.0))', ("tests/optimizer/test_plan_budget.py",)),
    Mutation("hold-aware plan only for the models holds can move", "optimizer/decide.py",
             "        replan = _linked(problems, releasing, settings.pools)",
             "        replan = {mp.demand.model for mp in problems}", ("tests/optimizer/test_plan_budget.py",)),
    Mutation("one time limit per cycle", "optimizer/decide.py",
             "        left = max(0.0, settings.time_limit_s - steady.solve_ms / 1e3)",
             "        left = settings.time_limit_s", ("tests/optimizer/test_plan_budget.py",)),
    Mutation("one calibration step per window of evidence", "scaler/loop.py",
             "        evidence, self.evidence = self.evidence, None", "        evidence = self.evidence",
             ("tests/faults/test_prometheus_faults.py", "-k", "calibration_evidence")),
    Mutation("one evidence query failing is not an outage", "scaler/evidence.py",
             "0.0), health=False)", "0.0))",
             ("tests/faults/test_prometheus_faults.py", "-k", "one_failing_evidence")),
    Mutation("the fast path leaves an outage to the cycle", "scaler/prometheus.py", FAST_PATH_VOICE,
             "            if True and", FAST_PATH_TESTS),
    Mutation("a fast-path failure outlasting a cycle is said", "scaler/prometheus.py", FAST_PATH_VOICE,
             "            if False and", FAST_PATH_TESTS),
    Mutation("length-blind routing: a variant that cannot serve the mix gets no load", "optimizer/cycle.py",
             "        blind = length_blind_excluded(m.variants, planned, settings.length_blind_share,\n"
             "                                      None if est is None else est.requests)\n", "        blind = {}\n"),
    Mutation("length-blind routing: a mix of a few requests is not trusted", "optimizer/cycle.py",
             "        if requests is not None and worst is not None:", "        if False:"),
    Mutation("length-blind routing: lengths no variant serves do not count", "optimizer/cycle.py",
             "rates[~mask & others]", "rates[~mask]"),
    Mutation("length-blind routing: the variants that miss least are never excluded", "optimizer/cycle.py",
             "if s > share and s > least}", "if s > share}"),
    Mutation("NaN, Inf and negative samples are invalid, not demand", "scaler/vector.py",
             "        return v if 0.0 <= v < math.inf else None", "        return v",
             ("tests/service/test_vector.py", "tests/service/test_service_units.py")),
    Mutation("a histogram answer with a non-numeric le is refused", "scaler/vector.py",
             "answer.data.result_type == \"vector\" and _numeric_le(answer.data.result)",
             "answer.data.result_type == \"vector\"", ("tests/service/test_vector.py",)),
    Mutation("HPA dead band", "optimizer/hpa.py",
             "    return 1.0 - tolerance_down <= ratio <= 1.0 + tolerance_up", "    return False",
             (*FAST, "tests/emulator")),
)


def run(mutation: Mutation, tree: Path) -> tuple[bool, float]:
    target = tree / mutation.path
    original = target.read_text()
    if original.count(mutation.before) != 1:
        raise SystemExit(f"mutation {mutation.rule!r}: snippet not found exactly once in {mutation.path} "
                         "(the rule moved: update scripts/mutation.py)")
    target.write_text(original.replace(mutation.before, mutation.after))
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--timeout", "120",
             *mutation.tests], cwd=tree, capture_output=True, text=True)
    finally:
        target.write_text(original)
    return proc.returncode != 0, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="write the score into BENCHMARKS.md")
    parser.add_argument("--only", metavar="WORDS", help="run only the mutations whose rule contains WORDS")
    args = parser.parse_args()
    mutations = [m for m in MUTATIONS if args.only is None or args.only in m.rule]
    if args.only is not None and args.write:
        parser.error("--write records the whole score: not with --only")
    with tempfile.TemporaryDirectory(prefix="gpumix-mutation-") as tmp:
        tree = Path(tmp)
        for name in ("optimizer", "scaler", "sim", "tests", "proto", "data", "examples", "pyproject.toml"):
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif src.exists():
                shutil.copy2(src, tree / name)
        baseline = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *FAST],
                                  cwd=tree, capture_output=True, text=True)
        if baseline.returncode != 0:  # a mutant "killed" by a suite that fails anyway proves nothing
            print(baseline.stdout[-3000:])
            raise SystemExit("mutation: the unmutated tests fail in the copy; fix them first")
        rows = []
        for i, m in enumerate(mutations, 1):
            killed, seconds = run(m, tree)
            rows.append((m, killed))
            print(f"[{i:2}/{len(mutations)}] {'killed ' if killed else 'SURVIVED'} {m.rule} ({seconds:.0f} s)",
                  flush=True)
    survived = [m.rule for m, killed in rows if not killed]
    score = f"{len(rows) - len(survived)}/{len(rows)}"
    print(f"mutation score: {score} killed" + (f"; survived: {', '.join(survived)}" if survived else ""))
    if args.write:
        sys.path.insert(0, str(ROOT))
        from bench.report import write_section

        lines = [f"`make mutation` — {score} safety-rule mutations killed (each removes or inverts one rule in a "
                 "copy of the tree and runs the rule's tests; scripts/mutation.py lists them).", "",
                 "| rule | file | caught |", "|---|---|---|"]
        lines += [f"| {m.rule} | `{m.path}` | {'yes' if killed else '**no**'} |" for m, killed in rows]
        write_section("Mutation check", "\n".join(lines))
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main())
