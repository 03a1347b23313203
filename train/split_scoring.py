"""Scoring an artifact on a split's *original* films: the one path export and bench share.

A film is read with the app's loader (:mod:`edge_app.radiograph`) and turned into a model input
with the app's preprocessing and the artifact's own card, so a number measured here is a number
the app would reproduce. :func:`split_images` lists a split's films (with their FracAtlas
boxes and outlines); :func:`model_inputs` loads and preprocesses them; the operating points are
chosen on validation by :func:`train.evaluate.evaluate_scores` (its one selector).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_app.errors import DatasetError, InputPathError
from edge_app.preprocess import PreprocessConfig, preprocess
from edge_app.radiograph import load_radiograph

_REPOSITORY = Path(__file__).resolve().parents[1]
#: The leak-free split every reported number uses, and where FracAtlas lives beside the checkout.
DEFAULT_SPLIT = _REPOSITORY / "splits" / "fracatlas-bd42f929f115.csv"
DEFAULT_DATA = _REPOSITORY.parent / "shared" / "data" / "fracatlas"


@dataclass(frozen=True)
class SplitImage:
    """One film to score. ``label`` None: unknown (external sets only). ``group`` (external
    sets with a group column): films that belong together for a bootstrap; None, its own."""

    file: str
    split: str
    label: int | None
    path: Path
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    outlines: tuple[tuple[tuple[float, float], ...], ...] = ()
    group: str | None = None


def split_images(
    split_csv: str | Path, data_root: str | Path, splits: Sequence[str] = ("val", "test")
) -> list[SplitImage]:
    """The split's rows in ``splits``, with FracAtlas boxes and outlines (normalised to the
    original film). Every listed split must hold both classes."""
    from train.datasets import iter_fracatlas
    from train.splits import read_split

    split_csv, data_root = Path(split_csv), Path(data_root)
    if not split_csv.is_file():
        raise InputPathError(f"split file {split_csv} does not exist; pass --split FILE")
    if not (data_root / "dataset.csv").is_file():
        raise DatasetError(
            f"{data_root} is not a FracAtlas root (no dataset.csv); pass --data ROOT"
        )
    samples = {sample.path.name: sample.metadata for sample in iter_fracatlas(data_root)}
    images = [
        SplitImage(
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
        if row.split in splits
    ]
    missing = [image.path for image in images if not image.path.is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} images of {split_csv} are missing under {data_root}, e.g. "
            f"{', '.join(map(str, missing[:5]))}"
        )
    for split in splits:
        labels = {image.label for image in images if image.split == split}
        if labels != {0, 1}:
            raise DatasetError(
                f"{split_csv} needs both classes in '{split}', found {sorted(labels)}"
            )
    return images


def model_inputs(images: Sequence[SplitImage], config: PreprocessConfig) -> np.ndarray:
    """The films through the app's loader and preprocessing, as (N, H, W, 1) float32."""
    return np.stack(
        [preprocess(load_radiograph(image.path).pixels, config)[0] for image in images]
    )[..., None]


def stratified_sample(images: Sequence[SplitImage], count: int, seed: int = 0) -> list[SplitImage]:
    """A class-stratified random sample (for int8 calibration), in the images' order."""
    rng = np.random.default_rng(seed)
    labels = np.array([image.label for image in images])
    chosen: list[int] = []
    for label in (0, 1):
        members = np.flatnonzero(labels == label)
        share = round(count * len(members) / len(images))
        chosen += rng.choice(members, size=min(share, len(members)), replace=False).tolist()
    return [images[index] for index in sorted(chosen)]


def labels_of(images: Sequence[SplitImage], split: str) -> np.ndarray:
    return np.array([image.label for image in images if image.split == split], dtype=np.int64)
