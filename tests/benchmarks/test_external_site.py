"""``bench --external`` on another site: AUROC≈ with a group-bootstrap CI, flag rates of fracture
and unannotated films at both card points, and the pointing game against padded boxes with its
chance level. A tiny PNG site with a ``source`` column, scored with the committed TFLite bundle
(no torch, no TensorFlow)."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ai_edge_litert")

from benchmarks.bench import BenchConfig  # noqa: E402
from benchmarks.cli import add_bench_parser  # noqa: E402
from benchmarks.external_site import HEADER, site_metrics  # noqa: E402
from benchmarks.images import read_external_labels  # noqa: E402
from benchmarks.scoring import BOX_PADDING, Heatmaps, score_boxes  # noqa: E402
from benchmarks.specs import BenchError  # noqa: E402
from edge_app.errors import LabelsFileError  # noqa: E402
from edge_app.labelled_folder import group_column_of, parse_boxes, read_labels_csv  # noqa: E402
from train.localisation import boxes_mask, pad_boxes  # noqa: E402
from train.metrics import apply_temperature, auroc, group_bootstrap_auroc_ci  # noqa: E402
from train.split_scoring import SplitImage  # noqa: E402

RESAMPLES = 200
BOX = "0.20 0.20 0.60 0.60"
#: (source, fracture, boxes, copies): copies of one picture share their source and pixels.
PICTURES = [
    ("elbow-a", "1", BOX, 3),
    ("wrist-b", "1", "0.50 0.10 0.90 0.40; 0.05 0.60 0.25 0.95", 2),
    ("hand-c", "1", "", 1),
    ("hand-d", "0", "", 2),
    ("elbow-e", "0", "", 1),
    ("", "", "", 1),  # no source: a group of its own; no label: unannotated
    ("wrist-g", "0", "", 1),
]


@pytest.fixture(scope="module")
def site(tmp_path_factory, make_radiograph) -> tuple[Path, Path]:
    """Eleven PNG films of seven pictures, labels CSV with ``n_boxes`` and ``source``."""
    root = tmp_path_factory.mktemp("site")
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "fracture", "n_boxes", "boxes", "source"])
        for index, (source, label, boxes, copies) in enumerate(PICTURES):
            pixels = make_radiograph(56 + 6 * index, 70, index, index)
            for copy in range(copies):
                name = f"films/p{index}-copy{copy}.png"
                (root / "images" / "films").mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(root / "images" / name)
                writer.writerow([name, label, len(boxes.split(";")) if boxes else 0, boxes, source])
    return root / "images", root / "labels.csv"


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def _bench(site, bundle: Path, out: Path, *extra: str) -> dict:
    folder, labels = site
    argv = ["bench", "--external", str(folder), "--labels", str(labels), "--out", str(out)]
    argv += ["--models", f"tflite:{bundle}", "--threads", "1", "--no-latency"]
    argv += ["--resamples", str(RESAMPLES), *extra]
    assert _run_cli(argv) == 0
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def spread_bundle(tmp_path_factory, tiny_bundle, site) -> Path:
    """The tiny bundle with its card's two points moved inside its own scores on these films
    (the untrained fixture's probabilities sit close together), so each point flags some
    films and leaves others."""
    from edge_app.radiograph import load_radiograph
    from edge_app.runtime import FractureDetector

    folder, labels = site
    detector = FractureDetector(tiny_bundle, num_threads=1)
    scores = sorted(
        detector.predict_radiograph(load_radiograph(film.path), heatmap=False).probability
        for film in read_labels_csv(folder, labels)
    )
    bundle = tmp_path_factory.mktemp("bundle") / "spread"
    bundle.mkdir()
    (bundle / "model.tflite").write_bytes((tiny_bundle / "model.tflite").read_bytes())
    card = json.loads((tiny_bundle / "model_card.json").read_text())
    card["operating_points"] = {"doubt": scores[3], "fracture": scores[-4]}
    (bundle / "model_card.json").write_text(json.dumps(card))
    return bundle


@pytest.fixture(scope="module")
def report(site, spread_bundle, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("report") / "site"
    return _bench(site, spread_bundle, out), out


def _truth(report: dict) -> tuple[np.ndarray, list[str]]:
    images = report["images"]
    fractured = np.array([image["label"] == 1 for image in images])
    groups = [image["group"] or f"film:{image['file']}" for image in images]
    return fractured, groups


def test_auroc_counts_unannotated_as_negatives_with_a_group_bootstrap(report):
    report, _ = report
    assert report["data"]["group_column"] == "source"
    row = report["rows"][0]
    site, logits = row["site"], np.asarray(row["logits"])
    fractured, groups = _truth(report)
    assert (site["films"], site["fracture_films"], site["unannotated_films"]) == (11, 6, 5)
    assert site["groups"] == 7 == len(set(groups))
    assert site["auroc"] == pytest.approx(auroc(fractured, logits), abs=1e-4)
    by_group = group_bootstrap_auroc_ci(fractured, logits, groups, RESAMPLES, 0)
    by_film = group_bootstrap_auroc_ci(fractured, logits, np.arange(11), RESAMPLES, 0)
    assert site["auroc_ci95"] == pytest.approx(by_group, abs=1e-4)
    assert site["auroc_ci95_films"] == pytest.approx(by_film, abs=1e-4)
    # Copies score alike: resampling films pretends to more evidence than there is.
    assert site["auroc_ci95"] != site["auroc_ci95_films"]


def test_flags_at_both_card_points_match_the_logits(report, spread_bundle):
    report, _ = report
    row = report["rows"][0]
    card = json.loads((spread_bundle / "model_card.json").read_text())
    probabilities = apply_temperature(np.asarray(row["logits"]), card["calibration_temperature"])
    fractured, _ = _truth(report)
    shares = []
    for name in ("doubt", "fracture"):
        threshold = card["operating_points"][name]
        point = row["site"]["operating_points"][name]
        assert point["probability"] == threshold
        for key, films in (
            ("fracture_films_flagged", fractured),
            ("unannotated_films_flagged", ~fractured),
        ):
            count = int(np.sum(probabilities[films] >= threshold))
            assert point[key] == {
                "flagged": count,
                "films": int(films.sum()),
                "share": round(count / films.sum(), 4),
            }
        shares.append(point["fracture_films_flagged"]["flagged"])
        shares.append(point["unannotated_films_flagged"]["flagged"])
    total_doubt, total_fracture = shares[0] + shares[1], shares[2] + shares[3]
    assert total_doubt > total_fracture > 0  # the points sit inside the scores (spread_bundle)


def test_pointing_game_on_padded_boxes_with_its_chance_level(report, site):
    report, _ = report
    boxes = report["rows"][0]["site"]["heatmap"]
    assert boxes == report["rows"][0]["heatmap"]["boxes"]
    assert boxes["films"] == 5 and boxes["padding"] == BOX_PADDING == 0.02
    assert boxes["pointing_game"]["evaluated"] == 5
    assert 0 <= boxes["pointing_game"]["hits"] <= 5
    assert 0 <= boxes["top_region_iou_mean"] <= 1
    # Three films with one box (0.2–0.6 padded to 0.18–0.62), two with two boxes.
    one = 0.44**2
    two = 0.44 * 0.34 + 0.24 * 0.39
    assert boxes["chance_level"] == pytest.approx((3 * one + 2 * two) / 5, abs=0.02)


def test_pointing_game_hits_recomputed_from_the_runtime(report, site, spread_bundle):
    """The bundle's CAM on each film with boxes, taken back to the film as the benchmark does
    (twice its peak), its maximum inside the padded boxes or not."""
    from edge_app.findings import mask_iou, top_region
    from edge_app.preprocess import preprocess
    from edge_app.radiograph import load_radiograph
    from edge_app.runtime import FractureDetector, heatmap_from_cam
    from train.localisation import pointing_game

    report, _ = report
    folder, labels = site
    detector = FractureDetector(spread_bundle, num_threads=1)
    hits, iou = 0, []
    for film in [film for film in read_labels_csv(folder, labels) if film.boxes]:
        pixels = load_radiograph(film.path).pixels
        model_input, geometry = preprocess(pixels, detector.preprocessing)
        cam = detector.infer(model_input)["cam"][0].reshape(detector.cam_shape)
        scale = 2 * float(cam.max()) if cam.max() > 0 else None
        heatmap = heatmap_from_cam(cam, geometry, *pixels.shape, scale=scale)
        padded = pad_boxes(film.boxes, 0.02)
        hits += bool(heatmap.any()) and bool(pointing_game(heatmap, padded))
        iou.append(mask_iou(top_region(heatmap), boxes_mask(padded, *pixels.shape)))
    boxes = report["rows"][0]["site"]["heatmap"]
    assert boxes["pointing_game"]["hits"] == hits
    assert boxes["top_region_iou_mean"] == pytest.approx(np.mean(iou), abs=1e-4)


def test_heatmap_images_caps_the_films_with_boxes(site, tiny_bundle, tmp_path):
    report = _bench(site, tiny_bundle, tmp_path / "capped", "--heatmap-images", "2")
    assert report["rows"][0]["site"]["heatmap"]["films"] == 2


def test_group_column_option_reaches_the_bootstrap(site, tiny_bundle, tmp_path):
    report = _bench(site, tiny_bundle, tmp_path / "named", "--group-column", "n_boxes")
    assert report["data"]["group_column"] == "n_boxes"
    assert report["rows"][0]["site"]["groups"] == 3  # 0, 1 or 2 boxes
    folder, labels = site
    argv = ["bench", "--external", str(folder), "--labels", str(labels), "--no-latency"]
    argv += ["--models", f"tflite:{tiny_bundle}", "--out", str(tmp_path / "refused")]
    with pytest.raises(LabelsFileError, match="no group column 'patient'"):
        _run_cli([*argv, "--group-column", "patient"])


def test_markdown_has_the_site_table(report):
    report, out = report
    text = (out / "report.md").read_text()
    assert "## External site" in text and "7 groups of `source`" in text
    header = "| " + " | ".join(HEADER) + " |"
    lines = text.splitlines()
    start = lines.index(header)
    row = lines[start + 2]
    assert row.startswith(f"| {report['rows'][0]['name']} |")
    assert row.count(" | ") == header.count(" | ")
    point = report["rows"][0]["site"]["operating_points"]["doubt"]
    fracture, unannotated = point["fracture_films_flagged"], point["unannotated_films_flagged"]
    assert f"({fracture['flagged']}/6) / " in row and f"({unannotated['flagged']}/5)" in row
    assert "padded by 2 % of the image side" in text and "chance level" in text


def test_group_column_is_chosen_named_or_refused(site, tmp_path):
    folder, labels = site
    assert group_column_of(labels) == "source"
    assert group_column_of(labels, "n_boxes") == "n_boxes"
    with pytest.raises(LabelsFileError, match="no group column 'patient'.*source"):
        group_column_of(labels, "patient")
    films = read_external_labels(folder, labels, "source")
    assert [film.group for film in films[:4]] == ["elbow-a"] * 3 + ["wrist-b"]
    assert films[9].group is None  # an empty cell: a group of its own
    # calibrate's reader keeps no group unless asked
    assert all(film.group is None for film in read_labels_csv(folder, labels))
    plain = tmp_path / "plain.csv"
    plain.write_text("file,fracture\nfilms/p0-copy0.png,1\n")
    assert group_column_of(plain) is None
    with pytest.raises(BenchError, match="add --external"):
        BenchConfig(group_column="source")


def test_boxes_a_rounding_past_the_edge_are_clipped_not_refused():
    # site B has one box ending at 1.0011: an export's rounding, read as the image's edge
    assert parse_boxes("0.0938 0.6281 0.3640 1.0011") == ((0.0938, 0.6281, 0.364, 1.0),)
    assert parse_boxes("-0.004 0 0.5 0.5") == ((0.0, 0.0, 0.5, 0.5),)
    with pytest.raises(LabelsFileError, match="not normalised"):
        parse_boxes("0.1 0.1 0.5 1.01")
    with pytest.raises(LabelsFileError, match="x0 < x1"):
        parse_boxes("1.001 0.1 1.004 0.5")  # nothing left inside the image


def test_site_metrics_without_groups_resample_films():
    images = [SplitImage(f"f{i}", "external", i % 2, Path(f"f{i}")) for i in range(8)]
    logits = np.linspace(-1, 1, 8)
    site = site_metrics(images, logits, 1.0, {"doubt": 0.4, "fracture": 0.6}, 100, 0)
    assert site["groups"] == 8 and site["auroc_ci95"] == site["auroc_ci95_films"]
    assert site["heatmap"] is None
    assert site["operating_points"]["fracture"]["unannotated_films_flagged"]["films"] == 4


def test_padded_boxes_and_their_mask():
    assert pad_boxes([(0.0, 0.5, 0.3, 0.99)], 0.02).tolist() == [[0.0, 0.48, 0.32, 1.0]]
    mask = boxes_mask([(0.0, 0.0, 0.5, 0.5)], 4, 4)  # pixel centres 0.5 and 1.5 of 4 inside
    assert mask.sum() == 4 and mask[:2, :2].all()
    heatmap = np.zeros((10, 10))
    heatmap[1, 1] = 1.0  # the peak sits just outside the box (0.2–0.6) until it is padded
    record = Heatmaps("cam")
    score_boxes(record, [heatmap, np.zeros((10, 10))], [[(0.2, 0.2, 0.6, 0.6)]] * 2, 0.06)
    assert record.box_pointing == [True, False]  # an empty map misses
    assert record.box_share == pytest.approx([0.36, 0.36])  # 0.14–0.66: pixels 1 to 6
    assert record.box_iou[1] == 0.0
