"""What both report.md and the plots read off a ``fracture-edge bench`` report dict: the
thread counts, the images accuracy is measured on, the rows with accuracy, the subgroup tables
and how a number is printed."""

from __future__ import annotations

import numpy as np

SUBGROUP_KINDS = ("region", "hardware")


def threads_of(report: dict) -> list[str]:
    return [str(n) for n in report["config"]["threads"]]


def measured_mask(report: dict) -> np.ndarray:
    """The images accuracy is measured on: test rows, or labelled rows of an external set."""
    images = report["images"]
    if report["data"]["mode"] == "external":
        return np.asarray([image["label"] is not None for image in images])
    return np.asarray([image["split"] == "test" for image in images])


def accuracy_rows(report: dict) -> list[dict]:
    return [row for row in report["rows"] if row["accuracy"]]


def format_number(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, ``n/a`` for None."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def subgroup_table(report: dict, kind: str) -> tuple[list[str], list[str], list[list[str]]]:
    """(group values with counts, model names, AUROC cells) of one subgroup kind."""
    rows = [r for r in accuracy_rows(report) if (r["accuracy"].get("subgroups") or {}).get(kind)]
    if not rows:
        return [], [], []
    first = rows[0]["accuracy"]["subgroups"][kind]
    values = list(first)
    header = [f"{v} (n={first[v]['n']}, +{first[v]['fractured']})" for v in values]
    cells = [
        [format_number(row["accuracy"]["subgroups"][kind][v]["auroc"]) for v in values]
        for row in rows
    ]
    return header, [row["name"] for row in rows], cells
