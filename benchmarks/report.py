"""The benchmark's outputs: report.json, report.md and the plots (:mod:`benchmarks.plots`),
from one report dict.

Nothing here measures anything; :func:`benchmarks.bench.run_bench` builds the dict and
:func:`write_report` lays it out.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.compare import statistic as speedup_statistic
from benchmarks.external_site import site_table, site_text
from benchmarks.plots import write_figures
from benchmarks.report_tables import (
    SUBGROUP_KINDS,
    accuracy_rows,
    format_number,
    subgroup_table,
    threads_of,
)
from benchmarks.site_calibration import markdown_lines as site_calibration_lines


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


def _interval(values: Sequence[float | None]) -> str:
    return "n/a" if values[0] is None else f"{values[0]:.3f}–{values[1]:.3f}"


def _sens_spec(point: dict | None) -> str:
    if point is None:
        return "n/a"
    return f"{format_number(point['sensitivity'])} / {format_number(point['specificity'])}"


def _has_hardware_column(report: dict) -> bool:
    return report["data"]["mode"] == "fracatlas"


def _auroc_cell(entry: dict | None) -> str:
    if not entry or entry["auroc"] is None:
        return "n/a"
    return f"{format_number(entry['auroc'])} [{_interval(entry['auroc_ci95'])}]"


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
        format_number(fracture["cohen_kappa"]) if fracture else "n/a",
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
    cells.append(format_number(row["peak_rss_mb"], 0) if row["peak_rss_mb"] is not None else "n/a")
    return cells


def _heatmap_cells(row: dict) -> list[str]:
    heatmap = row["heatmap"]
    if not heatmap:
        return [row["heatmap_note"] or "n/a", "n/a"]
    game = heatmap["pointing_game"]
    pointing = (
        f"{game['hits']}/{game['evaluated']} ({format_number(game['rate'], 2)}) {heatmap['kind']}"
    )
    outlines = heatmap.get("outlines") or {}
    if outlines.get("films"):
        pointing += (
            f"; outlines {format_number(outlines['pointing_game'], 2)}, top-region IoU "
            f"{format_number(outlines['top_region_iou_mean'], 2)} ({outlines['films']} films)"
        )
    agreement = heatmap["agreement"]
    if agreement is None:
        note = row["heatmap_note"] or "n/a"
        return [pointing, note if row["kind"] == "tflite" else "n/a"]
    pearson = format_number(agreement["pearson_median"])
    return [pointing, f"r {pearson} / IoU {format_number(agreement['top10_iou_median'])}"]


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
    size = (
        format_number(row["file_mb"], 2)
        if row["file_mb"] is not None
        else row["file_note"] or "n/a"
    )
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


def _site_lines(report: dict) -> list[str]:
    header, rows = site_table(report)
    if not header:
        return []
    return ["## External site", "", site_text(report), "", *_markdown_table(header, rows), ""]


def _threshold_lines(report: dict) -> list[str]:
    if not accuracy_rows(report):
        return []
    lines = ["## Operating points", ""]
    for row in accuracy_rows(report):
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
                f"{agreement['images']} images: median r "
                f"{format_number(agreement['pearson_median'])}, "
                f"median top-10 % IoU {format_number(agreement['top10_iou_median'])}"
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
        return format_number(drop)
    return f"{format_number(drop)} [{interval[0]:.3f}, {interval[1]:.3f}]"


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
        clean += [format_number(table["clean_auroc"]), "—"]
        clean += _point_cells(table.get("clean_operating_points") or {})
    lines = [clean]
    for name in rows[0]["shifts"]["shifts"]:
        cells = [name, definitions.get(name, "")]
        for row in rows:
            entry = row["shifts"]["shifts"][name]
            cells += [format_number(entry["auroc"]), _drop_cell(entry["drop"], entry["drop_ci95"])]
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
    rows = [r for r in accuracy_rows(report) if r["accuracy"].get("flag_rate")]
    if not rows:
        return []
    table = []
    for row in rows:
        rate = row["accuracy"]["flag_rate"]
        table.append(
            [
                row["name"],
                rate["images"],
                *(format_number(rate[k]) for k in ("fracture", "uncertain")),
            ]
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
    lines += _column_lines(report) + _site_lines(report)
    lines += _environment_lines(report) + _threshold_lines(report)
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
