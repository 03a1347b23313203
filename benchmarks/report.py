"""The benchmark's outputs: report.json, report.md and the plots, from one report dict.

Nothing here measures anything; :func:`benchmarks.bench.run_bench` builds the dict and
:func:`write_report` lays it out. Figures go through :mod:`train.plotting` (matplotlib's object
API, no pyplot state).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.compare import statistic as speedup_statistic
from benchmarks.site_calibration import markdown_lines as site_calibration_lines
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
SUBGROUP_KINDS = ("region", "hardware")
_STUDENT, _TEACHER = "#2e86c1", "#c0392b"


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write the plots, report.md and report.json (which lists the figures) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = write_figures(report, out_dir)
    report["figures"] = {name: path.name for name, path in figures.items()}
    markdown = out_dir / "report.md"
    markdown.write_text(report_markdown(report))
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    return {"markdown": markdown, "json": json_path, **figures}


# --------------------------------------------------------------------------- helpers


def threads_of(report: dict) -> list[str]:
    return [str(n) for n in report["config"]["threads"]]


def measured_mask(report: dict) -> np.ndarray:
    """The images accuracy is measured on: test rows, or labelled rows of an external set."""
    images = report["images"]
    if report["data"]["mode"] == "external":
        return np.asarray([image["label"] is not None for image in images])
    return np.asarray([image["split"] == "test" for image in images])


def _accuracy_rows(report: dict) -> list[dict]:
    return [row for row in report["rows"] if row["accuracy"]]


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _interval(values: Sequence[float | None]) -> str:
    return "n/a" if values[0] is None else f"{values[0]:.3f}–{values[1]:.3f}"


def _sens_spec(point: dict | None) -> str:
    if point is None:
        return "n/a"
    return f"{_number(point['sensitivity'])} / {_number(point['specificity'])}"


# --------------------------------------------------------------------------- Markdown


def _has_hardware_column(report: dict) -> bool:
    return report["data"]["mode"] == "fracatlas"


def _auroc_cell(entry: dict | None) -> str:
    if not entry or entry["auroc"] is None:
        return "n/a"
    return f"{_number(entry['auroc'])} [{_interval(entry['auroc_ci95'])}]"


def _accuracy_cells(row: dict, hardware_column: bool = False) -> list[str]:
    accuracy = row["accuracy"]
    if not accuracy:
        return [row["accuracy_note"] or "n/a"] + ["n/a"] * (3 + hardware_column)
    points = accuracy["operating_points"]
    fracture = points.get("fracture")
    hardware = [_auroc_cell(accuracy.get("hardware_free"))] if hardware_column else []
    return [
        _auroc_cell(accuracy),
        *hardware,
        _sens_spec(points.get("doubt")),
        _sens_spec(fracture),
        _number(fracture["cohen_kappa"]) if fracture else "n/a",
    ]


def _latency_cells(row: dict, threads: list[str]) -> list[str]:
    latency = row["latency"] or {}
    cells = []
    for count in threads:
        if count in latency:
            cells.append(f"{latency[count]['p50_ms']:.1f} / {latency[count]['p95_ms']:.1f}")
        else:
            cells.append(row["latency_note"] or "n/a")
    speedup = row["speedup"] or {}
    if speedup:
        cells.append(" / ".join(f"{speedup[c]:.2f}×" if c in speedup else "n/a" for c in threads))
    else:
        cells.append(row["speedup_note"] or "n/a")
    cells.append(_number(row["peak_rss_mb"], 0) if row["peak_rss_mb"] is not None else "n/a")
    return cells


def _heatmap_cells(row: dict) -> list[str]:
    heatmap = row["heatmap"]
    if not heatmap:
        return [row["heatmap_note"] or "n/a", "n/a"]
    game = heatmap["pointing_game"]
    pointing = f"{game['hits']}/{game['evaluated']} ({_number(game['rate'], 2)}) {heatmap['kind']}"
    outlines = heatmap.get("outlines") or {}
    if outlines.get("films"):
        pointing += (
            f"; outlines {_number(outlines['pointing_game'], 2)}, top-region IoU "
            f"{_number(outlines['top_region_iou_mean'], 2)} ({outlines['films']} films)"
        )
    agreement = heatmap["agreement"]
    if agreement is None:
        note = row["heatmap_note"] or "n/a"
        return [pointing, note if row["kind"] == "tflite" else "n/a"]
    return [
        pointing,
        f"r {_number(agreement['pearson_median'])} / IoU {_number(agreement['top10_iou_median'])}",
    ]


def table_header(report: dict) -> list[str]:
    threads = threads_of(report)
    measured = "labelled" if report["data"]["mode"] == "external" else "test"
    return [
        "model",
        "format",
        "device",
        "MB",
        f"{measured} AUROC [95 % CI]",
        *(["test AUROC, films without hardware [95 % CI]"] if _has_hardware_column(report) else []),
        "sens / spec @ doubt",
        "sens / spec @ fracture",
        "κ @ fracture",
        *[f"p50 / p95 ms, {n} thr" for n in threads],
        f"speed-up vs {report['speedup_reference']['id']} ({speedup_statistic(report)}; "
        f"{' / '.join(threads)} thr)",
        "peak RSS MiB",
        "pointing game",
        "CAM vs Grad-CAM (r / top-10 % IoU)",
    ]


def table_row(report: dict, row: dict) -> list[str]:
    size = _number(row["file_mb"], 2) if row["file_mb"] is not None else row["file_note"] or "n/a"
    return [
        row["name"],
        row["format"],
        row["device"],
        size,
        *_accuracy_cells(row, _has_hardware_column(report)),
        *_latency_cells(row, threads_of(report)),
        *_heatmap_cells(row),
    ]


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells):
        return "| " + " | ".join(str(cell).replace("|", "/") for cell in cells) + " |"

    return [line(header), "| " + " | ".join("---" for _ in header) + " |", *map(line, rows)]


def _data_lines(report: dict) -> list[str]:
    data = report["data"]
    images = report["images"]
    lines = ["## Data", ""]
    if data["mode"] == "latency-only":
        lines += [
            "**Latency only (`--latency-only`)**: no images were read; size, latency and peak "
            "RSS of each artifact on this machine. Accuracy of the same weights is in the full "
            "report of a run with the data.",
        ]
    elif data["mode"] == "external":
        labelled = [i for i in images if i["label"] is not None]
        lines += [
            f"External folder `{data['external']}`, labels `{data['labels']}`: {len(images)} "
            f"images, {len(labelled)} labelled ({sum(i['label'] for i in labelled)} fractured), "
            f"{len(images) - len(labelled)} of unknown label. No validation split here: every "
            "artifact uses **its own card's temperature and operating points**; AUROC and its CI "
            "use the labelled images only; unknown labels give a flag rate only.",
        ]
    else:
        counts = {
            split: (
                sum(i["split"] == split for i in images),
                sum(i["split"] == split and i["label"] == 1 for i in images),
            )
            for split in ("val", "test")
        }
        lines += [
            f"FracAtlas `{data['data']}`, split `{data['split']}` (id {data['split_id']}): "
            f"val {counts['val'][0]} images ({counts['val'][1]} fractured), test "
            f"{counts['test'][0]} ({counts['test'][1]} fractured), read from the original files "
            "through the shared preprocessing with each artifact's own card. Temperature and both "
            "operating points are chosen on val; every number is measured on test.",
        ]
    if data["limit"]:
        lines += [
            "",
            f"**Quick run (`--limit {data['limit']}`)**: a label-stratified subset of "
            f"{data['images_used']} of {data['images_available']} images (at most "
            f"{data['limit']} per split). The numbers are for checking the pipeline, not for "
            "quoting.",
        ]
    return lines + [""]


def _environment_lines(report: dict) -> list[str]:
    env = report["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    start, end = env.get("load_average_start"), env.get("load_average_end")
    cores = env["usable_cores"] or env["logical_cores"]
    lines = [
        "## Environment",
        "",
        f"- CPU: {env['cpu']}; {env['logical_cores']} logical cores ({cores} usable)",
        f"- {env['platform']}, Python {env['python']}; {versions}",
    ]
    if start:
        lines.append(
            f"- Load average (1/5/15 min): {start} at the start, {end} at the end, on {cores} cores"
        )
        if max(start[0], (end or start)[0]) > 0.5 * cores:
            lines.append(
                "- **Timings were taken under load** (other jobs shared the CPU): absolute "
                "milliseconds are pessimistic and noisy; compare speed-up ratios within this run."
            )
    children = env.get("latency_children") or {}
    if children.get("GLIBC_TUNABLES"):
        lines.append(
            f"- Latency children: `GLIBC_TUNABLES={children['GLIBC_TUNABLES']}` (malloc on "
            f"transparent huge pages; kernel THP mode: {children.get('transparent_hugepages')})"
        )
    if env.get("note"):
        lines.append(f"- Note: {env['note']}")
    lines.append(f"- Wall time of the run: {report['wall_s']} s")
    return lines + [""]


def _column_lines(report: dict) -> list[str]:
    config = report["config"]
    hardware = (
        "Films without hardware: the test AUROC on the films whose FracAtlas `hardware` flag is "
        "0 (97 of the 99 films with hardware are fractured: a shortcut). "
        if _has_hardware_column(report)
        else ""
    )
    return [
        "Columns (details in docs/benchmarks.md): MB is the file on disk (arch rows: fp32 "
        f"parameter bytes). {hardware}Sensitivity / specificity at the *doubt* point "
        "(≥ 95 % validation sensitivity) and the *fracture* point (validation Youden J); κ is "
        "Cohen's kappa at the fracture point. Latency: one single-image call after "
        f"{config['warmup']} warm-up calls, p50 / p95 over {config['runs']} calls, median over "
        f"{config['repeats']} interleaved rounds (every artifact once per round, each in its own "
        "child process). Speed-up: the reference's fastest call / the row's fastest call over "
        "all rounds, at the same thread count, in the same run (the least disturbed estimate on "
        "a shared machine; the median of per-round p50 ratios is listed under *Latency "
        "stability*). Peak RSS: the highest child peak (runtime library + "
        "model + inference). Pointing game: heatmap maximum "
        "inside a fracture box (original-image coordinates). CAM agreement: median Pearson r and "
        "top-10 % IoU between the bundle's in-graph CAM and the reference checkpoint's Grad-CAM.",
        "",
    ]


def _threshold_lines(report: dict) -> list[str]:
    if not _accuracy_rows(report):
        return []
    lines = ["## Operating points", ""]
    for row in _accuracy_rows(report):
        accuracy = row["accuracy"]
        points = ", ".join(
            f"{name} p ≥ {point['probability']:.4g}"
            for name, point in accuracy["operating_points"].items()
        )
        lines.append(
            f"- {row['name']}: T = {accuracy['temperature']}, {points or 'none'} "
            f"({accuracy['thresholds_from']})"
        )
    return lines + [""]


def _heatmap_lines(report: dict) -> list[str]:
    if report["data"]["mode"] == "latency-only":
        return []
    lines = ["## Heatmaps", ""]
    for row in report["rows"]:
        heatmap = row["heatmap"]
        if heatmap and heatmap["pointing_game"]["empty_heatmaps"]:
            game = heatmap["pointing_game"]
            lines.append(
                f"- {row['name']}: {game['empty_heatmaps']} of {game['evaluated']} heatmaps are "
                "empty (no positive evidence anywhere) and count as misses"
            )
        if heatmap and heatmap["agreement"]:
            agreement = heatmap["agreement"]
            lines.append(
                f"- {row['name']}: in-graph CAM vs Grad-CAM of `{agreement['reference']}` on "
                f"{agreement['images']} images: median r {_number(agreement['pearson_median'])}, "
                f"median top-10 % IoU {_number(agreement['top10_iou_median'])}"
            )
        elif row["heatmap_note"] and row["kind"] in ("tflite", "torch", "onnx"):
            lines.append(f"- {row['name']}: {row['heatmap_note']}")
    cap = report["config"]["heatmap_images"]
    if not cap:
        return lines + [""]
    lines.append(
        f"- Heatmaps are scored on the first {cap} test (or labelled external) images with boxes, "
        "each map taken back to the original image with the runtime's heatmap_from_cam. "
        "FracAtlas boxes are small: a pointing-game rate of a few per cent is chance level."
    )
    return lines + [""]


def subgroup_table(report: dict, kind: str) -> tuple[list[str], list[str], list[list[str]]]:
    """(group values with counts, model names, AUROC cells) of one subgroup kind."""
    rows = [r for r in _accuracy_rows(report) if (r["accuracy"].get("subgroups") or {}).get(kind)]
    if not rows:
        return [], [], []
    first = rows[0]["accuracy"]["subgroups"][kind]
    values = list(first)
    header = [f"{v} (n={first[v]['n']}, +{first[v]['fractured']})" for v in values]
    cells = [
        [_number(row["accuracy"]["subgroups"][kind][v]["auroc"]) for v in values] for row in rows
    ]
    return header, [row["name"] for row in rows], cells


def _subgroup_lines(report: dict) -> list[str]:
    lines = []
    for kind in SUBGROUP_KINDS:
        header, names, cells = subgroup_table(report, kind)
        if header:
            lines += [f"### Test AUROC by {kind}", ""]
            table = [[name, *row] for name, row in zip(names, cells, strict=True)]
            lines += _markdown_table(["model", *header], table) + [""]
    return (["## Subgroups", "", *lines]) if lines else []


SHIFT_POINTS = ("doubt", "fracture")


def _drop_cell(drop: float | None, interval: Sequence[float | None]) -> str:
    """A drop with its CI, comma-separated: the bounds may be negative."""
    if interval[0] is None:
        return _number(drop)
    return f"{_number(drop)} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _point_cells(points: dict) -> list[str]:
    return [_sens_spec(points.get(name)) for name in SHIFT_POINTS]


def shift_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the shift table: clean, one row per shift, then the mean drop. Per
    artifact scored under shifts: AUROC, drop with its paired 95 % CI, and sensitivity /
    specificity at the doubt and fracture points chosen on clean validation films."""
    rows = [row for row in report["rows"] if row.get("shifts")]
    definitions = (report.get("shifts") or {}).get("shifts", {})
    if not rows:
        return [], []
    header = ["shift", "severity"]
    for row in rows:
        name = row["name"]
        header += [f"{name} AUROC", f"{name} drop [95 % CI]"]
        header += [f"{name} sens / spec @ {point}" for point in SHIFT_POINTS]
    clean = ["clean", "as read"]
    for row in rows:
        table = row["shifts"]
        clean += [_number(table["clean_auroc"]), "—"]
        clean += _point_cells(table.get("clean_operating_points") or {})
    lines = [clean]
    for name in rows[0]["shifts"]["shifts"]:
        cells = [name, definitions.get(name, "")]
        for row in rows:
            entry = row["shifts"]["shifts"][name]
            cells += [_number(entry["auroc"]), _drop_cell(entry["drop"], entry["drop_ci95"])]
            cells += _point_cells(entry.get("operating_points") or {})
        lines.append(cells)
    mean = ["**mean drop**", f"over {len(lines) - 1} shifts"]
    for row in rows:
        table = row["shifts"]
        drop = _drop_cell(table["mean_drop"], table["mean_drop_ci95"])
        mean += ["", f"**{drop}**", "", ""]
    return header, [*lines, mean]


def _shift_lines(report: dict) -> list[str]:
    header, rows = shift_table(report)
    if not header:
        return []
    first = next(row for row in report["rows"] if row.get("shifts"))["shifts"]
    seed = report["shifts"]["seed"]
    return [
        "## Acquisition shifts",
        "",
        f"The {first['images']} measured images ({first['fractured']} fractured) scored again "
        "under each shift of `benchmarks/shifts.py`, applied to the loaded radiograph before the "
        f"shared preprocessing; parameters drawn per film and shift from base seed {seed}. "
        "Drop = clean AUROC − shifted AUROC (positive: worse); CIs are paired bootstrap "
        "intervals over images. Sensitivity / specificity at the operating points (and "
        "temperature) chosen on the clean validation films: a shift that keeps the ranking can "
        "still move the scores across them. No heatmaps under shifts.",
        "",
        *_markdown_table(header, rows),
        "",
    ]


def _flag_rate_lines(report: dict) -> list[str]:
    rows = [r for r in _accuracy_rows(report) if r["accuracy"].get("flag_rate")]
    if not rows:
        return []
    table = []
    for row in rows:
        rate = row["accuracy"]["flag_rate"]
        table.append(
            [row["name"], rate["images"], *(_number(rate[k]) for k in ("fracture", "uncertain"))]
        )
    return [
        "## Unlabelled images: flag rate",
        "",
        "Share of the images of unknown label the card thresholds call *fracture* and "
        "*uncertain — review* (not a specificity: their truth is unknown).",
        "",
        *_markdown_table(["model", "images", "fracture", "uncertain"], table),
        "",
    ]


def _stability_lines(report: dict) -> list[str]:
    lines = ["## Latency stability", ""]
    lines.append("p50 of each repeat (ms) and its spread, (max − min) / median:")
    lines.append("")
    for row in report["rows"]:
        for count, values in (row["latency"] or {}).items():
            p50s = [r["p50_ms"] for r in values["repeats"]]
            spread = (max(p50s) - min(p50s)) / statistics.median(p50s) if p50s else 0.0
            shown = ", ".join(f"{v:.1f}" for v in p50s)
            lines.append(f"- {row['name']}, {count} thr: {shown} (spread {spread:.0%})")
    ratios = [
        f"- {row['name']}: "
        + " / ".join(f"{value:.2f}× ({count} thr)" for count, value in row["speedup_p50"].items())
        for row in report["rows"]
        if row.get("speedup_p50")
    ]
    if ratios:
        lines += [
            "",
            "Speed-up as the median of per-round p50 ratios (moves with the host's load; the "
            "table's speed-up uses the fastest calls):",
            "",
            *ratios,
        ]
    return lines + [""]


def report_markdown(report: dict) -> str:
    rows = [table_row(report, row) for row in report["rows"]]
    lines = [f"# Benchmark {report['created']}", "", *_data_lines(report)]
    lines += ["## Results", "", *_markdown_table(table_header(report), rows), ""]
    lines += _column_lines(report) + _environment_lines(report) + _threshold_lines(report)
    lines += _shift_lines(report)
    lines += site_calibration_lines(report.get("site_calibration"))
    lines += _heatmap_lines(report) + _subgroup_lines(report) + _flag_rate_lines(report)
    lines += _stability_lines(report)
    notes = [f"- {r['name']}: {r['file_note']}" for r in report["rows"] if r["file_note"]]
    notes += [f"- {r['name']}: {r['accuracy_note']}" for r in report["rows"] if r["accuracy_note"]]
    notes += [
        f"- {r['name']}: shifts {r['shifts_note']}" for r in report["rows"] if r.get("shifts_note")
    ]
    if notes:
        lines += ["## Notes", "", *notes, ""]
    if report["errors"]:
        lines += ["## Errors", "", *[f"- {error}" for error in report["errors"]], ""]
    lines += ["## Figures", ""]
    lines += [f"![{name}]({file})" for name, file in report.get("figures", {}).items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- figures


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
    rows = [r for r in _accuracy_rows(report) if r["accuracy"]["auroc"] is not None]
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
    rows = [r for r in _accuracy_rows(report) if "fracture" in r["accuracy"]["operating_points"]]
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
    rows = [r for r in _accuracy_rows(report) if r["logits"] and r["accuracy"]["auroc"] is not None]
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
                label=f"{row['name']} ({_number(row['accuracy']['auprc'])})",
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
