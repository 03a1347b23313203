"""``fracture-edge bench``: every artifact on the same images — accuracy, size, latency, memory
and heatmaps — in one Markdown/JSON report with plots (see docs/benchmarks.md).

Artifacts are named by SPECs:

- ``tflite:BUNDLE_DIR``: a bundle through LiteRT, as :class:`edge_app.runtime.FractureDetector`
  runs it (fp32, fp16 and int8 are simply different bundles);
- ``torch:CHECKPOINT_DIR``: the checkpoint in torch fp32 on the CPU, plus a second row on CUDA
  when ``torch.cuda.is_available()``;
- ``onnx:CHECKPOINT_DIR``: the checkpoint exported to ONNX (a temporary file) under ONNX Runtime;
- ``arch:NAME@SIZE``: ``train.models.create_model(NAME)`` with random weights, latency and size
  only (teachers whose weights stay on the GPU machine; ``custom_cnn`` is the seed's floor);
  ``onnx:arch:NAME@SIZE`` the same architecture exported to ONNX, under ONNX Runtime;
- ``logits:CSV:COLUMN``: accuracy only, from per-image logits of a GPU run;
- ``default``: the default list (every ``models/*/model_card.json`` bundle, the five student
  checkpoints, ``arch:`` and ``onnx:arch:`` rows of VGG16-BN and ResNet50 at 224,
  ``arch:custom_cnn@224`` and the four teacher logits columns); other SPECs may follow it.

Every artifact with weights scores the same images, read from the original files with
:func:`edge_app.radiograph.load_radiograph` and prepared by the shared
:func:`edge_app.preprocess.preprocess` with the artifact's own card. On the FracAtlas split the
temperature and both operating points are chosen on validation and everything is measured on
test (:func:`train.evaluate.evaluate_scores`). On an external folder (``--external``) there is
no validation split, so each artifact's own card thresholds and temperature are used, and each
row also gets ``site`` (:mod:`benchmarks.external_site`): AUROC≈ with unannotated films as
negatives and a CI bootstrapped over ``--group-column`` groups, flag rates of fracture and
unannotated films at both points, and the pointing game against padded boxes.

With ``--shifts`` every artifact with weights also scores the measured images under each
acquisition shift of :mod:`benchmarks.shifts` (:mod:`benchmarks.yardstick`); on FracAtlas the
accuracy section also gives the test AUROC on films without surgical hardware.
``--no-latency`` skips the latency children (a quick accuracy or shift run).

Latency and peak RSS are measured per artifact in a child process
(:mod:`benchmarks.latency_children`), so the peak belongs to that artifact and its runtime
alone, and TensorFlow never shares a process with torchvision (LiteRT comes from
``ai_edge_litert``).

This module holds the run (:class:`BenchConfig`, the rows, :func:`run_bench`); the parts live in
:mod:`benchmarks.specs`, :mod:`benchmarks.images`, :mod:`benchmarks.scorers`,
:mod:`benchmarks.scoring`, :mod:`benchmarks.accuracy`, :mod:`benchmarks.latency_children` and
:mod:`benchmarks.report`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.accuracy import card_accuracy, logits_of_images, split_accuracy
from benchmarks.images import (
    DEFAULT_DATA,
    DEFAULT_SPLIT,
    fracatlas_images,
    read_external_labels,
    stratified_subset,
)
from benchmarks.latency_children import (
    environment,
    run_latency_child,
    seeded_architecture,
    speedups,
)
from benchmarks.scorers import OnnxScorer, TFLiteScorer, TorchScorer, heatmap_reference
from benchmarks.scoring import score_images
from benchmarks.shifts import DEFAULT_SHIFT_SEED
from benchmarks.specs import ArtifactSpec, BenchError, resolve_specs
from edge_app.card import REPORT_FORMAT
from edge_app.site_calibration import DEFAULT_MIN_FRACTURED, DEFAULT_MIN_UNFRACTURED
from train.split_scoring import SplitImage

logger = logging.getLogger(__name__)

SPEEDUP_REFERENCE = "arch:vgg16_bn@224"
NO_WEIGHTS = "n/a (no weights here)"
GPU_ONLY = "n/a (GPU run)"
#: Keys every row of report.json carries (None, with a ``*_note``, where they do not apply).
ROW_KEYS = (
    "id",
    "name",
    "kind",
    "format",
    "device",
    "source",
    "teacher",
    "file_mb",
    "file_note",
    "accuracy",
    "accuracy_note",
    "latency",
    "latency_note",
    "peak_rss_mb",
    "rss_after_import_mb",
    "load_s",
    "speedup",
    "speedup_p50",
    "speedup_note",
    "heatmap",
    "heatmap_note",
    "shifts",
    "shifts_note",
    "site",
    "site_note",
    "logits",
    "errors",
)


# --------------------------------------------------------------------------- configuration


@dataclass
class BenchConfig:
    """Everything one run depends on; saved in report.json."""

    models: list[str] | None = None
    out: str = ""
    split: str = str(DEFAULT_SPLIT)
    data: str = str(DEFAULT_DATA)
    external: str | None = None
    labels: str | None = None
    group_column: str | None = None  # None: ``source`` when the labels CSV has it, else none
    limit: int | None = None
    repeats: int = 5
    threads: list[int] = field(default_factory=lambda: [1, 2])
    runs: int = 50
    warmup: int = 10
    heatmap_reference: str | None = None
    heatmap_images: int = 100
    speedup_reference: str = SPEEDUP_REFERENCE
    resamples: int = 2000
    seed: int = 0
    note: str = ""
    cuda: bool = True
    latency_only: bool = False
    latency: bool = True
    shifts: bool = False
    shift_seed: int = DEFAULT_SHIFT_SEED
    tta: bool = False  # TFLite rows' accuracy with horizontal-flip TTA (two invokes per image)
    calibrate: int | None = None  # --calibrate K: site calibration on K films, over folds
    calibration_folds: int = 10
    min_fractured: int = DEFAULT_MIN_FRACTURED
    min_unfractured: int = DEFAULT_MIN_UNFRACTURED
    child_timeout_s: float = 3600.0

    def __post_init__(self) -> None:
        if not self.out:
            self.out = str(Path("benchmarks", "reports", time.strftime("%Y-%m-%d")))
        if (self.external is None) != (self.labels is None):
            raise BenchError("--external DIR and --labels CSV go together")
        if self.group_column is not None and not self.external:
            raise BenchError("--group-column names a column of --labels: add --external DIR")
        if self.repeats < 1 or self.runs < 1 or self.warmup < 0:
            raise BenchError("--repeats and --runs must be ≥ 1 and --warmup ≥ 0")
        if not self.threads or min(self.threads) < 1:
            raise BenchError(f"--threads takes positive integers, got {self.threads}")
        if self.heatmap_images < 0:
            raise BenchError("--heatmap-images must be ≥ 0")
        if self.latency_only and self.external:
            raise BenchError("--latency-only reads no images: leave out --external and --labels")
        if self.latency_only and not self.latency:
            raise BenchError("--latency-only and --no-latency leave nothing to measure")
        if self.latency_only and self.shifts:
            raise BenchError("--shifts scores images; --latency-only reads none: drop one")
        if self.calibrate is not None and not self.external:
            raise BenchError("--calibrate K calibrates to an external site: add --external DIR")
        if self.calibrate is not None and (self.calibrate < 1 or self.calibration_folds < 1):
            raise BenchError("--calibrate and --calibration-folds must be at least 1")
        self.threads = list(dict.fromkeys(int(n) for n in self.threads))


# --------------------------------------------------------------------------- rows


def new_row(spec: ArtifactSpec, device: str = "cpu") -> dict[str, Any]:
    """A row with every :data:`ROW_KEYS` key; ``id`` is the SPEC (plus ``@cuda``)."""
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row.update(
        id=spec.text + ("@cuda" if device == "cuda" else ""),
        kind=spec.kind,
        device=device if spec.kind != "logits" else "gpu (logits file)",
        source=spec.target,
        errors=[],
        teacher=spec.random_weights or (spec.column or "").startswith("teacher"),
    )
    if spec.random_weights:
        row.update(
            name=f"{spec.target}@{spec.input_size} (random weights)",
            format=f"{'onnx' if spec.kind == 'onnx' else 'torch'} fp32, architecture only",
            accuracy_note=NO_WEIGHTS,
            heatmap_note=NO_WEIGHTS,
            site_note=NO_WEIGHTS,
            file_note="fp32 parameter bytes",
        )
    elif spec.kind == "logits":
        row.update(
            name=spec.column,
            format="logits from the GPU run",
            file_note=GPU_ONLY,
            latency_note=GPU_ONLY,
            speedup_note=GPU_ONLY,
            heatmap_note=GPU_ONLY,
        )
    return row


def plan_rows(specs: Sequence[ArtifactSpec], cuda: bool) -> list[tuple[ArtifactSpec, dict]]:
    """One row per spec, and a second (CUDA) row per torch or arch spec when CUDA is there."""
    planned = []
    for spec in specs:
        planned.append((spec, new_row(spec)))
        if spec.kind in TORCH_KINDS and cuda:
            planned.append((spec, new_row(spec, "cuda")))
    return planned


TORCH_KINDS = ("torch", "arch")


def cuda_available(specs: Sequence[ArtifactSpec], allowed: bool = True) -> bool:
    if not allowed or not any(spec.kind in TORCH_KINDS for spec in specs):
        return False
    import torch

    return bool(torch.cuda.is_available())


def latency_job(spec: ArtifactSpec, row: dict, config: BenchConfig, onnx_path: Path | None):
    """The JSON a latency child reads; paths are absolute (the child runs in the repo root)."""
    target = spec.target if spec.random_weights else str(Path(spec.target).resolve())
    return {
        "kind": spec.kind,
        "target": str(onnx_path.resolve()) if spec.kind == "onnx" and onnx_path else target,
        "checkpoint": target if spec.kind == "onnx" else None,
        "input_size": spec.input_size,
        "device": row["device"],
        # torch's CPU thread count does not change a CUDA call: time it once
        "threads": config.threads[:1] if row["device"] == "cuda" else config.threads,
        "repeats": config.repeats,
        "runs": config.runs,
        "warmup": config.warmup,
    }


# --------------------------------------------------------------------------- the run


def _images_for(config: BenchConfig) -> tuple[list[SplitImage], dict[str, Any]]:
    if config.external:
        from edge_app.labelled_folder import group_column_of

        group_column = group_column_of(config.labels, config.group_column)
        images = read_external_labels(config.external, config.labels, group_column)
        data = {
            "mode": "external",
            "external": config.external,
            "labels": config.labels,
            "group_column": group_column,
        }
    else:
        from train.splits import read_split, split_counts, split_id

        images = fracatlas_images(config.split, config.data)
        split_rows = read_split(config.split)
        data = {
            "mode": "fracatlas",
            "split": config.split,
            "split_id": split_id(split_rows),
            "split_counts": split_counts(split_rows),
            "data": config.data,
        }
    available = len(images)
    if config.limit:
        images = stratified_subset(images, config.limit, config.seed)
    data.update(limit=config.limit, images_available=available, images_used=len(images))
    return images, data


LATENCY_ONLY = "not measured (--latency-only)"


def _latency_only(specs: Sequence[ArtifactSpec]) -> tuple[list, dict[str, Any]]:
    """No images: size, latency and memory only (a phone, a GPU box without the data)."""
    logits = [spec.text for spec in specs if spec.kind == "logits"]
    if logits:
        raise BenchError(
            f"--latency-only: {', '.join(logits)} only hold logits, which have no latency; "
            "leave them out"
        )
    return [], {"mode": "latency-only", "limit": None, "images_available": 0, "images_used": 0}


def _heatmap_indices(images: Sequence[SplitImage], cap: int) -> set[int]:
    eligible = [
        i for i, image in enumerate(images) if image.boxes and image.split in ("test", "external")
    ]
    return set(eligible[:cap])


def _build_scorer(spec: ArtifactSpec, row: dict, config: BenchConfig, work: Path):
    """The parent's scorer of one row; fills the row's name, format and file size."""
    if spec.kind == "tflite":
        scorer = TFLiteScorer(spec.target, threads=config.threads[0], tta=config.tta)
        scorer.reference, reason = heatmap_reference(scorer.card, config.heatmap_reference)
        if reason:
            row["heatmap_note"] = f"CAM agreement skipped: {reason}"
        quantization = scorer.card.get("quantization", "?")
        row.update(name=scorer.detector.bundle.name, format=f"tflite {quantization}")
    elif spec.kind == "torch":
        scorer = TorchScorer(spec.target, row["device"])
        if row["device"] != "cpu":
            scorer.heatmap_kind = None
            row["heatmap_note"] = "see the CPU row (same weights)"
        row.update(name=scorer.card.get("name") or Path(spec.target).name, format="torch fp32")
    else:
        scorer = OnnxScorer(spec.target, work / f"onnx-{len(list(work.iterdir()))}")
        row.update(name=scorer.card.get("name") or Path(spec.target).name, format="onnx fp32")
    row["file_mb"] = round(scorer.file_bytes / 1e6, 3)
    return scorer


def _architecture_onnx(spec: ArtifactSpec, work: Path) -> Path:
    """The arch rows' seeded architecture exported as the checkpoints are (``DeployableNet``,
    opset 17): a teacher under ONNX Runtime without its weights, whose latency does not depend
    on them."""
    from compress.export import DeployableNet, export_onnx

    work.mkdir(parents=True, exist_ok=True)
    model = seeded_architecture(spec.target)
    return export_onnx(DeployableNet(model), work / "model.onnx", spec.input_size)


def _unique_names(rows: Sequence[dict]) -> None:
    """Tell apart rows of one artifact: ``NAME [onnx]``, ``NAME [cuda]``, then ``#2``…"""
    seen: set[str] = set()
    for row in rows:
        name = row["name"]
        if row["device"] == "cuda":
            name += " [cuda]"
        if name in seen:
            name += f" [{row['kind']}]"
        base, count = name, 1
        while name in seen:
            count += 1
            name = f"{base} #{count}"
        seen.add(name)
        row["name"] = name


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Score, time and report every artifact; returns report.json's content (also written)."""
    from benchmarks.report import write_report

    started = time.time()
    specs = resolve_specs(config.models, external=bool(config.external))
    if config.latency_only:
        images, data = _latency_only(specs)
    else:
        images, data = _images_for(config)
    if config.calibrate:
        from benchmarks.site_calibration import check_plan

        check_plan([image.label for image in images], config)  # refuse before scoring
    env = environment(config.note)
    planned = plan_rows(specs, cuda_available(specs, config.cuda))
    rows = [row for _, row in planned]
    with tempfile.TemporaryDirectory(prefix="fracture-edge-bench-") as work:
        scorers, onnx_paths = _prepare_scorers(planned, config, Path(work))
        _unique_names(rows)
        if config.latency_only:
            for row in rows:
                row["accuracy_note"] = row["heatmap_note"] = LATENCY_ONLY
        else:
            _score_and_evaluate(planned, scorers, images, config)
        site_calibration = _site_calibration(rows, scorers, images, config)
        if config.shifts:
            _score_shifts(planned, scorers, images, config)
        scorers.clear()  # free the parent's models before the children measure
        if config.latency:
            measure_interleaved(planned, config, onnx_paths)
        else:
            _skip_latency(rows)
    reference = speedups(rows, config.speedup_reference)
    env["load_average_end"] = (
        [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    )
    report = {
        "format": REPORT_FORMAT,
        "format_version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_s": None,
        "config": dataclasses.asdict(config),
        "data": data,
        "environment": env,
        "speedup_reference": reference,
        "shifts": _shift_definitions(config),
        "images": [
            {
                "file": i.file,
                "split": i.split,
                "label": i.label,
                "boxes": [list(b) for b in i.boxes],
                "group": i.group,
            }
            for i in images
        ],
        "rows": rows,
        "site_calibration": site_calibration,
        "errors": [f"{row['id']}: {error}" for row in rows for error in row["errors"]],
    }
    report["wall_s"] = round(time.time() - started, 1)
    write_report(report, Path(config.out))
    return report


def _prepare_scorers(planned, config: BenchConfig, work: Path):
    scorers, onnx_paths = {}, {}
    for spec, row in planned:
        if spec.kind == "onnx" and spec.random_weights:
            onnx_paths[row["id"]] = _architecture_onnx(spec, work / f"arch-{len(onnx_paths)}")
            row["file_mb"] = round(onnx_paths[row["id"]].stat().st_size / 1e6, 3)
            row["file_note"] = "the exported .onnx (random weights)"
        elif spec.kind in ("tflite", "torch", "onnx"):
            scorers[row["id"]] = _build_scorer(spec, row, config, work)
            if spec.kind == "onnx":
                onnx_paths[row["id"]] = scorers[row["id"]].path
    return scorers, onnx_paths


def _score_and_evaluate(planned, scorers, images, config: BenchConfig) -> None:
    """Every row's per-image logits, accuracy and heatmap scores (not its latency)."""
    indices = _heatmap_indices(images, config.heatmap_images)
    logits, heatmaps = score_images(images, scorers, indices) if scorers else ({}, {})
    subgroups = None
    if not config.external:
        from train.evaluate import subgroups_from_fracatlas

        test_files = [image.file for image in images if image.split == "test"]
        every = subgroups_from_fracatlas(test_files, config.data)
        subgroups = {name: every[name] for name in ("region", "hardware")}
    for spec, row in planned:
        if spec.random_weights:
            continue
        values = logits_of_images(spec, images) if spec.kind == "logits" else logits[row["id"]]
        row["logits"] = [round(float(v), 5) for v in values]
        if config.external:
            scorer = scorers[row["id"]]
            if not {"doubt", "fracture"} <= set(scorer.thresholds):
                row["accuracy_note"] = "the card has no operating points: AUROC only"
            row["accuracy"] = card_accuracy(
                [image.label for image in images],
                values,
                scorer.temperature,
                scorer.thresholds,
                config.resamples,
                config.seed,
            )
        else:
            row["accuracy"] = split_accuracy(
                images, values, subgroups, config.resamples, config.seed
            )
        if row["id"] in heatmaps:
            row["heatmap"] = heatmaps[row["id"]].summary()
        elif spec.kind != "logits" and row["device"] == "cpu" and not config.heatmap_images:
            row["heatmap_note"] = "not scored (--heatmap-images 0)"
        elif spec.kind != "logits" and row["device"] == "cpu":
            where = "labelled external" if config.external else "test"
            row["heatmap_note"] = f"no {where} image with boxes in this run"
        if config.external:
            row["site"] = _site(images, values, scorers[row["id"]], row["heatmap"], config)


def _site(images, logits, scorer, heatmap: dict | None, config: BenchConfig) -> dict:
    """The external site's numbers of one row (:mod:`benchmarks.external_site`)."""
    from benchmarks.external_site import site_metrics

    return site_metrics(
        images,
        logits,
        scorer.temperature,
        scorer.thresholds,
        config.resamples,
        config.seed,
        heatmap,
    )


def _site_calibration(rows, scorers, images, config: BenchConfig) -> dict | None:
    """``--calibrate K``: before/after site calibration per row (benchmarks/site_calibration)."""
    if not config.calibrate:
        return None
    from benchmarks.site_calibration import bench_site_calibration

    return bench_site_calibration(rows, scorers, images, config)


NO_LATENCY = "not measured (--no-latency)"


def _skip_latency(rows: Sequence[dict]) -> None:
    for row in rows:
        if row["kind"] != "logits":  # their "n/a (GPU run)" note stays
            row["latency_note"] = NO_LATENCY


def _shift_definitions(config: BenchConfig) -> dict[str, Any] | None:
    from benchmarks.yardstick import shift_definitions

    return shift_definitions(config.shift_seed) if config.shifts else None


def _score_shifts(planned, scorers, images, config: BenchConfig) -> None:
    """Every row with weights: AUROC clean and under each acquisition shift (test images)."""
    from benchmarks.yardstick import measured_indices, score_shifts, shift_table

    chosen = [images[index] for index in measured_indices(images)]
    logits = score_shifts(chosen, scorers, config.shift_seed) if scorers else {}
    labels = np.asarray([image.label for image in chosen])
    for spec, row in planned:
        if row["id"] in logits:
            accuracy = row["accuracy"] or {}
            thresholds = {
                name: point["probability"]
                for name, point in (accuracy.get("operating_points") or {}).items()
            }
            row["shifts"] = shift_table(
                labels,
                logits[row["id"]],
                config.resamples,
                config.seed,
                temperature=accuracy.get("temperature") or 1.0,
                thresholds=thresholds,
            )
        elif spec.kind == "logits":
            row["shifts_note"] = "n/a (logits of a GPU run cannot be re-scored under shifts)"
        elif spec.random_weights:
            row["shifts_note"] = NO_WEIGHTS


def _latency_once(spec: ArtifactSpec, row: dict, config: BenchConfig, onnx_path) -> dict | None:
    """One child, one repeat of every thread count; None (and the error noted) on failure."""
    job = {**latency_job(spec, row, config, onnx_path), "repeats": 1}
    started = time.perf_counter()
    try:
        result = run_latency_child(job, config.child_timeout_s)
    except BenchError as error:
        logger.warning("%s", error)
        row["errors"].append(str(error))
        return None
    logger.info("latency of %s: child done in %.1f s", row["id"], time.perf_counter() - started)
    return result


def measure_interleaved(planned, config: BenchConfig, onnx_paths: dict) -> None:
    """``config.repeats`` rounds; in each round every artifact runs once, in its own child.

    Interleaving puts every artifact's k-th repeat next to the reference's k-th repeat in time,
    so a slow drift in the machine's load hits both; :func:`speedups` takes the median of the
    per-round ratios. Latency is the median over rounds of each round's p50.
    """
    results: dict[str, list[dict]] = {row["id"]: [] for _, row in planned}
    for round_index in range(config.repeats):
        logger.info("latency round %d of %d", round_index + 1, config.repeats)
        for spec, row in planned:
            if spec.kind == "logits":
                continue
            result = _latency_once(spec, row, config, onnx_paths.get(row["id"]))
            if result is not None:
                results[row["id"]].append(result)
    for spec, row in planned:
        if spec.kind != "logits":
            _merge_latency(spec, row, results[row["id"]])


def _merge_latency(spec: ArtifactSpec, row: dict, results: list[dict]) -> None:
    if not results:
        row["latency_note"] = "failed (see errors)"
        return
    latency = {}
    for threads in results[0]["latency"]:
        rounds = [r["latency"][threads]["repeats"][0] for r in results if threads in r["latency"]]
        latency[threads] = {
            "p50_ms": round(statistics.median(r["p50_ms"] for r in rounds), 4),
            "p95_ms": round(statistics.median(r["p95_ms"] for r in rounds), 4),
            "min_ms": round(min(r["min_ms"] for r in rounds), 4),
            "repeats": rounds,
        }
    row.update(
        latency=latency,
        peak_rss_mb=max(r["peak_rss_mb"] for r in results),
        rss_after_import_mb=statistics.median(r["rss_after_import_mb"] for r in results),
        load_s=statistics.median(r["load_s"] for r in results),
    )
    if spec.kind == "arch":
        row["file_mb"] = round(results[0]["parameter_bytes"] / 1e6, 3)


if __name__ == "__main__":  # a latency child (benchmarks.latency_children.CHILD_COMMAND)
    from benchmarks.latency_children import child_main

    if len(sys.argv) == 3 and sys.argv[1] == "--latency-child":
        sys.exit(child_main(sys.argv[2]))
    sys.exit("usage: python -m benchmarks.bench --latency-child JOB.json (use fracture-edge bench)")
