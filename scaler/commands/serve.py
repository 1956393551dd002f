"""`gpumix serve`: the KEDA external scaler (gRPC) and metrics adapter (HTTP) around the control loop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
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


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {dest: getattr(args, dest) for _, dest, _, _ in FLAGS}
    overrides["kubernetes"] = args.kubernetes
    try:
        config = load(args.config, overrides)
    except ConfigError as exc:
        print(f"gpumix serve: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_level)
    try:
        return asyncio.run(serve(config))
    except StartError as exc:
        print(f"gpumix serve: {exc}", file=sys.stderr)
        return 2


class StartError(RuntimeError):
    pass


async def serve(config: Config, started: asyncio.Event | None = None) -> int:
    from scaler import adapter, keda
    from scaler.inventory import InventoryError, load_inventory
    from scaler.loop import Controller, InventorySource, StaticInventory
    from scaler.prometheus import Observer
    from scaler.store import ProfileStore, StateStore, connect
    from scaler.table import Table

    log = logs.get("gpumix.serve")
    table = Table()
    inventory: InventorySource
    kube_source = None
    if config.kubernetes:
        from scaler.kube import KubeInventory

        kube_source = KubeInventory(config)
        await kube_source.start()
        inventory = kube_source
    else:
        assert config.inventory is not None
        try:
            inventory = StaticInventory(load_inventory(config.inventory))
        except InventoryError as exc:
            raise StartError(f"inventory {exc.source}:\n  - " + "\n  - ".join(exc.problems)) from exc
    redis_client = connect(config.redis) if config.redis else None
    observer = Observer(config, on_error=table.counters.error)
    controller = Controller(config, inventory, observer, ProfileStore(config.profiles, redis_client),
                            StateStore(redis_client), table)
    grpc_server = await keda.start(table, config)
    http_runner, http_port = await adapter.start(table, config)
    log.info("serving", grpc_port=grpc_server.port, http_port=http_port, interval=config.interval,
             prometheus=config.prometheus, redis=config.redis, stale_after=config.stale_after_s)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if started is not None:
        started.set()
    try:
        await controller.run(stop)
    finally:
        log.info("stopping")
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await grpc_server.stop(grace=1.0)
        await http_runner.cleanup()
        observer.close()
        if kube_source is not None:
            await kube_source.stop()
        if redis_client is not None:
            with contextlib.suppress(Exception):
                await redis_client.aclose()
        log.info("stopped")
    return 0
