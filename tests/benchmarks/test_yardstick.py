"""The yardstick for other hospitals in ``fracture-edge bench``: the shift table, the
hardware-free AUROC, ``--shifts`` and ``--no-latency``. Pure tables on hand-made scores; one
synthetic run with the tiny bundle and its weights as a torch checkpoint."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.shifts import SHIFT_NAMES
from benchmarks.yardstick import (
    hardware_free_auroc,
    measured_indices,
    paired_drop_ci,
    shift_table,
    subset_auroc,
)
from train.metrics import auroc

LABELS = np.array([0, 0, 0, 1, 1, 0, 1, 0])


def test_operating_points_under_a_shift_follow_the_temperature():
    logits = np.array([-2.0, -1.0, 0.0, 1.0, 2.0, -3.0, 3.0, -0.5])
    # T = 2: probabilities sigmoid(logit / 2); threshold 0.5 is logit >= 0.
    points = shift_table(LABELS, {"clean": logits}, 10, 0, 2.0, {"fracture": 0.5})
    clean = points["clean_operating_points"]["fracture"]
    assert clean == {"sensitivity": 1.0, "specificity": 0.8}  # 0.0 on a negative is called


def test_shift_table_one_entry_per_shift_and_mean_of_drops():
    clean = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.4, 0.7, 0.05])  # perfect: AUROC 1
    logits = {
        "clean": clean,
        "same": clean.copy(),
        "one_swap": np.array([0.1, 0.2, 0.75, 0.9, 0.8, 0.4, 0.7, 0.05]),  # 0.75 > 0.7: 14/15
        "reversed": -clean,  # AUROC 0
    }
    table = shift_table(LABELS, logits, resamples=200, seed=0)
    assert table["clean_auroc"] == 1.0
    assert list(table["shifts"]) == ["same", "one_swap", "reversed"]
    assert table["shifts"]["one_swap"]["auroc"] == round(14 / 15, 4)
    drops = [entry["drop"] for entry in table["shifts"].values()]
    assert drops == [0.0, round(1 - round(14 / 15, 4), 4), 1.0]
    assert table["mean_drop"] == round(float(np.mean(drops)), 4)
    assert table["images"] == 8 and table["fractured"] == 3
    assert table["shifts"]["same"]["drop_ci95"] == [0.0, 0.0]  # paired: identical scores
    assert len(table["mean_drop_ci95"]) == 2


def test_paired_drop_ci_handles_no_shift_and_one_class():
    scores = {"clean": np.arange(4.0), "noise": np.arange(4.0)}
    assert paired_drop_ci(np.array([1, 1, 1, 1]), scores, ["noise"], 50, 0) == {
        "noise": [None, None],
        "mean": [None, None],
    }
    assert paired_drop_ci(LABELS, {"clean": LABELS * 1.0}, [], 50, 0) == {"mean": [None, None]}


def test_hardware_free_auroc_uses_the_films_without_hardware():
    labels = np.array([1, 1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.2, 0.8, 0.3, 0.1, 0.95])
    hardware = np.array(["yes", "no", "no", "no", "no", "yes"])
    result = hardware_free_auroc(labels, scores, hardware, resamples=100, seed=0)
    keep = hardware == "no"
    assert result["images"] == 4 and result["fractured"] == 2
    assert result["auroc"] == round(auroc(labels[keep], scores[keep]), 4) == 0.75  # 3 of 4 pairs
    low, high = result["auroc_ci95"]
    assert 0.0 <= low <= high <= 1.0
    only_positives = subset_auroc(labels, scores, labels == 1, 100, 0)
    assert only_positives["auroc"] is None and only_positives["auroc_ci95"] == [None, None]


def test_measured_indices_are_test_or_labelled_external():
    from train.split_scoring import SplitImage

    images = [
        SplitImage("a", "val", 1, Path("a")),
        SplitImage("b", "test", 0, Path("b")),
        SplitImage("c", "external", None, Path("c")),
        SplitImage("d", "external", 1, Path("d")),
    ]
    assert measured_indices(images) == [1, 3]


# --------------------------------------------------------------------------- the bench run


def _bench_stack_missing() -> str | None:
    for module in ("torch", "timm", "ai_edge_litert", "onnx2tf", "matplotlib", "pytorch_grad_cam"):
        if importlib.util.find_spec(module) is None:
            return module
    return None


needs_bench = pytest.mark.skipif(
    _bench_stack_missing() is not None,
    reason=f"the bench needs the train and compress extras ({_bench_stack_missing()} missing)",
)


@pytest.fixture(scope="module")
def atlas(tmp_path_factory, fracatlas_tree, atlas_image, make_radiograph, val_test_split):
    """16 films (8 val, 8 test), half fractured; hardware on 2 fractured test films."""
    folder = tmp_path_factory.mktemp("atlas")
    images = [
        atlas_image(
            f"IMG{index:04d}.jpg",
            index % 2 == 0,
            make_radiograph(60 + 3 * index, 72, index, index),
            flags={"hardware": int(index in (8, 10))},
        )
        for index in range(16)
    ]
    root = fracatlas_tree(folder / "fracatlas", images)
    split = val_test_split(folder / "split.csv", images, val=8)
    return root, split


@pytest.fixture(scope="module")
def shift_run(tmp_path_factory, atlas, tiny_bundle, tiny_bundle_model) -> tuple[dict, Path]:

    from benchmarks.bench import BenchConfig, run_bench
    from train.checkpoints import write_checkpoint

    model = tiny_bundle_model  # the bundle's own weights
    card = {
        "name": "tiny-checkpoint",
        "format": "fracture-edge-checkpoint",
        "architecture": "tiny_cnn",
        "preprocessing": {"input_size": 64, "mean": 0.5, "std": 0.25, "fill": 0.0},
        "operating_points": {"doubt": 0.3, "fracture": 0.7},
    }
    checkpoint = write_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny", model.state_dict(), card
    )
    root, split = atlas
    out = tmp_path_factory.mktemp("bench") / "report"
    config = BenchConfig(
        models=[f"tflite:{tiny_bundle}", f"torch:{checkpoint}", "arch:custom_cnn@64"],
        out=str(out),
        split=str(split),
        data=str(root),
        threads=[1],
        heatmap_images=0,
        resamples=50,
        cuda=False,
        latency=False,
        shifts=True,
    )
    run_bench(config)
    return json.loads((out / "report.json").read_text()), out


@needs_bench
def test_shift_rows_have_one_entry_per_shift_and_their_mean_drop(shift_run):
    report, _ = shift_run
    assert report["shifts"]["seed"] == 20261130
    assert list(report["shifts"]["shifts"]) == list(SHIFT_NAMES)
    tflite, torch_row, arch = report["rows"]
    for row in (tflite, torch_row):
        table = row["shifts"]
        assert list(table["shifts"]) == list(SHIFT_NAMES)
        assert table["images"] == 8 and table["fractured"] == 4
        drops = [entry["drop"] for entry in table["shifts"].values()]
        assert table["mean_drop"] == round(float(np.mean(drops)), 4)
        # The clean pass reads the same films through the same preprocessing as the main one.
        assert table["clean_auroc"] == pytest.approx(row["accuracy"]["auroc"], abs=1e-4)
    # One set of weights, two runtimes, the same shifted films: the same AUROCs.
    for name in SHIFT_NAMES:
        a, b = (
            tflite["shifts"]["shifts"][name]["auroc"],
            torch_row["shifts"]["shifts"][name]["auroc"],
        )
        assert a == pytest.approx(b, abs=0.02), name
    assert arch["shifts"] is None and arch["shifts_note"] == "n/a (no weights here)"


@needs_bench
def test_clean_operating_points_match_the_accuracy_section(shift_run):
    report, _ = shift_run
    for row in report["rows"][:2]:
        points = row["accuracy"]["operating_points"]
        table = row["shifts"]
        assert table["temperature"] == row["accuracy"]["temperature"]
        for name in ("doubt", "fracture"):
            clean = table["clean_operating_points"][name]
            assert clean["sensitivity"] == pytest.approx(points[name]["sensitivity"], abs=1e-4)
            assert clean["specificity"] == pytest.approx(points[name]["specificity"], abs=1e-4)
            for entry in table["shifts"].values():
                assert 0 <= entry["operating_points"][name]["sensitivity"] <= 1


@needs_bench
def test_no_latency_measures_none(shift_run):
    report, _ = shift_run
    for row in report["rows"]:
        assert row["latency"] is None
        assert row["latency_note"] == "not measured (--no-latency)"


@needs_bench
def test_hardware_free_auroc_is_next_to_the_overall_one(shift_run):
    report, out = shift_run
    hardware_free = report["rows"][0]["accuracy"]["hardware_free"]
    assert hardware_free["images"] == 6 and hardware_free["fractured"] == 2
    assert len(hardware_free["auroc_ci95"]) == 2
    markdown = (out / "report.md").read_text()
    assert "test AUROC, films without hardware [95 % CI]" in markdown


@needs_bench
def test_markdown_has_the_shift_table(shift_run):
    from benchmarks.report import shift_table as markdown_shift_table

    report, out = shift_run
    header, rows = markdown_shift_table(report)
    assert [row[0] for row in rows] == ["clean", *SHIFT_NAMES, "**mean drop**"]
    # shift, severity; per scored artifact: AUROC, drop, sens / spec at doubt and at fracture
    assert len(header) == 2 + 2 * 4
    markdown = (out / "report.md").read_text()
    assert "## Acquisition shifts" in markdown
    for name in SHIFT_NAMES:
        assert f"| {name} |" in markdown
    mean_drop = report["rows"][0]["shifts"]["mean_drop"]
    assert f"**{mean_drop:.3f} [" in markdown


def test_config_refuses_shifts_or_no_latency_with_latency_only():
    from benchmarks.bench import BenchConfig
    from benchmarks.specs import BenchError

    with pytest.raises(BenchError, match="--latency-only reads none"):
        BenchConfig(latency_only=True, shifts=True)
    with pytest.raises(BenchError, match="leave nothing to measure"):
        BenchConfig(latency_only=True, latency=False)


def test_cli_flags_reach_the_config():
    from benchmarks.cli import add_bench_parser

    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(["bench", "--shifts", "--no-latency", "--shift-seed", "3"])
    assert args.shifts and not args.latency and args.shift_seed == 3
    defaults = parser.parse_args(["bench"])
    assert not defaults.shifts and defaults.latency and defaults.shift_seed is None
