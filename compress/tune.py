"""Optuna multi-objective search over compression settings, scored on the exported artifact.

Each trial takes a trained student checkpoint and:

1. picks a student (backbone/width: one of the ``--students`` checkpoints), an input size, a
   structured pruning ratio, a quantisation mode and, when fine-tuning is on, the KD temperature
   and weight;
2. prunes it (:mod:`compress.prune`), re-estimates its BatchNorm statistics at the trial's
   input size on un-augmented training images, and, with ``finetune_epochs`` > 0, fine-tunes
   it with distillation at that size through the Trainer;
3. screens it: the torch model's AUROC on a fixed validation subsample, and its multiply-adds.
   A trial is stopped before the expensive conversion when a completed trial of the same
   quantisation mode needs no more multiply-adds and screened more than ``prune_margin``
   higher: it cannot reach the Pareto front. (Optuna's own pruners only serve single-objective
   studies, and "below the best AUROC" would stop exactly the small, fast models a phone
   needs.) The trial is marked PRUNED;
4. exports it through ONNX and onnx2tf, and measures the ``.tflite`` file itself: validation
   AUROC (LiteRT, all validation images), p50 latency of one ``invoke()`` on 1 thread, and its
   size in MB.

The three objectives are (AUROC ↑, latency ↓, size ↓). The study lives in an Optuna storage
(default: a SQLite file next to the trials), so it resumes where it stopped and several workers,
on one machine or many (PostgreSQL/MySQL URL), share it.

    fracture-edge tune --cache cache/fracatlas-256 --students models/checkpoints/.../student_a \
        --trials 12 --out runs/tune --study lite0
    fracture-edge tune --out runs/tune --study lite0 --trials 0 \
        --max-latency-ms 8 --max-size-mb 5 --bundle models/fracture-lite0-int8
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_app._optional import require
from edge_app.errors import FractureEdgeError, UsageError
from edge_app.preprocess import PreprocessConfig

logger = logging.getLogger(__name__)

OBJECTIVES = ("val_auroc", "latency_p50_ms", "size_mb")
DIRECTIONS = ("maximize", "minimize", "minimize")


class TuneError(FractureEdgeError):
    """A study cannot run or has no trial meeting the constraints."""


@dataclass
class TuneSettings:
    cache: str
    students: list[str]
    out: str = "runs/tune"
    study: str = "fracture-edge"
    storage: str | None = None
    sizes: list[int] = field(default_factory=lambda: [160, 192, 224, 256, 288, 320])
    prune_ratios: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    modes: list[str] = field(default_factory=lambda: ["float16", "dynamic_int8", "int8"])
    finetune_epochs: int = 0
    finetune_limit: int | None = 800
    finetune_lr: float = 2e-4
    teacher_logits: str | None = None
    temperature: tuple[float, float] = (1.0, 8.0)
    alpha: tuple[float, float] = (0.3, 0.95)
    calibration_images: int = 100
    recalibration_images: int = 256
    screen_images: int = 240
    prune_margin: float = 0.03
    latency_runs: int = 40
    threads: int = 2
    seed: int = 0
    heartbeat_s: int = 60  # a worker that stops beating for 3 intervals has its trial failed

    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        path = Path(self.out) / f"{self.study}.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.resolve()}"

    def trial_dir(self, number: int) -> Path:
        return Path(self.out) / self.study / f"trial_{number:04d}"


def _optuna():
    optuna = require("optuna", "run the compression search")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _storage(settings: TuneSettings):
    """An RDB storage with heartbeats: a trial whose worker died (killed, machine lost) stops
    beating and is marked FAIL by the next worker that starts or asks for a trial, instead of
    staying RUNNING forever."""
    optuna = _optuna()
    url = settings.storage_url()
    if settings.heartbeat_s <= 0:
        return url
    try:
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=settings.heartbeat_s,
            grace_period=3 * settings.heartbeat_s,
        )
    except ImportError as error:  # the URL's database driver (e.g. psycopg2) is missing
        raise TuneError(f"{error}; install the driver the --storage URL names") from error


def open_study(settings: TuneSettings, create: bool = True):
    """The study (created, or loaded to resume or to join it as another worker); trials left
    RUNNING by dead workers are marked FAIL first."""
    optuna = _optuna()
    study = _open_study(optuna, settings, create)
    optuna.storages.fail_stale_trials(study)
    return study


def _open_study(optuna, settings: TuneSettings, create: bool):
    if not create:
        storage = _storage(settings)
        try:
            return optuna.load_study(study_name=settings.study, storage=storage)
        except KeyError as error:
            raise TuneError(f"no study '{settings.study}' in {settings.storage_url()}") from error
    # Workers started together race to create the tables of a new storage ("table studies
    # already exists" from SQLite, or a duplicate alembic_version row while RDBStorage
    # stamps the schema); the loser retries, storage and all, and then joins the study.
    for attempt in range(5):
        try:
            return optuna.create_study(
                study_name=settings.study,
                storage=_storage(settings),
                directions=list(DIRECTIONS),
                sampler=optuna.samplers.TPESampler(seed=settings.seed + os.getpid() % 1000),
                load_if_exists=True,
            )
        except Exception as error:  # sqlalchemy's OperationalError/IntegrityError
            if attempt == 4 or "already exists" not in str(error) and "UNIQUE" not in str(error):
                raise
            time.sleep(0.2 + 0.3 * attempt)
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------- one trial


def _student_name(path: str) -> str:
    return Path(path).name


def suggest(trial, settings: TuneSettings) -> dict[str, Any]:
    names = [_student_name(path) for path in settings.students]
    if len(set(names)) != len(names):
        raise TuneError(f"student folders need distinct names, got {names}")
    params = {
        "student": trial.suggest_categorical("student", names),
        "input_size": trial.suggest_categorical("input_size", list(settings.sizes)),
        "prune_ratio": trial.suggest_categorical("prune_ratio", list(settings.prune_ratios)),
        "mode": trial.suggest_categorical("mode", list(settings.modes)),
    }
    if settings.finetune_epochs > 0:
        params["temperature"] = trial.suggest_float("temperature", *settings.temperature)
        params["alpha"] = trial.suggest_float("alpha", *settings.alpha)
    return params


def _screen_rows(cache: str, count: int, seed: int) -> list[dict]:
    from compress.cache_inputs import cache_rows

    rows = cache_rows(cache, "val")
    if count >= len(rows):
        return rows
    rng = np.random.default_rng(seed)
    return [rows[i] for i in sorted(rng.choice(len(rows), count, replace=False))]


def prepare_student(params: dict, settings: TuneSettings, work: Path):
    """The trial's torch model and card: pruned and fine-tuned as ``params`` say."""
    from compress.prune import fine_tune, fine_tune_base, prune_model
    from train.checkpoints import load_checkpoint, write_checkpoint
    from train.config import TrainConfig

    source = {_student_name(path): path for path in settings.students}[params["student"]]
    net, card, preprocessing = load_checkpoint(source)
    size = int(params["input_size"])
    trained_size = int(card["preprocessing"]["input_size"])
    card = {**card, "preprocessing": {**card["preprocessing"], "input_size": size}}
    if params["prune_ratio"] > 0:
        net = prune_model(net, float(params["prune_ratio"]), size)
        card["pruning"] = net.pruning
    changed = params["prune_ratio"] > 0 or size != trained_size
    if changed and settings.recalibration_images > 0:
        from compress.cache_inputs import calibration_sample
        from compress.prune import recalibrate_batchnorm

        images, _ = calibration_sample(
            settings.cache,
            PreprocessConfig.from_card(card),
            settings.recalibration_images,
            seed=settings.seed + 1,
        )
        recalibrate_batchnorm(net, images.transpose(0, 3, 1, 2))
        card["batchnorm_recalibration"] = {"split": "train", "images": len(images)}
    if settings.finetune_epochs > 0 and changed:
        if not settings.teacher_logits:
            raise TuneError("fine-tuning needs --teacher-logits FILE.csv:COLUMN")
        base = fine_tune_base(card)
        base.pop("pretrained", None)
        config = TrainConfig(
            **{
                **base,
                "cache": settings.cache,
                "out": str(work / "checkpoint"),
                "input_size": size,
                "epochs": settings.finetune_epochs,
                "lr": settings.finetune_lr,
                "limit": settings.finetune_limit,
                "teacher_logits": settings.teacher_logits,
                "temperature": params["temperature"],
                "alpha": params["alpha"],
                "progress": False,
                "tensorboard": False,
                "seed": settings.seed,
                "device": "cpu",
            }
        )
        fine_tune(net, config, preprocessing)
        net, card, _ = load_checkpoint(work / "checkpoint")
        card = {**card, "teachers": [settings.teacher_logits]}
        return net, card, work / "checkpoint"
    if changed:
        write_checkpoint(work / "checkpoint", net.state_dict(), card)
        return net, card, work / "checkpoint"
    return net, card, Path(source)


def screen_auroc(net, card: dict, settings: TuneSettings) -> float:
    """The torch model's AUROC on a fixed validation subsample (the early-stopping signal)."""
    from compress.cache_inputs import model_inputs
    from compress.export import LOGIT_OUTPUT, torch_outputs
    from train.metrics import auroc

    rows = _screen_rows(settings.cache, settings.screen_images, settings.seed)
    images = model_inputs(settings.cache, rows, PreprocessConfig.from_card(card))
    logits = torch_outputs(net, images)[LOGIT_OUTPUT][:, 0]
    return float(auroc(np.array([int(row["label"]) for row in rows]), logits))


def measure_artifact(path: Path, card: dict, outputs: dict, settings: TuneSettings) -> dict:
    """Validation AUROC, p50 latency (1 thread) and size of a ``.tflite`` file."""
    from compress.cache_inputs import cache_rows, model_inputs
    from compress.export import LOGIT_OUTPUT, tflite_outputs
    from edge_app.latency import tflite_latency
    from train.metrics import auroc

    rows = cache_rows(settings.cache, "val")
    images = model_inputs(settings.cache, rows, PreprocessConfig.from_card(card))
    logits = tflite_outputs(path, outputs, images, settings.threads)[LOGIT_OUTPUT][:, 0]
    latency = tflite_latency(path, outputs, threads=1, runs=settings.latency_runs)
    return {
        "val_auroc": float(auroc(np.array([int(row["label"]) for row in rows]), logits)),
        "latency_p50_ms": latency.p50_ms,
        "latency_p95_ms": latency.p95_ms,
        "size_mb": path.stat().st_size / 1e6,
    }


def run_trial(trial, settings: TuneSettings) -> tuple[float, float, float]:
    optuna = _optuna()
    from compress.cache_inputs import calibration_sample
    from compress.export import CALIBRATED_MODES, DeployableNet, convert_tflite, export_onnx

    started = time.perf_counter()
    params = suggest(trial, settings)
    work = settings.trial_dir(trial.number)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    net, card, checkpoint = prepare_student(params, settings, work)
    trial.set_user_attr("checkpoint", str(checkpoint))

    from compress.prune import count_params_and_macs

    screen = screen_auroc(net, card, settings)
    macs = count_params_and_macs(net, int(params["input_size"]))[1]
    trial.set_user_attr("screen_auroc", screen)
    trial.set_user_attr("macs", macs)
    better = dominating_trial(trial.study, trial.number, params["mode"], screen, macs,
                              settings.prune_margin)  # fmt: skip
    if better is not None:
        shutil.rmtree(work, ignore_errors=True)
        raise optuna.TrialPruned(
            f"trial {better.number} needs no more multiply-adds and screened "
            f"{better.user_attrs['screen_auroc']:.3f} > {screen:.3f} + {settings.prune_margin}"
        )

    deployable = DeployableNet(net)
    size = int(params["input_size"])
    shapes = deployable.output_shapes(size)
    onnx_path = export_onnx(deployable, work / "model.onnx", size)
    calibration = None
    if params["mode"] in CALIBRATED_MODES or params["mode"] == "dynamic_int8":
        calibration, _ = calibration_sample(
            settings.cache, PreprocessConfig.from_card(card), settings.calibration_images
        )
    files = convert_tflite(onnx_path, work / "tflite", calibration)
    artifact = work / "model.tflite"
    shutil.copyfile(files[params["mode"]], artifact)
    shutil.rmtree(work / "tflite", ignore_errors=True)
    measured = measure_artifact(artifact, card, shapes["outputs"], settings)
    for key, value in measured.items():
        trial.set_user_attr(key, value)
    trial.set_user_attr("artifact", str(artifact))
    trial.set_user_attr("outputs", shapes["outputs"])
    trial.set_user_attr("seconds", time.perf_counter() - started)
    logger.info("trial %d %s → %s", trial.number, params, measured)
    return tuple(float(measured[name]) for name in OBJECTIVES)


def dominating_trial(study, number: int, mode: str, screen: float, macs: int, margin: float):
    """A completed trial of ``mode`` with ≤ ``macs`` multiply-adds that screened more than
    ``margin`` above ``screen``, or None."""
    optuna = _optuna()
    for other in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        attrs = other.user_attrs
        if other.number == number or "screen_auroc" not in attrs or "macs" not in attrs:
            continue
        if (
            other.params.get("mode") == mode
            and attrs["macs"] <= macs
            and attrs["screen_auroc"] > screen + margin
        ):
            return other
    return None


def optimise(settings: TuneSettings, trials: int) -> Any:
    """Run ``trials`` more trials in this worker; returns the study."""
    for student in settings.students:
        if not (Path(student) / "model_card.json").is_file():
            raise TuneError(f"{student} is not a checkpoint folder (no model_card.json)")
    study = open_study(settings)
    study.set_user_attr("settings", json.loads(json.dumps(asdict(settings))))
    if trials > 0:
        study.optimize(
            lambda trial: run_trial(trial, settings),
            n_trials=trials,
            catch=(FractureEdgeError, RuntimeError, ValueError),
        )
    return study


# ----------------------------------------------------------------------------- results


def parse_enqueue(spec: str) -> dict[str, Any]:
    """``student=NAME,input_size=192,prune_ratio=0.1,mode=int8`` → trial parameters."""
    kinds = {"input_size": int, "prune_ratio": float, "temperature": float, "alpha": float}
    params: dict[str, Any] = {}
    for item in spec.split(","):
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise UsageError(f"bad --enqueue item '{item}'; expected KEY=VALUE")
        key = key.strip()
        if key not in ("student", "mode", *kinds):
            raise UsageError(f"--enqueue knows no parameter '{key}'")
        params[key] = kinds.get(key, str)(value.strip())
    return params


def completed(study) -> list:
    optuna = _optuna()
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


REMEASURED = "remeasured_latency_p50_ms"


def latency(study, trial) -> float:
    """A trial's p50 latency: the quiet re-measurement when there is one, else the search's."""
    remeasured = study.user_attrs.get(REMEASURED, {})
    return float(remeasured.get(str(trial.number), trial.values[1]))


def remeasure(study, repeats: int = 5, runs: int = 100) -> dict[str, float]:
    """Time every completed trial's artifact again (median of ``repeats`` p50s, 1 thread).

    Trials run while the machine does other work; their latency objective is noisy. Run this
    when the machine is quiet, before choosing; the study keeps the result (finished trials
    cannot be edited, so it is a study attribute), and the choice and plot use it.
    """
    from edge_app.latency import tflite_latency

    measured = dict(study.user_attrs.get(REMEASURED, {}))
    for trial in completed(study):
        artifact = Path(trial.user_attrs.get("artifact", ""))
        if not artifact.is_file():
            logger.warning(
                "trial %d: %s is gone; keeping its search latency", trial.number, artifact
            )
            continue
        outputs = trial.user_attrs.get("outputs")
        p50s = [
            tflite_latency(artifact, outputs, threads=1, runs=runs).p50_ms for _ in range(repeats)
        ]
        measured[str(trial.number)] = float(np.median(p50s))
    study.set_user_attr(REMEASURED, measured)
    return measured


def pareto_front(study) -> list:
    """Non-dominated completed trials on (AUROC ↑, latency ↓, size ↓), with the re-measured
    latency where there is one (Optuna's ``best_trials`` only knows the search's values)."""
    trials = completed(study)
    points = {t.number: (-t.values[0], latency(study, t), t.values[2]) for t in trials}

    def dominates(a, b):
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    return [
        t for t in trials if not any(dominates(points[o.number], points[t.number]) for o in trials)
    ]


def select(study, max_latency_ms: float | None, max_size_mb: float | None):
    """The completed trial with the best validation AUROC that meets the constraints."""
    feasible = [
        trial
        for trial in completed(study)
        if (max_latency_ms is None or latency(study, trial) <= max_latency_ms)
        and (max_size_mb is None or trial.values[2] <= max_size_mb)
    ]
    if not feasible:
        raise TuneError(
            f"none of {len(completed(study))} completed trials meets latency ≤ {max_latency_ms} "
            f"ms and size ≤ {max_size_mb} MB"
        )
    return max(feasible, key=lambda t: (t.values[0], -latency(study, t), -t.values[2]))


def trials_table(study) -> list[dict[str, Any]]:
    pareto = {trial.number for trial in pareto_front(study)}
    rows = []
    for trial in completed(study):
        rows.append(
            {
                "trial": trial.number,
                **trial.params,
                "val_auroc": round(trial.values[0], 4),
                "latency_p50_ms": round(trial.values[1], 3),
                "latency_remeasured_ms": round(latency(study, trial), 3),
                "size_mb": round(trial.values[2], 3),
                "pareto": trial.number in pareto,
                "worker": trial.user_attrs.get("worker"),
            }
        )
    return rows


def teacher_references(logits_csv: str | Path | None) -> dict[str, float]:
    """Validation AUROC of every ``teacher_*`` column of a logits CSV (for the plot)."""
    if not logits_csv:
        return {}
    from train.evaluate import load_logits_csv
    from train.metrics import auroc

    rows, logits = load_logits_csv(logits_csv)
    val = np.array([row.split == "val" for row in rows])
    labels = np.array([row.label for row in rows])[val]
    return {
        name: float(auroc(labels, values[val]))
        for name, values in logits.items()
        if name.startswith("teacher_") and not np.isnan(values[val]).any()
    }


def plot_pareto(study, path: Path, teachers: dict[str, float] | None = None, chosen=None) -> Path:
    """AUROC vs p50 latency; marker area ∝ file size; the Pareto front joined; teachers as
    horizontal lines (their validation AUROC; they are not on the latency axis)."""
    from train.plotting import new_figure, save_figure

    trials = completed(study)
    # The line: the front in the plot's own two dimensions (the best AUROC at each latency).
    pareto, best = [], -1.0
    for trial in sorted(trials, key=lambda t: (latency(study, t), -t.values[0])):
        if trial.values[0] > best:
            pareto.append(trial)
            best = trial.values[0]
    figure = new_figure(7, 4.8, "plot the Pareto front")
    axes = figure.add_subplot()
    modes = sorted({t.params["mode"] for t in trials})
    colours = dict(
        zip(modes, ("#2e86c1", "#e67e22", "#27ae60", "#8e44ad", "#c0392b"), strict=False)
    )
    for mode in modes:
        chosen_trials = [t for t in trials if t.params["mode"] == mode]
        axes.scatter(
            [latency(study, t) for t in chosen_trials],
            [t.values[0] for t in chosen_trials],
            s=[30 + 40 * t.values[2] for t in chosen_trials],
            alpha=0.6,
            color=colours[mode],
            label=mode,
            edgecolors="black",
            linewidths=0.5,
        )
    if pareto:
        axes.plot(
            [latency(study, t) for t in pareto],
            [t.values[0] for t in pareto],
            "k--",
            lw=0.8,
            label="Pareto front (AUROC vs latency)",
        )
    if chosen is not None:
        axes.scatter(
            [latency(study, chosen)],
            [chosen.values[0]],
            marker="*",
            s=260,
            color="gold",
            edgecolors="black",
            zorder=5,
            label=f"shipped (trial {chosen.number})",
        )
    for name, value in sorted((teachers or {}).items()):
        axes.axhline(value, color="grey", ls=":", lw=1)
        axes.annotate(
            name.removeprefix("teacher_"),
            (0.01, value),
            xycoords=("axes fraction", "data"),
            fontsize=7,
            color="dimgrey",
            va="bottom",
        )
    for trial in trials:
        axes.annotate(
            str(trial.number),
            (latency(study, trial), trial.values[0]),
            fontsize=6,
            xytext=(3, 3),
            textcoords="offset points",
        )
    axes.set_xlabel("LiteRT p50 latency, 1 thread (ms)")
    axes.set_ylabel("validation AUROC of the .tflite file")
    axes.set_title(f"Compression search '{study.study_name}' (marker area ∝ MB)")
    axes.legend(fontsize=7, loc="lower right")
    return save_figure(figure, path)


def write_report(study, out: Path, teachers: dict[str, float], chosen=None) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    rows = trials_table(study)
    (out / "trials.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        f"# Compression search `{study.study_name}`",
        "",
        "Objectives measured on each exported `.tflite` file: validation AUROC (all validation "
        "images), LiteRT p50 latency of one invoke on 1 thread, file size.",
        "",
    ]
    if rows:
        keys = list(rows[0])
        lines += ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
        for row in sorted(rows, key=lambda r: -r["val_auroc"]):
            lines.append("| " + " | ".join(str(row[key]) for key in keys) + " |")
    if chosen is not None:
        lines += ["", f"Chosen: trial {chosen.number} ({chosen.params})."]
    (out / "trials.md").write_text("\n".join(lines) + "\n")
    return {
        "json": out / "trials.json",
        "markdown": out / "trials.md",
        "plot": plot_pareto(study, out / "pareto.png", teachers, chosen),
    }
