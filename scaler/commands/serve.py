"""`gpumix serve`: the KEDA external scaler (gRPC) and metrics adapter (HTTP) around the control loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
from typing import Any

from scaler import logs
from scaler.config import Config, ConfigError, load

FLAGS = (
    ("--prometheus", "prometheus", str, "Prometheus base URL, e.g. http://127.0.0.1:9090"),
    ("--redis", "redis", str, "Redis URL for profiles and state (optional)"),
    ("--profiles", "profiles", str, "directory of profile JSON files (ours or AIBrix's)"),
    ("--inventory", "inventory", str, "static inventory YAML (models, variants, pools)"),
    ("--grpc-port", "grpc_port", str, "gRPC port for KEDA"),
    ("--http-port", "http_port", str, "HTTP port for /metrics and probes"),
    ("--interval", "interval", str, "seconds between control cycles"),
    ("--stale-after", "stale_after", str,
     "answer UNAVAILABLE when the recommendation is older (s; default: four intervals, at least 60)"),
    ("--bind", "bind", str, "address to listen on (0.0.0.0 in a cluster)"),
    ("--log-level", "log_level", str, "debug, info, warning or error"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML configuration file (every field; flags and GPUMIX_* env win)")
    # The flags default to None so that the config file and GPUMIX_* env can fill them; --help shows the
    # built-in default that applies when none of them does.
    builtin = Config()
    for flag, dest, kind, help_text in FLAGS:
        default = getattr(builtin, dest)
        shown = help_text if default is None or "default" in help_text else f"{help_text} (default: {default})"
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=shown)
    parser.add_argument("--kubernetes", action="store_true", default=None,
                        help="read Deployments, ScaledObjects and Nodes from the Kubernetes API")
    parser.add_argument("--ha", choices=("off", "redis", "kubernetes"), default=os.environ.get("GPUMIX_HA", "off"),
                        help="leader election between replicas: a Redis lock, or a Kubernetes Lease "
                             "(only the leader plans; every replica answers from Redis). Needs --redis. "
                             "Default: $GPUMIX_HA or off")
    parser.add_argument("--ha-lease", default=os.environ.get("GPUMIX_HA_LEASE", "15"),
                        metavar="SECONDS", help="lease duration: a dead leader is replaced within this plus one "
                                                "interval (default $GPUMIX_HA_LEASE or 15)")


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {dest: getattr(args, dest) for _, dest, _, _ in FLAGS}
    overrides["kubernetes"] = args.kubernetes
    try:
        config = load(args.config, overrides)
    except ConfigError as exc:
        print(f"gpumix serve: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_level)
    if args.ha not in ("off", "redis", "kubernetes"):
        print(f"gpumix serve: GPUMIX_HA: must be off, redis or kubernetes, got {args.ha!r}", file=sys.stderr)
        return 2
    try:
        args.ha_lease = float(args.ha_lease)
    except ValueError:
        print(f"gpumix serve: --ha-lease / GPUMIX_HA_LEASE: must be a number of seconds, got {args.ha_lease!r}",
              file=sys.stderr)
        return 2
    if args.ha != "off" and not config.redis:
        print("gpumix serve: --ha needs --redis (followers answer from the state the leader publishes there)",
              file=sys.stderr)
        return 2
    if not args.ha_lease > 0:
        print(f"gpumix serve: --ha-lease must be > 0 seconds, got {args.ha_lease}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(config, ha=args.ha, ha_lease_s=args.ha_lease))
    except StartError as exc:
        print(f"gpumix serve: {exc}", file=sys.stderr)
        return 2


class StartError(RuntimeError):
    pass


def _bind_problem(host: str, port: int) -> str:
    """Why (host, port) cannot be listened on, in the kernel's words, or "" when it now can. gRPC's own
    error names no cause, so the bind is tried again on a plain socket to get one."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {host!r}: {exc.strerror or exc}"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as s:
            # As the servers bind: SO_REUSEADDR, so a port left in TIME_WAIT by a restart is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(address)
            except OSError as exc:
                return (exc.strerror or str(exc)).lower()
    return ""


_IN_USE_HINT = " (another gpumix serve or program listens there; pick a free port)"


def _listen_error(what: str, host: str, port: int, exc: BaseException) -> StartError:
    """A bind that failed although the port looked free a moment before (taken in between)."""
    problem = _bind_problem(host, port) or str(exc).split(";")[0]
    return StartError(f"{what} port {host}:{port}: {problem}" + (_IN_USE_HINT if "in use" in problem else ""))


def _high_availability(config: Config, ha: str, lease_s: float, redis_client: Any, controller: Any,
                       kube_source: Any) -> Any:
    from scaler import leader

    elector: leader.Leadership
    if ha == "kubernetes":
        from scaler.kube import KubeInventory

        api_client = kube_source.api_client if kube_source is not None else KubeInventory._client(config)
        elector = leader.KubeLeaseLeadership(leader.KubernetesLeaseApi(api_client),
                                             leader.lease_namespace(config), lease_s=lease_s)
    else:
        elector = leader.RedisLeadership(redis_client, lease_s=lease_s)
    follower = leader.Follower(controller.inventory, controller.observer, controller.profiles, redis_client,
                               controller.table)
    controller.state = leader.FencedStateStore(redis_client, elector)
    logs.get("gpumix.serve").info("high_availability", elector=ha, identity=elector.identity, lease_s=lease_s)
    return leader.HighAvailability(config, elector, controller, follower,
                                   lambda: leader.FencedStateStore(redis_client, elector))


# A cycle at 1,000 models allocates ~10^5 short-lived objects (facts, demands, plans) beside ~3·10^5 long-lived
# ones (profiles, history, the planner's memories). At CPython's default young threshold (700) that is hundreds
# of young and dozens of older collections a cycle, each older one walking the whole heap: parsing a captured
# 1,000-model cycle's answers took 0.50 s instead of 0.16 s (bench_cycle: parse 0.26 -> 0.09 s, core 1.28 ->
# 1.16 s). The cyclic garbage a larger threshold lets wait is bounded by that many objects.
YOUNG_THRESHOLD = 50_000


def tune_collector() -> None:
    """The garbage collector's thresholds for a process that runs control cycles (serve, bench_cycle)."""
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


async def serve(config: Config, started: asyncio.Event | None = None, ha: str = "off",
                ha_lease_s: float = 15.0) -> int:
    from scaler import adapter, keda
    from scaler.calibration_store import CalibrationStore
    from scaler.inventory import InventoryError, load_inventory
    from scaler.loop import Controller, InventorySource, StaticInventory
    from scaler.prometheus import Observer
    from scaler.store import ProfileStore, StateStore, connect
    from scaler.table import Table

    log = logs.get("gpumix.serve")
    tune_collector()
    table = Table()
    inventory: InventorySource
    if not config.kubernetes:
        assert config.inventory is not None
        try:
            inventory = StaticInventory(load_inventory(config.inventory))
        except InventoryError as exc:
            raise StartError(f"inventory {exc.source}:\n  - " + "\n  - ".join(exc.problems)) from exc
    # Ports first, both at once: one line each, before anything starts (and before gRPC's own log noise).
    taken = [f"{what} port {config.bind}:{port}: {problem}" + (_IN_USE_HINT if "in use" in problem else "")
             for what, port in (("gRPC", config.grpc_port), ("HTTP", config.http_port))
             if port != 0 and (problem := _bind_problem(config.bind, port))]
    if taken:
        raise StartError("\ngpumix serve: ".join(taken))
    # Everything started is stopped again on any exit, a failed start included (in reverse order).
    async with contextlib.AsyncExitStack() as started_parts:
        if config.kubernetes:
            from scaler.kube import KubeInventory

            kube_source = KubeInventory(config)
            try:
                await kube_source.start()
            except Exception as exc:
                raise StartError(f"kubernetes: cannot start watching the API server: {exc}") from exc
            started_parts.push_async_callback(kube_source.stop)
            inventory = kube_source
        redis_client = connect(config.redis) if config.redis else None
        if redis_client is not None:
            started_parts.push_async_callback(_close_quietly, redis_client)
        observer = Observer(config, on_error=table.counters.error)
        controller = Controller(config, inventory, observer, ProfileStore(config.profiles, redis_client),
                                StateStore(redis_client), table,
                                calibration=CalibrationStore(redis_client, config.calibration_settings()))
        try:
            grpc_server = await keda.start(table, config)
        except RuntimeError as exc:
            raise _listen_error("gRPC", config.bind, config.grpc_port, exc) from None
        started_parts.push_async_callback(grpc_server.stop, 1.0)
        try:
            http_runner, http_port = await adapter.start(table, config)
        except OSError as exc:
            raise _listen_error("HTTP", config.bind, config.http_port, exc) from None
        started_parts.push_async_callback(http_runner.cleanup)
        log.info("serving", grpc_port=grpc_server.port, http_port=http_port, interval=config.interval,
                 prometheus=config.prometheus, redis=config.redis, stale_after=config.stale_after_s)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if started is not None:
            started.set()
        runner = None
        if ha != "off":
            assert redis_client is not None
            runner = _high_availability(config, ha, ha_lease_s, redis_client, controller,
                                        kube_source if config.kubernetes else None)
        try:
            await (controller.run(stop) if runner is None else runner.run(stop))
        finally:
            log.info("stopping")
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    log.info("stopped")
    return 0


async def _close_quietly(client: Any) -> None:
    with contextlib.suppress(Exception):
        await client.aclose()
