"""The images every artifact scores: a FracAtlas split's val and test films (with their boxes
and outlines), a labelled external folder, and label-stratified subsets for quick runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.specs import BenchError
from edge_app.labelled_folder import read_labels_csv
from train.split_scoring import DEFAULT_DATA, DEFAULT_SPLIT, SplitImage  # noqa: F401


def fracatlas_images(split_csv: str | Path, data_root: str | Path) -> list[SplitImage]:
    """The split's val and test films (:func:`train.split_scoring.split_images`, the path
    export scores bundles through too)."""
    from train.split_scoring import split_images

    return split_images(split_csv, data_root, ("val", "test"))


def stratified_subset(images: Sequence[SplitImage], limit: int, seed: int = 0) -> list[SplitImage]:
    """At most ``limit`` images per split, each label keeping its share (at least one each)."""
    if limit < 1:
        raise BenchError(f"--limit must be at least 1, got {limit}")
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    for split in dict.fromkeys(image.split for image in images):
        strata: dict[Any, list[int]] = {}
        for index, image in enumerate(images):
            if image.split == split:
                strata.setdefault(image.label, []).append(index)
        for label, members in strata.items():
            picked = rng.choice(members, size=_quotas(strata, limit)[label], replace=False)
            chosen.update(int(i) for i in picked)
    return [image for index, image in enumerate(images) if index in chosen]


def _quotas(strata: dict[Any, list[int]], limit: int) -> dict[Any, int]:
    """Largest-remainder shares of ``limit`` by stratum size, at least one per stratum."""
    total = sum(len(members) for members in strata.values())
    if total <= limit:
        return {label: len(members) for label, members in strata.items()}
    exact = {label: limit * len(members) / total for label, members in strata.items()}
    quotas = {label: max(1, int(value)) for label, value in exact.items()}
    by_remainder = sorted(exact, key=lambda label: exact[label] - int(exact[label]), reverse=True)
    for label in by_remainder:
        if sum(quotas.values()) >= limit:
            break
        quotas[label] = min(quotas[label] + 1, len(strata[label]))
    return quotas


def read_external_labels(
    folder: str | Path, labels_csv: str | Path, group_column: str | None = None
) -> list[SplitImage]:
    """The labels CSV's rows as images (:func:`edge_app.labelled_folder.read_labels_csv`, the
    reader ``fracture-edge calibrate`` uses too), each with its ``group_column`` cell."""
    return [
        SplitImage(film.file, "external", film.label, film.path, film.boxes, group=film.group)
        for film in read_labels_csv(folder, labels_csv, group_column)
    ]
