"""A training plan: several :class:`~train.config.TrainConfig` runs described by one YAML file.

A plan is how a recipe is kept in the repository (``configs/*.yaml``) and run by one command::

    fracture-edge train --plan configs/NAME.yaml [--only RUN ...] [--out DIR] [TrainConfig flags]

The file::

    description: free text
    cache:                     # built with `fracture-edge data cache` when it is missing
      path: cache/fracatlas-160-png
      data: ../shared/data/fracatlas
      split: splits/fracatlas-bd42f929f115.csv
      size: 160
      format: png
    features:                  # feature banks (train/feature_bank.py) built when missing
      - path: cache/features/fracatlas-lite0-448.npz
        data: ../shared/data/fracatlas
        split: splits/fracatlas-de2c8989b434.csv
        backbone: tf_efficientnet_lite0
        size: 448
    out: runs/NAME             # run R writes OUT/R
    deadline_minutes: 480      # no run starts after this; a run in progress stops at it
    defaults: {...}            # TrainConfig fields shared by every run
    runs:
      - name: teacher_lite2
        backbone: tf_efficientnet_lite2
      - name: student_lite0_kd
        teachers: [teacher_lite2]          # a run of this plan, or a checkpoint folder
        teacher_logits: teacher_probe      # a run of this plan: its logits.csv column

Runs execute in file order, teachers before their students; ``--only`` runs the named runs plus
the runs they learn from whose checkpoints are not there yet. TrainConfig flags given on the
command line override every run (e.g. ``--device cuda`` or a smoke test's ``--epochs 1``); they
are part of the command each card records. The card of every checkpoint names the command that
reproduces it (``fracture-edge train --plan FILE --only RUN`` plus those flags) and the plan
file's sha256; ``OUT/plan.json`` summarises the whole plan.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edge_app._optional import require
from edge_app.errors import UsageError
from train.config import TrainConfig, config_keys

logger = logging.getLogger(__name__)

PLAN_KEYS = (
    "description",
    "cache",
    "features",
    "out",
    "deadline_minutes",
    "probe_teachers",
    "defaults",
    "runs",
)
PROBE_KEYS = ("name", "data", "split", "features", "extra_logits", "l2", "pooling")
CACHE_KEYS = ("path", "data", "split", "size", "format", "quality")
FEATURE_KEYS = ("path", "data", "split", "backbone", "size", "keep_map")


class PlanError(UsageError):
    """The plan file is malformed or names runs that do not exist."""


@dataclass
class Plan:
    path: Path
    sha256: str
    description: str
    out: Path
    cache: dict[str, Any]
    deadline_minutes: float | None
    runs: list[TrainConfig] = field(default_factory=list)
    probe_teachers: list[dict[str, Any]] = field(default_factory=list)
    features: list[dict[str, Any]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [probe["name"] for probe in self.probe_teachers] + [
            run.run_name for run in self.runs
        ]

    def probe(self, name: str) -> dict[str, Any] | None:
        return next((probe for probe in self.probe_teachers if probe["name"] == name), None)

    def run(self, name: str) -> TrainConfig:
        for run in self.runs:
            if run.run_name == name:
                return run
        raise PlanError(f"{self.path} has no run {name!r}; its runs: {', '.join(self.names)}")


def load_plan(
    path: str | Path, overrides: dict[str, Any] | None = None, out: str | Path | None = None
) -> Plan:
    """Read and check a plan; ``overrides`` (TrainConfig fields) apply to every run."""
    yaml = require("yaml", "read training plans")
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"plan file {path} does not exist")
    text = path.read_bytes()
    document = yaml.safe_load(text) or {}
    if not isinstance(document, dict):
        raise PlanError(f"{path} must hold a mapping with the keys {', '.join(PLAN_KEYS)}")
    unknown = set(document) - set(PLAN_KEYS)
    if unknown:
        raise PlanError(f"{path}: unknown keys {sorted(unknown)}; valid: {', '.join(PLAN_KEYS)}")
    runs = document.get("runs") or []
    if not isinstance(runs, list) or not runs:
        raise PlanError(f"{path} lists no runs")
    cache = dict(document.get("cache") or {})
    unknown = set(cache) - set(CACHE_KEYS)
    if unknown or "path" not in cache:
        raise PlanError(f"{path}: cache needs 'path' and takes {', '.join(CACHE_KEYS)}")
    root = Path(out or document.get("out") or f"runs/{path.stem}")
    defaults = dict(document.get("defaults") or {})
    plan = Plan(
        path=path,
        sha256=hashlib.sha256(text).hexdigest(),
        description=str(document.get("description") or "").strip(),
        out=root,
        cache=cache,
        deadline_minutes=document.get("deadline_minutes"),
    )
    for bank in document.get("features") or []:
        if set(bank) - set(FEATURE_KEYS) or not {"path", "data", "split", "size"} <= set(bank):
            raise PlanError(
                f"{path}: a feature bank needs path, data, split and size (and may have "
                f"backbone, keep_map); got {sorted(bank)}"
            )
        plan.features.append(dict(bank))
    for probe in document.get("probe_teachers") or []:
        unknown = set(probe) - set(PROBE_KEYS)
        if unknown or not {"name", "data", "split", "features"} <= set(probe):
            raise PlanError(
                f"{path}: a probe teacher needs name, data, split and features (and may have "
                f"extra_logits, l2, pooling); got {sorted(probe)}"
            )
        plan.probe_teachers.append(dict(probe))
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    for index, entry in enumerate(runs):
        if not isinstance(entry, dict) or not entry.get("name"):
            raise PlanError(f"{path}: run {index + 1} needs a 'name'")
        values = {**defaults, **entry, **given}
        unknown = set(values) - set(config_keys())
        if unknown:
            raise PlanError(
                f"{path}: run {entry['name']!r} has unknown keys {sorted(unknown)}; valid: "
                f"{', '.join(config_keys())}"
            )
        values.setdefault("cache", cache["path"])
        values["out"] = str(root / entry["name"])
        plan.runs.append(TrainConfig(**values))
    if len(set(plan.names)) != len(plan.names):
        raise PlanError(f"{path}: run names must be unique, got {plan.names}")
    for run in plan.runs:
        _resolve_teachers(plan, run)
    return plan


def _resolve_teachers(plan: Plan, run: TrainConfig) -> None:
    """Teachers named after earlier runs become those runs' checkpoint folders."""
    earlier = plan.names[: plan.names.index(run.run_name)]
    resolved = []
    for teacher in run.teachers:
        if teacher in plan.names:
            if teacher not in earlier:
                raise PlanError(f"{run.run_name} learns from {teacher}, which runs after it")
            resolved.append(str(plan.out / teacher))
        else:
            resolved.append(teacher)
    run.teachers = resolved
    logits = run.teacher_logits
    if logits and ":" not in logits:
        if logits not in earlier:
            raise PlanError(
                f"{run.run_name}: teacher_logits {logits!r} is neither FILE.csv:COLUMN nor an "
                f"earlier run of the plan ({', '.join(earlier) or 'none'})"
            )
        run.teacher_logits = f"{plan.out / logits / 'logits.csv'}:{logits}"


def dependencies(plan: Plan, name: str) -> list[str]:
    """The runs of the plan that ``name`` learns from (teachers and fixed-logit sources)."""
    if plan.probe(name) is not None:
        return []
    run = plan.run(name)
    sources = [Path(t) for t in run.teachers]
    if run.teacher_logits:
        sources.append(Path(run.teacher_logits.rpartition(":")[0]).parent)
    return [other for other in plan.names if plan.out / other in sources]


def selected_runs(plan: Plan, only: list[str] | None) -> list[str]:
    """The runs to execute, in plan order: ``only`` plus missing checkpoints they need."""
    if not only:
        return plan.names
    wanted: set[str] = set()
    stack = list(only)
    while stack:
        name = stack.pop()
        if plan.probe(name) is None:
            plan.run(name)  # raises for an unknown name
        if name in wanted:
            continue
        wanted.add(name)
        for needed in dependencies(plan, name):
            if not (plan.out / needed / "model_card.json").is_file():
                stack.append(needed)
    return [name for name in plan.names if name in wanted]


def ensure_cache(plan: Plan) -> Path:
    """Build the plan's cache from its data and split when it is not there yet."""
    cache = plan.cache
    path = Path(cache["path"])
    if (path / "index.csv").is_file():
        return path
    if "data" not in cache or "split" not in cache:
        raise PlanError(
            f"{path} does not exist and {plan.path} does not say how to build it "
            "(cache: data, split, size, format)"
        )
    from train.cache import CacheConfig, build_cache
    from train.datasets import open_dataset
    from train.splits import read_split

    logger.info("building the cache %s from %s", path, cache["data"])
    config = CacheConfig(
        size=int(cache.get("size", 256)),
        quality=int(cache.get("quality", 90)),
        format=str(cache.get("format", "jpeg")),
    )
    build_cache(list(open_dataset(cache["data"])), read_split(cache["split"]), path, config)
    return path


def ensure_features(plan: Plan) -> None:
    """Extract the plan's feature banks that are missing or incomplete (resumed, not redone)."""
    from train.feature_bank import extract_bank
    from train.feature_cli import films_of

    for bank in plan.features:
        films = films_of(bank["data"], bank["split"], None)
        extract_bank(
            bank.get("backbone", "tf_efficientnet_lite0"),
            int(bank["size"]),
            films,
            bank["path"],
            keep_map=bank.get("keep_map"),
        )


def run_command(plan: Plan, name: str, flags: list[str]) -> str:
    """The command that reproduces run ``name`` of ``plan``."""
    return shlex.join(["fracture-edge", "train", "--plan", str(plan.path), "--only", name, *flags])


def run_plan(
    plan: Plan, only: list[str] | None = None, flags: list[str] | None = None
) -> dict[str, Any]:
    """Train the selected runs in order; write and return ``OUT/plan.json``."""
    from train.trainer import Trainer

    flags = list(flags or [])
    started = time.perf_counter()
    plan.out.mkdir(parents=True, exist_ok=True)
    ensure_cache(plan)
    ensure_features(plan)
    summary: dict[str, Any] = {
        "plan": str(plan.path),
        "sha256": plan.sha256,
        "description": plan.description,
        "command": shlex.join(
            ["fracture-edge", "train", "--plan", str(plan.path)]
            + [a for name in (only or []) for a in ("--only", name)]
            + flags
        ),
        "runs": {},
    }
    for name in selected_runs(plan, only):
        probe = plan.probe(name)
        if probe is not None:
            summary["runs"][name] = _run_probe_teacher(plan, probe)
            _write_summary(plan, summary, started)
            continue
        elapsed = (time.perf_counter() - started) / 60
        if plan.deadline_minutes is not None and elapsed >= plan.deadline_minutes:
            logger.info("plan deadline reached: %s not started", name)
            summary["runs"][name] = {"status": "skipped: plan deadline"}
            continue
        config = plan.run(name)
        if plan.deadline_minutes is not None:
            left = plan.deadline_minutes - elapsed
            config.deadline_minutes = min(config.deadline_minutes or left, left)
        provenance = {"file": str(plan.path), "sha256": plan.sha256, "run": name}
        card = Trainer(config, command=run_command(plan, name, flags), plan=provenance).fit()
        summary["runs"][name] = {
            "status": card.get("stopped", "completed") if card else "completed",
            "checkpoint": str(config.out),
            "minutes": round(card["trained_on"]["seconds"] / 60, 1) if card else None,
            "metrics": {
                key: card["metrics"].get(key)
                for key in ("val_auroc", "val_auroc_ci95", "test_auroc", "test_auroc_ci95")
            }
            if card
            else None,
        }
        _write_summary(plan, summary, started)
    return _write_summary(plan, summary, started)


def _run_probe_teacher(plan: Plan, probe: dict[str, Any]) -> dict[str, Any]:
    from train.probe_teacher import FeatureSpec, probe_teacher

    started = time.perf_counter()
    card = probe_teacher(
        probe["data"],
        probe["split"],
        [FeatureSpec.parse(text) for text in probe["features"]],
        plan.out / probe["name"],
        name=probe["name"],
        extra_logits=probe.get("extra_logits") or (),
        l2=probe.get("l2"),
        pooling=probe.get("pooling", "avg+max"),
    )
    return {
        "status": "completed",
        "checkpoint": str(plan.out / probe["name"]),
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "metrics": card["metrics"],
    }


def _write_summary(plan: Plan, summary: dict[str, Any], started: float) -> dict[str, Any]:
    summary["minutes"] = round((time.perf_counter() - started) / 60, 1)
    (plan.out / "plan.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def override_flags(overrides: dict[str, Any]) -> list[str]:
    """TrainConfig overrides back as command-line flags (for the recorded command)."""
    kinds = {f.name: f.type for f in fields(TrainConfig)}
    flags: list[str] = []
    for key, value in overrides.items():
        if value is None or key not in kinds:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, list):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return flags
