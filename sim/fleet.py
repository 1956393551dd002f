"""Fleet spec: one model, its variants (one accelerator type each, with cost, cold start and limits), the
SLO, and the calibration of the analytical performance model. YAML on disk:

```yaml
model: deepseek-coder-7b
namespace: llm
slo: {percentile: "99", ttft: 2.0, tpot: 0.08}
calibration: {bandwidth_efficiency: 0.65}      # optional, optimizer.perfmodel.Calibration fields
max_queue_s: 120          # a request with no replica to go to for this long is dropped
drain_grace_s: 120        # terminationGracePeriodSeconds: in-flight requests get this long on scale-down
variants:
- name: deepseek-coder-7b-l4
  accelerator: L4           # optimizer.perfmodel catalog name (GPU or MIG slice "A100-80GB/3g.40gb")
  cost_per_hour: 0.70       # default: the catalog's indicative price × gpus
  cold_start_s: 150         # pod scheduled → serving (image pull, weights load); minutes, not seconds
  min_replicas: 0
  max_replicas: 16
  gpus: 1
  initial_replicas: 1
  scale_down_window_s: 300
  profile: profiles/deepseek-coder-7b-l4.json   # relative to this file; used by the gpumix policy
```
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from optimizer.defaults import DEFAULT_SCALE_DOWN_WINDOW_S
from optimizer.errors import InputError
from optimizer.perfmodel import Calibration, PerfModel, PerfModelError, accelerator, perf_model
from optimizer.profile import SLO, Profile, ProfileError, load_profile

FLEETS_DIR = Path(__file__).resolve().parent / "fleets"
DEFAULT_FLEET = FLEETS_DIR / "default.yaml"
DEFAULT_COLD_START_S = 180.0


class FleetError(InputError):
    """A fleet file that cannot be used."""


@dataclass(frozen=True)
class VariantSpec:
    name: str
    accelerator: str
    cost_per_hour: float
    perf: PerfModel
    cold_start_s: float = DEFAULT_COLD_START_S
    min_replicas: int = 0
    max_replicas: int = 16
    gpus: int = 1
    initial_replicas: int = 0
    scale_down_window_s: float = DEFAULT_SCALE_DOWN_WINDOW_S
    profile_path: Path | None = None


@dataclass(frozen=True)
class FleetSpec:
    model: str
    variants: tuple[VariantSpec, ...]
    slo: SLO
    namespace: str = "default"
    calibration: Calibration = field(default_factory=Calibration)
    max_queue_s: float = 120.0
    drain_grace_s: float = 120.0
    source: str = "fleet"
    # The profiles claim this many times the capacity the simulated replicas have (issue 13's mis-profiled
    # fleet): what every policy plans with is scaled, the engine's replicas (`perf`) are not.
    profile_claim: float = 1.0

    def variant(self, name: str) -> VariantSpec:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"variant {name!r} not in fleet {self.source} ({', '.join(self.names)})")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variants)

    def profiles(self) -> dict[str, Profile]:
        """The shipped profile of each variant that has one (for the planner)."""
        out: dict[str, Profile] = {}
        problems: list[str] = []
        for v in self.variants:
            if v.profile_path is None:
                continue
            try:
                profile = load_profile(v.profile_path, model=self.model)
            except ProfileError as exc:
                problems.append(f"variants[{v.name}].profile: {exc}")
                continue
            if self.profile_claim != 1.0:
                profile = profile.with_capacity(profile.grid, profile.capacity * self.profile_claim)
            out[v.name] = profile
        if problems:
            raise FleetError(self.source, problems)
        return out


def with_profile_claim(spec: FleetSpec, claim: float) -> FleetSpec:
    """The same fleet whose profiles claim `claim`× what its replicas do (0.5: they under-claim by half)."""
    if isinstance(claim, bool) or not isinstance(claim, int | float) or not math.isfinite(claim) or claim <= 0:
        raise FleetError(spec.source, [f"profile claim: must be a positive number, got {claim!r}"])
    return replace(spec, profile_claim=float(claim))


def _num(data: Mapping[str, Any], key: str, default: float, where: str, problems: list[str], *,
         positive: bool = False) -> float:
    val = data.get(key, default)
    if isinstance(val, bool) or not isinstance(val, int | float) or val < 0 or (positive and val == 0):
        problems.append(f"{where}.{key}: must be a {'positive' if positive else 'non-negative'} number, got {val!r}")
        return float(default)
    return float(val)


def _int(data: Mapping[str, Any], key: str, default: int, where: str, problems: list[str]) -> int:
    val = data.get(key, default)
    if isinstance(val, bool) or not isinstance(val, int) or val < 0:
        problems.append(f"{where}.{key}: must be a non-negative integer, got {val!r}")
        return default
    return val


def parse_fleet(data: Any, source: str = "fleet", base: Path | None = None) -> FleetSpec:
    """Collects every problem in the document before raising."""
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise FleetError(source, ["document: must be a mapping with model, slo and variants"])
    model = data.get("model")
    if not isinstance(model, str) or not model:
        problems.append("model: must be a non-empty string")
        model = ""
    slo_data = data.get("slo")
    slo = SLO()
    if not isinstance(slo_data, Mapping):
        problems.append("slo: must be a mapping like {percentile: '99', ttft: 2.0, tpot: 0.08}")
    else:
        extra = set(slo_data) - {"percentile", "ttft", "tpot", "e2e"}
        if extra:
            problems.append(f"slo: unknown keys {sorted(extra)}")
        limits = {k: _num(slo_data, k, 1.0, "slo", problems, positive=True) for k in ("ttft", "tpot", "e2e")
                  if k in slo_data}
        if not limits:
            problems.append("slo: needs at least one of ttft, tpot, e2e")
        slo = SLO(percentile=str(slo_data.get("percentile", "99")), **limits)
    cal_data = data.get("calibration", {}) or {}
    calibration = Calibration()
    if not isinstance(cal_data, Mapping):
        problems.append("calibration: must be a mapping")
    else:
        known = {f.name for f in fields(Calibration)}
        unknown = set(cal_data) - known
        if unknown:
            problems.append(f"calibration: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        try:
            calibration = Calibration(**{k: v for k, v in cal_data.items() if k in known})
            calibration.validate()
        except (PerfModelError, TypeError) as exc:
            problems.append(str(exc))
            calibration = Calibration()
    raw_variants = data.get("variants")
    variants: list[VariantSpec] = []
    if not isinstance(raw_variants, list) or not raw_variants:
        problems.append("variants: must be a non-empty list")
        raw_variants = []
    seen: set[str] = set()
    for i, v in enumerate(raw_variants):
        where = f"variants[{i}]"
        if not isinstance(v, Mapping):
            problems.append(f"{where}: must be a mapping")
            continue
        name = v.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}.name: must be a non-empty string")
            continue
        where = f"variants[{i}] ({name})"
        if name in seen:
            problems.append(f"{where}.name: appears twice")
        seen.add(name)
        acc_name = v.get("accelerator")
        try:
            acc = accelerator(str(acc_name))
        except PerfModelError as exc:
            problems.append(f"{where}.accelerator: {exc}")
            continue
        gpus = _int(v, "gpus", 1, where, problems) or 1
        try:
            perf = perf_model(model or "llama2-7b", acc, calibration, gpus=gpus)
        except PerfModelError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if not perf.fits:
            problems.append(f"{where}: model {model} does not fit in {acc.name} memory ({acc.memory_gb:g} GB × {gpus})")
        lo = _int(v, "min_replicas", 0, where, problems)
        hi = _int(v, "max_replicas", 16, where, problems)
        if lo > hi:
            problems.append(f"{where}: min_replicas {lo} > max_replicas {hi}")
        profile = v.get("profile")
        profile_path = None
        if profile is not None:
            if not isinstance(profile, str):
                problems.append(f"{where}.profile: must be a path")
            else:
                profile_path = (base / profile) if base and not Path(profile).is_absolute() else Path(profile)
        variants.append(VariantSpec(
            name=name,
            accelerator=acc.name,
            cost_per_hour=_num(v, "cost_per_hour", acc.cost_per_hour * gpus, where, problems, positive=True),
            perf=perf,
            cold_start_s=_num(v, "cold_start_s", DEFAULT_COLD_START_S, where, problems),
            min_replicas=lo,
            max_replicas=hi,
            gpus=gpus,
            initial_replicas=_int(v, "initial_replicas", 0, where, problems),
            scale_down_window_s=_num(v, "scale_down_window_s", 300.0, where, problems),
            profile_path=profile_path,
        ))
    spec_kwargs = dict(
        max_queue_s=_num(data, "max_queue_s", 120.0, "fleet", problems, positive=True),
        drain_grace_s=_num(data, "drain_grace_s", 120.0, "fleet", problems),
    )
    namespace = data.get("namespace", "default")
    if not isinstance(namespace, str) or not namespace:
        problems.append("namespace: must be a non-empty string")
        namespace = "default"
    if problems:
        raise FleetError(source, problems)
    return FleetSpec(model=model, variants=tuple(variants), slo=slo, namespace=namespace,
                     calibration=calibration, source=source, **spec_kwargs)


def load_fleet(path: str | Path | None = None) -> FleetSpec:
    p = Path(path) if path is not None else DEFAULT_FLEET
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise FleetError(str(p), [f"cannot read YAML: {exc}"]) from exc
    return parse_fleet(data, str(p), base=p.parent)
