"""Evaluation of a model's per-image logits: operating points, calibration, subgroups, plots.

Everything that is *chosen* (the temperature, the two operating thresholds) is chosen on the
validation rows; the test rows are only measured. The two operating points are the ones a model
card carries:

- ``doubt``: the highest threshold reaching the target sensitivity on validation (default 95 %),
  below which the app may call an image clear;
- ``fracture``: the threshold maximising Youden's J on validation.

Both are stored as fracture probabilities *after* temperature scaling, which is what the app
compares against, plus the raw logit that sets each of them.

    fracture-edge evaluate --logits models/checkpoints/RUN/logits.csv --out runs/eval-RUN
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edge_app.errors import InputPathError, LogitsFileError
from train.metrics import (
    apply_temperature,
    auprc,
    auroc,
    balanced_accuracy,
    binary_nll,
    bootstrap_auroc_ci,
    calibration_bins,
    choose_operating_points,
    cohen_kappa,
    confusion_matrix,
    expected_calibration_error,
    fit_temperature,
    precision_recall_curve,
    roc_curve,
    sensitivity_specificity,
    sigmoid,
)
from train.plotting import new_figure, save_figure

logger = logging.getLogger(__name__)

OPERATING_POINTS = ("doubt", "fracture")
LOGITS_COLUMNS = ("file", "split", "label")
SUBGROUP_UNKNOWN = "unknown"


class LogitsRow(NamedTuple):
    file: str
    split: str
    label: int


# --------------------------------------------------------------------------- inputs


def load_logits_csv(path: str | Path) -> tuple[list[LogitsRow], dict[str, np.ndarray]]:
    """Read ``file,split,label,<model>,...`` (a training run's ``logits.csv``).

    Returns the rows and one float64 logit vector per model column, in file order. Empty cells
    read as NaN (a model that did not score an image); anything else unparsable is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise InputPathError(f"logits file {path} does not exist")
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header[:3]) != LOGITS_COLUMNS:
            raise LogitsFileError(
                f"{path} does not start with the columns file,split,label (found {header}); "
                "write it with `fracture-edge logits` or add that header."
            )
        models = header[3:]
        if not models:
            raise LogitsFileError(f"{path} has no model columns after file,split,label")
        rows, values = [], []
        for line_number, cells in enumerate(reader, start=2):
            if not cells:
                continue
            if len(cells) != len(header):
                raise LogitsFileError(
                    f"{path}:{line_number}: {len(cells)} cells, expected {len(header)}"
                )
            rows.append(LogitsRow(cells[0], cells[1], _label(cells[2], path, line_number)))
            values.append([_logit(cell, path, line_number) for cell in cells[3:]])
    matrix = np.asarray(values, dtype=np.float64).reshape(len(rows), len(models))
    return rows, {name: matrix[:, column] for column, name in enumerate(models)}


def _label(cell: str, path: Path, line_number: int) -> int:
    if cell.strip() not in ("0", "1"):
        raise LogitsFileError(f"{path}:{line_number}: label {cell!r} is not 0 or 1")
    return int(cell)


def _logit(cell: str, path: Path, line_number: int) -> float:
    if not cell.strip():
        return math.nan
    try:
        return float(cell)
    except ValueError as error:
        raise LogitsFileError(f"{path}:{line_number}: logit {cell!r} is not a number") from error


def subgroups_from_fracatlas(files: Sequence[str], root: str | Path) -> dict[str, np.ndarray]:
    """``region``, ``hardware`` ("yes"/"no") and ``multiscan`` ("yes"/"no") per file name.

    Values come from :func:`train.datasets.iter_fracatlas` metadata; a file missing from the
    data set (or from its ``dataset.csv``) gets ``"unknown"``.
    """
    from train.datasets import iter_fracatlas

    metadata = {sample.path.name: sample.metadata for sample in iter_fracatlas(root)}
    missing = [name for name in files if name not in metadata]
    if missing:
        logger.warning(
            "%d of %d files are not in %s (e.g. %s); their subgroups read 'unknown'",
            len(missing),
            len(files),
            root,
            missing[0],
        )

    def flag(value: Any) -> str:
        return SUBGROUP_UNKNOWN if value is None else ("yes" if int(value) else "no")

    columns: dict[str, list[str]] = {"region": [], "hardware": [], "multiscan": []}
    for name in files:
        entry = metadata.get(name, {})
        columns["region"].append(entry.get("region") or SUBGROUP_UNKNOWN)
        columns["hardware"].append(flag(entry.get("hardware")))
        columns["multiscan"].append(flag(entry.get("multiscan")))
    return {key: np.asarray(values, dtype=str) for key, values in columns.items()}


def logits_of_split(
    rows: Sequence[LogitsRow], logits: np.ndarray, split: str, model: str = "model"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(files, labels, logits)`` of the rows in ``split``; NaN logits there are an error."""
    chosen = np.asarray([row.split == split for row in rows], dtype=bool)
    if not chosen.any():
        found = sorted({row.split for row in rows})
        raise LogitsFileError(f"no '{split}' rows in the logits file (splits found: {found})")
    values = np.asarray(logits, dtype=np.float64)[chosen]
    if np.isnan(values).any():
        raise LogitsFileError(
            f"model {model} has {int(np.isnan(values).sum())} empty/NaN logits on its "
            f"'{split}' rows; evaluate it only once it has scored every image"
        )
    files = np.asarray([row.file for row in rows], dtype=object)[chosen]
    labels = np.asarray([row.label for row in rows], dtype=np.int64)[chosen]
    return files, labels, values


# --------------------------------------------------------------------------- report


def _number(value: float, digits: int = 4) -> float | None:
    """A JSON-able metric: rounded, NaN → None."""
    value = float(value)
    return None if math.isnan(value) else round(value, digits)


def _interval(bounds: tuple[float, float]) -> list[float | None]:
    return [_number(bound) for bound in bounds]


def _hard_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict:
    predictions = probabilities >= threshold
    sensitivity, specificity = sensitivity_specificity(labels, probabilities, threshold)
    return {
        "sensitivity": _number(sensitivity),
        "specificity": _number(specificity),
        "cohen_kappa": _number(cohen_kappa(labels, predictions)),
        "balanced_accuracy": _number(balanced_accuracy(labels, predictions)),
        "confusion_matrix": confusion_matrix(labels, predictions).tolist(),
    }


def subgroup_metrics(
    labels: np.ndarray,
    logits: np.ndarray,
    probabilities: np.ndarray,
    groups: np.ndarray,
    thresholds: Mapping[str, float],
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, dict]:
    """AUROC (+ bootstrap CI), size, positives and sensitivity/specificity per group value.

    A group holding one class gets ``auroc: None`` (and None for the rate it cannot have).
    """
    groups = np.asarray(groups).astype(str)
    if groups.shape != labels.shape:
        raise ValueError(
            f"subgroup array {groups.shape} does not match the test rows {labels.shape}"
        )
    result = {}
    for value in sorted(set(groups.tolist())):
        members = groups == value
        group_labels, group_logits = labels[members], logits[members]
        entry: dict[str, Any] = {
            "n": int(members.sum()),
            "fractured": int(group_labels.sum()),
            "auroc": _number(auroc(group_labels, group_logits)),
            "auroc_ci95": [None, None],
        }
        if entry["auroc"] is not None:
            entry["auroc_ci95"] = _interval(
                bootstrap_auroc_ci(group_labels, group_logits, resamples=resamples, seed=seed)
            )
        for name, threshold in thresholds.items():
            sensitivity, specificity = sensitivity_specificity(
                group_labels, probabilities[members], threshold
            )
            entry[f"sensitivity_at_{name}"] = _number(sensitivity)
            entry[f"specificity_at_{name}"] = _number(specificity)
        result[value] = entry
    return result


def evaluate_scores(
    labels_val: np.ndarray,
    logits_val: np.ndarray,
    labels_test: np.ndarray,
    logits_test: np.ndarray,
    subgroups: Mapping[str, np.ndarray] | None = None,
    sensitivity_target: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    bins: int = 15,
) -> dict:
    """A JSON-able report: choices made on validation, measurements on test.

    ``subgroups`` maps a name (``"region"``) to one string per *test* row. Ranking metrics use
    the logits (sigmoid saturates to ties near 0 and 1); thresholded ones the calibrated
    probabilities, as the app will.
    """
    labels_val, labels_test = np.asarray(labels_val), np.asarray(labels_test)
    logits_val = np.asarray(logits_val, dtype=np.float64)
    logits_test = np.asarray(logits_test, dtype=np.float64)
    for name, values in (("validation", logits_val), ("test", logits_test)):
        if np.isnan(values).any():
            raise ValueError(
                f"{int(np.isnan(values).sum())} {name} logits are NaN; every image must be "
                "scored before it is evaluated"
            )
    if not 0 < sensitivity_target <= 1:
        raise ValueError(f"sensitivity_target must lie in (0, 1], got {sensitivity_target}")
    temperature = fit_temperature(labels_val, logits_val)
    probabilities_val = apply_temperature(logits_val, temperature)
    probabilities_test = apply_temperature(logits_test, temperature)
    thresholds = choose_operating_points(labels_val, probabilities_val, sensitivity_target)

    operating_points = {}
    for name, threshold in thresholds.items():
        val_sensitivity, val_specificity = sensitivity_specificity(
            labels_val, probabilities_val, threshold
        )
        operating_points[name] = {
            "probability": float(threshold),
            "raw_logit": float(logits_val[probabilities_val >= threshold].min()),
            "val": {
                "sensitivity": _number(val_sensitivity),
                "specificity": _number(val_specificity),
            },
            "test": _hard_metrics(labels_test, probabilities_test, threshold),
        }
    operating_points["doubt"]["rule"] = f"validation sensitivity >= {sensitivity_target}"
    operating_points["fracture"]["rule"] = "validation Youden J maximum"

    report = {
        "counts": {
            "val": {"images": int(labels_val.size), "fractured": int(labels_val.sum())},
            "test": {"images": int(labels_test.size), "fractured": int(labels_test.sum())},
        },
        "sensitivity_target": sensitivity_target,
        "val": {
            "auroc": _number(auroc(labels_val, logits_val)),
            "auroc_ci95": _interval(
                bootstrap_auroc_ci(labels_val, logits_val, resamples=resamples, seed=seed)
            ),
            "auprc": _number(auprc(labels_val, logits_val)),
        },
        "test": {
            "auroc": _number(auroc(labels_test, logits_test)),
            "auroc_ci95": _interval(
                bootstrap_auroc_ci(labels_test, logits_test, resamples=resamples, seed=seed)
            ),
            "auprc": _number(auprc(labels_test, logits_test)),
            "prevalence": _number(labels_test.mean()),
        },
        "calibration": _calibration(
            labels_val, logits_val, labels_test, logits_test, temperature, bins
        ),
        "operating_points": operating_points,
        "bootstrap": {"resamples": resamples, "seed": seed, "unit": "image"},
    }
    if subgroups:
        report["subgroups"] = {
            name: subgroup_metrics(
                labels_test, logits_test, probabilities_test, groups, thresholds, resamples, seed
            )
            for name, groups in subgroups.items()
        }
    return report


def _calibration(labels_val, logits_val, labels_test, logits_test, temperature, bins) -> dict:
    result: dict[str, Any] = {"temperature": round(float(temperature), 4), "bins": bins}
    for split, labels, logits in (
        ("val", labels_val, logits_val),
        ("test", labels_test, logits_test),
    ):
        before, after = sigmoid(logits), apply_temperature(logits, temperature)
        result[f"{split}_ece_before"] = _number(expected_calibration_error(labels, before, bins))
        result[f"{split}_ece_after"] = _number(expected_calibration_error(labels, after, bins))
        result[f"{split}_nll_before"] = _number(binary_nll(labels, logits))
        result[f"{split}_nll_after"] = _number(binary_nll(labels, logits / temperature))
    return result


# --------------------------------------------------------------------------- plots

_COLOURS = {"doubt": "#e67e22", "fracture": "#c0392b", "before": "#7f8c8d", "after": "#2e86c1"}


def _format_ci(interval: Sequence[float | None]) -> str:
    if interval[0] is None:
        return "n/a"
    return f"{interval[0]:.3f}–{interval[1]:.3f}"


def plot_confusion_matrices(report: dict, path: Path, title: str = "") -> Path:
    figure = _figure(8, 3.8)
    for axes, name in zip(figure.subplots(1, 2), OPERATING_POINTS, strict=True):
        point = report["operating_points"][name]
        matrix = np.asarray(point["test"]["confusion_matrix"])
        axes.imshow(matrix, cmap="Blues", vmin=0)
        row_totals = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        for (row, column), count in np.ndenumerate(matrix):
            dark = count > matrix.max() / 2
            axes.text(
                column,
                row,
                f"{count}\n{count / row_totals[row, 0]:.0%} of row",
                ha="center",
                va="center",
                color="white" if dark else "black",
            )
        axes.set_xticks([0, 1], ["no fracture", "fracture"])
        axes.set_yticks([0, 1], ["no fracture", "fracture"])
        axes.set_xlabel("predicted")
        axes.set_ylabel("truth")
        axes.set_title(
            f"{name}: p ≥ {point['probability']:.3f}\n"
            f"sens {point['test']['sensitivity']}, spec {point['test']['specificity']}",
            fontsize=10,
        )
    if title:
        figure.suptitle(f"{title} (test)", fontsize=10)
    return save_figure(figure, path)


def _operating_point_marks(axes, report: dict, x_key: str, y_key: str) -> None:
    for name in OPERATING_POINTS:
        (true_negatives, false_positives), (false_negatives, true_positives) = report[
            "operating_points"
        ][name]["test"]["confusion_matrix"]
        values = {
            "fpr": false_positives / max(true_negatives + false_positives, 1),
            "tpr": true_positives / max(true_positives + false_negatives, 1),
            "precision": true_positives / max(true_positives + false_positives, 1),
        }
        axes.plot(
            values[x_key],
            values[y_key],
            "o",
            color=_COLOURS[name],
            markersize=8,
            label=f"{name} (p ≥ {report['operating_points'][name]['probability']:.3f})",
        )


def plot_roc(
    labels: np.ndarray, logits: np.ndarray, report: dict, path: Path, title: str = ""
) -> Path:
    false_positive_rate, true_positive_rate, _ = roc_curve(labels, logits)
    figure = _figure(4.8, 4.6)
    axes = figure.add_subplot()
    test = report["test"]
    axes.plot(
        false_positive_rate,
        true_positive_rate,
        color="#2e86c1",
        label=f"AUROC {test['auroc']} [{_format_ci(test['auroc_ci95'])}]",
    )
    axes.plot([0, 1], [0, 1], ":", color="#7f8c8d", linewidth=1)
    _operating_point_marks(axes, report, "fpr", "tpr")
    axes.set_xlabel("1 − specificity")
    axes.set_ylabel("sensitivity")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_title(f"ROC (test){': ' + title if title else ''}", fontsize=10)
    axes.legend(loc="lower right", fontsize=8)
    return save_figure(figure, path)


def plot_precision_recall(
    labels: np.ndarray, logits: np.ndarray, report: dict, path: Path, title: str = ""
) -> Path:
    precision, recall, _ = precision_recall_curve(labels, logits)
    figure = _figure(4.8, 4.6)
    axes = figure.add_subplot()
    axes.plot(
        recall,
        precision,
        drawstyle="steps-post",
        color="#2e86c1",
        label=f"AUPRC {report['test']['auprc']}",
    )
    prevalence = float(np.mean(labels))
    axes.axhline(
        prevalence,
        linestyle=":",
        color="#7f8c8d",
        linewidth=1,
        label=f"prevalence {prevalence:.3f}",
    )
    _operating_point_marks(axes, report, "tpr", "precision")
    axes.set_xlabel("recall (sensitivity)")
    axes.set_ylabel("precision")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_title(f"Precision–recall (test){': ' + title if title else ''}", fontsize=10)
    axes.legend(loc="lower left", fontsize=8)
    return save_figure(figure, path)


def plot_reliability(
    labels: np.ndarray, logits: np.ndarray, report: dict, path: Path, title: str = ""
) -> Path:
    calibration = report["calibration"]
    temperature, bins = calibration["temperature"], calibration["bins"]
    figure = _figure(5.2, 5.6)
    curve_axes, count_axes = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    curve_axes.plot([0, 1], [0, 1], ":", color="#7f8c8d", linewidth=1, label="perfect")
    width = 1.0 / bins
    for key, probabilities, label in (
        ("before", sigmoid(logits), f"sigmoid(logit): ECE {calibration['test_ece_before']}"),
        (
            "after",
            apply_temperature(logits, temperature),
            f"T = {temperature}: ECE {calibration['test_ece_after']}",
        ),
    ):
        table = calibration_bins(labels, probabilities, bins)
        filled = table["count"] > 0
        curve_axes.plot(
            table["mean_probability"][filled],
            table["fraction_positive"][filled],
            "o-",
            color=_COLOURS[key],
            label=label,
        )
        offset = -width / 4 if key == "before" else width / 4
        count_axes.bar(
            table["edges"][:-1] + width / 2 + offset, table["count"], width / 2, color=_COLOURS[key]
        )
    curve_axes.set_ylabel("fraction fractured")
    curve_axes.set_xlim(0, 1)
    curve_axes.set_ylim(0, 1)
    curve_axes.set_title(f"Reliability (test){': ' + title if title else ''}", fontsize=10)
    curve_axes.legend(loc="upper left", fontsize=8)
    count_axes.set_yscale("symlog")
    count_axes.set_xlabel("predicted fracture probability")
    count_axes.set_ylabel("images")
    return save_figure(figure, path)


def write_evaluation_plots(
    labels_test: np.ndarray,
    logits_test: np.ndarray,
    report: dict,
    out_dir: str | Path,
    title: str = "",
) -> list[Path]:
    """Confusion matrices (both points), ROC, precision-recall and reliability PNGs (test)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels_test = np.asarray(labels_test)
    logits_test = np.asarray(logits_test, dtype=np.float64)
    return [
        plot_confusion_matrices(report, out_dir / "confusion_matrices.png", title),
        plot_roc(labels_test, logits_test, report, out_dir / "roc.png", title),
        plot_precision_recall(labels_test, logits_test, report, out_dir / "pr.png", title),
        plot_reliability(labels_test, logits_test, report, out_dir / "reliability.png", title),
    ]


# --------------------------------------------------------------------------- Markdown


def _pair(point: dict) -> str:
    test = point["test"]
    return f"{_cell(test['sensitivity'])} / {_cell(test['specificity'])}"


def _cell(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _model_row(name: str, report: dict) -> str:
    test, calibration = report["test"], report["calibration"]
    points = report["operating_points"]
    return (
        f"| {name} | {_cell(test['auroc'])} [{_format_ci(test['auroc_ci95'])}] "
        f"| {_cell(test['auprc'])} | {_pair(points['doubt'])} | {_pair(points['fracture'])} "
        f"| {_cell(calibration['test_ece_before'])} → {_cell(calibration['test_ece_after'])} "
        f"| {calibration['temperature']:.3f} |"
    )


def _subgroup_table(name: str, reports: Mapping[str, dict]) -> list[str]:
    first = next(iter(reports.values()))["subgroups"][name]
    values = list(first)
    header = " | ".join(
        f"{value} (n={first[value]['n']}, +{first[value]['fractured']})" for value in values
    )
    lines = [
        f"### Test AUROC by {name}",
        "",
        f"| model | {header} |",
        "| --- |" + " --- |" * len(values),
    ]
    for model, report in reports.items():
        groups = report["subgroups"][name]
        cells = " | ".join(_cell(groups[value]["auroc"]) for value in values)
        lines.append(f"| {model} | {cells} |")
    return lines + [""]


def evaluation_markdown(reports: Mapping[str, dict], source: str = "") -> str:
    """The summary table (one row per model) plus one subgroup table per subgroup kind."""
    first = next(iter(reports.values()))
    counts = first["counts"]
    lines = [
        "# Evaluation",
        "",
        *([f"Logits: `{source}`.", ""] if source else []),
        f"Test: {counts['test']['images']} images ({counts['test']['fractured']} fractured); "
        f"validation: {counts['val']['images']} ({counts['val']['fractured']} fractured). "
        "Temperature and both thresholds are fitted on validation; every number below is on "
        f"test. Doubt = validation sensitivity ≥ {first['sensitivity_target']}; fracture = "
        f"validation Youden J. AUROC CI: percentile bootstrap over images "
        f"({first['bootstrap']['resamples']} resamples). ECE: {first['calibration']['bins']} "
        "equal-width bins, before → after temperature scaling.",
        "",
        "| model | test AUROC [95 % CI] | AUPRC | sens / spec @ doubt | sens / spec @ fracture "
        "| ECE before → after | T |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *[_model_row(name, report) for name, report in reports.items()],
        "",
        "Thresholds (calibrated fracture probability):",
        "",
        *[
            f"- {name}: doubt {report['operating_points']['doubt']['probability']:.4g} "
            f"(raw logit {report['operating_points']['doubt']['raw_logit']:.4g}), "
            f"fracture {report['operating_points']['fracture']['probability']:.4g} "
            f"(raw logit {report['operating_points']['fracture']['raw_logit']:.4g})"
            for name, report in reports.items()
        ],
        "",
    ]
    for subgroup in first.get("subgroups", {}):
        lines += _subgroup_table(subgroup, reports)
    lines += [
        "Plots per model: `<model>/confusion_matrices.png`, `roc.png`, `pr.png`, "
        "`reliability.png`.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- one logits file


def select_models(
    available: Sequence[str], requested: Sequence[str] | None, source: str = "the logits file"
) -> list[str]:
    """``requested`` in its order without repeats, or every available model when None/empty."""
    if not requested:
        return list(available)
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise LogitsFileError(
            f"model(s) {unknown} are not columns of {source}; valid: {sorted(available)}"
        )
    return list(dict.fromkeys(requested))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_evaluation(
    logits_path: str | Path,
    out_dir: str | Path,
    models: Sequence[str] | None = None,
    data_root: str | Path | None = None,
    sensitivity_target: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Path]:
    """Evaluate each chosen model column; write evaluation.json, evaluation.md and the plots."""
    logits_path, out_dir = Path(logits_path), Path(out_dir)
    rows, all_logits = load_logits_csv(logits_path)
    chosen = select_models(list(all_logits), models, str(logits_path))
    files_test = logits_of_split(rows, all_logits[chosen[0]], "test", chosen[0])[0]
    subgroups = subgroups_from_fracatlas(list(files_test), data_root) if data_root else None
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = {}
    for name in chosen:
        _, labels_val, logits_val = logits_of_split(rows, all_logits[name], "val", name)
        _, labels_test, logits_test = logits_of_split(rows, all_logits[name], "test", name)
        logger.info("evaluating %s (%d val, %d test)", name, labels_val.size, labels_test.size)
        reports[name] = evaluate_scores(
            labels_val,
            logits_val,
            labels_test,
            logits_test,
            subgroups,
            sensitivity_target,
            resamples,
            seed,
        )
        write_evaluation_plots(labels_test, logits_test, reports[name], out_dir / name, name)
    document = {
        "logits": str(logits_path),
        "logits_sha256": _sha256(logits_path),
        "data": str(data_root) if data_root else None,
        "models": reports,
    }
    json_path = out_dir / "evaluation.json"
    json_path.write_text(json.dumps(document, indent=1, allow_nan=False))
    markdown_path = out_dir / "evaluation.md"
    markdown_path.write_text(evaluation_markdown(reports, str(logits_path)))
    return {"json": json_path, "markdown": markdown_path}


def _figure(width: float = 7.0, height: float = 4.0):
    return new_figure(width, height, "draw the evaluation plots")
