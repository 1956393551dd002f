"""Discrete-event simulation of a fleet of vLLM-like replicas serving one model.

Laws of the engine (each replica is a continuous-batching server; parameters from optimizer.perfmodel):

1. Iterations. A serving replica runs one iteration after another while it has work. In a decode
   iteration every running sequence gains one token and the iteration lasts
       step(B, S) = c + a_seq·B + a_tok·S
   (B running sequences holding S KV tokens): TPOT = a·B + c for a batch of mean context ℓ, a = a_seq + a_tok·ℓ.
   Between events (an arrival that can be admitted, a completion) the batch does not change, so the engine
   jumps over whole runs of identical iterations instead of stepping token by token; S grows by B per
   iteration and a run uses the S of its middle iteration.
2. Admission and the knee. At an iteration boundary, waiting requests are admitted in arrival order while
   the batch stays under max_num_seqs and the KV cache can hold every admitted sequence's full length
   (prompt + output tokens reserved up front, so nothing is ever preempted; the KV gauge reads that reserved
   share, as vLLM's reads its allocated blocks). Past that knee, requests wait
   in the replica's queue.
3. Prefill, chunked as in vLLM V1. An iteration carries at most max_batched_tokens tokens: one per running
   sequence, then prompt chunks of admitted requests in arrival order. It lasts step(B, S) + prefill
   overhead + the chunks' prefill time (linear and attention n² parts); the running sequences get their
   token, and a request whose prompt is complete gets its first token at the end of that iteration.
   TTFT = queueing + the iterations that carried its prompt.
4. Arrival mid-iteration. A request reaching a replica in the middle of a run of decode iterations waits for
   the current iteration to end (the run is cut there) and is admitted at that boundary.
5. Cold start. A new replica is `starting` for its variant's cold_start_s and gets no traffic until then;
   it costs money from the moment it is created.
6. Drain. Scale-down removes starting replicas first (newest first), then serving replicas with the least
   outstanding work. A removed serving replica is `draining`: no new requests, its queue goes back to the
   router, its running requests finish; it disappears when empty, or at drain_grace_s, dropping what is left.
7. Routing, across every ready replica of every variant that can hold the request: least outstanding
   requests (running + waiting; default, as gateways do), round-robin, or plan-weighted (variants chosen by
   smooth weighted round-robin with the plan's weights, least outstanding inside a variant), or AIBrix's
   `slo` router (sim/gateway_slo.py: requests queue at the gateway and go, by the variants' claimed
   profiles, to a pod with room for them; it may reject a request no tried profile claims capacity for). A
   request with no replica to go to waits in the fleet's (or the gateway's) queue; it is dropped after
   max_queue_s, or at once if no variant could ever hold it.
8. Determinism. Everything random (pod names, tie-breaks) comes from `seed`; ties of equal time are broken
   by insertion order.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from optimizer.perfmodel import PerfModel
from sim.fleet import FleetSpec, VariantSpec
from sim.gateway_slo import GatewayPod, SLOGateway

ROUTING = ("least-outstanding", "round-robin", "plan-weighted", "slo")
DEFAULT_ROUTING = ROUTING[0]  # as gateways do by default
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generated name suffixes

# event kinds, in the order they run when times tie
_READY, _WAKE, _GRACE, _TIMEOUT, _GATEWAY = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class Request:
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Completion:
    """A finished (or dropped) request. Times are in the caller's clock (seconds)."""

    request_id: int
    arrival: float
    prompt_tokens: int
    output_tokens: int
    finish: float
    first_token: float | None = None
    variant: str | None = None
    pod: str | None = None
    dropped: bool = False
    reason: str = "length"  # vLLM finished_reason; or why it was dropped

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.arrival

    @property
    def tpot(self) -> float | None:
        if self.first_token is None:
            return None
        if self.output_tokens <= 1:
            return 0.0
        return (self.finish - self.first_token) / (self.output_tokens - 1)

    @property
    def e2e(self) -> float:
        return self.finish - self.arrival

    @property
    def queue_time(self) -> float | None:
        return self.ttft


class _Seq:
    __slots__ = ("admitted", "arrival", "first_token", "generated", "id", "output", "prefilled", "prompt", "replica")

    def __init__(self, rid: int, prompt: int, output: int, arrival: float) -> None:
        self.id = rid
        self.prompt = prompt
        self.output = output
        self.arrival = arrival
        self.generated = 0
        self.prefilled = 0
        self.first_token: float | None = None
        self.admitted: float | None = None
        self.replica: Replica | None = None


@dataclass
class ReplicaCounters:
    prompt_tokens: int = 0
    generation_tokens: int = 0
    successes: int = 0
    dropped: int = 0


class Replica:
    """One pod of one variant."""

    def __init__(self, index: int, variant: VariantSpec, vidx: int, pod: str, now: float) -> None:
        self.index = index
        self.variant = variant
        self.vidx = vidx
        self.perf: PerfModel = variant.perf
        self.pod = pod
        self.created = now
        self.ready_at = now + variant.cold_start_s
        self.removed: float | None = None
        self.state = "starting"  # starting | serving | draining | gone
        self.running: list[_Seq] = []
        self.admitting: list[_Seq] = []
        self.chunks: list[tuple[_Seq, int]] = []  # prompt tokens each admitted request gets this iteration
        self.waiting: deque[_Seq] = deque()
        self.phase = "idle"  # idle | prefill | decode
        self.seg_start = 0.0
        self.seg_step = 0.0
        self.seg_n = 0
        self.version = 0
        self.kv_tokens = 0  # KV tokens held by running sequences
        self.reserved = 0  # prompt + output of running and admitting sequences
        self.busy_seconds = 0.0
        self.counters = ReplicaCounters()

    @property
    def outstanding(self) -> int:
        return len(self.running) + len(self.admitting) + len(self.waiting)

    def tokens_now(self, seq: _Seq, now: float) -> int:
        if self.phase == "decode" and seq in self.running and self.seg_step > 0:
            done = int((now - self.seg_start) / self.seg_step)
            return seq.generated + max(0, min(self.seg_n, done))
        return seq.generated


@dataclass(frozen=True)
class ReplicaSnapshot:
    variant: str
    pod: str
    state: str
    running: int
    waiting: int
    kv_usage: float  # 0..1
    busy: float  # 1 when it has work now, 0 otherwise
    busy_seconds: float  # cumulative time with work (for a duty-cycle utilisation figure)
    prompt_tokens: int
    generation_tokens: int
    successes: int
    created: float
    ready_at: float


@dataclass(frozen=True)
class VariantSnapshot:
    replicas: int  # pods that exist and are not draining (the Deployment's spec/status replicas)
    ready: int
    draining: int
    waiting: int
    running: int


@dataclass(frozen=True)
class Snapshot:
    time: float
    replicas: tuple[ReplicaSnapshot, ...]
    variants: dict[str, VariantSnapshot]
    pending: int  # requests waiting in the fleet for any replica


@dataclass
class Usage:
    """Money and GPU time per variant up to a time."""

    replica_seconds: dict[str, float] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)

    @property
    def total_cost(self) -> float:
        return sum(self.cost.values())


class Fleet:
    def __init__(self, spec: FleetSpec, seed: int = 0, routing: str = DEFAULT_ROUTING, start: float = 0.0) -> None:
        if routing not in ROUTING:
            raise ValueError(f"routing: must be one of {', '.join(ROUTING)}, got {routing!r}")
        self.spec = spec
        self.routing = routing
        self.now = start
        self._rng = random.Random(seed)
        self._events: list[tuple[float, int, int, int, object]] = []
        self._tie = itertools.count()
        self._ids = itertools.count(1)
        self._replica_ids = itertools.count()
        self._replicas: list[Replica] = []  # alive (not gone), creation order
        self._gone: list[Replica] = []
        self._by_variant: dict[str, list[Replica]] = {v.name: [] for v in spec.variants}
        self._vidx = {v.name: i for i, v in enumerate(spec.variants)}
        self._templates = {v.name: f"{self._rng.getrandbits(40):010x}" for v in spec.variants}
        self._pending: deque[_Seq] = deque()
        self._seqs: dict[int, _Seq] = {}
        self._done: dict[int, Completion] = {}
        self._out: list[Completion] = []
        self._rr = 0
        self._weights: dict[str, float] = {}
        self._credit: dict[str, float] = {v.name: 0.0 for v in spec.variants}
        self._max_hold = max(v.perf.kv_capacity_tokens for v in spec.variants)
        self._gateway = SLOGateway(spec.profiles(), seed=seed) if routing == "slo" else None
        self._gateway_due = False
        self.scale_events: dict[str, int] = {v.name: 0 for v in spec.variants}
        for v in spec.variants:
            if v.initial_replicas:
                self._add(v, v.initial_replicas, start, ready=True)

    # ------------------------------------------------------------------------------------ public API

    def set_replicas(self, variant: str, n: int, now: float) -> None:
        """The Deployment's replica count changes to `n` at `now` (pods start or drain)."""
        if n < 0:
            raise ValueError(f"replicas for {variant}: must be >= 0, got {n}")
        self._run_until(now)
        spec = self.spec.variant(variant)
        alive = [r for r in self._by_variant[variant] if r.state in ("starting", "serving")]
        if n == len(alive):
            return
        self.scale_events[variant] += 1
        if n > len(alive):
            self._add(spec, n - len(alive), now)
            return
        excess = len(alive) - n
        starting = sorted((r for r in alive if r.state == "starting"), key=lambda r: -r.index)
        for r in starting[:excess]:
            self._retire(r, now)
        excess -= min(excess, len(starting))
        serving = sorted((r for r in alive if r.state == "serving"), key=lambda r: (r.outstanding, -r.index))
        for r in serving[:excess]:
            self._drain(r, now)

    def replicas(self, variant: str) -> int:
        return sum(1 for r in self._by_variant[variant] if r.state in ("starting", "serving"))

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Share of requests per variant for plan-weighted routing (e.g. the plan's load per variant)."""
        self._weights = {k: max(0.0, float(v)) for k, v in weights.items()}

    def submit(self, request: Request, now: float) -> int:
        """A request arrives at `now` (not before the fleet's clock); returns its id."""
        if request.prompt_tokens < 0 or request.output_tokens < 1:
            raise ValueError(f"request needs prompt_tokens >= 0 and output_tokens >= 1, got {request}")
        self._run_until(now)
        seq = _Seq(next(self._ids), int(request.prompt_tokens), int(request.output_tokens), now)
        self._seqs[seq.id] = seq
        if seq.prompt + seq.output > self._max_hold:
            self._finish_dropped(seq, now, "too-long")
        else:
            self._route(seq, now)
        return seq.id

    def advance(self, until: float) -> list[Completion]:
        """Run every event up to `until`; the requests completed (or dropped) since the last call."""
        self._run_until(until)
        out, self._out = self._out, []
        return out

    def progress(self, request_id: int) -> tuple[int, bool]:
        """(tokens generated so far, done) at the fleet's clock."""
        if request_id in self._done:
            c = self._done[request_id]
            return (0 if c.dropped else c.output_tokens, True)
        seq = self._seqs.get(request_id)
        if seq is None:
            raise KeyError(f"unknown request id {request_id}")
        if seq.replica is None:
            return (0, False)
        return (seq.replica.tokens_now(seq, self.now), False)

    def completion(self, request_id: int) -> Completion | None:
        return self._done.get(request_id)

    def forget(self, request_id: int) -> None:
        """Drop the record of a finished request (long real-time runs)."""
        self._done.pop(request_id, None)

    def snapshot(self, now: float | None = None) -> Snapshot:
        if now is not None:
            self._run_until(now)
        t = self.now
        reps = []
        variants: dict[str, VariantSnapshot] = {}
        for v in self.spec.variants:
            rs = self._by_variant[v.name]
            for r in rs:
                # vLLM's gauge is its block pool's allocated share (v1/core/block_pool.py, BlockPool.get_usage:
                # 1 - free / total), the pool its scheduler admits from. Here admission allocates a sequence's
                # whole length up front (law 2), so the allocated share is what is reserved, not the tokens
                # computed so far: the gauge reaches 1 where admission stops, as vLLM's does.
                kv = min(1.0, r.reserved / r.perf.kv_capacity_tokens) if r.perf.kv_capacity_tokens else 0.0
                busy_now = r.phase != "idle"
                busy_s = r.busy_seconds + (self._current_busy(r, t) if busy_now else 0.0)
                reps.append(ReplicaSnapshot(
                    variant=v.name, pod=r.pod, state=r.state, running=len(r.running) + len(r.admitting),
                    waiting=len(r.waiting), kv_usage=kv, busy=1.0 if busy_now else 0.0, busy_seconds=busy_s,
                    prompt_tokens=r.counters.prompt_tokens, generation_tokens=r.counters.generation_tokens,
                    successes=r.counters.successes, created=r.created, ready_at=r.ready_at,
                ))
            variants[v.name] = VariantSnapshot(
                replicas=sum(1 for r in rs if r.state in ("starting", "serving")),
                ready=sum(1 for r in rs if r.state == "serving"),
                draining=sum(1 for r in rs if r.state == "draining"),
                waiting=sum(len(r.waiting) for r in rs),
                running=sum(len(r.running) + len(r.admitting) for r in rs),
            )
        return Snapshot(t, tuple(reps), variants, self._queued)

    def usage(self, until: float | None = None) -> Usage:
        t = self.now if until is None else until
        u = Usage({v.name: 0.0 for v in self.spec.variants}, {v.name: 0.0 for v in self.spec.variants})
        for r in itertools.chain(self._gone, self._replicas):
            end = r.removed if r.removed is not None else t
            secs = max(0.0, min(end, t) - r.created)
            u.replica_seconds[r.variant.name] += secs
            u.cost[r.variant.name] += secs * r.variant.cost_per_hour / 3600.0
        return u

    @property
    def in_flight(self) -> int:
        return self._queued + sum(r.outstanding for r in self._replicas)

    @property
    def _queued(self) -> int:
        return len(self._pending) + (len(self._gateway) if self._gateway is not None else 0)

    # ------------------------------------------------------------------------------------- internals

    def _push(self, t: float, kind: int, ref: int, obj: object) -> None:
        heapq.heappush(self._events, (max(t, self.now), kind, next(self._tie), ref, obj))

    def _run_until(self, until: float) -> None:
        if until < self.now - 1e-9:
            raise ValueError(f"time goes backwards: {until} < fleet clock {self.now}")
        ev = self._events
        while ev and ev[0][0] <= until:
            t, kind, _, ref, obj = heapq.heappop(ev)
            self.now = t
            if kind == _WAKE:
                r = obj
                assert isinstance(r, Replica)
                if ref == r.version and r.state != "gone":
                    self._wake(r, t)
            elif kind == _READY:
                r = obj
                assert isinstance(r, Replica)
                if r.state == "starting":
                    r.state = "serving"
                    self._dispatch_pending(t)
            elif kind == _TIMEOUT:
                seq = obj
                assert isinstance(seq, _Seq)
                if seq.replica is None and seq.id not in self._done:
                    if self._gateway is not None:
                        if self._gateway.remove(seq.id):
                            self._finish_dropped(seq, t, "gateway-timeout")
                        continue
                    try:
                        self._pending.remove(seq)
                    except ValueError:
                        continue
                    self._finish_dropped(seq, t, "no-replica")
            elif kind == _GRACE:
                r = obj
                assert isinstance(r, Replica)
                if r.state == "draining":
                    self._settle_busy(r, t)
                    for s in r.running + r.admitting:
                        self._finish_dropped(s, t, "drain-timeout")
                    r.running, r.admitting = [], []
                    self._retire(r, t)
            elif kind == _GATEWAY:
                self._gateway_due = False
                self._run_gateway(t)
        self.now = max(self.now, until)

    def _add(self, spec: VariantSpec, n: int, now: float, ready: bool = False) -> None:
        for _ in range(n):
            suffix = "".join(self._rng.choice(_SUFFIX_ALPHABET) for _ in range(5))
            pod = f"{spec.name}-{self._templates[spec.name]}-{suffix}"
            r = Replica(next(self._replica_ids), spec, self._vidx[spec.name], pod, now)
            self._replicas.append(r)
            self._by_variant[spec.name].append(r)
            if ready:
                r.ready_at = now
                r.state = "serving"
            else:
                self._push(r.ready_at, _READY, 0, r)
        if ready:
            self._dispatch_pending(now)

    def _retire(self, r: Replica, now: float) -> None:
        r.state = "gone"
        r.removed = now
        r.version += 1
        self._replicas.remove(r)
        self._by_variant[r.variant.name].remove(r)
        self._gone.append(r)

    def _drain(self, r: Replica, now: float) -> None:
        r.state = "draining"
        queued = list(r.waiting)
        r.waiting.clear()
        for s in queued:
            s.replica = None
            if self._gateway is not None:
                self._gateway.done(s.id, now)  # its load leaves the pod; it queues at the gateway again
            self._route(s, now)
        if not r.running and not r.admitting:
            self._settle_busy(r, now)
            self._retire(r, now)
        else:
            self._push(now + self.spec.drain_grace_s, _GRACE, 0, r)

    # routing

    def _eligible(self, seq: _Seq) -> list[Replica]:
        need = seq.prompt + seq.output
        return [r for r in self._replicas if r.state == "serving" and r.perf.kv_capacity_tokens >= need]

    def _route(self, seq: _Seq, now: float) -> None:
        if self._gateway is not None:
            self._gateway.submit(seq.id, seq.prompt, seq.prompt + seq.output, now)
            self._push(seq.arrival + self.spec.max_queue_s, _TIMEOUT, 0, seq)
            self._gateway_soon(now)
            return
        candidates = self._eligible(seq)
        if not candidates:
            self._pending.append(seq)
            self._push(seq.arrival + self.spec.max_queue_s, _TIMEOUT, 0, seq)
            return
        target = self._pick(candidates)
        self._enqueue(target, seq, now)

    def _pick(self, candidates: list[Replica]) -> Replica:
        if self.routing == "round-robin":
            self._rr += 1
            return candidates[self._rr % len(candidates)]
        if self.routing == "plan-weighted" and self._weights:
            by_variant: dict[str, list[Replica]] = {}
            for r in candidates:
                by_variant.setdefault(r.variant.name, []).append(r)
            weights = {v: self._weights.get(v, 0.0) for v in by_variant}
            total = sum(weights.values())
            if total > 0:
                # smooth weighted round-robin (nginx's): every pick adds each weight to its credit, the
                # highest credit wins and pays the total back
                for v, w in weights.items():
                    self._credit[v] += w
                chosen = max(weights, key=lambda v: (self._credit[v], -self._vidx[v]))
                self._credit[chosen] -= total
                candidates = by_variant[chosen]
        # least outstanding; ties go round the candidates so equal replicas share the load
        self._rr += 1
        n = len(candidates)
        best = candidates[self._rr % n]
        best_load = best.outstanding
        for k in range(1, n):
            r = candidates[(self._rr + k) % n]
            if r.outstanding < best_load:
                best, best_load = r, r.outstanding
        return best

    def _enqueue(self, r: Replica, seq: _Seq, now: float) -> None:
        seq.replica = r
        r.waiting.append(seq)
        if r.phase == "idle":
            self._schedule(r, now)
        elif r.phase == "decode" and self._admissible(r, r.waiting[0]):
            self._cut_run(r, now)

    def _gateway_soon(self, now: float) -> None:
        # an event, not a call: a completion inside a replica's iteration must not enqueue onto replicas
        # before that iteration is settled
        if not self._gateway_due:
            self._gateway_due = True
            self._push(now, _GATEWAY, 0, None)

    def _run_gateway(self, now: float) -> None:
        assert self._gateway is not None
        pods = [GatewayPod(r.pod, r.variant.name, r.perf.kv_capacity_tokens)
                for r in self._replicas if r.state == "serving"]
        by_pod = {r.pod: r for r in self._replicas}
        for d in self._gateway.dispatch(now, pods):
            seq = self._seqs[d.request_id]
            if d.pod is None:
                self._finish_dropped(seq, now, d.reason)
            else:
                self._enqueue(by_pod[d.pod], seq, now)

    def _dispatch_pending(self, now: float) -> None:
        if self._gateway is not None:
            self._gateway_soon(now)
            return
        if not self._pending:
            return
        queued = list(self._pending)
        self._pending.clear()
        for seq in queued:
            if self._eligible(seq):
                self._route(seq, now)
            else:
                self._pending.append(seq)  # its timeout event is still in the heap

    # the replica's iterations

    def _admissible(self, r: Replica, seq: _Seq) -> bool:
        return (
            len(r.running) + len(r.admitting) < r.perf.max_num_seqs
            and r.reserved + seq.prompt + seq.output <= r.perf.kv_capacity_tokens
        )

    def _cut_run(self, r: Replica, now: float) -> None:
        """End the current run of decode iterations at the first boundary at or after `now`."""
        k = int(-(-(now - r.seg_start) // r.seg_step)) if r.seg_step > 0 else 0
        k = max(0, min(r.seg_n, k))
        if k == r.seg_n:
            return
        r.seg_n = k
        r.version += 1
        self._push(r.seg_start + k * r.seg_step, _WAKE, r.version, r)

    def _current_busy(self, r: Replica, t: float) -> float:
        return max(0.0, t - r.seg_start)

    def _settle_busy(self, r: Replica, t: float) -> None:
        if r.phase != "idle":
            r.busy_seconds += self._current_busy(r, t)
            r.phase = "idle"

    def _wake(self, r: Replica, t: float) -> None:
        r.busy_seconds += max(0.0, t - r.seg_start)
        if r.phase == "decode":
            self._apply_steps(r, r.seg_n, t)
        elif r.phase == "prefill":
            self._apply_steps(r, 1, t)
            for s, k in r.chunks:
                s.prefilled += k
                r.counters.prompt_tokens += k
            r.chunks = []
            still: list[_Seq] = []
            for s in r.admitting:
                if s.prefilled < s.prompt:
                    still.append(s)
                    continue
                s.first_token = t
                s.generated = 1
                r.kv_tokens += s.prompt + 1
                r.counters.generation_tokens += 1
                if s.output <= 1:
                    self._complete(r, s, t)
                else:
                    r.running.append(s)
            r.admitting = still
        r.phase = "idle"
        if r.state == "draining" and not r.running and not r.admitting and not r.waiting:
            self._retire(r, t)
            return
        self._schedule(r, t)

    def _apply_steps(self, r: Replica, n: int, t: float) -> None:
        if n <= 0 or not r.running:
            return
        keep: list[_Seq] = []
        for s in r.running:
            s.generated += n
            if s.generated >= s.output:
                self._complete(r, s, t, grown=n)
            else:
                keep.append(s)
        r.counters.generation_tokens += n * len(r.running)
        r.kv_tokens += n * len(keep)
        r.running = keep

    def _complete(self, r: Replica, s: _Seq, t: float, grown: int = 0) -> None:
        # its KV tokens before this run's growth, plus the run's growth
        r.kv_tokens -= s.prompt + s.generated - grown
        r.reserved -= s.prompt + s.output
        r.counters.successes += 1
        if self._gateway is not None and self._gateway.done(s.id, t, s.prompt, s.output):
            self._gateway_soon(t)
        c = Completion(s.id, s.arrival, s.prompt, s.output, t, s.first_token, r.variant.name, r.pod)
        self._record(s, c)

    def _finish_dropped(self, s: _Seq, t: float, reason: str) -> None:
        r = s.replica
        if r is not None:
            r.counters.dropped += 1
            r.reserved -= s.prompt + s.output if s.admitted is not None else 0
            if self._gateway is not None and self._gateway.done(s.id, t):
                self._gateway_soon(t)
        c = Completion(s.id, s.arrival, s.prompt, s.output, t, s.first_token,
                       r.variant.name if r else None, r.pod if r else None, dropped=True, reason=reason)
        self._record(s, c)

    def _record(self, s: _Seq, c: Completion) -> None:
        self._seqs.pop(s.id, None)
        self._done[s.id] = c
        self._out.append(c)

    def _schedule(self, r: Replica, t: float) -> None:
        """At an iteration boundary: admit what fits, then start the next iteration (or a run of them)."""
        if r.state == "serving" or r.state == "draining":
            while r.waiting and self._admissible(r, r.waiting[0]):
                s = r.waiting.popleft()
                s.admitted = t
                r.reserved += s.prompt + s.output
                r.admitting.append(s)
        perf = r.perf
        b = len(r.running)
        if r.admitting:
            budget = max(1, perf.max_batched_tokens - b)
            prefill = perf.prefill_overhead
            for s in r.admitting:
                k = min(budget, s.prompt - s.prefilled)
                r.chunks.append((s, k))
                prefill += perf.prefill_chunk_time(s.prefilled, k)
                budget -= k
                if budget <= 0:
                    break
            step = (perf.step_time(b, r.kv_tokens) if b else 0.0) + prefill
            r.phase, r.seg_start, r.seg_step, r.seg_n = "prefill", t, step, 1
            r.version += 1
            self._push(t + step, _WAKE, r.version, r)
        elif b:
            n = min(s.output - s.generated for s in r.running)
            step = perf.step_time(b, r.kv_tokens + b * (n - 1) / 2.0)
            r.phase, r.seg_start, r.seg_step, r.seg_n = "decode", t, step, n
            r.version += 1
            self._push(t + n * step, _WAKE, r.version, r)
        else:
            r.phase = "idle"
