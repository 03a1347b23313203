"""The images every artifact scores: a FracAtlas split's val and test films (with their boxes
and outlines), a labelled external folder, and label-stratified subsets for quick runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.specs import REPO_ROOT, BenchError
from edge_app.labelled_folder import read_labels_csv

DEFAULT_SPLIT = REPO_ROOT / "splits" / "fracatlas-bd42f929f115.csv"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "fracatlas"


@dataclass(frozen=True)
class BenchImage:
    """One image every artifact scores. ``label`` None: unknown (external sets only)."""

    file: str
    split: str
    label: int | None
    path: Path
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    outlines: tuple[tuple[tuple[float, float], ...], ...] = ()


def fracatlas_images(split_csv: str | Path, data_root: str | Path) -> list[BenchImage]:
    """The split's val and test rows, with FracAtlas boxes (normalised to the original image)."""
    from train.datasets import iter_fracatlas
    from train.splits import read_split

    split_csv, data_root = Path(split_csv), Path(data_root)
    if not split_csv.is_file():
        raise BenchError(f"split file {split_csv} does not exist; pass --split FILE")
    if not (data_root / "dataset.csv").is_file():
        raise BenchError(f"{data_root} is not a FracAtlas root (no dataset.csv); pass --data ROOT")
    samples = {sample.path.name: sample.metadata for sample in iter_fracatlas(data_root)}
    images = [
        BenchImage(
            row.file,
            row.split,
            int(row.label),
            data_root / row.relpath,
            tuple(
                tuple(float(v) for v in box) for box in samples.get(row.file, {}).get("boxes", [])
            ),
            tuple(
                tuple((float(x), float(y)) for x, y in outline)
                for outline in samples.get(row.file, {}).get("outlines", [])
            ),
        )
        for row in read_split(split_csv)
        if row.split in ("val", "test")
    ]
    missing = [image.path for image in images if not image.path.is_file()]
    if missing:
        raise BenchError(
            f"{len(missing)} images of {split_csv} are missing under {data_root}, e.g. "
            f"{', '.join(map(str, missing[:5]))}"
        )
    for split in ("val", "test"):
        labels = {image.label for image in images if image.split == split}
        if labels != {0, 1}:
            raise BenchError(f"{split_csv} needs both classes in '{split}', found {sorted(labels)}")
    return images


def stratified_subset(images: Sequence[BenchImage], limit: int, seed: int = 0) -> list[BenchImage]:
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


def read_external_labels(folder: str | Path, labels_csv: str | Path) -> list[BenchImage]:
    """The labels CSV's rows as images (:func:`edge_app.labelled_folder.read_labels_csv`, the
    reader ``fracture-edge calibrate`` uses too)."""
    return [
        BenchImage(film.file, "external", film.label, film.path, film.boxes)
        for film in read_labels_csv(folder, labels_csv)
    ]
