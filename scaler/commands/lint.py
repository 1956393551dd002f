"""`gpumix lint FILE|DIR...`: check Deployments, ScaledObjects and HPAs against what gpumix needs.

Exit 0: no errors (warnings may be printed); 1: errors found; 2: the input could not be read."""

from __future__ import annotations

import argparse
import sys

from scaler.inventory import InventoryError, load_inventory
from scaler.lint import ERROR, LintInputError, has_errors, lint, load_documents, load_profile_index


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="FILE|DIR", help="YAML manifests (directories recursively)")
    parser.add_argument("--profiles", metavar="DIR", help="profiles directory: report variants without a profile")
    parser.add_argument("--inventory", metavar="FILE", help="inventory: compare windows and max replicas with it")
    parser.add_argument("--errors-only", action="store_true", help="do not print warnings")


def run(args: argparse.Namespace) -> int:
    try:
        docs = load_documents(args.paths)
        profiles, findings = (None, []) if args.profiles is None else load_profile_index(args.profiles)
        inventory = None if args.inventory is None else load_inventory(args.inventory)
    except LintInputError as exc:
        print(f"gpumix lint: {exc}", file=sys.stderr)
        return 2
    except InventoryError as exc:
        print(f"gpumix lint: {exc}", file=sys.stderr)
        return 2
    findings = [*findings, *lint(docs, profiles, inventory)]
    shown = [f for f in findings if f.severity == ERROR or not args.errors_only]
    for finding in shown:
        print(finding)
    errors = sum(f.severity == ERROR for f in findings)
    print(f"gpumix lint: {len(docs)} objects, {errors} errors, {len(findings) - errors} warnings", file=sys.stderr)
    return 1 if has_errors(findings) else 0
