"""Render an :class:`~train.audit.AuditResult` as Markdown and PNG plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from train.audit import AuditResult
from train.plotting import new_figure, save_figure

_COLOURS = {"fractured": "#c0392b", "not_fractured": "#2e86c1"}


def plot_class_distribution(result: AuditResult, path: Path) -> Path:
    classes = result.summary["classes"]
    names = {"1": "fractured", "0": "not_fractured"}
    figure = _figure(5, 3.5)
    axes = figure.add_subplot()
    labels = [names.get(k, k) for k in classes]
    bars = axes.bar(
        labels, list(classes.values()), color=[_COLOURS.get(n, "#7f8c8d") for n in labels]
    )
    axes.bar_label(bars)
    axes.set_ylabel("images")
    axes.set_title("Fractured vs not fractured")
    return save_figure(figure, path)


def plot_table_by_label(table: dict[str, dict[str, int]], title: str, path: Path) -> Path:
    keys = list(table)
    positions = np.arange(len(keys))
    figure = _figure(max(5.0, 1.1 * len(keys) + 2), 4)
    axes = figure.add_subplot()
    for offset, label in ((-0.2, "fractured"), (0.2, "not_fractured")):
        counts = [table[k][label] for k in keys]
        bars = axes.bar(
            positions + offset, counts, 0.4, label=label.replace("_", " "), color=_COLOURS[label]
        )
        axes.bar_label(bars, fontsize=8)
    axes.set_xticks(positions, keys)
    axes.set_ylabel("images")
    axes.set_title(title)
    axes.legend()
    return save_figure(figure, path)


def plot_image_sizes(result: AuditResult, path: Path) -> Path:
    records = [r for r in result.records if not r.error]
    figure = _figure(9, 3.8)
    aspect_axes, size_axes = figure.subplots(1, 2)
    for label, name in ((1, "fractured"), (0, "not_fractured")):
        chosen = [r for r in records if r.label == label]
        if not chosen:
            continue
        aspect = [r.width / max(r.height, 1) for r in chosen]
        megapixels = [r.width * r.height / 1e6 for r in chosen]
        kwargs = {"alpha": 0.6, "density": True, "color": _COLOURS[name], "label": name}
        aspect_axes.hist(aspect, bins=40, **kwargs)
        size_axes.hist(megapixels, bins=40, **kwargs)
    aspect_axes.set_xlabel("aspect ratio (width / height)")
    size_axes.set_xlabel("megapixels")
    aspect_axes.set_title("Aspect ratio by class")
    size_axes.set_title("Image size by class")
    aspect_axes.legend()
    return save_figure(figure, path)


def write_plots(result: AuditResult, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        plot_class_distribution(result, out_dir / "class_distribution.png"),
        plot_table_by_label(
            result.summary["regions_by_label"],
            "Fractured vs not fractured per region",
            out_dir / "region_by_label.png",
        ),
        plot_image_sizes(result, out_dir / "image_sizes.png"),
    ]
    if "hardware_by_label" in result.summary:
        paths.append(
            plot_table_by_label(
                result.summary["hardware_by_label"],
                "Surgical hardware (0/1) by label",
                out_dir / "hardware_by_label.png",
            )
        )
    return paths


def _group_lines(result: AuditResult, groups, limit: int = 40) -> list[str]:
    lines = []
    for group in groups[:limit]:
        members = ", ".join(f"{result.records[i].name} ({result.records[i].label})" for i in group)
        lines.append(f"- {members}")
    if len(groups) > limit:
        lines.append(f"- … and {len(groups) - limit} more (see the JSON)")
    return lines or ["- none"]


def _disagreement_lines(result: AuditResult) -> list[str]:
    lines = []
    for index in result.label_source_disagreements:
        record = result.records[index]
        boxes = len(record.metadata.get("boxes") or [])
        lines.append(f"- {record.name}: {record.metadata.get('label_sources')}, boxes: {boxes}")
    return lines or ["- none"]


def markdown(result: AuditResult, plots: list[Path]) -> str:
    summary, counts = result.summary, result.summary["counts"]
    lines = [
        "# Data audit",
        "",
        f"{summary['images']} images, {summary['unreadable']} unreadable. "
        f"Classes: {summary['classes']}.",
        "",
        "## Findings",
        "",
        "| finding | count |",
        "| --- | --- |",
        *[f"| {key.replace('_', ' ')} | {value} |" for key, value in counts.items()],
        "",
        "## Label-conflicting duplicate groups (label in brackets)",
        "",
        *_group_lines(result, result.label_conflict_groups),
        "",
        "## Label-source disagreements",
        "",
        *_disagreement_lines(result),
        "",
        "## Truncated files",
        "",
        ", ".join(r.name for r in result.records if r.truncated) or "none",
        "",
        "## Exact duplicate groups",
        "",
        *_group_lines(result, result.exact_duplicate_groups),
        "",
        "## Regions by label",
        "",
        "| region | fractured | not fractured |",
        "| --- | --- | --- |",
        *[
            f"| {k} | {v['fractured']} | {v['not_fractured']} |"
            for k, v in summary["regions_by_label"].items()
        ],
        "",
    ]
    if "hardware_by_label" in summary:
        lines += [
            "## Hardware by label",
            "",
            "| hardware | fractured | not fractured |",
            "| --- | --- | --- |",
            *[
                f"| {k} | {v['fractured']} | {v['not_fractured']} |"
                for k, v in summary["hardware_by_label"].items()
            ],
            "",
        ]
    if "shortcut_auroc" in summary:
        lines += [
            "## Shortcuts: AUROC of one non-image feature alone (0.5 = no leak)",
            "",
            *[f"- {k.replace('_', ' ')}: {v}" for k, v in summary["shortcut_auroc"].items()],
            "",
        ]
    unreadable = [r for r in result.records if r.error]
    if unreadable:
        lines += ["## Unreadable files", "", *[f"- {r.name}: {r.error}" for r in unreadable], ""]
    lines += ["## Plots", "", *[f"![{p.stem}]({p.name})" for p in plots], ""]
    return "\n".join(lines)


def write_report(result: AuditResult, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    plots = write_plots(result, out_dir)
    path = out_dir / "audit.md"
    path.write_text(markdown(result, plots))
    return path


def _figure(width: float = 7.0, height: float = 4.0):
    return new_figure(width, height, "draw the audit plots")
