"""Benchmark helpers that need neither torch nor TensorFlow: specs, labelled folders, subsets,
speed-ups, outline scores, the latency children's environment; and an external-set run of the
committed TFLite bundle. They run with the app and dev extras alone."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from benchmarks.bench import BenchConfig  # noqa: E402
from benchmarks.cli import add_bench_parser  # noqa: E402
from benchmarks.images import read_external_labels, stratified_subset  # noqa: E402
from benchmarks.latency_children import child_environment  # noqa: E402
from benchmarks.plots import FIGURES  # noqa: E402
from benchmarks.specs import BenchError, parse_spec, resolve_specs  # noqa: E402
from edge_app.errors import LabelsFileError  # noqa: E402
from edge_app.labelled_folder import parse_boxes  # noqa: E402
from train.metrics import apply_temperature, auroc  # noqa: E402
from train.split_scoring import SplitImage  # noqa: E402


def _png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_latency_children_ask_malloc_for_huge_pages():
    assert child_environment({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    kept = child_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "X": "1"})
    assert kept == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "X": "1"}
    mine = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    assert child_environment(mine) == mine  # a user's own choice stays


@pytest.fixture(scope="module")
def external(tmp_path_factory, make_radiograph, save_jpeg) -> tuple[Path, Path]:
    """Eight images: three fractured (two with boxes), three not, two of unknown label."""
    folder = tmp_path_factory.mktemp("external")
    labels = ["1", "1", "1", "0", "0", "0", "", ""]
    boxes = ["0.2 0.2 0.6 0.6", "0.1 0.1 0.3 0.3; 0.5 0.5 0.9 0.9", "", "", "", "", "", ""]
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "fracture", "boxes"])
        for index, (label, box) in enumerate(zip(labels, boxes, strict=True)):
            name = f"sub/x{index}.jpg"
            save_jpeg(folder / "images" / name, make_radiograph(70, 50 + 5 * index, index, 7))
            writer.writerow([name, label, box])
    return folder / "images", folder / "labels.csv"


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_external_set_uses_card_thresholds_and_flag_rates(external, tiny_bundle, tmp_path, capsys):
    folder, labels = external
    out = tmp_path / "report"
    argv = ["bench", "--external", str(folder), "--labels", str(labels), "--out", str(out)]
    argv += ["--models", f"tflite:{tiny_bundle}", "--threads", "1", "--repeats", "1"]
    argv += ["--runs", "2", "--warmup", "1", "--resamples", "50", "--no-cuda"]
    assert _run_cli(argv) == 0
    assert str(out / "report.md") in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    row = report["rows"][0]
    accuracy, card = row["accuracy"], json.loads((tiny_bundle / "model_card.json").read_text())
    known = np.array([image["label"] is not None for image in report["images"]])
    labels_known = np.array([image["label"] for image in report["images"]])[known].astype(int)
    logits = np.asarray(row["logits"])
    assert accuracy["counts"] == {"images": 6, "fractured": 3}
    assert accuracy["auroc"] == pytest.approx(auroc(labels_known, logits[known]), abs=1e-4)
    assert "model card" in accuracy["thresholds_from"]
    thresholds = card["operating_points"]
    assert accuracy["operating_points"]["fracture"]["probability"] == thresholds["fracture"]
    unknown = apply_temperature(logits[~known], card["calibration_temperature"])
    flags = accuracy["flag_rate"]
    assert flags["images"] == 2
    assert flags["fracture"] == pytest.approx(np.mean(unknown >= thresholds["fracture"]))
    assert flags["fracture"] + flags["uncertain"] + flags["no_fracture"] == pytest.approx(1)
    assert row["heatmap"]["pointing_game"]["evaluated"] == 2  # the two rows with boxes
    markdown = (out / "report.md").read_text()
    assert "flag rate" in markdown and "labelled AUROC" in markdown
    for name, file in FIGURES.items():
        assert _png(out / file) == (name != "subgroups")


def test_labels_csv_is_parsed_with_boxes(external):
    folder, labels = external
    images = read_external_labels(folder, labels)
    assert [image.label for image in images] == [1, 1, 1, 0, 0, 0, None, None]
    assert images[1].boxes == ((0.1, 0.1, 0.3, 0.3), (0.5, 0.5, 0.9, 0.9))
    assert images[0].path == folder / "sub" / "x0.jpg"
    assert parse_boxes(" 0 0 1 1 ;") == ((0.0, 0.0, 1.0, 1.0),)


def _labels(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def test_labels_csv_errors_are_clear(external, tmp_path):
    folder, _ = external
    with pytest.raises(LabelsFileError, match="lacks the column.*fracture"):
        read_external_labels(folder, _labels(tmp_path, "file,label\nsub/x0.jpg,1\n"))
    with pytest.raises(LabelsFileError, match="2 file.*not in.*gone.jpg, also_gone.png"):
        read_external_labels(
            folder, _labels(tmp_path, "file,fracture\nsub/x0.jpg,1\ngone.jpg,0\nalso_gone.png,\n")
        )
    with pytest.raises(LabelsFileError, match=r"line 2: fracture 'yes' is not 1, 0 or empty"):
        read_external_labels(folder, _labels(tmp_path, "file,fracture\nsub/x0.jpg,yes\n"))
    bad_boxes = "file,fracture,boxes\nsub/x0.jpg,1,0.1 0.2 0.3\nsub/x1.jpg,1,0.5 0.5 1.5 0.9\n"
    bad_boxes += "sub/x2.jpg,1,0.6 0.5 0.2 0.9\n"
    with pytest.raises(LabelsFileError, match="3 problem") as raised:
        read_external_labels(folder, _labels(tmp_path, bad_boxes))
    message = str(raised.value)
    assert "line 2" in message and "expected 4" in message
    assert "line 3" in message and "normalised" in message
    assert "line 4" in message and "x0 < x1" in message
    with pytest.raises(LabelsFileError, match="more than once"):
        read_external_labels(
            folder, _labels(tmp_path, "file,fracture\nsub/x0.jpg,1\nsub/x0.jpg,0\n")
        )


def test_specs_parse_and_fail_with_the_valid_forms(tmp_path, tiny_bundle):
    assert parse_spec("arch:vgg16_bn@224").input_size == 224
    teacher_onnx = parse_spec("onnx:arch:resnet50@192")
    assert (teacher_onnx.kind, teacher_onnx.target, teacher_onnx.input_size) == (
        "onnx",
        "resnet50",
        192,
    )
    assert teacher_onnx.random_weights and not parse_spec(f"tflite:{tiny_bundle}").random_weights
    with pytest.raises(BenchError, match="valid: custom_cnn"):
        parse_spec("onnx:arch:vgg19@224")
    assert parse_spec(f"tflite:{tiny_bundle}").kind == "tflite"
    with pytest.raises(BenchError, match="valid: custom_cnn"):
        parse_spec("arch:vgg19@224")
    with pytest.raises(BenchError, match="tflite:BUNDLE_DIR"):
        parse_spec("tensorflow:model")
    with pytest.raises(BenchError, match="not a checkpoint folder"):
        parse_spec(f"torch:{tmp_path}")
    (tmp_path / "l.csv").write_text("file,split,label,a\n")
    with pytest.raises(BenchError, match="logits:CSV:COLUMN"):
        parse_spec(f"logits:{tmp_path / 'l.csv'}")
    with pytest.raises(BenchError, match="cannot score an external folder"):
        resolve_specs([f"logits:{tmp_path / 'l.csv'}:a"], external=True)
    defaults = [spec.text for spec in resolve_specs(["default"])]
    assert {
        "arch:vgg16_bn@224",
        "onnx:arch:vgg16_bn@224",
        "arch:resnet50@224",
        "onnx:arch:resnet50@224",
        "arch:custom_cnn@224",
    } <= set(defaults)


def test_limit_takes_a_stratified_subset_per_split():
    images = [
        SplitImage(f"{split}{i}", split, int(i < 20), Path(f"{split}{i}"))
        for split in ("val", "test")
        for i in range(100)
    ]
    subset = stratified_subset(images, 10, seed=0)
    for split in ("val", "test"):
        members = [image for image in subset if image.split == split]
        assert len(members) == 10
        assert sum(image.label for image in members) == 2  # 20 % fractured, as in the split
    assert stratified_subset(images, 10, seed=0) == subset
    assert len(stratified_subset(images, 500)) == 200


def test_config_rejects_half_an_external_set():
    with pytest.raises(BenchError, match="go together"):
        BenchConfig(external="folder")


def test_outline_scores_count_a_peak_inside_the_polygon_and_the_region_overlap():
    from benchmarks.scoring import Heatmaps, score_outlines

    heatmap = np.zeros((10, 10), np.float32)
    heatmap[2:4, 2:4] = 1.0  # top region: 4 pixels at rows/columns 2-3
    square = ((0.2, 0.2), (0.6, 0.2), (0.6, 0.6), (0.2, 0.6))  # covers pixels 2..6
    elsewhere = ((0.7, 0.7), (0.9, 0.7), (0.9, 0.9), (0.7, 0.9))
    record = Heatmaps("cam")
    score_outlines(record, [heatmap, heatmap, heatmap], [(square,), (elsewhere,), ()])
    assert record.outline_pointing == [True, False]  # the film without an outline is skipped
    assert record.outline_iou[1] == 0.0
    assert 0 < record.outline_iou[0] < 1
    summary = record.summary()["outlines"]
    assert summary["films"] == 2 and summary["pointing_game"] == 0.5


def test_speedups_hand_computed():
    """Fastest reference call / fastest row call; the p50 ratio is the median of per-round
    ratios. Hand-built latencies, hand-computed answers."""
    from benchmarks.latency_children import speedups

    def latency(minimum, p50s):
        return {"min_ms": minimum, "p50_ms": sorted(p50s)[1],
                "repeats": [{"p50_ms": value} for value in p50s]}  # fmt: skip

    rows = [
        {"id": "vgg", "latency": {"1": latency(400.0, [450.0, 500.0, 420.0])},
         "speedup_note": None, "latency_note": None},
        {"id": "int8", "latency": {"1": latency(8.0, [9.0, 10.0, 7.0])},
         "speedup_note": None, "latency_note": None},
        {"id": "none", "latency": None, "speedup_note": None, "latency_note": "skipped"},
    ]  # fmt: skip
    summary = speedups(rows, "vgg")
    assert summary["measured"] and summary["id"] == "vgg"
    assert rows[1]["speedup"] == {"1": 50.0}  # 400 / 8
    assert rows[1]["speedup_p50"] == {"1": 50.0}  # median of 450/9, 500/10, 420/7 = 50, 50, 60
    assert rows[2]["speedup_note"] == "skipped"
    assert speedups(rows[1:], "vgg")["measured"] is False
    assert rows[1]["speedup_note"] == "n/a (vgg not measured in this run)"
