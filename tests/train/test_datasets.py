"""Tests for train.datasets: FracAtlas, folder-per-class trees and CSV manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_app.errors import DatasetError
from train.datasets import (
    binary_label_of_class,
    iter_class_folders,
    iter_fracatlas,
    iter_manifest,
    open_dataset,
    read_yolo_boxes,
)

TINY = np.full((12, 16), 128, np.uint8)


@pytest.fixture
def atlas_root(tmp_path, fracatlas_tree, atlas_image) -> Path:
    return fracatlas_tree(
        tmp_path / "FracAtlas",
        [
            atlas_image(
                "IMG0001.jpg",
                True,
                TINY,
                regions=("hand",),
                fracture_count=2,
                flags={"hardware": 1, "frontal": 1},
                yolo=[(0.5, 0.5, 0.2, 0.4), (0.25, 0.75, 0.1, 0.1)],
            ),
            atlas_image(
                "IMG0002.jpg",
                True,
                TINY,
                regions=("leg", "hip"),
                fracture_count=1,
                flags={"lateral": 1},
                yolo=[(0.4, 0.6, 0.4, 0.4)],
            ),
            atlas_image("IMG0003.jpg", False, TINY, regions=("shoulder",), flags={"oblique": 1}),
            # The folder says not fractured, the CSV says fractured.
            atlas_image(
                "IMG0004.jpg", False, TINY, regions=(), csv_fractured=1, flags={"multiscan": 1}
            ),
        ],
    )


def by_name(samples):
    return {Path(sample.path).name: sample for sample in samples}


# --------------------------------------------------------------------------- FracAtlas


def test_fracatlas_labels_come_from_the_folders(atlas_root):
    samples = list(iter_fracatlas(atlas_root))
    assert [(Path(s.path).name, s.label) for s in samples] == [
        ("IMG0001.jpg", 1),
        ("IMG0002.jpg", 1),
        ("IMG0003.jpg", 0),
        ("IMG0004.jpg", 0),
    ]
    assert all(sample.group == Path(sample.path).name for sample in samples)
    assert samples[0].path == atlas_root / "images" / "Fractured" / "IMG0001.jpg"


def test_fracatlas_flags_regions_and_counts(atlas_root):
    samples = by_name(iter_fracatlas(atlas_root))
    first = samples["IMG0001.jpg"].metadata
    assert {k: first[k] for k in ("hardware", "multiscan", "frontal", "lateral", "oblique")} == {
        "hardware": 1,
        "multiscan": 0,
        "frontal": 1,
        "lateral": 0,
        "oblique": 0,
    }
    assert first["regions"] == ["hand"]
    assert first["region"] == "hand"
    assert first["fracture_count"] == 2
    second = samples["IMG0002.jpg"].metadata
    assert second["regions"] == ["leg", "hip"]
    assert second["region"] == "mixed"
    assert second["lateral"] == 1
    assert samples["IMG0003.jpg"].metadata["region"] == "shoulder"
    fourth = samples["IMG0004.jpg"].metadata
    assert fourth["regions"] == []
    assert fourth["region"] is None
    assert fourth["multiscan"] == 1


def test_fracatlas_yolo_boxes_become_corners(atlas_root):
    samples = by_name(iter_fracatlas(atlas_root))
    boxes = samples["IMG0001.jpg"].metadata["boxes"]
    assert len(boxes) == 2
    assert boxes[0] == pytest.approx((0.4, 0.3, 0.6, 0.7))
    assert boxes[1] == pytest.approx((0.2, 0.7, 0.3, 0.8))
    assert samples["IMG0002.jpg"].metadata["boxes"][0] == pytest.approx((0.2, 0.4, 0.6, 0.8))
    assert samples["IMG0003.jpg"].metadata["boxes"] == []


def test_fracatlas_keeps_both_label_sources_when_they_disagree(atlas_root):
    samples = by_name(iter_fracatlas(atlas_root))
    disagreeing = samples["IMG0004.jpg"]
    assert disagreeing.label == 0  # the folder wins
    assert disagreeing.metadata["label_sources"] == {"folder": 0, "csv": 1}
    assert samples["IMG0001.jpg"].metadata["label_sources"] == {"folder": 1, "csv": 1}


def test_fracatlas_image_missing_from_csv_keeps_folder_label(tmp_path, fracatlas_tree, atlas_image):
    root = fracatlas_tree(
        tmp_path,
        [
            atlas_image("listed.jpg", True, TINY),
            atlas_image("unlisted.jpg", False, TINY, in_csv=False),
        ],
    )
    samples = by_name(iter_fracatlas(root))
    assert samples["unlisted.jpg"].label == 0
    assert samples["unlisted.jpg"].metadata["label_sources"] == {"folder": 0}


def test_fracatlas_ignores_non_image_files(atlas_root):
    (atlas_root / "images" / "Fractured" / "notes.txt").write_text("not an image")
    assert len(list(iter_fracatlas(atlas_root))) == 4


def test_open_dataset_recognises_fracatlas(atlas_root):
    samples = list(open_dataset(atlas_root))
    assert len(samples) == 4
    assert "label_sources" in samples[0].metadata


def test_iter_fracatlas_rejects_other_folders(tmp_path):
    with pytest.raises(DatasetError, match="not a FracAtlas root"):
        list(iter_fracatlas(tmp_path))


def test_read_yolo_boxes_skips_malformed_lines(tmp_path):
    path = tmp_path / "boxes.txt"
    path.write_text("0 0.5 0.5 0.2 0.2\n\n1 2 3\n0 0.1 0.1 0.2 0.2\n")
    assert read_yolo_boxes(path) == [
        pytest.approx((0.4, 0.4, 0.6, 0.6)),
        pytest.approx((0.0, 0.0, 0.2, 0.2)),
    ]
    assert read_yolo_boxes(tmp_path / "missing.txt") == []


# --------------------------------------------------------------------------- class folders


def test_class_folders_binary_names(tmp_path, save_jpeg):
    for relative in ("fractured/a.jpg", "fractured/nested/b.jpg", "not fractured/c.jpg"):
        save_jpeg(tmp_path / relative, TINY)
    (tmp_path / "not fractured" / "readme.txt").write_text("ignored")
    samples = list(iter_class_folders(tmp_path))
    assert [(s.group, s.label) for s in samples] == [
        ("fractured/a.jpg", 1),
        ("fractured/nested/b.jpg", 1),
        ("not fractured/c.jpg", 0),
    ]
    assert samples[2].metadata == {"class_name": "not fractured", "source_split": None}
    assert "fracture_types" not in samples[0].metadata


@pytest.mark.parametrize(
    ("positive", "negative"),
    [
        ("Fractured", "Non_fractured"),
        ("abnormal", "normal"),
        ("fracture", "no_fracture"),
    ],
)
def test_binary_label_of_class(positive, negative):
    assert binary_label_of_class(positive) == 1
    assert binary_label_of_class(negative) == 0


def test_binary_label_of_class_unknown_name():
    assert binary_label_of_class("Greenstick fracture") is None


def test_class_folders_multiclass_fracture_types(tmp_path, save_jpeg):
    # "Bone Break Classification": <Type>/Train/*.jpg and <Type>/Test/*.jpg
    layout = {
        "Oblique fracture": ["Train/o1.jpg", "Test/o2.jpg"],
        "Avulsion fracture": ["Train/a1.jpg", "Train/a2.jpg", "Test/a3.jpg"],
        "Greenstick fracture": ["Test/g1.jpg"],
    }
    for class_name, files in layout.items():
        for relative in files:
            save_jpeg(tmp_path / class_name / relative, TINY)
    save_jpeg(tmp_path / "Normal" / "Train" / "n1.jpg", TINY)
    samples = list(iter_class_folders(tmp_path))
    types = ["Avulsion fracture", "Greenstick fracture", "Oblique fracture"]
    assert len(samples) == 7
    for sample in samples:
        assert sample.metadata["fracture_types"] == types
        assert Path(sample.path).parent.parent.name == sample.metadata["class_name"]
    found = {Path(s.path).name: (s.label, s.metadata["fracture_type"]) for s in samples}
    assert found == {
        "a1.jpg": (1, "Avulsion fracture"),
        "a2.jpg": (1, "Avulsion fracture"),
        "a3.jpg": (1, "Avulsion fracture"),
        "g1.jpg": (1, "Greenstick fracture"),
        "o1.jpg": (1, "Oblique fracture"),
        "o2.jpg": (1, "Oblique fracture"),
        "n1.jpg": (0, None),
    }


def test_class_folders_records_top_level_splits(tmp_path, save_jpeg):
    for relative in (
        "train/fractured/a.jpg",
        "train/normal/b.jpg",
        "val/fractured/c.jpg",
        "test/normal/d.jpg",
        "test/fractured/e.jpg",
    ):
        save_jpeg(tmp_path / relative, TINY)
    samples = {Path(s.path).name: s for s in iter_class_folders(tmp_path)}
    assert {name: (s.label, s.metadata["source_split"]) for name, s in samples.items()} == {
        "a.jpg": (1, "train"),
        "b.jpg": (0, "train"),
        "c.jpg": (1, "val"),
        "d.jpg": (0, "test"),
        "e.jpg": (1, "test"),
    }
    assert samples["d.jpg"].metadata["class_name"] == "normal"
    assert samples["d.jpg"].group == "test/normal/d.jpg"


def test_class_folders_without_classes_raise(tmp_path):
    with pytest.raises(DatasetError, match="no class folders"):
        list(iter_class_folders(tmp_path))


def test_open_dataset_falls_back_to_class_folders(tmp_path, save_jpeg):
    save_jpeg(tmp_path / "positive" / "a.jpg", TINY)
    save_jpeg(tmp_path / "negative" / "b.jpg", TINY)
    assert sorted(s.label for s in open_dataset(tmp_path)) == [0, 1]


# --------------------------------------------------------------------------- manifests


def test_manifest_groups_by_patient_and_resolves_relative_paths(tmp_path):
    manifest = tmp_path / "lists" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "path,label,patient_id,study_id,region\n"
        "../img/p1_a.png,1,P1,S1,wrist\n"
        "../img/p1_b.png,0.0,P1,S2,\n"
        "../img/p2_a.png,0,,S3,elbow\n"
        "../img/p3_a.png,1,,,\n"
    )
    samples = list(iter_manifest(manifest))
    assert [s.path for s in samples] == [
        (tmp_path / "img" / name).resolve()
        for name in ("p1_a.png", "p1_b.png", "p2_a.png", "p3_a.png")
    ]
    assert [s.label for s in samples] == [1, 0, 0, 1]
    assert [s.group for s in samples] == ["P1", "P1", "S3", "../img/p3_a.png"]
    assert samples[0].metadata == {"patient_id": "P1", "study_id": "S1", "region": "wrist"}
    assert samples[1].metadata == {"patient_id": "P1", "study_id": "S2"}
    assert samples[3].metadata == {}


def test_open_dataset_reads_a_manifest(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label\na.png,1\n")
    samples = list(open_dataset(manifest))
    assert [(s.path, s.label) for s in samples] == [((tmp_path / "a.png").resolve(), 1)]


def test_manifest_without_label_column(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,diagnosis\na.png,1\n")
    with pytest.raises(DatasetError, match=r"\['label'\]"):
        list(iter_manifest(manifest))


def test_manifest_with_non_numeric_label(tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label\na.png,1\nb.png,broken\n")
    with pytest.raises(DatasetError, match=r"manifest.csv:3: label 'broken' is not a number"):
        list(iter_manifest(manifest))


def test_open_dataset_missing_path(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")


def test_open_dataset_rejects_a_non_csv_file(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("a.png 1\n")
    with pytest.raises(DatasetError, match="not a CSV manifest"):
        open_dataset(path)
