"""The benchmark's plots, from one report dict: model comparison, accuracy vs latency, confusion
matrices, ROC and precision–recall curves, class distribution and subgroups. Figures go through
:mod:`train.plotting` (matplotlib's object API, no pyplot state)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmarks.report_tables import (
    SUBGROUP_KINDS,
    accuracy_rows,
    format_number,
    measured_mask,
    subgroup_table,
    threads_of,
)
from edge_app._optional import require
from train.plotting import new_figure, save_figure

FIGURES = {
    "model_comparison": "model_comparison.png",
    "pareto": "pareto.png",
    "confusion_matrices": "confusion_matrices.png",
    "roc": "roc.png",
    "pr": "pr.png",
    "class_distribution": "class_distribution.png",
    "subgroups": "subgroups.png",
}
_STUDENT, _TEACHER = "#2e86c1", "#c0392b"


def write_figures(report: dict, out_dir: Path) -> dict[str, Path]:
    if report["data"]["mode"] == "latency-only":
        return {}  # every figure plots accuracy; the table has the latencies
    figures = {
        "model_comparison": plot_model_comparison(report, out_dir / FIGURES["model_comparison"]),
        "pareto": plot_pareto(report, out_dir / FIGURES["pareto"]),
        "confusion_matrices": plot_confusion(report, out_dir / FIGURES["confusion_matrices"]),
        "roc": plot_curves(report, out_dir / FIGURES["roc"], "roc"),
        "pr": plot_curves(report, out_dir / FIGURES["pr"], "pr"),
        "class_distribution": plot_classes(report, out_dir / FIGURES["class_distribution"]),
    }
    if report["data"]["mode"] == "fracatlas":
        figures["subgroups"] = plot_subgroups(report, out_dir / FIGURES["subgroups"])
    return figures


def _figure(width: float, height: float):
    return new_figure(width, height, "draw the benchmark plots")


def _empty(axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes)
    axes.set_axis_off()


def plot_model_comparison(report: dict, path: Path) -> Path:
    rows = [r for r in accuracy_rows(report) if r["accuracy"]["auroc"] is not None]
    figure = _figure(7.5, 0.45 * max(len(rows), 2) + 1.3)
    axes = figure.add_subplot()
    if not rows:
        _empty(axes, "no artifact with an AUROC")
        return save_figure(figure, path)
    values = np.array([r["accuracy"]["auroc"] for r in rows])
    low = np.array([r["accuracy"]["auroc_ci95"][0] or v for r, v in zip(rows, values, strict=True)])
    high = np.array(
        [r["accuracy"]["auroc_ci95"][1] or v for r, v in zip(rows, values, strict=True)]
    )
    positions = np.arange(len(rows))
    colours = [_TEACHER if r["teacher"] else _STUDENT for r in rows]
    axes.barh(positions, values, color=colours, alpha=0.8)
    axes.errorbar(values, positions, xerr=[values - low, high - values], fmt="none", color="black")
    axes.set_yticks(positions, [r["name"] for r in rows], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(max(0.0, float(low.min()) - 0.05), 1.0)
    axes.set_xlabel("AUROC with bootstrap 95 % CI (red: teachers)")
    axes.set_title("Model comparison", fontsize=10)
    return save_figure(figure, path)


def pareto_points(report: dict, threads: str | None = None) -> list[dict]:
    """(name, p50 ms, AUROC, MB, teacher) per row with both; a teacher's architecture row lends
    its latency to its logits row (``arch:vgg16_bn`` ↔ ``teacher_vgg16_bn_scratch``)."""
    threads = threads or threads_of(report)[0]
    rows = report["rows"]
    points = []
    for row in rows:
        latency = (row["latency"] or {}).get(threads)
        if latency and row["accuracy"] and row["accuracy"]["auroc"] is not None:
            points.append(_point(row["name"], latency, row, row["accuracy"], row["teacher"]))
    for arch in (r for r in rows if r["kind"] == "arch" and r["latency"]):
        architecture = arch["source"]
        for logits in (r for r in rows if r["kind"] == "logits" and r["accuracy"]):
            if architecture in logits["name"] and threads in arch["latency"]:
                latency, accuracy = arch["latency"][threads], logits["accuracy"]
                points.append(_point(logits["name"], latency, arch, accuracy, True))
    return points


def _point(name: str, latency: dict, size_row: dict, accuracy: dict, teacher: bool) -> dict:
    return {
        "name": name,
        "p50_ms": latency["p50_ms"],
        "auroc": accuracy["auroc"],
        "mb": size_row["file_mb"] or 0.0,
        "teacher": teacher,
    }


def plot_pareto(report: dict, path: Path) -> Path:
    threads = threads_of(report)[0]
    points = pareto_points(report, threads)
    figure = _figure(7.5, 5.0)
    axes = figure.add_subplot()
    if not points:
        _empty(axes, "no artifact has both an AUROC and a latency")
        return save_figure(figure, path)
    largest = max(p["mb"] for p in points) or 1.0
    for teacher, marker, colour, label in (
        (False, "o", _STUDENT, "students / deployables"),
        (True, "D", _TEACHER, "teachers: AUROC from GPU logits, latency of arch: row"),
    ):
        chosen = [p for p in points if p["teacher"] == teacher]
        if chosen:
            axes.scatter(
                [p["p50_ms"] for p in chosen],
                [p["auroc"] for p in chosen],
                s=[30 + 400 * p["mb"] / largest for p in chosen],
                marker=marker,
                color=colour,
                alpha=0.6,
                label=label,
            )
    _label_points(axes, points)
    axes.set_xscale("log")
    axes.margins(x=0.35, y=0.08)  # room for the labels right of the slowest points
    ticker = require("matplotlib.ticker", "draw the benchmark plots")
    axes.xaxis.set_major_formatter(ticker.ScalarFormatter())
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())
    axes.set_xlabel(f"p50 latency, {threads} thread(s), ms (log)")
    axes.set_ylabel("AUROC")
    axes.set_title("Accuracy vs latency (marker area ∝ MB)", fontsize=10)
    legend = axes.legend(fontsize=7, loc="best")
    for handle in legend.legend_handles:
        handle.set_sizes([40])  # one legend size, whatever the first point's file size
    return save_figure(figure, path)


def _label_points(axes, points: list[dict]) -> None:
    """Name every point; labels of points that nearly coincide (same accuracy and latency, e.g.
    one model in several formats) are stacked downwards with a leader line instead of printed
    over each other."""
    span = max(p["auroc"] for p in points) - min(p["auroc"] for p in points) or 1.0
    placed: list[tuple[float, float]] = []
    for point in sorted(points, key=lambda p: (-p["auroc"], p["p50_ms"])):
        where = (math.log10(max(point["p50_ms"], 1e-6)), point["auroc"] / span)
        near = sum(abs(where[0] - x) < 0.6 and abs(where[1] - y) < 0.04 for x, y in placed)
        placed.append(where)
        axes.annotate(
            point["name"],
            (point["p50_ms"], point["auroc"]),
            xytext=(4, -8 * near),
            textcoords="offset points",
            fontsize=6,
            arrowprops={"arrowstyle": "-", "linewidth": 0.4, "alpha": 0.5} if near else None,
        )


def plot_confusion(report: dict, path: Path) -> Path:
    rows = [r for r in accuracy_rows(report) if "fracture" in r["accuracy"]["operating_points"]]
    columns = min(4, max(len(rows), 1))
    count_rows = max(1, -(-len(rows) // columns))
    figure = _figure(3.0 * columns, 2.9 * count_rows)
    if not rows:
        _empty(figure.add_subplot(), "no artifact with a fracture operating point")
        return save_figure(figure, path)
    for index, row in enumerate(rows):
        axes = figure.add_subplot(count_rows, columns, index + 1)
        point = row["accuracy"]["operating_points"]["fracture"]
        matrix = np.asarray(point["confusion_matrix"])
        axes.imshow(matrix, cmap="Blues", vmin=0)
        for (truth, predicted), count in np.ndenumerate(matrix):
            dark = count > matrix.max() / 2
            axes.text(
                predicted,
                truth,
                str(count),
                ha="center",
                va="center",
                color="white" if dark else "black",
            )
        axes.set_xticks([0, 1], ["no fx", "fx"], fontsize=7)
        axes.set_yticks([0, 1], ["no fx", "fx"], fontsize=7)
        axes.set_xlabel("predicted", fontsize=7)
        axes.set_ylabel("truth", fontsize=7)
        axes.set_title(f"{row['name']}\np ≥ {point['probability']:.3f}", fontsize=7)
    return save_figure(figure, path)


def plot_curves(report: dict, path: Path, kind: str) -> Path:
    from train.metrics import precision_recall_curve, roc_curve

    mask = measured_mask(report)
    labels = np.asarray([i["label"] or 0 for i in report["images"]])[mask]
    figure = _figure(6.0, 5.2)
    axes = figure.add_subplot()
    rows = [r for r in accuracy_rows(report) if r["logits"] and r["accuracy"]["auroc"] is not None]
    for row in rows:
        logits = np.asarray(row["logits"])[mask]
        style = "--" if row["teacher"] else "-"
        if kind == "roc":
            false_positive, true_positive, _ = roc_curve(labels, logits)
            axes.plot(
                false_positive,
                true_positive,
                style,
                linewidth=1,
                label=f"{row['name']} ({row['accuracy']['auroc']:.3f})",
            )
        else:
            precision, recall, _ = precision_recall_curve(labels, logits)
            axes.plot(
                recall,
                precision,
                style,
                linewidth=1,
                drawstyle="steps-post",
                label=f"{row['name']} ({format_number(row['accuracy']['auprc'])})",
            )
    if kind == "roc":
        axes.plot([0, 1], [0, 1], ":", color="#7f8c8d", linewidth=1)
        axes.set_xlabel("1 − specificity")
        axes.set_ylabel("sensitivity")
        axes.set_title("ROC (dashed: teachers)", fontsize=10)
    else:
        if labels.size:
            axes.axhline(labels.mean(), linestyle=":", color="#7f8c8d", linewidth=1)
        axes.set_xlabel("recall (sensitivity)")
        axes.set_ylabel("precision")
        axes.set_title("Precision–recall (dashed: teachers)", fontsize=10)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    if rows:
        axes.legend(fontsize=6, loc="lower right" if kind == "roc" else "lower left")
    return save_figure(figure, path)


def class_counts(report: dict) -> dict[str, dict[str, int]]:
    """Per split: fractured / not fractured (/ unknown) images, whole split and this run."""
    counts: dict[str, dict[str, int]] = {}
    if report["data"]["mode"] == "fracatlas":
        for split in ("train", "val", "test"):
            entry = report["data"]["split_counts"].get(split, {"images": 0, "fractured": 0})
            counts[f"{split} (split file)"] = {
                "fractured": entry["fractured"],
                "not fractured": entry["images"] - entry["fractured"],
            }
    order = {"train": 0, "val": 1, "test": 2}
    splits = sorted({i["split"] for i in report["images"]}, key=lambda s: order.get(s, 3))
    for split in splits:
        members = [i for i in report["images"] if i["split"] == split]
        entry = {
            "fractured": sum(i["label"] == 1 for i in members),
            "not fractured": sum(i["label"] == 0 for i in members),
        }
        unknown = sum(i["label"] is None for i in members)
        if unknown:
            entry["unknown"] = unknown
        counts[f"{split} (this run)"] = entry
    return counts


def plot_classes(report: dict, path: Path) -> Path:
    counts = class_counts(report)
    classes = list(dict.fromkeys(c for entry in counts.values() for c in entry))
    figure = _figure(7.0, 4.0)
    axes = figure.add_subplot()
    positions = np.arange(len(counts))
    width = 0.8 / max(len(classes), 1)
    colours = {"fractured": _TEACHER, "not fractured": _STUDENT, "unknown": "#7f8c8d"}
    for offset, name in enumerate(classes):
        values = [entry.get(name, 0) for entry in counts.values()]
        bars = axes.bar(positions + offset * width, values, width, label=name, color=colours[name])
        axes.bar_label(bars, fontsize=7)
    axes.set_xticks(positions + width * (len(classes) - 1) / 2, list(counts), fontsize=8)
    axes.set_ylabel("images")
    axes.set_title("Class distribution per split", fontsize=10)
    axes.legend(fontsize=8)
    return save_figure(figure, path)


def plot_subgroups(report: dict, path: Path) -> Path:
    blocks = [(kind, *subgroup_table(report, kind)) for kind in SUBGROUP_KINDS]
    blocks = [block for block in blocks if block[1]]
    names = blocks[0][2] if blocks else []
    header = [f"{kind}: {value}" for kind, values, _, _ in blocks for value in values]
    cells = [[c for _, _, _, table in blocks for c in table[i]] for i in range(len(names))]
    figure = _figure(1.3 * max(len(header), 3) + 2.5, 0.4 * max(len(names), 2) + 1.8)
    axes = figure.add_subplot()
    if not names:
        _empty(axes, "no subgroup metrics")
        return save_figure(figure, path)
    values = np.array([[float(c) if c != "n/a" else np.nan for c in row] for row in cells])
    axes.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", vmin=0.5, vmax=1.0, aspect="auto")
    for (row, column), value in np.ndenumerate(values):
        axes.text(
            column,
            row,
            "n/a" if np.isnan(value) else f"{value:.2f}",
            ha="center",
            va="center",
            fontsize=7,
        )
    axes.set_xticks(np.arange(len(header)), header, rotation=35, ha="right", fontsize=7)
    axes.set_yticks(np.arange(len(names)), names, fontsize=7)
    axes.set_title("Test AUROC by subgroup (n, +fractured in report.md)", fontsize=10)
    return save_figure(figure, path)
