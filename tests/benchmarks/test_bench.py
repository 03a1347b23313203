"""``fracture-edge bench`` on a synthetic FracAtlas tree, a tiny bundle and a tiny checkpoint.

The synthetic runs are fast (a few calls per latency repeat); timings themselves are never
asserted. One real-data run (``realdata``, ``slow``) scores 40 test images of FracAtlas.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("ai_edge_litert")
pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")
pytest.importorskip("pytorch_grad_cam")
if importlib.util.find_spec("onnx2tf") is None:  # the tiny bundle is built with it
    pytest.skip("onnx2tf is not installed (the compress extra)", allow_module_level=True)

from benchmarks.bench import ROW_KEYS, BenchConfig, latency_job, plan_rows, run_bench  # noqa: E402
from benchmarks.compare import compare_reports, format_comparison  # noqa: E402
from benchmarks.plots import FIGURES  # noqa: E402
from benchmarks.report import table_header  # noqa: E402
from benchmarks.specs import BenchError, resolve_specs  # noqa: E402
from edge_app.latency import peak_rss_mb  # noqa: E402
from fracture_edge.cli import main as cli_main  # noqa: E402
from train.checkpoints import write_checkpoint  # noqa: E402

BOX = (0.5, 0.5, 0.5, 0.5)  # YOLO (cx, cy, w, h): the middle quarter
FAST = {"repeats": 2, "runs": 3, "warmup": 1, "resamples": 50, "cuda": False}


def _png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def atlas(
    tmp_path_factory, fracatlas_tree, atlas_image, make_radiograph, val_test_split
) -> tuple[Path, Path]:
    """16 images (8 val, 8 test, half fractured with a box), and a split file over them."""
    folder = tmp_path_factory.mktemp("atlas")
    images = [
        atlas_image(
            f"IMG{index:04d}.jpg",
            index % 2 == 0,
            make_radiograph(60 + 3 * index, 72, index, index),
            regions=("hand",) if index % 4 < 2 else ("leg",),
            flags={"hardware": int(index % 3 == 0)},
            yolo=[BOX] if index % 2 == 0 else (),
        )
        for index in range(16)
    ]
    root = fracatlas_tree(folder / "fracatlas", images)
    split = val_test_split(folder / "split.csv", images, val=8)
    return root, split


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_bundle_model) -> Path:
    """The tiny bundle's weights as a torch checkpoint."""
    model = tiny_bundle_model
    card = {
        "name": "tiny-checkpoint",
        "format": "fracture-edge-checkpoint",
        "architecture": "tiny_cnn",
        "preprocessing": {"input_size": 64, "mean": 0.5, "std": 0.25, "fill": 0.0},
        "operating_points": {"doubt": 0.3, "fracture": 0.7},
    }
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", model.state_dict(), card)


@pytest.fixture(scope="module")
def logits_csv(tmp_path_factory, atlas) -> Path:
    _, split = atlas
    path = tmp_path_factory.mktemp("logits") / "logits.csv"
    rng = np.random.default_rng(0)
    with open(split) as source, open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "split", "label", "teacher_custom_cnn_scratch"])
        for row in csv.DictReader(source):
            logit = 2.0 * int(row["label"]) - 1 + rng.normal()
            writer.writerow([row["file"], row["split"], row["label"], f"{logit:.4f}"])
    return path


@pytest.fixture(scope="module")
def bench(tmp_path_factory, atlas, tiny_bundle, checkpoint, logits_csv) -> tuple[dict, Path]:
    root, split = atlas
    out = tmp_path_factory.mktemp("bench") / "report"
    config = BenchConfig(
        models=[
            f"tflite:{tiny_bundle}",
            f"torch:{checkpoint}",
            f"onnx:{checkpoint}",
            "arch:custom_cnn@64",
            f"logits:{logits_csv}:teacher_custom_cnn_scratch",
        ],
        out=str(out),
        split=str(split),
        data=str(root),
        threads=[1, 2],
        heatmap_reference=str(checkpoint),
        speedup_reference="arch:custom_cnn@64",
        **FAST,
    )
    run_bench(config)
    return json.loads((out / "report.json").read_text()), out


def _row(report: dict, kind: str) -> dict:
    return next(row for row in report["rows"] if row["kind"] == kind)


# --------------------------------------------------------------------------- (a) the report


def test_report_writes_markdown_json_and_every_plot(bench):
    report, out = bench
    assert (out / "report.md").is_file()
    for name in FIGURES.values():
        assert _png(out / name), name
    assert set(report["figures"]) == set(FIGURES)


def test_every_row_has_every_column(bench):
    report, out = bench
    assert [row["kind"] for row in report["rows"]] == ["tflite", "torch", "onnx", "arch", "logits"]
    for row in report["rows"]:
        assert set(ROW_KEYS) <= set(row), row["id"]
    markdown = (out / "report.md").read_text().splitlines()
    header = "| " + " | ".join(table_header(report)) + " |"
    start = markdown.index(header)
    table = markdown[start : start + 2 + len(report["rows"])]
    assert all(line.count(" | ") == header.count(" | ") for line in table)
    for row in report["rows"]:
        assert any(line.startswith(f"| {row['name']} |") for line in table)


def test_rows_with_weights_score_the_same_images(bench):
    report, _ = bench
    images = report["images"]
    assert len(images) == 16
    for row in report["rows"]:
        if row["kind"] == "arch":
            assert row["logits"] is None and row["accuracy"] is None
            assert row["accuracy_note"] == "n/a (no weights here)"
            assert row["file_mb"] > 0  # fp32 parameter bytes
            continue
        assert len(row["logits"]) == len(images)
        assert row["accuracy"]["counts"] == {"images": 8, "fractured": 4}
        assert set(row["accuracy"]["operating_points"]) == {"doubt", "fracture"}
    tflite, torch_row, onnx = _row(report, "tflite"), _row(report, "torch"), _row(report, "onnx")
    # One model, three runtimes, the same shared preprocessing: the same logits.
    np.testing.assert_allclose(tflite["logits"], torch_row["logits"], atol=1e-3)
    np.testing.assert_allclose(onnx["logits"], torch_row["logits"], atol=1e-3)
    logits_row = _row(report, "logits")
    assert logits_row["latency"] is None and logits_row["latency_note"] == "n/a (GPU run)"
    assert logits_row["teacher"] and logits_row["accuracy"]["subgroups"]["region"]


def test_heatmaps_pointing_game_and_cam_agreement(bench):
    report, _ = bench
    for kind in ("tflite", "torch", "onnx"):
        heatmap = _row(report, kind)["heatmap"]
        assert heatmap["pointing_game"]["evaluated"] == 4  # the test images with boxes
    agreement = _row(report, "tflite")["heatmap"]["agreement"]
    # Same weights: the in-graph CAM is Grad-CAM up to scale (train/gradcam.py's docstring).
    assert agreement["images"] == 4 and agreement["pearson_median"] > 0.9


def test_latency_rows_carry_every_repeat_and_their_own_peak_rss(bench):
    report, _ = bench
    for row in report["rows"]:
        if row["kind"] == "logits":
            continue
        assert set(row["latency"]) == {"1", "2"}
        for values in row["latency"].values():
            assert len(values["repeats"]) == 2 and values["repeats"][0]["runs"] == 3
        assert 0 < row["rss_after_import_mb"] <= row["peak_rss_mb"]
    # The LiteRT child's peak is its own, not this (torch-laden) process's.
    assert _row(report, "tflite")["peak_rss_mb"] < peak_rss_mb()


# --------------------------------------------------------------------------- (c) speed-ups


def test_speedup_divides_the_fastest_calls_and_keeps_the_p50_ratio(bench):
    """Speed-up: fastest reference call / fastest row call over all rounds; speedup_p50: the
    median over interleaved rounds of round k's reference p50 / round k's row p50."""

    report, _ = bench
    assert report["speedup_reference"] == {
        "id": "arch:custom_cnn@64",
        "measured": True,
        "statistic": "fastest call",
    }
    reference = _row(report, "arch")["latency"]
    for row in report["rows"]:
        if row["latency"] is None:
            assert row["speedup"] is None and row["speedup_p50"] is None
            continue
        for threads in row["speedup"]:
            ours = row["latency"][threads]
            assert len(ours["repeats"]) == report["config"]["repeats"]
            assert threads in reference
    assert _row(report, "arch")["speedup"] == {"1": 1.0, "2": 1.0}
    assert _row(report, "arch")["speedup_p50"] == {"1": 1.0, "2": 1.0}


def test_missing_speedup_reference_says_so(tmp_path, atlas, tiny_bundle):
    root, split = atlas
    config = BenchConfig(
        models=[f"tflite:{tiny_bundle}"],
        out=str(tmp_path / "report"),
        split=str(split),
        data=str(root),
        limit=3,
        threads=[1],
        heatmap_images=0,
        **{**FAST, "repeats": 1},
    )
    row = run_bench(config)["rows"][0]
    assert row["speedup"] is None
    assert row["speedup_note"] == "n/a (arch:vgg16_bn@224 not measured in this run)"
    assert row["heatmap"] is None and row["heatmap_note"] == "not scored (--heatmap-images 0)"


def test_latency_only_reads_no_images(tmp_path, tiny_bundle, checkpoint):
    """No data folder at all: size, latency and RSS per artifact, no accuracy, no plots."""
    config = BenchConfig(
        models=[
            "arch:custom_cnn@64",
            "onnx:arch:custom_cnn@64",
            f"tflite:{tiny_bundle}",
            f"torch:{checkpoint}",
        ],
        out=str(tmp_path / "report"),
        data=str(tmp_path / "no-such-folder"),
        threads=[1],
        speedup_reference="arch:custom_cnn@64",
        latency_only=True,
        **FAST,
    )
    report = run_bench(config)
    assert report["data"]["mode"] == "latency-only" and report["images"] == []
    assert report["errors"] == [] and report["figures"] == {}
    for row in report["rows"]:
        assert row["accuracy"] is None and row["heatmap"] is None
        assert row["accuracy_note"] == "not measured (--latency-only)"
        assert row["latency"]["1"]["p50_ms"] > 0 and row["peak_rss_mb"] > 0
        assert row["file_mb"] > 0 and row["speedup"]["1"] > 0
    onnx = report["rows"][1]
    assert onnx["name"] == "custom_cnn@64 (random weights) [onnx]" and onnx["teacher"]
    assert onnx["format"] == "onnx fp32, architecture only" and onnx["kind"] == "onnx"
    assert onnx["file_note"] == "the exported .onnx (random weights)"
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Latency only (`--latency-only`)" in text and "## Operating points" not in text
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["report.json", "report.md"]


def test_latency_only_refuses_logits_rows(tmp_path, logits_csv):
    config = BenchConfig(
        models=[f"logits:{logits_csv}:teacher_custom_cnn_scratch"],
        out=str(tmp_path),
        latency_only=True,
        **FAST,
    )
    with pytest.raises(BenchError, match="only hold logits, which have no latency"):
        run_bench(config)
    with pytest.raises(BenchError, match="reads no images"):
        BenchConfig(latency_only=True, external=str(tmp_path), labels=str(tmp_path / "l.csv"))


def test_cuda_rows_for_checkpoints_and_architectures(tmp_path, tiny_bundle, checkpoint):
    specs = resolve_specs(["arch:vgg16_bn@224", f"torch:{checkpoint}", f"tflite:{tiny_bundle}"])
    ids = [row["id"] for _, row in plan_rows(specs, cuda=True)]
    assert ids == [
        "arch:vgg16_bn@224",
        "arch:vgg16_bn@224@cuda",
        f"torch:{checkpoint}",
        f"torch:{checkpoint}@cuda",
        f"tflite:{tiny_bundle}",
    ]
    assert [row["id"] for _, row in plan_rows(specs, cuda=False)] == ids[::2]
    config = BenchConfig(out=str(tmp_path), threads=[1, 2])
    jobs = [latency_job(spec, row, config, None) for spec, row in plan_rows(specs, cuda=True)]
    assert [(job["device"], job["threads"]) for job in jobs[:2]] == [("cpu", [1, 2]), ("cuda", [1])]
    assert jobs[1]["kind"] == "arch" and jobs[1]["target"] == "vgg16_bn"


# --------------------------------------------------------------------------- (d) compare


def bench_compare(args: list[str]) -> int:
    return cli_main(["bench-compare", *args])


def test_compare_flags_a_speedup_that_moved_more_than_five_percent(bench, tmp_path, capsys):
    report, out = bench
    later = json.loads(json.dumps(report))
    _row(later, "tflite")["speedup"]["1"] *= 1.07  # flagged
    _row(later, "onnx")["speedup"]["1"] *= 1.03  # within ±5 %
    entries = {(e["id"].split(":")[0], e["threads"]): e for e in compare_reports(report, later)}
    assert entries[("tflite", "1")]["flagged"] and entries[("tflite", "1")]["ratio"] == 1.07
    assert not entries[("onnx", "1")]["flagged"]
    assert sum(e["flagged"] for e in entries.values()) == 1
    assert "1 of" in format_comparison(list(entries.values()))
    later_path = tmp_path / "later.json"
    later_path.write_text(json.dumps(later))
    assert bench_compare([str(out / "report.json"), str(later_path)]) == 1
    assert "beyond ±5%" in capsys.readouterr().out
    assert bench_compare([str(out / "report.json"), str(out / "report.json")]) == 0


def test_compare_refuses_reports_with_different_references(bench, tmp_path, capsys):
    report, out = bench
    other = json.loads(json.dumps(report))
    other["speedup_reference"]["id"] = "arch:vgg16_bn@224"
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    assert bench_compare([str(out / "report.json"), str(path)]) == 2
    assert "different rows" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert bench_compare([str(out / "report.json"), str(tmp_path / "bad.json")]) == 2


def test_compare_refuses_an_older_report_that_divided_p50s(bench, tmp_path, capsys):
    """Reports written before the fastest-call protocol have no statistic: they divided p50s."""
    report, out = bench
    older = json.loads(json.dumps(report))
    del older["speedup_reference"]["statistic"]
    for row in older["rows"]:
        row.pop("speedup_p50")
    path = tmp_path / "older.json"
    path.write_text(json.dumps(older))
    assert bench_compare([str(path), str(out / "report.json")]) == 2
    assert "different statistics (p50 vs fastest call)" in capsys.readouterr().err


def test_compare_p50_compares_the_secondary_speedups(bench, tmp_path, capsys):
    report, out = bench
    later = json.loads(json.dumps(report))
    _row(later, "tflite")["speedup_p50"]["1"] *= 1.2
    path = tmp_path / "later.json"
    path.write_text(json.dumps(later))
    assert bench_compare([str(out / "report.json"), str(path)]) == 0
    assert bench_compare([str(out / "report.json"), str(path), "--p50"]) == 1
    printed = capsys.readouterr().out
    assert "speed-ups: median of per-round p50 ratios" in printed
    assert "1.200  <-- beyond ±5%" in printed


# --------------------------------------------------------------------------- (b) external set


# --------------------------------------------------------------------------- specs, subsets


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
@pytest.mark.slow
def test_real_fracatlas_torch_checkpoint_and_teacher_logits(fracatlas_root, tmp_path):
    run = Path(__file__).resolve().parents[2] / "models" / "checkpoints" / "gpu-2026-11-27"
    folder, logits = run / "student_mobilenetv2_100_scratch", run / "logits.csv"
    if not (folder / "model.safetensors").is_file() or not logits.is_file():
        pytest.skip(f"the GPU run's checkpoint or logits are not in {run}")
    teachers = ["teacher_vgg16_bn_scratch", "teacher_resnet50_scratch"]
    config = BenchConfig(
        models=[f"torch:{folder}", *[f"logits:{logits}:{name}" for name in teachers]],
        out=str(tmp_path / "report"),
        data=str(fracatlas_root),
        limit=40,
        threads=[1],
        heatmap_images=10,
        **{**FAST, "repeats": 1, "resamples": 200},
    )
    report = run_bench(config)
    assert report["data"]["images_used"] == 80
    torch_row = report["rows"][0]
    for row in report["rows"]:
        assert row["accuracy"]["counts"]["images"] == 40
    assert torch_row["accuracy"]["auroc"] > 0.6
    assert torch_row["heatmap"]["pointing_game"]["evaluated"] > 0
    # Originals through the shared preprocessing vs the GPU run's cached canvases: the same
    # model must give nearly the same logits, or training and deployment disagree on pixels.
    from train.evaluate import load_logits_csv

    rows, columns = load_logits_csv(logits)
    by_file = dict(zip((r.file for r in rows), columns[folder.name], strict=True))
    gpu = [by_file[image["file"]] for image in report["images"]]
    assert np.corrcoef(gpu, torch_row["logits"])[0, 1] > 0.9
    shutil.rmtree(tmp_path / "report")


def test_latency_probes_report_bursts_and_processes(tiny_bundle, capsys):
    """The machine-quietness probes behind docs/benchmarks.md run and print their tables."""

    def probe(args: list[str]) -> int:
        return cli_main(["measure", "latency-probe", *args])

    args = ["bursts", "--bundle", str(tiny_bundle), "--arch", "custom_cnn", "--size", "32"]
    assert probe([*args, "--bursts", "2", "--calls", "2"]) == 0
    bursts = json.loads(capsys.readouterr().out)
    assert len(bursts["bundle_burst_medians_ms"]) == len(bursts["reference_calls_ms"]) == 2
    assert bursts["ratio_of_fastest"] > 0
    assert probe(["processes", "--arch", "custom_cnn", "--size", "32", "--processes", "1"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert set(runs) == {"default malloc", "hugepages"}
    for (result,) in runs.values():
        assert 0 < result["fastest_ms"] <= min(result["burst_medians_ms"])
