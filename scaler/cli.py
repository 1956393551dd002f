"""`gpumix` command line. Each subcommand lives in its own module under scaler/commands/ and exposes
`add_arguments(parser)` and `run(args) -> int`; this file only wires them up, importing lazily so that
`gpumix solve` does not pay for grpc and `gpumix serve` does not pay for matplotlib."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, str] = {
    "serve": "run the KEDA external scaler and metrics adapter",
    "solve": "plan the cheapest replica mix for a demand file",
    "replay": "replay a request trace through the simulator under one or more policies",
    "benchmark": "measure an OpenAI-compatible endpoint over a grid of lengths and rates",
    "profile": "turn benchmark rows into a profile under an SLO",
    "recommend": "right-size one server onto a GPU or MIG slice (AutoFit)",
    "render": "write ScaledObjects for a model's variants",
    "lint": "check ScaledObjects, HPAs and Deployments against what gpumix needs",
    "calibrate": "observed capacity per variant against its profile; stored corrections; freeze/reset",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="gpumix", description="cost-optimal autoscaling on mixed GPUs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, helptext in COMMANDS.items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        if name == chosen:  # only the chosen command's module is imported
            importlib.import_module(f"scaler.commands.{name}").add_arguments(p)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(f"scaler.commands.{args.command}")
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
