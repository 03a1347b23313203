"""Data set adapters. Each yields :class:`Sample` ``(path, label, group, metadata)``.

- :func:`iter_fracatlas`: FracAtlas (Abedeen et al., Sci Data 10:521, 2023; CC BY 4.0).
- :func:`iter_class_folders`: any folder-per-class tree, binary or multi-class (fracture types).
- :func:`iter_manifest`: a CSV manifest ``path,label[,patient_id,study_id,region]`` (MURA-style).

``group`` is the unit that must never straddle two splits: the patient when known, else the
study, else the image itself (the splitter then merges duplicate groups found by the audit).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from edge_app.errors import DatasetError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"})
FRACATLAS_REGIONS = ("hand", "leg", "hip", "shoulder", "mixed")
FRACATLAS_FLAGS = ("hardware", "multiscan", "frontal", "lateral", "oblique")
SPLIT_FOLDER_NAMES = frozenset(
    {"train", "training", "val", "valid", "validation", "test", "testing"}
)
_POSITIVE_CLASS_NAMES = frozenset(
    {"fractured", "fracture", "fractures", "positive", "abnormal", "broken", "1", "yes"}
)
_NEGATIVE_CLASS_NAMES = frozenset(
    {
        "non_fractured",
        "not_fractured",
        "non-fractured",
        "not fractured",
        "nonfractured",
        "no_fracture",
        "normal",
        "negative",
        "0",
        "no",
        "unfractured",
    }
)


class Sample(NamedTuple):
    path: Path
    label: int
    group: str
    metadata: dict[str, Any]


def is_fracatlas(root: Path) -> bool:
    root = Path(root)
    return (root / "dataset.csv").is_file() and (root / "images" / "Fractured").is_dir()


def open_dataset(path: str | Path) -> Iterator[Sample]:
    """Pick the adapter for ``path``: FracAtlas root, CSV manifest or folder-per-class tree."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"Data set path {path} does not exist.")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DatasetError(f"{path} is a file but not a CSV manifest (path,label,...).")
        return iter_manifest(path)
    if is_fracatlas(path):
        return iter_fracatlas(path)
    return iter_class_folders(path)


# --------------------------------------------------------------------------- FracAtlas


def _read_fracatlas_table(root: Path) -> dict[str, dict[str, str]]:
    with open(root / "dataset.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    table: dict[str, dict[str, str]] = {}
    for row in rows:
        name = row["image_id"].strip()
        if name in table:
            logger.warning("dataset.csv lists %s twice; keeping the first row", name)
            continue
        table[name] = row
    return table


def read_yolo_boxes(path: Path) -> list[tuple[float, float, float, float]]:
    """YOLO ``class cx cy w h`` lines → normalised ``(x0, y0, x1, y1)`` boxes."""
    if not path.is_file():
        return []
    boxes = []
    for line in path.read_text().split("\n"):
        parts = line.split()
        if len(parts) != 5:
            continue
        cx, cy, width, height = (float(value) for value in parts[1:])
        boxes.append((cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2))
    return boxes


def read_coco_boxes(path: Path) -> dict[str, list[tuple[float, float, float, float]]]:
    """COCO boxes per file name, normalised ``(x0, y0, x1, y1)``."""
    if not path.is_file():
        return {}
    coco = json.loads(path.read_text())
    images = {image["id"]: image for image in coco["images"]}
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    for annotation in coco["annotations"]:
        image = images[annotation["image_id"]]
        x, y, width, height = annotation["bbox"]
        boxes.setdefault(image["file_name"], []).append(
            (
                x / image["width"],
                y / image["height"],
                (x + width) / image["width"],
                (y + height) / image["height"],
            )
        )
    return boxes


def read_coco_outlines(path: Path) -> dict[str, list[list[tuple[float, float]]]]:
    """COCO fracture outlines (polygons) per file name, as normalised ``(x, y)`` vertices."""
    if not path.is_file():
        return {}
    coco = json.loads(path.read_text())
    images = {image["id"]: image for image in coco["images"]}
    outlines: dict[str, list[list[tuple[float, float]]]] = {}
    for annotation in coco["annotations"]:
        image = images[annotation["image_id"]]
        segmentation = annotation.get("segmentation")
        if isinstance(segmentation, str):  # some exports store the list as text
            segmentation = json.loads(segmentation)
        for polygon in segmentation or []:
            if len(polygon) < 6:
                continue
            vertices = [
                (polygon[i] / image["width"], polygon[i + 1] / image["height"])
                for i in range(0, len(polygon) - 1, 2)
            ]
            outlines.setdefault(image["file_name"], []).append(vertices)
    return outlines


def _fracatlas_metadata(row: dict[str, str] | None, folder_label: int) -> dict[str, Any]:
    if row is None:
        return {"label_sources": {"folder": folder_label}}
    flags = {name: int(row[name]) for name in FRACATLAS_FLAGS if name in row}
    regions = [name for name in FRACATLAS_REGIONS if row.get(name) == "1"]
    return {
        **flags,
        "regions": regions,
        "region": regions[0] if len(regions) == 1 else ("mixed" if regions else None),
        "fracture_count": int(row.get("fracture_count") or 0),
        "label_sources": {"folder": folder_label, "csv": int(row["fractured"])},
    }


def iter_fracatlas(root: str | Path) -> Iterator[Sample]:
    """FracAtlas: the folder is the label; flags from ``dataset.csv``; boxes from YOLO/COCO.

    The CSV and the folders are two label sources; where they disagree, the folder wins (it is
    what the authors' split and the boxes follow) and ``metadata["label_sources"]`` keeps both
    for the audit. FracAtlas has no patient ids, so ``group`` is the file name.
    """
    root = Path(root)
    if not is_fracatlas(root):
        raise DatasetError(
            f"{root} is not a FracAtlas root: expected dataset.csv and images/Fractured/."
        )
    table = _read_fracatlas_table(root)
    coco_boxes = read_coco_boxes(root / "annotations" / "coco.json")
    coco_outlines = read_coco_outlines(root / "annotations" / "coco.json")
    for folder, folder_label in (("Fractured", 1), ("Non_fractured", 0)):
        for path in sorted((root / "images" / folder).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            row = table.get(path.name)
            if row is None:
                logger.warning("%s is not listed in dataset.csv", path.name)
            metadata = _fracatlas_metadata(row, folder_label)
            yolo = read_yolo_boxes(root / "annotations" / "yolo" / f"{path.stem}.txt")
            metadata["boxes"] = yolo or coco_boxes.get(path.name, [])
            metadata["outlines"] = coco_outlines.get(path.name, [])
            yield Sample(path, folder_label, path.name, metadata)


# --------------------------------------------------------------------------- class folders


def _iter_images(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            yield path


def _class_folders(root: Path) -> list[tuple[str, Path, str | None]]:
    """``(class_name, folder, source_split)``, looking through train/val/test level folders."""
    children = sorted(child for child in root.iterdir() if child.is_dir())
    if children and all(child.name.lower() in SPLIT_FOLDER_NAMES for child in children):
        return [
            (grandchild.name, grandchild, child.name)
            for child in children
            for grandchild in sorted(g for g in child.iterdir() if g.is_dir())
        ]
    return [(child.name, child, None) for child in children]


def binary_label_of_class(name: str) -> int | None:
    """1 / 0 for fracture / no-fracture folder names, else None."""
    key = name.strip().lower().replace(" ", "_")
    if key in _POSITIVE_CLASS_NAMES:
        return 1
    if key in _NEGATIVE_CLASS_NAMES or key.replace("_", " ") in _NEGATIVE_CLASS_NAMES:
        return 0
    return None


def iter_class_folders(root: str | Path) -> Iterator[Sample]:
    """A folder-per-class tree (images may sit in nested folders under each class).

    Binary when the class names read as fracture / no fracture. Otherwise the folders are
    fracture *types*, as in the "Bone Break Classification" layout: ``label`` is 1 (fractured)
    for every type folder and 0 for a folder named like "normal", and
    ``metadata["fracture_type"]`` names the type (``None`` for negatives), indexing
    ``metadata["fracture_types"]`` for the auxiliary type head. Top-level
    ``train/``/``val/``/``test/`` folders are looked through and recorded as
    ``metadata["source_split"]``.
    """
    root = Path(root)
    folders = _class_folders(root)
    if not folders:
        raise DatasetError(f"{root} holds no class folders (expected e.g. fractured/, normal/).")
    class_names = sorted({name for name, _, _ in folders})
    binary = {name: binary_label_of_class(name) for name in class_names}
    is_binary = (
        all(label is not None for label in binary.values()) and len(set(binary.values())) == 2
    )
    types = [name for name in class_names if binary[name] != 0]
    for class_name, folder, source_split in folders:
        metadata: dict[str, Any] = {"class_name": class_name, "source_split": source_split}
        if is_binary:
            label = binary[class_name]
        else:
            label = 0 if binary[class_name] == 0 else 1
            metadata["fracture_type"] = class_name if label else None
            metadata["fracture_types"] = types
        for path in _iter_images(folder):
            yield Sample(path, int(label), str(path.relative_to(root)), dict(metadata))


# --------------------------------------------------------------------------- CSV manifest


def iter_manifest(csv_path: str | Path) -> Iterator[Sample]:
    """Rows ``path,label[,patient_id,study_id,region]``; paths are relative to the CSV's folder."""
    csv_path = Path(csv_path)
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        missing = {"path", "label"} - columns
        if missing:
            raise DatasetError(
                f"{csv_path} lacks the column(s) {sorted(missing)}; "
                "a manifest needs path,label[,patient_id,study_id,region]."
            )
        for line_number, row in enumerate(reader, start=2):
            yield _manifest_sample(csv_path, row, line_number)


def _manifest_sample(csv_path: Path, row: dict[str, str], line_number: int) -> Sample:
    try:
        label = int(float(row["label"]))
    except (TypeError, ValueError) as error:
        raise DatasetError(
            f"{csv_path}:{line_number}: label {row['label']!r} is not a number"
        ) from error
    path = (csv_path.parent / row["path"]).resolve()
    group = row.get("patient_id") or row.get("study_id") or row["path"]
    metadata = {key: row[key] for key in ("patient_id", "study_id", "region") if row.get(key)}
    return Sample(path, label, group, metadata)
