"""The versions of Kubernetes, KEDA and vLLM gpumix supports, and what each release changes for it. `render`
and `lint` check them; the emulator (sim/keda_emulator.py) follows the same release boundaries.

Supported: Kubernetes 1.30–1.35, KEDA 2.17–2.20, vLLM 0.10 and later (V1 engine metrics; V0 names are read
too). KEDA before 2.17 has only the integer targetSize / metricValue fields and no fallback.behavior, so it
cannot carry gpumix's fractional values (a target of 0.5 is sent as 1: the HPA lands on 3 replicas where
5 were asked): it is refused.
"""

from __future__ import annotations

import re

Version = tuple[int, int]

MIN_KUBERNETES: Version = (1, 30)
MAX_KUBERNETES_TESTED: Version = (1, 35)
MIN_KEDA: Version = (2, 17)
MAX_KEDA_TESTED: Version = (2, 20)
DEFAULT_KUBERNETES_VERSION = "1.33"
DEFAULT_KEDA_VERSION = "2.17"

# kubernetes pkg/features/kube_features.go, HPAConfigurableTolerance: alpha (off) in 1.33, beta (on by
# default) from 1.35. With the gate off, the API server drops behavior.*.tolerance on write
# (pkg/registry/autoscaling/horizontalpodautoscaler/strategy.go dropDisabledFields).
TOLERANCE_GATE_ON_BY_DEFAULT: Version = (1, 35)
# kedacore/keda config/crd/bases/keda.sh_scaledobjects.yaml: behavior.scaleUp/scaleDown.tolerance exists
# from v2.18.0 (absent in v2.17.x, so strict field validation rejects it there).
KEDA_TOLERANCE_FIELD: Version = (2, 18)


class VersionError(ValueError):
    pass


def parse_version(text: str, flag: str = "version") -> Version:
    m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+].*)?", text.strip())
    if not m:
        raise VersionError(f"{flag}: expected MAJOR.MINOR such as 1.35 or 2.18, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def check_supported(kubernetes: Version, keda: Version) -> None:
    """Refuse the releases gpumix cannot drive correctly, saying why."""
    problems = []
    if keda < MIN_KEDA:
        problems.append(f"KEDA {keda[0]}.{keda[1]} is not supported: before 2.17 the external scaler protocol has "
                        "only integer targets and values, so gpumix's fractional answers land on the wrong "
                        "count; upgrade KEDA to 2.17 or later")
    if kubernetes < MIN_KUBERNETES:
        problems.append(f"Kubernetes {kubernetes[0]}.{kubernetes[1]} is not supported (KEDA 2.17 needs 1.30 or "
                        "later)")
    if problems:
        raise VersionError("; ".join(problems))


def tolerance_in_force(kubernetes: Version, keda: Version) -> bool:
    """Whether a ScaledObject's behavior.*.tolerance reaches the HPA with default feature gates."""
    return keda >= KEDA_TOLERANCE_FIELD and kubernetes >= TOLERANCE_GATE_ON_BY_DEFAULT
