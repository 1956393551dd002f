"""`gpumix lint FILE|DIR...`: check Deployments, ScaledObjects and HPAs against what gpumix needs.

Exit 0: no errors (warnings may be printed); 1: errors found; 2: the input could not be read, or the given
Kubernetes / KEDA version is one gpumix does not support."""

from __future__ import annotations

import argparse
import sys

from scaler.inventory import InventoryError, load_inventory
from scaler.lint import ERROR, LintInputError, has_errors, lint, load_documents, load_profile_index, version_notes
from scaler.versions import VersionError, check_supported, parse_version


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="FILE|DIR", help="YAML manifests (directories recursively)")
    parser.add_argument("--profiles", metavar="DIR", help="profiles directory: report variants without a profile")
    parser.add_argument("--inventory", metavar="FILE", help="inventory: compare windows and max replicas with it")
    parser.add_argument("--kubernetes-version", metavar="X.Y",
                        help="the cluster's version (supported 1.30-1.35): checks fields the API server drops")
    parser.add_argument("--keda-version", metavar="X.Y",
                        help="KEDA's version (supported 2.17-2.20; older is refused): checks fields its CRD lacks")
    parser.add_argument("--errors-only", action="store_true", help="do not print warnings")


def run(args: argparse.Namespace) -> int:
    try:
        k8s = None if args.kubernetes_version is None else parse_version(args.kubernetes_version,
                                                                          "--kubernetes-version")
        keda = None if args.keda_version is None else parse_version(args.keda_version, "--keda-version")
        check_supported(k8s or (9, 99), keda or (9, 99))
        docs = load_documents(args.paths)
        profiles, findings = (None, []) if args.profiles is None else load_profile_index(args.profiles)
        inventory = None if args.inventory is None else load_inventory(args.inventory)
    except (LintInputError, InventoryError, VersionError) as exc:
        print(f"gpumix lint: {exc}", file=sys.stderr)
        return 2
    for note in version_notes(k8s, keda):
        print(f"gpumix lint: note: {note}", file=sys.stderr)
    findings = [*findings, *lint(docs, profiles, inventory, kubernetes_version=k8s, keda_version=keda)]
    shown = [f for f in findings if f.severity == ERROR or not args.errors_only]
    for finding in shown:
        print(finding)
    errors = sum(f.severity == ERROR for f in findings)
    print(f"gpumix lint: {len(docs)} objects, {errors} errors, {len(findings) - errors} warnings", file=sys.stderr)
    return 1 if has_errors(findings) else 0
