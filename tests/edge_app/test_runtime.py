"""The on-device runtime on a tiny TFLite bundle generated in the test session."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from edge_app.errors import ModelCardError  # noqa: E402
from edge_app.findings import locate  # noqa: E402
from edge_app.preprocess import letterbox_geometry  # noqa: E402
from edge_app.runtime import (  # noqa: E402
    Bundle,
    FractureDetector,
    StudyResult,
    heatmap_from_cam,
)
from edge_app.tflite import ModelFileError  # noqa: E402


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def _edit_card(folder: Path, **changes) -> None:
    card = json.loads((folder / "model_card.json").read_text())
    card.update(changes)
    (folder / "model_card.json").write_text(json.dumps(card))


def test_probability_matches_the_torch_model(tiny_bundle, tiny_bundle_model, make_radiograph):
    """The runtime path (shared preprocessing → LiteRT → temperature → sigmoid) equals torch."""
    torch = pytest.importorskip("torch")
    from edge_app.preprocess import PreprocessConfig, preprocess

    model = tiny_bundle_model
    detector = FractureDetector(tiny_bundle)
    pixels = make_radiograph(90, 70, 1, 2).astype(np.float32) / 255
    prediction = detector.predict_pixels(pixels)
    model_input, _ = preprocess(pixels, PreprocessConfig.from_card(detector.card))
    with torch.no_grad():
        logit = float(model(torch.from_numpy(model_input)[None, None]))
    assert prediction.logit == pytest.approx(logit, abs=1e-4)
    assert prediction.probability == pytest.approx(1 / (1 + np.exp(-logit)), abs=1e-5)


def test_heatmap_has_the_image_size_and_range(tiny_bundle, make_radiograph):
    detector = FractureDetector(tiny_bundle)
    for height, width in ((120, 80), (60, 150)):
        pixels = make_radiograph(height, width, 3, 4).astype(np.float32) / 255
        prediction = detector.predict_pixels(pixels)
        assert prediction.heatmap.shape == (height, width)
        assert 0.0 <= prediction.heatmap.min() and prediction.heatmap.max() <= 1.0
        assert prediction.cam.shape == tuple(detector.cam_shape)


def test_heatmap_maps_the_cam_through_the_letterbox():
    # One hot cell at the top left of a 4×4 grid; the image fills the canvas's left half.
    cam = np.zeros((4, 4), np.float32)
    cam[0, 0] = 2.0
    cam[3, 3] = -5.0  # negative evidence is cut by the ReLU
    geometry = letterbox_geometry(64, 32, 64)  # tall image: 32 px wide, centred
    heatmap = heatmap_from_cam(cam, geometry, 128, 64)
    assert heatmap.shape == (128, 64)
    assert heatmap[:32].mean() > heatmap[96:].mean()
    assert heatmap[-20:, -20:].max() < 0.05


def test_absolute_scale_keeps_weak_maps_faint():
    cam = np.full((4, 4), 0.1, np.float32)
    geometry = letterbox_geometry(64, 64, 64)
    assert heatmap_from_cam(cam, geometry, 64, 64).max() == pytest.approx(1.0, abs=1e-3)
    assert heatmap_from_cam(cam, geometry, 64, 64, scale=1.0).max() == pytest.approx(0.1, abs=1e-3)


def test_verdict_bands(tiny_bundle):
    detector = FractureDetector(tiny_bundle)
    assert detector.verdict(0.95) == "fracture"
    assert detector.verdict(0.70) == "fracture"  # the threshold belongs to the upper band
    assert detector.verdict(0.5) == "uncertain"
    assert detector.verdict(0.3) == "uncertain"
    assert detector.verdict(0.1) == "no_fracture"


def test_temperature_scales_the_logit(bundle_copy):
    _edit_card(bundle_copy, calibration_temperature=2.0)
    detector = FractureDetector(bundle_copy)
    assert detector.calibrated(2.0) == pytest.approx(1 / (1 + np.exp(-1.0)))


def test_study_verdict_is_the_mean_of_views(tiny_bundle, tmp_path, make_radiograph, save_jpeg):
    for index in range(3):
        save_jpeg(tmp_path / "study" / f"view{index}.jpg", make_radiograph(80, 60, index, index))
    detector = FractureDetector(tiny_bundle)
    study = detector.predict_path(tmp_path / "study")
    assert study.is_study and len(study.predictions) == len(study.radiographs) == 3
    assert study.probability == pytest.approx(np.mean([p.probability for p in study.predictions]))
    assert study.verdict == detector.verdict(study.probability)
    assert [p.source for p in study.predictions] == [r.source for r in study.radiographs]
    record = study.to_json()
    assert record["images"] == 3 and record["error"] is None
    assert record["peak"] is None and record["box"] is None  # each image has its own
    assert all({"peak", "box"} <= set(image) for image in record["per_image"])
    assert [r["path"] for r in record["per_image"]] == sorted(
        r["path"] for r in record["per_image"]
    )


def test_nifti_volume_is_scored_slice_by_slice(tiny_bundle, tmp_path):
    nibabel = pytest.importorskip("nibabel")
    volume = np.random.default_rng(0).normal(300, 200, (40, 40, 5)).astype(np.float32)
    path = tmp_path / "ct.nii.gz"
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), str(path))
    study = FractureDetector(tiny_bundle).predict_path(path)
    assert study.is_study and study.is_volume and len(study.predictions) == 5
    assert [p.metadata["slice_index"] for p in study.predictions] == list(range(5))


def test_single_image_gives_one_prediction(tiny_bundle, tmp_path, make_radiograph, save_jpeg):
    path = save_jpeg(tmp_path / "one.jpg", make_radiograph(100, 90, 5, 6))
    result = FractureDetector(tiny_bundle).predict_path(path)
    assert not result.is_study and not result.is_volume
    assert result.radiographs[0].pixels.shape == result.predictions[0].heatmap.shape == (100, 90)
    record = result.to_json()
    assert record == result.predictions[0].to_json()  # a single image's own record
    assert set(record) >= {"path", "fracture_probability", "verdict", "region", "peak", "box"}
    assert record["verdict"] in ("fracture", "uncertain", "no_fracture")
    assert record["region"] is None  # the tiny bundle has no region head


def test_several_files_are_one_study_and_a_folder_of_one_is_a_study(
    tiny_bundle, tmp_path, make_radiograph, save_jpeg
):
    detector = FractureDetector(tiny_bundle)
    paths = [save_jpeg(tmp_path / f"v{i}.jpg", make_radiograph(70, 60, i, i)) for i in range(2)]
    both = detector.predict_files(paths)
    assert isinstance(both, StudyResult) and both.is_study and both.source == "2 files"
    alone = save_jpeg(tmp_path / "folder" / "only.jpg", make_radiograph(70, 60, 3, 3))
    assert detector.predict_path(alone.parent).is_study
    assert not detector.predict_files([alone], source="only.jpg").is_study
    with pytest.raises(ValueError, match="no file to score"):
        detector.predict_files([])


def test_the_box_is_the_top_region_of_the_cams_map():
    cam = np.zeros((5, 5), np.float32)
    cam[1, 3] = 4.0  # one hot cell: column 3 of 5, row 1 of 5, on a square image
    geometry = letterbox_geometry(400, 400, 160)
    peak, box = locate(heatmap_from_cam(cam, geometry, 400, 400))
    assert peak == pytest.approx((0.7, 0.3), abs=1 / 64)
    x0, y0, x1, y1 = box
    assert 0 <= x0 < peak[0] < x1 <= 1 and 0 <= y0 < peak[1] < y1 <= 1
    assert 0.1 < x1 - x0 < 0.4 and 0.1 < y1 - y0 < 0.4  # about one cell, blurred by the bicubic
    # the same place on a film ten times larger
    large = locate(heatmap_from_cam(cam, geometry, 4000, 4000))
    np.testing.assert_allclose(large[0] + large[1], peak + box, atol=1 / 64)


def test_no_fracture_has_no_box_and_the_other_verdicts_have_the_maps(bundle_copy, make_radiograph):
    pixels = make_radiograph(90, 120, 2, 3).astype(np.float32) / 255
    _edit_card(bundle_copy, operating_points={"doubt": 0.999999, "fracture": 0.9999999})
    calm = FractureDetector(bundle_copy).predict_pixels(pixels)
    assert calm.verdict == "no_fracture" and calm.box is None
    _edit_card(bundle_copy, operating_points={"doubt": 0.0, "fracture": 0.0})
    detector = FractureDetector(bundle_copy)
    flagged = detector.predict_pixels(pixels)
    assert flagged.verdict == "fracture" and flagged.peak == calm.peak
    assert (flagged.peak, flagged.box) == locate(flagged.heatmap)
    # without keeping the full-size heatmap the runtime still says where to look, the same
    unkept = detector.predict_pixels(pixels, heatmap=False)
    assert unkept.heatmap is None and (unkept.peak, unkept.box) == (flagged.peak, flagged.box)


def test_site_calibration_is_read_from_the_card(bundle_copy):
    assert Bundle.load(bundle_copy).site_calibration is None
    assert FractureDetector(bundle_copy).describe()["site_calibration"] is None
    record = {"site": "st-elsewhere", "date": "2026-12-01", "films": 120}
    _edit_card(bundle_copy, site_calibration=record)
    assert Bundle.load(bundle_copy).site_calibration == record
    assert FractureDetector(bundle_copy).describe()["site_calibration"] == record
    _edit_card(bundle_copy, site_calibration={"site": "st-elsewhere"})
    with pytest.raises(ModelCardError, match="'site_calibration' must be an object"):
        _ = Bundle.load(bundle_copy).site_calibration


def test_no_network_call(tiny_bundle, tmp_path, make_radiograph, save_jpeg, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the runtime opened a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    path = save_jpeg(tmp_path / "x.jpg", make_radiograph(64, 64, 1, 1))
    FractureDetector(tiny_bundle).predict_path(path)


def test_tampered_model_is_refused(bundle_copy):
    model = bundle_copy / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match its card"):
        Bundle.load(bundle_copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "something-else"}, "not a FractureEdge bundle card"),
        ({"format_version": 99}, "format version 99"),
        ({"operating_points": {"doubt": 0.9, "fracture": 0.2}}, "doubt point .* exceeds"),
        ({"operating_points": {"doubt": 0.1}}, "'operating_points.fracture' must be a number"),
        ({"model_sha256": None}, "lacks 'model_sha256'"),
        ({"calibration_temperature": 0}, "'calibration_temperature' must be a finite number"),
    ],
)
def test_bad_cards_are_refused(bundle_copy, change, message):
    _edit_card(bundle_copy, **change)
    with pytest.raises(ModelCardError, match=message):
        FractureDetector(bundle_copy)


def test_missing_bundle_parts(tmp_path, bundle_copy):
    with pytest.raises(ModelCardError, match="not found"):
        Bundle.load(tmp_path / "absent")
    (bundle_copy / "model.tflite").unlink()
    with pytest.raises(ModelCardError, match="model.tflite is missing"):
        Bundle.load(bundle_copy)
    (bundle_copy / "model_card.json").write_text("{not json")
    with pytest.raises(ModelCardError):
        Bundle.load(bundle_copy)


def test_heatmap_equals_bicubic_resizing_through_the_letterbox():
    """The matrix interpolation gives what resizing the canvas and the crop with Pillow gives."""
    from PIL import Image

    def resize(values, height, width):
        image = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32), mode="F")
        return np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))

    rng = np.random.default_rng(0)
    cam = rng.normal(0, 1, (5, 5)).astype(np.float32)
    for height, width in ((300, 200), (180, 260)):
        geometry = letterbox_geometry(height, width, 160)
        positive = np.maximum(cam, 0) / 2.0
        canvas = np.clip(resize(positive, 160, 160), 0, 1)
        expected = np.clip(resize(geometry.crop(canvas), height, width), 0, 1)
        heatmap = heatmap_from_cam(cam, geometry, height, width, scale=2.0)
        assert np.corrcoef(heatmap.ravel(), expected.ravel())[0, 1] > 0.99
        assert np.abs(heatmap - expected).mean() < 0.02


def test_flip_tta_averages_the_image_and_its_mirror(tiny_bundle, make_radiograph):
    from edge_app.runtime import FractureDetector

    plain = FractureDetector(tiny_bundle)
    tta = FractureDetector(tiny_bundle, tta=True)
    pixels = make_radiograph(80, 60, 1, 2).astype(np.float32) / 255
    mirrored = pixels[:, ::-1].copy()
    one, other = plain.predict_pixels(pixels), plain.predict_pixels(mirrored)
    both = tta.predict_pixels(pixels)
    assert both.logit == pytest.approx((one.logit + other.logit) / 2, abs=1e-5)
    np.testing.assert_allclose(both.cam, (one.cam + other.cam[:, ::-1]) / 2, atol=1e-5)
    # a mirror-symmetric input scores the same with and without TTA
    symmetric = np.concatenate([pixels[:, :30], pixels[:, :30][:, ::-1]], axis=1)
    assert tta.predict_pixels(symmetric).logit == pytest.approx(
        plain.predict_pixels(symmetric).logit, abs=1e-5
    )


def test_a_heatmap_made_again_from_the_cam_is_the_one_predict_pixels_keeps(
    tiny_bundle, make_radiograph
):
    """predict --heatmaps draws a study one image at a time from each prediction's CAM."""
    detector = FractureDetector(tiny_bundle)
    pixels = make_radiograph(120, 70, 2, 3).astype(np.float32) / 255
    kept = detector.predict_pixels(pixels)
    unkept = detector.predict_pixels(pixels, heatmap=False)
    np.testing.assert_array_equal(detector.heatmap(unkept, 120, 70), kept.heatmap)


@pytest.mark.parametrize("threads", [0, -1, 65, 100_000, True])
def test_thread_counts_outside_1_to_64_are_refused_before_the_model_is_read(tiny_bundle, threads):
    from edge_app.errors import UsageError

    with pytest.raises(UsageError, match="num_threads must be a whole number .* from 1 to 64"):
        FractureDetector(tiny_bundle, num_threads=threads)


def test_files_scored_together_are_bounded_together(tiny_bundle, tmp_path, monkeypatch,
                                                    make_radiograph, save_jpeg):  # fmt: skip
    import edge_app.runtime
    from edge_app.errors import ImageTooLargeError

    paths = [save_jpeg(tmp_path / f"{i}.jpg", make_radiograph(96, 80, i, i)) for i in range(3)]
    detector = FractureDetector(tiny_bundle)
    assert detector.predict_files(paths).is_study
    monkeypatch.setattr(edge_app.runtime, "DEFAULT_MAX_PIXELS", 10_000)
    with pytest.raises(ImageTooLargeError, match="the study of 3 files holds 3 images"):
        detector.predict_files(paths)
    assert len(detector.predict_files(paths[:2]).predictions) == 2
