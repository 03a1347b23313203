"""Is a benchmark stable? Compare the speed-ups of two ``fracture-edge bench`` reports.

A speed-up is the reference row's fastest call over an artifact's fastest call *measured in the
same run*, so the machine's speed cancels out. Between two runs of the same artifacts each
speed-up should therefore stay put: this prints ``new speed-up / old speed-up`` per artifact and
thread count and flags every ratio beyond ±5 % (``--tolerance``). ``--p50`` compares the
secondary speed-ups instead (median of per-round p50 ratios), which move with the host's load.

    fracture-edge bench-compare OLD/report.json NEW/report.json [--p50]
    fracture-edge bench ... --compare OLD/report.json      # after a run, against this run

Exit status: 0 when nothing is flagged, 1 when something is, 2 when a report is unusable.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_app.card import REPORT_FORMAT
from edge_app.errors import FractureEdgeError, UsageError

TOLERANCE = 0.05


class ReportFileError(FractureEdgeError, ValueError):
    """A file is not a readable ``fracture-edge bench`` report."""


def load_report(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ReportFileError(f"report {path} does not exist")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ReportFileError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise ReportFileError(f"{path} is not a report.json written by fracture-edge bench")
    return report


def _speedups(report: dict, key: str) -> dict[tuple[str, str], tuple[str, float]]:
    return {
        (row["id"], threads): (row["name"], value)
        for row in report["rows"]
        for threads, value in (row.get(key) or {}).items()
    }


def statistic(report: dict, p50: bool = False) -> str:
    """What a report's ``speedup`` (or, with ``p50``, ``speedup_p50``) divides."""
    if p50:
        return "median of per-round p50 ratios"
    return report["speedup_reference"].get("statistic", "p50")


def compare_reports(
    old: dict[str, Any], new: dict[str, Any], tolerance: float = TOLERANCE, p50: bool = False
) -> list[dict[str, Any]]:
    """One entry per (artifact id, thread count) in either report: old and new speed-up, their
    ratio (new / old) and whether it lies beyond ``tolerance``; an artifact in only one report
    has ratio None and is not flagged. ``p50`` compares ``speedup_p50`` instead."""
    if tolerance <= 0:
        raise UsageError(f"--tolerance must be positive, got {tolerance}")
    old_reference = old["speedup_reference"]["id"]
    new_reference = new["speedup_reference"]["id"]
    if old_reference != new_reference:
        raise ReportFileError(
            f"the reports measure speed-ups against different rows ({old_reference} vs "
            f"{new_reference}); rerun one with --speedup-reference {old_reference}"
        )
    if statistic(old) != statistic(new):
        raise ReportFileError(
            f"the reports' speed-ups divide different statistics ({statistic(old)} vs "
            f"{statistic(new)}); rerun the older one with this version of fracture-edge bench"
        )
    key = "speedup_p50" if p50 else "speedup"
    if p50 and not any(row.get(key) for row in old["rows"]):
        raise ReportFileError("the older report has no p50 speed-ups (written before they were)")
    before, after = _speedups(old, key), _speedups(new, key)
    entries = []
    for key in dict.fromkeys([*before, *after]):
        name = (after.get(key) or before[key])[0]
        old_value = before[key][1] if key in before else None
        new_value = after[key][1] if key in after else None
        ratio = new_value / old_value if old_value and new_value else None
        entries.append(
            {
                "id": key[0],
                "name": name,
                "threads": key[1],
                "old": old_value,
                "new": new_value,
                "ratio": None if ratio is None else round(ratio, 4),
                "flagged": ratio is not None and abs(ratio - 1) > tolerance,
            }
        )
    return entries


def format_comparison(entries: Sequence[dict], tolerance: float = TOLERANCE) -> str:
    def cell(value, suffix=""):
        return "—" if value is None else f"{value:.3f}{suffix}"

    lines = [
        f"{'artifact':<48} {'thr':>3} {'old ×':>8} {'new ×':>8} {'new/old':>8}",
    ]
    for entry in entries:
        mark = f"  <-- beyond ±{tolerance:.0%}" if entry["flagged"] else ""
        lines.append(
            f"{entry['name'][:48]:<48} {entry['threads']:>3} {cell(entry['old']):>8} "
            f"{cell(entry['new']):>8} {cell(entry['ratio']):>8}{mark}"
        )
    flagged = sum(entry["flagged"] for entry in entries)
    lines.append(f"{flagged} of {len(entries)} speed-ups moved by more than ±{tolerance:.0%}")
    return "\n".join(lines)
