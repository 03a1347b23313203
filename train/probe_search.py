"""The frozen-feature recipe search on cached feature banks: probes fitted on FracAtlas only,
ranked on another site (issue 18's rule, docs/results.md).

    fracture-edge probe-search --plan configs/probe-search.yaml --out runs/probe-search

Every candidate is a list of ``BANK:TAP`` columns (``lite0-448:block4:avg``...). For each one:

- a probe (balanced L2 logistic regression, :mod:`train.probe`) is fitted on the split's train
  films, its strength chosen on validation AUROC, its logits divided by the temperature fitted
  on validation: the FracAtlas validation AUROC is the guard;
- the same recipe is refitted on the held-out-acquisition split (small-format train and
  validation) and scored on the large-format films: the second guard;
- the site's films are scored by the first probe: AUROC≈ (unannotated films counted as
  negatives) with a 95 % interval bootstrapped over the site's groups. Nothing is fitted on
  the site.

Site banks must hold every film of the site's labels CSV; FracAtlas banks every film of both
splits. The output is ``probe-search.json`` plus a Markdown table, one row per candidate.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.errors import UsageError
from train.feature_bank import FeatureBank, read_bank
from train.metrics import auroc, bootstrap_auroc_ci, group_bootstrap_auroc_ci
from train.probe import L2_GRID, Probe, calibrated, choose_probe
from train.probe_teacher import split_rows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Column:
    bank: str
    tap: str

    @classmethod
    def parse(cls, text: str) -> Column:
        bank, _, tap = text.partition(":")
        if not tap:
            raise UsageError(f"a column is BANK:BLOCK:POOL, e.g. lite0-448:head:avg; got {text!r}")
        return cls(bank, tap)


@dataclass
class SiteLabels:
    files: list[str]
    labels: np.ndarray
    groups: list[str]


def read_site(path: str | Path, group_column: str = "source") -> SiteLabels:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return SiteLabels(
        [r["file"] for r in rows],
        np.array([1 if r["fracture"] == "1" else 0 for r in rows]),
        [r.get(group_column) or r["file"] for r in rows],
    )


def matrix(banks: dict[str, FeatureBank], columns: Sequence[Column], files) -> np.ndarray:
    return np.concatenate([banks[c.bank].select([c.tap], files) for c in columns], 1).astype(
        np.float64
    )


def fit_on(
    rows: Sequence[dict[str, str]], banks, columns, grid=L2_GRID
) -> tuple[Probe, dict[float, float], dict[str, np.ndarray]]:
    """The validation-chosen, validation-calibrated probe of a split; its logits per split."""
    by_split = {}
    for name in ("train", "val", "test"):
        chosen = [r for r in rows if r["split"] == name]
        by_split[name] = (
            matrix(banks, columns, [r["file"] for r in chosen]),
            np.array([int(r["label"]) for r in chosen]),
        )
    (x_train, y_train), (x_val, y_val) = by_split["train"], by_split["val"]
    probe, scores = choose_probe(x_train, y_train, x_val, y_val, grid)
    probe = calibrated(probe, x_val, y_val)
    logits = {name: probe.logits(x) for name, (x, _) in by_split.items()}
    labels = {name: y for name, (_, y) in by_split.items()}
    return probe, scores, {"logits": logits, "labels": labels}


def score_candidate(
    name: str,
    columns: Sequence[Column],
    banks: dict[str, FeatureBank],
    split_rows,
    heldout_rows,
    site: SiteLabels,
    site_banks: dict[str, FeatureBank],
    score_test: bool = False,
    teacher_out: Path | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    probe, l2_scores, fitted = fit_on(split_rows, banks, columns)
    val_labels, val_logits = fitted["labels"]["val"], fitted["logits"]["val"]
    site_features = matrix(site_banks, columns, site.files)
    site_logits = probe.logits(site_features)
    result: dict[str, Any] = {
        "name": name,
        "columns": [f"{c.bank}:{c.tap}" for c in columns],
        "features": int(site_features.shape[1]),
        "l2": probe.l2,
        "temperature": round(probe.temperature, 4),
        "val_auroc": round(auroc(val_labels, val_logits), 4),
        "val_auroc_ci95": [round(v, 4) for v in bootstrap_auroc_ci(val_labels, val_logits)],
        "site_auroc": round(auroc(site.labels, site_logits), 4),
        "site_auroc_ci95": [
            round(v, 4)
            for v in group_bootstrap_auroc_ci(site.labels, site_logits, site.groups, 1000)
        ],
    }
    if heldout_rows is not None:
        _, _, held = fit_on(heldout_rows, banks, columns)
        labels, logits = held["labels"]["test"], held["logits"]["test"]
        result["heldout_auroc"] = round(auroc(labels, logits), 4)
        result["heldout_auroc_ci95"] = [round(v, 4) for v in bootstrap_auroc_ci(labels, logits)]
    if score_test:
        labels, logits = fitted["labels"]["test"], fitted["logits"]["test"]
        result["test_auroc"] = round(auroc(labels, logits), 4)
        result["test_auroc_ci95"] = [round(v, 4) for v in bootstrap_auroc_ci(labels, logits)]
    if teacher_out is not None:
        result["teacher_logits"] = str(
            write_teacher_logits(teacher_out, name, probe, split_rows, banks, columns, fitted)
        )
    result["seconds"] = round(time.perf_counter() - started, 1)
    logger.info("%s: %s", name, {k: v for k, v in result.items() if "auroc" in k})
    return result


def run_search(plan: dict[str, Any], out: str | Path) -> list[dict[str, Any]]:
    """``plan``: ``banks`` {name: npz}, ``site_banks`` {name: npz}, ``split``, ``heldout_split``,
    ``site_labels``, ``candidates`` {name: [columns]}, optional ``score_test`` [names] and
    ``teachers`` [names]: those candidates' logits are written as a teacher
    (``OUT/NAME/logits.csv``, column NAME; train films cross-fitted over the split's folds)."""
    banks = {name: read_bank(path) for name, path in plan["banks"].items()}
    site_banks = {name: read_bank(path) for name, path in plan["site_banks"].items()}
    rows = split_rows(plan["split"])
    heldout = split_rows(plan["heldout_split"]) if plan.get("heldout_split") else None
    site = read_site(plan["site_labels"], plan.get("group_column", "source"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, columns in plan["candidates"].items():
        parsed = [Column.parse(c) for c in columns]
        missing = [c.bank for c in parsed if c.bank not in banks or c.bank not in site_banks]
        if missing:
            raise UsageError(f"candidate {name} needs banks {missing}, absent from the plan")
        results.append(
            score_candidate(
                name,
                parsed,
                banks,
                rows,
                heldout,
                site,
                site_banks,
                score_test=name in plan.get("score_test", []),
                teacher_out=out / name if name in plan.get("teachers", []) else None,
            )
        )
        (out / "probe-search.json").write_text(json.dumps(results, indent=1))
    (out / "probe-search.md").write_text(markdown_table(results))
    return results


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    def cell(row, key):
        if key not in row:
            return "—"
        low, high = row[f"{key}_ci95"]
        return f"{row[key]:.3f} [{low:.3f}–{high:.3f}]"

    lines = [
        "| candidate | features | l2 | FracAtlas val | held-out (large-format) "
        "| **site B AUROC≈** | test |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results:
        lines.append(
            f"| {row['name']} | {row['features']} | {row['l2']:g} | {cell(row, 'val_auroc')} "
            f"| {cell(row, 'heldout_auroc')} | {cell(row, 'site_auroc')} "
            f"| {cell(row, 'test_auroc')} |"
        )
    return "\n".join(lines) + "\n"


def write_teacher_logits(out: Path, name, probe: Probe, rows, banks, columns, fitted) -> Path:
    """Every film's logit in a checkpoint's logits.csv format, so ``teacher_logits:
    OUT/NAME/logits.csv:NAME`` distils it. A train film's logit comes from a probe fitted on
    the other folds (same strength, same validation temperature): a student never distils a
    teacher that has seen that film's label."""
    from train.checkpoints import write_logits_csv
    from train.probe import cross_fitted_logits

    train_rows = [r for r in rows if r["split"] == "train"]
    features = matrix(banks, columns, [r["file"] for r in train_rows])
    labels = np.array([int(r["label"]) for r in train_rows])
    folds = np.array([int(r.get("fold") or -1) for r in train_rows])
    if (folds < 0).any():
        folds = np.arange(len(train_rows)) % 5
    cross = cross_fitted_logits(features, labels, folds, probe.l2) / probe.temperature
    by_file = {r["file"]: v for r, v in zip(train_rows, cross, strict=True)}
    for split in ("val", "test"):
        chosen = [r for r in rows if r["split"] == split]
        by_file.update(zip((r["file"] for r in chosen), fitted["logits"][split], strict=True))
    ordered = [r for r in rows if r["file"] in by_file]
    path = write_logits_csv(
        out / "logits.csv",
        [{"file": r["file"], "split": r["split"], "label": r["label"]} for r in ordered],
        {name: np.array([by_file[r["file"]] for r in ordered])},
    )
    return path
