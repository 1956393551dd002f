"""`gpumix webhook`: AutoFit as a mutating admission webhook. HTTPS `POST /mutate` answers the API server's
admission.k8s.io/v1 AdmissionReview with the decision of scaler/webhook.py (pure); this module is its edge:
TLS (reloaded when cert-manager or certs.sh rotates the files), the offered accelerators (a static file, or
Nodes listed from the Kubernetes API every --refresh seconds), measured scales from `gpumix profile` files,
one log line and one counter increment per decision, and plain-HTTP /metrics, /healthz and /readyz.

Nothing here writes anywhere but the log: the webhook has no side effects (sideEffects: None), so dry-run
requests are answered exactly like real ones and only counted apart."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from optimizer.autofit import AutoFitError, Scale, calibrate_rows
from optimizer.perfmodel import ModelSpec, PerfModelError, accelerator
from scaler import logs
from scaler.prometheus import StateLog
from scaler.webhook import (
    Decision,
    Offer,
    Outcome,
    Policy,
    ReviewError,
    WebhookInputError,
    offers_from_nodes,
    review,
    static_offers,
)

log = logs.get("gpumix.webhook")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The API server waits timeoutSeconds (10 s by default) for an answer; a body past this is no pod.
MAX_BODY = 8 * 1024 * 1024


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-cert", type=Path, required=True, help="serving certificate (PEM); the API server needs HTTPS")
    p.add_argument("--tls-key", type=Path, required=True, help="its private key (PEM)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--accelerators", type=Path,
                     help="static YAML list of offered accelerators (catalog names, or mappings with "
                          "accelerator, resource, nodeSelector)")
    src.add_argument("--kubernetes", action="store_true",
                     help="offer what Nodes have allocatable (nvidia.com/gpu, nvidia.com/mig-*)")
    p.add_argument("--kube-api", help="API server URL (default: in-cluster, else kubeconfig)")
    p.add_argument("--profiles", type=Path, help="directory of gpumix profiles; their rows calibrate the model")
    p.add_argument("--reject-malformed", action="store_true",
                   help="deny opted-in pods whose annotations are unusable (default: admit unchanged, warn)")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (0.0.0.0 in a cluster)")
    p.add_argument("--port", type=int, default=8443, help="HTTPS port for /mutate (0: any free port)")
    p.add_argument("--metrics-port", type=int, default=8080, help="HTTP port for /metrics, /healthz, /readyz")
    p.add_argument("--refresh", type=float, default=60.0, help="seconds between node, profile and TLS re-reads")
    p.add_argument("--log-level", default="info", help="debug, info, warning or error")


# ------------------------------------------------------------------------------------------ inputs


def load_static_offers(path: Path) -> list[Offer]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise WebhookInputError(str(path), [f"cannot read YAML: {exc}"]) from exc
    return static_offers(data, str(path))


def list_nodes(kube_api: str | None) -> list[dict[str, Any]]:
    """One LIST of Nodes, as raw JSON (labels and allocatable as the API server wrote them). Kept apart from
    scaler/kube.py's watches: the webhook needs only this, re-listed every --refresh seconds."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    if kube_api:
        configuration = k8s.Configuration()
        configuration.host = kube_api
        api_client = k8s.ApiClient(configuration)
    else:
        try:
            k8s_config.load_incluster_config()
        except k8s_config.ConfigException:
            k8s_config.load_kube_config()
        api_client = k8s.ApiClient()
    try:
        resp = k8s.CoreV1Api(api_client).list_node(_preload_content=False, _request_timeout=10)
        return list(json.loads(resp.data)["items"])
    finally:
        api_client.close()


class MeasuredProfiles:
    """Scales from the raw rows of `gpumix profile` files, per model name: {accelerator: Scale}. Calibrated
    once per (model spec, profile file version) and cached; a profile without rows, of an accelerator not in
    the catalog, or whose rows do not calibrate, is left out with one log line."""

    def __init__(self, directory: Path | None) -> None:
        from scaler.store import DirectoryProfiles

        self.source = DirectoryProfiles(directory) if directory is not None else None
        self.by_model: dict[str, list[Any]] = {}
        # Keyed by the profile object's identity, which it keeps alive: a changed file is a new object.
        self._cache: dict[tuple[ModelSpec, str, int], tuple[Any, Scale | None]] = {}
        self.state = StateLog()

    def refresh(self) -> None:
        if self.source is None:
            return
        by_key, _ = self.source.scan()
        by_model: dict[str, list[Any]] = {}
        for (model, _variant), profile in sorted(by_key.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            if model is not None and profile.rows:
                by_model.setdefault(model, []).append(profile)
        self.by_model = by_model

    def __call__(self, spec: ModelSpec) -> Mapping[str, Scale]:
        out: dict[str, Scale] = {}
        for profile in self.by_model.get(spec.name, []):
            key = (spec, profile.variant, id(profile))
            if key not in self._cache:
                self._cache[key] = (profile, self._calibrate(spec, profile))
            scale = self._cache[key][1]
            if scale is not None and scale.reference not in out:
                out[scale.reference] = scale
        return out

    def _calibrate(self, spec: ModelSpec, profile: Any) -> Scale | None:
        what = f"calibration:{spec.name}:{profile.variant}"
        try:
            reference = accelerator(profile.accelerator).name
            scale, fits = calibrate_rows(profile.rows, spec, reference)
        except (AutoFitError, PerfModelError) as exc:
            self.state.report(what, "unusable", problem=str(exc))
            return None
        log.info("calibrated", model=spec.name, variant=profile.variant, reference=reference, cells=len(fits),
                 decode_c=round(scale.decode_c, 3), decode_a=round(scale.decode_a, 3))
        return scale


# ------------------------------------------------------------------------------------------ state


@dataclass
class Counters:
    decisions: dict[tuple[str, bool], int] = field(default_factory=dict)
    bad_requests: int = 0

    def count(self, decision: Decision, dry_run: bool) -> None:
        key = (decision.outcome.value, dry_run)
        self.decisions[key] = self.decisions.get(key, 0) + 1


@dataclass
class State:
    policy: Policy
    measured: MeasuredProfiles
    offers: list[Offer] | None = None  # None until the first successful read
    counters: Counters = field(default_factory=Counters)


def _labels(**labels: object) -> str:
    # The adapter has the same escaping, but importing it pulls in the control loop and the solver.
    esc = {k: str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for k, v in labels.items()}
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}" if esc else ""


def render_metrics(state: State) -> str:
    lines = ["# HELP gpumix_webhook_decisions_total admission decisions by outcome (dry-run requests apart)",
             "# TYPE gpumix_webhook_decisions_total counter"]
    for outcome in Outcome:
        for dry_run in (False, True):
            n = state.counters.decisions.get((outcome.value, dry_run), 0)
            lines.append(f"gpumix_webhook_decisions_total{_labels(outcome=outcome.value, dry_run=str(dry_run).lower())}"
                         f" {n}")
    lines += ["# HELP gpumix_webhook_bad_requests_total bodies that were not an answerable AdmissionReview",
              "# TYPE gpumix_webhook_bad_requests_total counter",
              f"gpumix_webhook_bad_requests_total {state.counters.bad_requests}",
              "# HELP gpumix_webhook_offered accelerators offered to pods (allocatable across nodes)",
              "# TYPE gpumix_webhook_offered gauge"]
    for o in state.offers or []:
        value = int(o.allocatable) if float(o.allocatable).is_integer() else o.allocatable
        lines.append(f"gpumix_webhook_offered{_labels(accelerator=o.accelerator, resource=o.resource)} {value}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ HTTP


def make_apps(state: State) -> tuple[web.Application, web.Application]:
    """(the HTTPS admission app, the plain-HTTP metrics and probes app)."""

    async def mutate(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
            answer, decision, req = review(body, state.offers or [], state.measured, state.policy)
        except (json.JSONDecodeError, UnicodeDecodeError, ReviewError) as exc:
            state.counters.bad_requests += 1
            log.warning("bad_admission_request", problem=str(exc))
            return web.Response(status=400, text=f"gpumix webhook: {exc}\n")
        dry_run = bool(req.get("dryRun"))
        state.counters.count(decision, dry_run)
        _log_decision(decision, req, dry_run)
        return web.json_response(answer)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if state.offers is None:
            return web.Response(status=503, text="not ready: accelerators not read yet\n")
        return web.Response(text=f"ready: {len(state.offers)} accelerators offered\n")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=render_metrics(state).encode(), headers={"Content-Type": CONTENT_TYPE})

    admission = web.Application(client_max_size=MAX_BODY)
    admission.router.add_post("/mutate", mutate)
    admission.router.add_get("/healthz", healthz)
    plain = web.Application()
    plain.router.add_get("/metrics", metrics)
    plain.router.add_get("/healthz", healthz)
    plain.router.add_get("/readyz", readyz)
    return admission, plain


def _log_decision(decision: Decision, request: Mapping[str, Any], dry_run: bool) -> None:
    obj = request.get("object") or {}
    meta = obj.get("metadata") or {} if isinstance(obj, Mapping) else {}
    level = "warning" if decision.outcome in (Outcome.MALFORMED, Outcome.REJECTED, Outcome.NO_FIT) else "info"
    fields = {k: v for k, v in (
        ("model", decision.model), ("load", decision.load), ("concurrency", decision.concurrency),
        ("previous", decision.previous), ("pick", decision.pick), ("resource", decision.resource),
        ("meets_slo", decision.meets_slo), ("basis", decision.basis),
    ) if v is not None}
    getattr(log, level)("admission", uid=request.get("uid"), namespace=request.get("namespace"),
                        pod=meta.get("name") or meta.get("generateName"), operation=request.get("operation"),
                        outcome=decision.outcome.value, dry_run=dry_run, reason=decision.reason,
                        patch_ops=len(decision.patch), warnings=len(decision.warnings),
                        candidates=decision.candidates, **fields)


# ------------------------------------------------------------------------------------------ refreshing


class Tls:
    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stamp = self._mtimes()
        self.context.load_cert_chain(cert, key)

    def _mtimes(self) -> tuple[float, float]:
        return self.cert.stat().st_mtime, self.key.stat().st_mtime

    def reload_if_changed(self) -> bool:
        """New handshakes use the new pair; open connections keep theirs."""
        stamp = self._mtimes()
        if stamp == self._stamp:
            return False
        self.context.load_cert_chain(self.cert, self.key)
        self._stamp = stamp
        return True


async def refresh_once(state: State, args: argparse.Namespace, problems: StateLog) -> None:
    if args.kubernetes:
        try:
            nodes = await asyncio.to_thread(list_nodes, args.kube_api)
        except Exception as exc:  # the API unreachable or refusing: keep offering what was last seen
            problems.report("nodes", "unreadable", problem=f"{type(exc).__name__}: {exc}"[:300])
        else:
            offers, notes = offers_from_nodes(nodes)
            problems.report("nodes", "ok")
            for note in notes:
                problems.report(f"node-note:{note}", "unknown-accelerator", level="info", note=note)
            if offers != state.offers:
                log.info("offers", source="kubernetes", nodes=len(nodes),
                         accelerators=[f"{o.accelerator}:{o.allocatable:g}" for o in offers])
            state.offers = offers
    if state.measured.source is not None:
        await asyncio.to_thread(state.measured.refresh)


async def run_server(args: argparse.Namespace, started: asyncio.Event | None = None) -> int:
    tls = Tls(args.tls_cert, args.tls_key)
    measured = MeasuredProfiles(args.profiles)
    state = State(policy=Policy(reject_malformed=args.reject_malformed), measured=measured)
    problems = StateLog()
    if args.accelerators is not None:
        state.offers = load_static_offers(args.accelerators)
        log.info("offers", source=str(args.accelerators),
                 accelerators=[f"{o.accelerator}:{o.allocatable:g}" for o in state.offers])
    await refresh_once(state, args, problems)

    admission, plain = make_apps(state)
    runners = [web.AppRunner(admission, access_log=None), web.AppRunner(plain, access_log=None)]
    for r in runners:
        await r.setup()
    secure = web.TCPSite(runners[0], args.bind, args.port, ssl_context=tls.context)
    metrics_site = web.TCPSite(runners[1], args.bind, args.metrics_port)
    await secure.start()
    await metrics_site.start()
    ports = [s._server.sockets[0].getsockname()[1] for s in (secure, metrics_site)]  # type: ignore[union-attr]
    log.info("listening", https_port=ports[0], metrics_port=ports[1], bind=args.bind,
             source="kubernetes" if args.kubernetes else str(args.accelerators),
             profiles=str(args.profiles) if args.profiles else None, reject_malformed=args.reject_malformed)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if started is not None:
        started.set()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.5, args.refresh))
            if stop.is_set():
                break
            await refresh_once(state, args, problems)
            try:
                if tls.reload_if_changed():
                    log.info("tls_reloaded", cert=str(tls.cert))
                problems.report("tls", "ok")
            except (OSError, ssl.SSLError) as exc:  # half-written during a rotation: keep the old pair
                problems.report("tls", "unreadable", problem=str(exc))
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        for r in runners:
            await r.cleanup()
        log.info("stopped")
    return 0


def run(args: argparse.Namespace) -> int:
    logs.configure(args.log_level)
    if not math.isfinite(args.refresh) or args.refresh <= 0:
        print("gpumix webhook: --refresh must be a positive number of seconds", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run_server(args))
    except WebhookInputError as exc:
        print(f"gpumix webhook: {exc.source}:\n  - " + "\n  - ".join(exc.problems), file=sys.stderr)
        return 2
    except (OSError, ssl.SSLError) as exc:
        print(f"gpumix webhook: {exc}", file=sys.stderr)
        return 2
