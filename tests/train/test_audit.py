"""Tests for train.audit and train.audit_report on a synthetic FracAtlas-like tree."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from train.audit import AuditResult, audit_dataset, read_json, write_json
from train.audit_report import write_report
from train.datasets import Sample, iter_fracatlas

CONTRACT = {
    "exact_duplicate_groups",
    "near_duplicate_groups",
    "label_conflict_groups",
    "truncated",
    "label_source_disagreements",
}


@pytest.fixture(scope="module")
def audit(tmp_path_factory, make_radiograph, encode_jpeg, fracatlas_tree, atlas_image):
    """Seven images, each problem planted once:

    - ``f_b_copy.jpg`` is a byte copy of ``f_a.jpg`` (same label);
    - ``n_resized.jpg`` is ``f_c.jpg`` re-encoded at 0.8× under the other label;
    - ``n_cut.jpg`` is a JPEG cut to 60 % of its bytes;
    - ``n_csv.jpg`` is filed as not fractured but the CSV says fractured.
    """

    def pixels(seed: int) -> np.ndarray:
        return make_radiograph(shape_seed=seed, texture_seed=seed)

    shared = encode_jpeg(pixels(1))
    with Image.open(io.BytesIO(encode_jpeg(pixels(2)))) as decoded:
        resized = encode_jpeg(np.asarray(decoded.resize((240, 192), Image.BILINEAR)), 70)
    cut = encode_jpeg(pixels(4))
    root = fracatlas_tree(
        tmp_path_factory.mktemp("atlas"),
        [
            atlas_image(
                "f_a.jpg", True, data=shared, flags={"hardware": 1}, yolo=[(0.5, 0.5, 0.2, 0.2)]
            ),
            atlas_image("f_b_copy.jpg", True, data=shared, regions=("leg",)),
            atlas_image("f_c.jpg", True, data=encode_jpeg(pixels(2)), regions=("hip",)),
            atlas_image("n_csv.jpg", False, pixels(3), csv_fractured=1),
            atlas_image("n_cut.jpg", False, data=cut[: int(0.6 * len(cut))], regions=("leg",)),
            atlas_image("n_plain.jpg", False, pixels(5), regions=("shoulder",)),
            atlas_image("n_resized.jpg", False, data=resized, regions=("hip",)),
        ],
    )
    samples = list(iter_fracatlas(root))
    return audit_dataset(samples, workers=1)


def test_contract_keys_hold_the_planted_findings(audit):
    data = audit.to_json()
    assert CONTRACT <= set(data)
    assert {key: data[key] for key in CONTRACT} == {
        "exact_duplicate_groups": [["f_a.jpg", "f_b_copy.jpg"]],
        "near_duplicate_groups": [["f_a.jpg", "f_b_copy.jpg"], ["f_c.jpg", "n_resized.jpg"]],
        "label_conflict_groups": [["f_c.jpg", "n_resized.jpg"]],
        "truncated": ["n_cut.jpg"],
        "label_source_disagreements": ["n_csv.jpg"],
    }


def test_json_holds_file_names_not_paths(audit):
    data = audit.to_json()
    names = [
        name
        for key in ("exact_duplicate_groups", "near_duplicate_groups", "label_conflict_groups")
        for group in data[key]
        for name in group
    ]
    names += data["truncated"] + data["label_source_disagreements"]
    assert names
    assert not any("/" in name or "\\" in name for name in names)


def test_near_duplicate_pair_score(audit):
    pairs = audit.to_json()["near_duplicate_pairs"]
    scores = {tuple(pair["files"]): pair["similarity"] for pair in pairs}
    assert scores[("f_c.jpg", "n_resized.jpg")] >= 0.8
    # An exact copy is confirmed by the pixel check as well, with a perfect score.
    assert scores[("f_a.jpg", "f_b_copy.jpg")] == pytest.approx(1.0, abs=1e-3)
    assert set(scores) == {("f_a.jpg", "f_b_copy.jpg"), ("f_c.jpg", "n_resized.jpg")}


def test_records_know_sizes_and_truncation(audit):
    records = {record.name: record for record in audit.records}
    assert (records["f_a.jpg"].width, records["f_a.jpg"].height) == (300, 240)
    assert (records["n_resized.jpg"].width, records["n_resized.jpg"].height) == (240, 192)
    assert records["f_a.jpg"].sha256 == records["f_b_copy.jpg"].sha256
    assert records["f_a.jpg"].sha256 != records["f_c.jpg"].sha256
    assert [name for name, record in records.items() if record.truncated] == ["n_cut.jpg"]
    assert not any(record.error for record in audit.records)


def test_summary_counts(audit):
    summary = audit.summary
    assert summary["images"] == 7
    assert summary["unreadable"] == 0
    assert summary["classes"] == {"0": 4, "1": 3}
    assert summary["counts"] == {
        "exact_duplicate_groups": 1,
        "images_in_exact_duplicate_groups": 2,
        "near_duplicate_groups": 2,
        "images_in_near_duplicate_groups": 4,
        "near_duplicate_pairs": 2,
        "label_conflict_groups": 1,
        "images_in_label_conflict_groups": 2,
        "truncated": 1,
        "label_source_disagreements": 1,
    }
    assert summary["regions_by_label"]["hip"] == {"fractured": 1, "not_fractured": 1}
    assert summary["regions_by_label"]["hand"] == {"fractured": 1, "not_fractured": 1}
    assert summary["hardware_by_label"]["1"] == {"fractured": 1, "not_fractured": 0}
    # One of three positives has hardware, no negative does: U = 4 + 2 · 4 · ½ = 8 of 3 · 4 pairs.
    assert summary["shortcut_auroc"]["hardware_flag"] == pytest.approx(8 / 12, abs=1e-4)


def test_unreadable_file_is_reported_not_raised(tmp_path, make_radiograph, save_jpeg):
    good = save_jpeg(tmp_path / "good.jpg", make_radiograph(height=64, width=64))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    result = audit_dataset([Sample(good, 1, "good", {}), Sample(bad, 0, "bad", {})], workers=1)
    data = result.to_json()
    assert list(data["unreadable"]) == ["bad.jpg"]
    assert "NotAnImageError" in data["unreadable"]["bad.jpg"]
    assert result.summary["unreadable"] == 1
    assert data["near_duplicate_groups"] == []


def test_boxed_negative_is_a_label_source_disagreement(tmp_path, make_radiograph, save_jpeg):
    path = save_jpeg(tmp_path / "boxed.jpg", make_radiograph(height=64, width=64))
    metadata = {"label_sources": {"folder": 0}, "boxes": [(0.1, 0.1, 0.2, 0.2)]}
    result = audit_dataset([Sample(path, 0, "boxed", metadata)], workers=1)
    assert result.to_json()["label_source_disagreements"] == ["boxed.jpg"]


def test_write_report_writes_markdown_and_valid_pngs(audit, tmp_path):
    report = write_report(audit, tmp_path / "report")
    assert report == tmp_path / "report" / "audit.md"
    text = report.read_text()
    assert text.startswith("# Data audit")
    assert "- f_c.jpg (1), n_resized.jpg (0)" in text
    assert "n_cut.jpg" in text
    assert "- n_csv.jpg: {'folder': 0, 'csv': 1}, boxes: 0" in text
    for name in (
        "class_distribution.png",
        "region_by_label.png",
        "image_sizes.png",
        "hardware_by_label.png",
    ):
        path = tmp_path / "report" / name
        assert path.stat().st_size > 0
        assert f"]({name})" in text
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.width > 100 and image.height > 100
            image.verify()


def test_json_round_trip(audit, tmp_path):
    path = write_json(audit, tmp_path / "out" / "audit.json")
    data = read_json(path)
    assert data == json.loads(json.dumps(audit.to_json()))
    assert data["label_conflict_groups"] == [["f_c.jpg", "n_resized.jpg"]]


def test_read_json_rejects_other_json(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"near_duplicate_groups": []}))
    with pytest.raises(ValueError, match=r"lacks \['label_conflict_groups', 'truncated'\]"):
        read_json(path)


def test_empty_result_serialises(tmp_path):
    result = AuditResult([], [], [], [], [], [])
    assert {key: result.to_json()[key] for key in CONTRACT} == dict.fromkeys(CONTRACT, [])
