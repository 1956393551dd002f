"""`gpumix` command line. Each subcommand lives in its own module under scaler/commands/ and exposes
`add_arguments(parser)` and `run(args) -> int`; this file only wires them up, importing lazily so that
`gpumix solve` does not pay for grpc and `gpumix serve` does not pay for matplotlib."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable, Sequence

COMMANDS: dict[str, str] = {
    "serve": "run the KEDA external scaler and metrics adapter",
    "solve": "plan the cheapest replica mix for a demand file",
    "replay": "replay a request trace through the simulator under one or more policies",
    "benchmark": "measure an OpenAI-compatible endpoint over a grid of lengths and rates",
    "profile": "turn benchmark rows into a profile under an SLO",
    "rightsize": "right-size one server onto a GPU or MIG slice (AutoFit)",
    "webhook": "right-size LLM server pods as they are created (AutoFit as a mutating admission webhook)",
    "render": "write ScaledObjects for a model's variants",
    "lint": "check ScaledObjects, HPAs and Deployments against what gpumix needs",
    "calibrate": "observed capacity per variant against its profile; stored corrections; freeze/reset",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help when it has a default worth showing: not for flags (False),
    options without one (None, []), or help that already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default is argparse.SUPPRESS or default == []:
            return text
        return super()._get_help_string(action)


class VersionAction(argparse.Action):
    """`--version`, reading the installed version only when asked: importlib.metadata costs a one-shot
    `gpumix solve` ~15 ms of start-up otherwise."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str = "show the version and exit") -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        from gpumix import __version__

        sys.stdout.write(f"gpumix {__version__}\n")
        parser.exit()


def build_parser(load: Iterable[str] = ()) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The `gpumix` parser and its subcommand parsers; only the commands in `load` get their arguments (their
    modules are imported)."""
    load = set(load)
    parser = argparse.ArgumentParser(prog="gpumix", description="cost-optimal autoscaling on mixed GPUs",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands: dict[str, argparse.ArgumentParser] = {}
    for name, helptext in COMMANDS.items():
        p = commands[name] = sub.add_parser(name, help=helptext, description=helptext, formatter_class=HelpFormatter)
        if name in load:
            importlib.import_module(f"scaler.commands.{name}").add_arguments(p)
    return parser, commands


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser, _ = build_parser([chosen] if chosen in COMMANDS else [])  # only the chosen command's module
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(f"scaler.commands.{args.command}")
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
