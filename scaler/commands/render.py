"""`gpumix render`: one ScaledObject per variant, from the inventory file, to stdout or a directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scaler import logs
from scaler.inventory import InventoryError, load_inventory
from scaler.render import (
    DEFAULT_SCALER_ADDRESS,
    RenderError,
    RenderOptions,
    join_documents,
    render_all,
    select_models,
    tolerance_for,
)
from scaler.versions import DEFAULT_KEDA_VERSION, DEFAULT_KUBERNETES_VERSION


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inventory", required=True, metavar="FILE", help="inventory YAML (models, variants)")
    parser.add_argument("--model", metavar="NAME", help="only this model (default: every model)")
    parser.add_argument(
        "--scaler-address",
        default=DEFAULT_SCALER_ADDRESS,
        metavar="HOST:PORT",
        help=f"gpumix's gRPC address as KEDA reaches it (default {DEFAULT_SCALER_ADDRESS})",
    )
    parser.add_argument("--push", action="store_true", help="external-push trigger (fast scale from zero)")
    parser.add_argument(
        "--kubernetes-version",
        default=DEFAULT_KUBERNETES_VERSION,
        metavar="X.Y",
        help="the cluster's version (supported 1.30-1.35); from 1.35, with KEDA >= 2.18, the HPA's "
        f"per-direction tolerance is written (default {DEFAULT_KUBERNETES_VERSION})",
    )
    parser.add_argument(
        "--keda-version",
        default=DEFAULT_KEDA_VERSION,
        metavar="X.Y",
        help=f"KEDA's version (supported 2.17-2.20; older is refused) (default {DEFAULT_KEDA_VERSION})",
    )
    parser.add_argument(
        "--tolerance",
        metavar="RATIO",
        help="write this per-direction HPA tolerance (e.g. 0 or 0.05; needs a cluster that keeps the field)",
    )
    parser.add_argument(
        "-o", "--output", metavar="DIR", help="write one file per ScaledObject into DIR (default: stdout)"
    )


def run(args: argparse.Namespace) -> int:
    logs.configure()
    log = logs.get("render")
    options = RenderOptions(
        scaler_address=args.scaler_address,
        push=args.push,
        kubernetes_version=args.kubernetes_version,
        keda_version=args.keda_version,
        tolerance=args.tolerance,
    )
    try:
        tolerance_for(options)  # bad flags fail before anything is written
        inventory = load_inventory(args.inventory)
        rendered = render_all(select_models(inventory, args.model), options)
    except InventoryError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return 2
    except RenderError as exc:
        print(f"gpumix render: {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(join_documents([text for _, text in rendered]))
        return 0
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered:
        (out / name).write_text(text)
        log.info("wrote", file=str(out / name))
    return 0
