"""AIBrix's `slo` routing (its default of the slo family, `slo-least-load-pulling`) as the simulator's gateway.

A stand-in that follows the upstream gateway (vllm-project/aibrix, pkg/plugins/gateway and pkg/cache), rule by
rule; facts carried over, code not. AIBrix documents that heterogeneous GPU serving needs this router
(docs/source/features/heterogeneous-gpu.rst, "Routing Support": header `routing-strategy: slo`, v0.4.0, reads
the per-GPU profiles). It reads the profiles the gateway would read: the fleet's *claimed* ones (`FleetSpec.
profiles()`, so with `profile_claim` F the claimed capacity, not the simulated truth).

Rules (upstream file and function in brackets):

1. Requests queue at the gateway, one FIFO sub-queue per feature key: (predicted output, prompt) each
   rounded to the nearest power of two, round(log2(x)) [queue/slo_queue.go, SLOQueue.Enqueue, featuresKey].
2. The output length is not known at the gateway; it is predicted from completed requests: among the
   completions of the last 240 s whose prompt falls in the same round(log2) bucket, an output bucket is drawn
   with weights = counts and the prediction is 2^bucket; with no history the prediction is 1, "optimistic"
   [cache/output_predictor.go, SimpleOutputPredictor.Predict, coldPredict; cache/cache_init.go, movingWindow;
   cache/cache_impl.go, DoneRequestTrace adds each completion].
3. A request's cell is its (predicted output, prompt) bucket. Here on optimizer/profile.py's grid semantics
   (round up to the next tick, past the last tick the last bucket; `Grid.index` on the fleet's common grid,
   profiles moved there by `resample`), as the planner and `miss_causes` read it. Upstream
   (cache/model_gpu_profile.go, GetSignature) rounds to the nearest tick in log2 space instead.
4. Rank of a queued request against one profile: waited + expected − target, where with a TPOT limit
   expected = the profile's mean E2E for the cell and target = TPOT·predicted output + TTFT; with only a TTFT
   limit expected = mean TTFT, target = TTFT; with only E2E, the mean E2E against it [SLOQueue.rank,
   rankImpl, rankImplTPOT/TTFT/E2E]. > 0 means the profile expects an SLO violation. A request's profiles are
   tried from the lowest rank (the most relaxed); the queue heads are served from the highest best rank
   (the most urgent) [SLOQueue.Peek, both sorts].
5. Monogenous routing: a request is routed inside one deployment (variant) at a time; the first profile is
   always tried, a further one only while its rank ≤ 0 [SLOQueue.Peek, monogenousGPURouting].
6. Inside a variant, least pending load in pull mode: a request consumes 1 / (λ·L) of a pod (λ = the
   profile's throughput for the cell, L = its mean E2E: Little's law, a pod at capacity holds λ·L requests);
   a pod's pending load is the sum over the requests routed to it and not finished; the pod with the least
   load + consumption is chosen if that stays ≤ 1 (the cap), ties to the last pod listed
   [algorithms/least_load.go, leastLoadRouter.Route with pulling; cache/pending_load_provider.go,
   GetConsumption and Cap; cache/cache_trace.go, addPodStats/donePodStats].
7. Errors: λ = 0 for the cell is an SLO failure for that pod; a full pod is "capacity reached", a temporary
   error [least_load.go, Route and updateError]. When the last profile tried ends in capacity-reached, the
   request stays queued and the next head is tried; any other last error (SLO failure: the last profile
   tried claims no capacity for it; no pod) rejects it [SLOQueue.Peek's last loop] — so a request whose
   fast profile is full and whose next profile claims nothing is rejected, not kept waiting.
8. Fallback: when no ready variant has a profile, or a profile lacks the latency the rank needs, the earliest
   queue head goes to the pod with the fewest requests in flight, ties at random (least-request)
   [SLOQueue.Peek's fallbackHandler; algorithms/slo.go, SLORouter.Route and NewSLORouter's fallback;
   algorithms/least_request.go, Route].
9. The queue is tried again on every arrival and whenever a finished request leaves its pod below the cap
   [algorithms/queue_router.go, Route and serve; cache_trace.go, donePodStats].

Chosen where the simulator has no counterpart:
- Mean E2E and TTFT per cell: AIBrix's profile JSON carries them (`e2e`, `ttft`, taken at the rate
  gen_profile chose; python/aibrix/.../profiling/gen_profile.py, setMetrics); ours are read from the profile's
  raw rows at the rate `derive_capacity`'s rule chooses (the highest offered rate meeting every limit whose
  throughput is ≥ 90 % of it), else at the lowest rate measured (gen_profile keeps the latency of a cell
  that meets none too, from its first row). A profile without rows has no latency: rule 8's fallback, as
  upstream for a profile without `e2e`.
- The prediction is drawn once per request (upstream draws again at every Features() call); the 240 s window
  is exact here (upstream rotates 10 s slots).
- A pod becoming ready also tries the queue (upstream waits for the next arrival or completion).
- A request waits at the gateway up to the fleet's max_queue_s (the client's timeout), then it is dropped;
  with no ready pod at all it waits too. A pod whose KV cache cannot hold the request's prompt + output
  (the engine's rule 7; vLLM would refuse it) is not listed for it.
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from optimizer.profile import SLO, BenchmarkRow, Grid, Profile, common_grid, resample, sustains

CAP = 1.0  # PendingLoadProvider.Cap
WINDOW_S = 240.0  # cache_init.go movingWindow

# why a request got no pod (the engine's drop reasons)
SLO_FAILURE = "slo-failure"  # cache.ErrorSLOFailureRequest
NO_POD = "no-pod"  # ErrorNoAvailablePod
_CAPACITY = "capacity"  # cache.ErrorLoadCapacityReached: temporary, the request stays queued


@dataclass(frozen=True)
class VariantTable:
    """What the gateway reads from one variant's profile, on the gateway's grid."""

    capacity: npt.NDArray[np.float64]  # λ, req/s per replica (claimed)
    e2e: npt.NDArray[np.float64] | None  # mean E2E s at the profile's rate; None: no latency data
    ttft: npt.NDArray[np.float64] | None  # mean TTFT s
    slo: SLO


@dataclass(frozen=True)
class GatewayPod:
    """A ready pod as the gateway lists it."""

    name: str
    variant: str
    kv_tokens: int  # the longest request (prompt + output) it can hold


@dataclass(frozen=True)
class Decision:
    request_id: int
    pod: str | None  # None: rejected, for `reason`
    reason: str = ""


@dataclass
class _Queued:
    rid: int
    prompt: int
    output: int  # predicted
    need: int  # prompt + true output: the KV the pod must hold (engine rule 7)
    arrival: float
    cell: tuple[int, int]


def _mean_at_profile_rate(profile: Profile, metric: str) -> npt.NDArray[np.float64] | None:
    """Mean `metric` per cell at the rate the capacity was taken at (see the module's choices)."""
    by_point: dict[tuple[int, int, float], dict[str, BenchmarkRow]] = {}
    for row in profile.rows:
        by_point.setdefault((row.output_tokens, row.input_tokens, row.request_rate), {})[row.metric] = row
    out_pos = {t: i for i, t in enumerate(profile.grid.outputs)}
    in_pos = {t: j for j, t in enumerate(profile.grid.inputs)}
    chosen: dict[tuple[int, int], float] = {}
    lowest: dict[tuple[int, int], float] = {}
    for (out_t, in_t, rate), point in by_point.items():
        if out_t not in out_pos or in_t not in in_pos or metric not in point:
            continue
        cell = (out_pos[out_t], in_pos[in_t])
        if rate < lowest.get(cell, math.inf):
            lowest[cell] = rate
        if rate > chosen.get(cell, -1.0) and sustains(point, rate, profile.slo):
            chosen[cell] = rate
    if not lowest:
        return None
    table = np.zeros(profile.grid.shape)
    for cell, rate in lowest.items():
        point = by_point[(profile.grid.outputs[cell[0]], profile.grid.inputs[cell[1]], chosen.get(cell, rate))]
        table[cell] = float(point[metric].mean or 0.0)
    return table


def gateway_tables(profiles: Mapping[str, Profile]) -> tuple[Grid, dict[str, VariantTable]]:
    """Every variant's profile on the fleet's common grid, as `resample` moves capacity (latency moved by the
    same cell mapping; a cell with no latency reads as infinitely slow, so it ranks last)."""
    if not profiles:
        return Grid((1,), (1,)), {}
    grid = common_grid(p.grid for p in profiles.values())
    tables: dict[str, VariantTable] = {}
    for name, p in profiles.items():
        moved: dict[str, npt.NDArray[np.float64] | None] = {}
        for metric in ("E2E", "TTFT"):
            own = _mean_at_profile_rate(p, metric)
            if own is None:
                moved[metric] = None
                continue
            table = resample(p.with_capacity(p.grid, own), grid).capacity
            moved[metric] = np.where(table > 0, table, math.inf)
        tables[name] = VariantTable(resample(p, grid).capacity, moved["E2E"], moved["TTFT"], p.slo)
    return grid, tables


def _log2_round(x: float) -> float:
    # Go's math.Round (half away from zero), not Python's half-to-even
    if x <= 0:
        return -math.inf
    v = math.log2(x)
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


class OutputPredictor:
    """SimpleOutputPredictor's rule (cache/output_predictor.go): completions of the last WINDOW_S seconds,
    counted per round(log2(prompt)) bucket and round(log2(output)) bucket; a prediction draws an output
    bucket by those counts and answers 2^bucket, or 1 with no history for the prompt's bucket."""

    def __init__(self, seed: int = 0, window_s: float = WINDOW_S) -> None:
        self._rng = random.Random(seed)
        self._window = window_s
        self._seen: deque[tuple[float, float, float]] = deque()
        self._counts: dict[float, Counter[float]] = {}

    def add(self, prompt: int, output: int, now: float) -> None:
        entry = (now, _log2_round(prompt) if prompt > 0 else 0.0, _log2_round(output) if output > 0 else 0.0)
        self._seen.append(entry)
        self._counts.setdefault(entry[1], Counter())[entry[2]] += 1

    def predict(self, prompt: int, now: float) -> int:
        while self._seen and self._seen[0][0] < now - self._window:
            _, ib, ob = self._seen.popleft()
            self._counts[ib][ob] -= 1
            if not self._counts[ib][ob]:
                del self._counts[ib][ob]
        counts = self._counts.get(_log2_round(prompt) if prompt > 0 else 0.0)
        if not counts:
            return 1
        buckets = sorted(counts)
        cursor = self._rng.randrange(sum(counts.values()))
        for b in buckets:
            cursor -= counts[b]
            if cursor < 0:
                return int(2 ** b)
        return int(2 ** buckets[-1])


class SLOGateway:
    """The queue and the router of the module's rules. The caller lists the ready pods at each `dispatch`
    and reports each routed request's end with `done`."""

    def __init__(self, profiles: Mapping[str, Profile], seed: int = 0) -> None:
        self.grid, self.tables = gateway_tables(profiles)
        self.predictor = OutputPredictor(seed)
        self._rng = random.Random(seed + 1)
        self._queues: dict[tuple[float, float], deque[_Queued]] = {}
        self._where: dict[int, tuple[float, float]] = {}
        self.load: dict[str, float] = {}  # pending load per pod (realtime_normalized_pendings)
        self.running: dict[str, int] = {}  # requests in flight per pod (realtime_num_requests_running)
        self._routed: dict[int, tuple[str, float]] = {}

    def __len__(self) -> int:
        return len(self._where)

    def submit(self, request_id: int, prompt: int, need: int, now: float) -> None:
        output = self.predictor.predict(prompt, now)
        item = _Queued(request_id, prompt, output, need, now, self.grid.index(prompt, output))
        key = (_log2_round(output), _log2_round(prompt))
        self._queues.setdefault(key, deque()).append(item)
        self._where[request_id] = key

    def remove(self, request_id: int) -> bool:
        """Take a queued request out (its client gave up); False when it is not queued."""
        key = self._where.pop(request_id, None)
        if key is None:
            return False
        queue = self._queues[key]
        for item in queue:
            if item.rid == request_id:
                queue.remove(item)
                break
        if not queue:
            del self._queues[key]
        return True

    def done(self, request_id: int, now: float, prompt: int = 0, output: int | None = None) -> bool:
        """A routed request left its pod (`output` given: completed, and the predictor learns it). True when
        its pod is now below the cap, i.e. the queue should be tried again."""
        if output is not None:
            self.predictor.add(prompt, output, now)
        routed = self._routed.pop(request_id, None)
        if routed is None:
            return False
        pod, consumption = routed
        self.running[pod] -= 1
        if consumption:
            self.load[pod] -= consumption
            return self.load[pod] < CAP
        return False

    def dispatch(self, now: float, pods: Sequence[GatewayPod]) -> list[Decision]:
        """Route what can be routed now: requests to pods, rejections; what stays queued waits."""
        out: list[Decision] = []
        while self._where:
            decision = self._peek(now, pods)
            if decision is None:
                break
            self._dequeue(decision.request_id)
            out.append(decision)
        return out

    # ------------------------------------------------------------------------------------- internals

    def _dequeue(self, request_id: int) -> None:
        key = self._where.pop(request_id)
        queue = self._queues[key]
        queue.popleft()
        if not queue:
            del self._queues[key]

    def _peek(self, now: float, pods: Sequence[GatewayPod]) -> Decision | None:
        if not pods:
            return None
        heads = [q[0] for q in self._queues.values()]
        profiled = [v for v in dict.fromkeys(p.variant for p in pods) if v in self.tables]
        if not profiled or any(_expected(self.tables[v]) is None for v in profiled):
            return self._fallback(min(heads, key=lambda h: h.arrival), pods)
        ranked = [(sorted(((self._rank(now, item, v), v) for v in profiled), key=lambda rv: rv[0]), item)
                  for item in heads]
        ranked.sort(key=lambda c: -c[0][0][0])
        for order, item in ranked:
            pod, error = None, NO_POD
            for k, (rank, variant) in enumerate(order):
                if k > 0 and rank > 0:
                    break
                pod, error = self._least_load(item, [p for p in pods if p.variant == variant])
                if pod is not None:
                    break
            if pod is not None:
                return Decision(item.rid, pod)
            if error != _CAPACITY:
                return Decision(item.rid, None, error)
        return None

    def _rank(self, now: float, item: _Queued, variant: str) -> float:
        table = self.tables[variant]
        expected = _expected(table)
        assert expected is not None  # checked by _peek: otherwise rule 8's fallback
        slo = table.slo
        if slo.tpot is not None:
            target = slo.tpot * item.output + (slo.ttft or 0.0)
        else:
            target = slo.ttft if slo.ttft is not None else (slo.e2e or 0.0)
        return (now - item.arrival) + float(expected[item.cell]) - target

    def _least_load(self, item: _Queued, pods: Sequence[GatewayPod]) -> tuple[str | None, str]:
        # every pod of a variant reads the same profile, so λ = 0 is the whole variant's SLO failure
        fits = [p for p in pods if p.kv_tokens >= item.need]
        if not fits:
            return None, NO_POD
        table = self.tables[fits[0].variant]
        lam = float(table.capacity[item.cell])
        if lam <= 0:
            return None, SLO_FAILURE
        assert table.e2e is not None  # a profile without latency never gets here (rule 8)
        consumption = 1.0 / lam / float(table.e2e[item.cell])
        target, least = None, CAP
        for pod in fits:
            util = self.load.get(pod.name, 0.0) + consumption
            if util <= least:
                least, target = util, pod.name
        if target is None:
            return None, _CAPACITY
        self._routed[item.rid] = (target, consumption)
        self.load[target] = self.load.get(target, 0.0) + consumption
        self.running[target] = self.running.get(target, 0) + 1
        return target, ""

    def _fallback(self, item: _Queued, pods: Sequence[GatewayPod]) -> Decision | None:
        fits = [p for p in pods if p.kv_tokens >= item.need]
        if not fits:
            return None
        fewest = min(self.running.get(p.name, 0) for p in fits)
        pod = self._rng.choice([p for p in fits if self.running.get(p.name, 0) == fewest]).name
        self._routed[item.rid] = (pod, 0.0)
        self.running[pod] = self.running.get(pod, 0) + 1
        return Decision(item.rid, pod)


def _expected(table: VariantTable) -> npt.NDArray[np.float64] | None:
    """The latency the rank compares with the SLO (SLOQueue.rankImpl): mean E2E under a TPOT limit, else
    mean TTFT under a TTFT limit, else mean E2E under an E2E limit; None when the profile lacks it."""
    slo = table.slo
    if slo.tpot is not None:
        return table.e2e
    if slo.ttft is not None:
        return table.ttft
    return table.e2e if slo.e2e is not None else None
