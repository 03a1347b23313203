"""Another site in every report (``bench --external``): per artifact, AUROC≈ with a confidence
interval bootstrapped over groups, the share of fracture films and of unannotated films each
card operating point flags, and the pointing game against the padded boxes next to its chance
level; ``report.json`` → ``rows[].site``, ``report.md`` → *External site*.

A site's film without a fracture label is not a verified normal (site B: no box was drawn), so
every film not labelled ``1`` counts as a negative for AUROC≈ and its flags are a flag rate,
never a specificity. Films of one group (site B: augmented copies of one picture share
``source``) are not independent: the interval resamples whole groups
(:func:`train.metrics.group_bootstrap_auroc_ci`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.report_tables import format_number
from benchmarks.scoring import BOX_PADDING
from train.split_scoring import SplitImage

POINTS = ("doubt", "fracture")
NEGATIVES = "films not labelled 1 (0 or empty): unannotated, not verified normals"


def film_groups(images: Sequence[SplitImage]) -> list[str]:
    """Each film's group key; a film without a group is a group of its own."""
    return [f"group:{i.group}" if i.group is not None else f"film:{i.file}" for i in images]


def flagged(probabilities: np.ndarray, threshold: float) -> dict[str, Any]:
    """How many of the films reach ``threshold``, of how many, and the share."""
    count = int(np.sum(probabilities >= threshold))
    films = int(probabilities.size)
    return {"flagged": count, "films": films, "share": round(count / films, 4) if films else None}


def site_metrics(
    images: Sequence[SplitImage],
    logits: np.ndarray,
    temperature: float,
    thresholds: dict[str, float],
    resamples: int,
    seed: int,
    heatmap: dict | None = None,
) -> dict[str, Any]:
    """One artifact on an external site: AUROC≈ (negatives: :data:`NEGATIVES`) with its group
    and film bootstrap intervals, flags at the card's points, and ``heatmap``'s box scores."""
    from train.metrics import apply_temperature, auroc, group_bootstrap_auroc_ci

    fractured = np.asarray([image.label == 1 for image in images])
    scores = np.asarray(logits, dtype=np.float64)
    groups = film_groups(images)
    both_classes = 0 < fractured.sum() < fractured.size
    intervals = {"groups": [None, None], "films": [None, None]}
    if both_classes:
        each_film = [f"film:{index}" for index in range(len(images))]
        for name, keys in (("groups", groups), ("films", each_film)):
            low, high = group_bootstrap_auroc_ci(fractured, scores, keys, resamples, seed)
            intervals[name] = [round(low, 4), round(high, 4)]
    probabilities = apply_temperature(scores, temperature)
    points = {
        name: {
            "probability": float(thresholds[name]),
            "fracture_films_flagged": flagged(probabilities[fractured], thresholds[name]),
            "unannotated_films_flagged": flagged(probabilities[~fractured], thresholds[name]),
        }
        for name in POINTS
        if name in thresholds
    }
    return {
        "negatives": NEGATIVES,
        "films": len(images),
        "fracture_films": int(fractured.sum()),
        "unannotated_films": int((~fractured).sum()),
        "groups": len(set(groups)),
        "auroc": round(auroc(fractured, scores), 4) if both_classes else None,
        "auroc_ci95": intervals["groups"],
        "auroc_ci95_films": intervals["films"],
        "temperature": temperature,
        "operating_points": points,
        "heatmap": (heatmap or {}).get("boxes"),
    }


# --------------------------------------------------------------------------- report.md

HEADER = [
    "model",
    "AUROC≈ [95 % CI, over groups]",
    "fracture / unannotated films flagged @ doubt",
    "fracture / unannotated films flagged @ fracture",
    f"pointing game (boxes + {100 * BOX_PADDING:g} %)",
    "chance level",
    "top-region IoU",
]


def _interval(values: Sequence[float | None]) -> str:
    return "n/a" if values[0] is None else f"{values[0]:.3f}–{values[1]:.3f}"


def _share(entry: dict) -> str:
    return f"{format_number(entry['share'])} ({entry['flagged']}/{entry['films']})"


def _flag_cell(point: dict | None) -> str:
    if point is None:
        return "n/a (no such point on the card)"
    fracture, unannotated = point["fracture_films_flagged"], point["unannotated_films_flagged"]
    return f"{_share(fracture)} / {_share(unannotated)}"


def site_row(row: dict) -> list[str]:
    site = row["site"]
    auroc = (
        "n/a (one class)"
        if site["auroc"] is None
        else f"{format_number(site['auroc'])} [{_interval(site['auroc_ci95'])}]"
    )
    boxes = site["heatmap"]
    if boxes and boxes["films"]:
        game = boxes["pointing_game"]
        heatmap = [
            f"{game['hits']}/{game['evaluated']} ({format_number(game['rate'], 2)})",
            format_number(boxes["chance_level"]),
            format_number(boxes["top_region_iou_mean"], 2),
        ]
    else:
        heatmap = [row["heatmap_note"] or "n/a", "n/a", "n/a"]
    points = site["operating_points"]
    return [row["name"], auroc, *(_flag_cell(points.get(name)) for name in POINTS), *heatmap]


def _group_text(report: dict, site: dict) -> str:
    column = report["data"].get("group_column")
    if column is None:
        return f"{site['groups']} groups (no group column: each film its own group)"
    return f"{site['groups']} groups of `{column}`"


def site_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the *External site* table: one row per artifact with ``rows[].site``."""
    rows = [row for row in report["rows"] if row.get("site")]
    return (HEADER, [site_row(row) for row in rows]) if rows else ([], [])


def site_text(report: dict) -> str:
    """What the *External site* table counts, with this run's films, groups and settings."""
    site = next(row["site"] for row in report["rows"] if row.get("site"))
    config = report["config"]
    padding = f"{100 * ((site['heatmap'] or {}).get('padding') or BOX_PADDING):g} %"
    return (
        f"{site['films']} films: {site['fracture_films']} labelled fracture, "
        f"{site['unannotated_films']} unannotated (label 0 or empty; **not verified normals**), "
        f"in {_group_text(report, site)}. **AUROC≈** counts the unannotated films as negatives; "
        f"its 95 % CI is a percentile bootstrap over groups ({config['resamples']} resamples), "
        "so copies of one picture move together (report.json: `rows[].site.auroc_ci95`; the "
        "film bootstrap, for comparison, `auroc_ci95_films`). **Fracture / unannotated films "
        "flagged**: the share (count / films) whose calibrated probability reaches the card's "
        "point, with the card's own temperature; on unannotated films a flag rate, not a "
        f"specificity. **Pointing game**: the heatmap's peak inside a box padded by {padding} of "
        "the image side on every side, over the first "
        f"{config['heatmap_images']} films with boxes (`--heatmap-images`); **chance level**: "
        "the mean share of the film the padded boxes cover (where a random peak would land). "
        "**Top-region IoU**: the map's top region (what a front end boxes) against the padded "
        "boxes. The Results table's specificity counts label 0 as a verified normal: on a site "
        "whose 0 means *no annotation*, read this table instead."
    )
