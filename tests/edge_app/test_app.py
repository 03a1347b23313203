"""The Kivy app.

The window tests (``slow``) start the real app headless under Xvfb in a subprocess, so Kivy's
process-wide state never enters pytest, and read the status lines it prints (``VERDICT``,
``ERROR``, ``REPORT``, ``SCREENSHOT``) and the screenshot it saves. Each start takes a few
seconds on a software renderer. They are skipped, with the reason, without Kivy or xvfb-run.
The helpers of :mod:`edge_app.app` that need no window are tested directly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_app.app import (
    VERDICT_COLOURS,
    band_text,
    display_copy,
    export_report,
    model_rows,
    picture_rgba,
    reports_folder,
    user_message,
)
from edge_app.errors import CorruptImageError, ImageReadError
from edge_app.radiograph import Radiograph, load_study
from edge_app.render import BOX_COLOUR, legend_width
from edge_app.runtime import DEFAULT_BUNDLE, VERDICTS, Prediction, StudyResult

REPO = Path(__file__).resolve().parents[2]
WINDOW_SIZE = (1000, 700)  # edge_app.app_cli.configure_kivy
STUDY_ENTRY_SELECTED = (51, 102, 173)  # StudyEntry's "down" colour in edge_app/app.kv
BANNER = (115, 31, 36)  # the error banner's colour in edge_app/app.kv


# --------------------------------------------------------------------------- helpers, no window


def _prediction(source: str, probability: float, verdict: str, shape=(40, 60)) -> Prediction:
    heatmap = np.zeros(shape, dtype=np.float32)
    heatmap[10:20, 20:40] = 1.0
    box = None if verdict == "no_fracture" else (20 / 60, 10 / 40, 40 / 60, 20 / 40)
    return Prediction(source, probability, 0.0, verdict, heatmap=heatmap, peak=(0.5, 0.4), box=box)


def _radiograph(source: str, shape=(40, 60)) -> Radiograph:
    pixels = np.linspace(0, 1, shape[0] * shape[1], dtype=np.float32).reshape(shape)
    return Radiograph(pixels=pixels, source=source, kind="image")


def test_export_writes_the_shown_images_overlay_and_the_result(tmp_path):
    images = [_prediction("a.png", 0.9, "fracture"), _prediction("b.png", 0.1, "uncertain")]
    study = StudyResult(
        "scans", [_radiograph("a.png"), _radiograph("b.png")], images, 0.5, "uncertain"
    )
    info = {"name": "m", "test_auroc": 0.9}
    first = export_report(study, 1, info, tmp_path / "out", 0.5, heatmap_shown=True)
    again = export_report(study, 1, info, tmp_path / "out", 0.5, heatmap_shown=False)
    assert first.image != again.image and first.json != again.json  # never overwrites
    assert first.image.name.startswith("scans-image2-")
    report = json.loads(first.json.read_text())
    assert report["prediction"] == study.to_json()
    assert report["shown_image"]["index"] == 1 and report["shown_image"]["path"] == "b.png"
    assert report["shown_image"]["overlay"] == first.image.name
    assert report["model"] == info
    assert report["shown_image"]["box"] == list(images[1].box)
    heated, plain = (np.asarray(Image.open(f.image)) for f in (first, again))
    assert heated.shape == plain.shape == (40, 60 + legend_width(40, 60), 3)  # film + legend
    assert not np.array_equal(heated[12:18, 24:36], plain[12:18, 24:36])  # the overlay
    assert (heated[..., :60] == BOX_COLOUR).all(axis=2).sum() > 20  # the (dashed) box
    assert not (plain[..., :60] == BOX_COLOUR).all(axis=2).any()  # both off together
    assert np.array_equal(heated[30:, :8], plain[30:, :8])  # cold regions keep the radiograph


def test_a_report_is_never_written_into_the_opened_study(tmp_path):
    """A report in a study folder would join the study the next time it is opened."""
    from edge_app.errors import UsageError

    study_folder = tmp_path / "study"
    study_folder.mkdir()
    (study_folder / "a.png").write_bytes(b"original")
    study = StudyResult(str(study_folder), [_radiograph("a.png")],
                        [_prediction("a.png", 0.9, "fracture")], 0.9, "fracture")  # fmt: skip
    for folder in (study_folder, study_folder / "reports"):
        with pytest.raises(UsageError, match="refusing to write the report"):
            export_report(study, 0, {}, folder, 0.5, heatmap_shown=True)
    assert [p.name for p in study_folder.iterdir()] == ["a.png"]
    assert (study_folder / "a.png").read_bytes() == b"original"
    assert export_report(study, 0, {}, tmp_path / "reports", 0.5, True).image.is_file()


def test_the_screenshot_never_replaces_a_file_without_overwrite(tmp_path):
    from edge_app.app_cli import main

    screenshot = tmp_path / "app.png"
    screenshot.write_bytes(b"an earlier screenshot")
    assert main(["--screenshot", str(screenshot), str(tmp_path / "x.jpg")]) == 2
    assert screenshot.read_bytes() == b"an earlier screenshot"
    image = tmp_path / "x.jpg"
    image.write_bytes(b"a film")
    assert main(["--screenshot", str(image), "--overwrite", str(image)]) == 2  # never an input
    assert image.read_bytes() == b"a film"


def test_reports_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FRACTURE_EDGE_REPORTS", str(tmp_path / "r"))
    assert reports_folder() == tmp_path / "r"
    assert reports_folder(tmp_path / "phone") == tmp_path / "r"
    monkeypatch.delenv("FRACTURE_EDGE_REPORTS")
    assert reports_folder() == Path.home() / "FractureEdge-reports"
    assert reports_folder(tmp_path / "phone") == tmp_path / "phone"


def test_display_copy_shrinks_large_images_only():
    pixels = np.random.default_rng(0).random((3000, 1500), dtype=np.float32)
    small, heatmap = display_copy(pixels, pixels, max_side=1024)
    assert small.shape == heatmap.shape == (1024, 512)
    assert abs(float(small.mean()) - float(pixels.mean())) < 1e-3
    same, none = display_copy(pixels[:100, :80], None)
    assert same.shape == (100, 80) and none is None


def test_picture_rgba_is_opaque_rgba_with_the_legend():
    prediction = _prediction("a.png", 0.9, "fracture", shape=(30, 50))
    rgba = picture_rgba(np.zeros((30, 50), np.float32), prediction, prediction.heatmap, 0.5)
    assert rgba.shape == (30, 50 + legend_width(30, 50), 4) and rgba.dtype == np.uint8
    assert (rgba[..., 3] == 255).all()


def test_model_rows_and_bands_read_describe():
    info = {
        "name": "fracture-lite0-int8",
        "architecture": "tf_efficientnet_lite0",
        "quantization": "int8",
        "input_size": 224,
        "created": "2026-11-27T04:15:34+00:00",
        "val_auroc": 0.8998,
        "test_auroc": 0.9219,
        "test_auroc_ci95": [0.8861, 0.9517],
        "folder": "/opt/fracture-edge/models/fracture-lite0-int8",
        "site_calibration": {"site": "st-elsewhere", "date": "2026-12-01"},
    }
    rows = dict(model_rows(info))
    assert rows["Calibration"] == "site-calibrated: st-elsewhere, 2026-12-01"
    assert rows["Folder"] == "…/models/fracture-lite0-int8"
    assert dict(model_rows({}))["Calibration"] == "not site-calibrated"
    assert rows["Test AUROC"] == "0.922  (95 % CI 0.886–0.952)"
    assert rows["Validation AUROC"] == "0.900" and rows["Input"] == "224 px"
    assert rows["Created"] == "2026-11-27 04:15:34"
    assert dict(model_rows({}))["Test AUROC"] == "—"
    assert band_text({"doubt": 0.055, "fracture": 0.425}).startswith(
        "fracture ≥ 42.5 % · review ≥ 5.5 %"
    )


def test_user_message_keeps_the_loaders_message_and_flags_bugs(caplog):
    assert user_message(CorruptImageError("x.jpg cannot be decoded")) == "x.jpg cannot be decoded"
    assert "Permission denied" in user_message(PermissionError(13, "Permission denied", "x.jpg"))
    with caplog.at_level("ERROR"):
        message = user_message(KeyError("oops"))
    assert "Unexpected error (KeyError" in message and "report" in message
    assert caplog.records[0].exc_info is not None  # a bug keeps its traceback in the log


def test_a_hostile_card_is_the_workers_message_and_no_image_is_scored(
    tiny_bundle, tmp_path, make_radiograph, save_jpeg
):
    """NaN thresholds used to load: every film then read "no fracture seen" in green."""
    from edge_app.app import InferenceWorker

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    card = json.loads((bundle / "model_card.json").read_text())
    card["operating_points"] = {"doubt": float("nan"), "fracture": float("nan")}
    (bundle / "model_card.json").write_text(json.dumps(card))
    image = save_jpeg(tmp_path / "hand.jpg", make_radiograph(120, 100))
    outcomes = []
    worker = InferenceWorker(deliver=lambda callback, outcome: callback(outcome))
    worker.load_model(bundle, outcomes.append)
    worker.analyse(image, outcomes.append)
    worker._executor.shutdown(wait=True)
    (loaded, analysed) = outcomes
    assert loaded.value is None and "'operating_points.doubt' must be a finite number" in (
        loaded.message
    )
    assert analysed.value is None and "no model is loaded" in analysed.message
    assert "operating_points.doubt" in analysed.message


# --------------------------------------------------------------------------- the window


@pytest.fixture(scope="module")
def xvfb_run() -> str:
    if importlib.util.find_spec("kivy") is None:
        pytest.skip("the app needs Kivy: pip install 'fracture-edge[app]'")
    found = shutil.which("xvfb-run")
    if found is None:
        pytest.skip("a headless window needs xvfb-run: apt-get install xvfb xauth")
    return found


@dataclass
class AppRun:
    returncode: int
    output: str  # stdout and stderr

    def payloads(self, tag: str) -> list[str]:
        prefix = tag + " "
        return [line[len(prefix) :] for line in self.output.splitlines() if line.startswith(prefix)]

    def json(self, tag: str) -> list[dict]:
        return [json.loads(payload) for payload in self.payloads(tag)]


def run_app(
    xvfb_run: str,
    bundle: Path,
    paths: list[Path],
    tmp_path: Path,
    screenshot: Path | None = None,
    auto_export: bool = False,
) -> AppRun:
    env = dict(os.environ, KIVY_HOME=str(tmp_path / "kivy-home"))
    env["FRACTURE_EDGE_REPORTS"] = str(tmp_path / "reports")
    env.pop("FRACTURE_EDGE_APP_AUTO_EXPORT", None)
    if auto_export:
        env["FRACTURE_EDGE_APP_AUTO_EXPORT"] = "1"
    command = [xvfb_run, "-a", "-s", "-screen 0 1280x800x24", sys.executable, "-m"]
    command += ["edge_app.app_cli", "--model", str(bundle), "--exit-after", "0.1"]
    command += ["--screenshot", str(screenshot)] if screenshot else []
    command += [str(path) for path in paths]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=REPO, timeout=180, check=False
    )
    run = AppRun(result.returncode, result.stdout + result.stderr)
    assert run.returncode == 0, run.output
    assert "Traceback" not in run.output, run.output
    return run


def _pixels_near(image: Image.Image, colour: tuple[int, ...], box=None, tolerance=12) -> int:
    region = np.asarray((image.crop(box) if box else image).convert("RGB"), dtype=np.int16)
    return int((np.abs(region - np.array(colour[:3])) <= tolerance).all(axis=2).sum())


def _side_panel(image: Image.Image) -> tuple[int, int, int, int]:
    width, height = image.size
    return int(width * 0.65), int(height * 0.1), width, height


def _rgb255(colour: tuple[float, ...]) -> tuple[int, ...]:
    return tuple(round(255 * c) for c in colour[:3])


@pytest.mark.slow
def test_app_shows_the_verdict_and_saves_a_screenshot(
    xvfb_run, tiny_bundle, tmp_path, save_jpeg, make_radiograph
):
    image = save_jpeg(tmp_path / "wrist.jpg", make_radiograph(240, 300))
    screenshot = tmp_path / "shots" / "app.png"
    run = run_app(xvfb_run, tiny_bundle, [image], tmp_path, screenshot=screenshot)
    [verdict] = run.json("VERDICT")
    assert verdict["path"] == str(image) and verdict["verdict"] in VERDICTS
    assert 0 <= verdict["fracture_probability"] <= 1
    assert run.payloads("SCREENSHOT") == [str(screenshot)]
    shot = Image.open(screenshot)
    assert shot.size == WINDOW_SIZE
    assert float(np.asarray(shot.convert("L"), dtype=np.float32).std()) > 20
    # the verdict badge, in its verdict's colour; no study list for a single image
    assert _pixels_near(shot, _rgb255(VERDICT_COLOURS[verdict["verdict"]])) > 8000
    assert _pixels_near(shot, STUDY_ENTRY_SELECTED, _side_panel(shot)) < 500


@pytest.mark.slow
def test_a_corrupt_file_shows_the_loaders_message(xvfb_run, tiny_bundle, tmp_path):
    bad = tmp_path / "scan.jpg"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ImageReadError) as expected:
        load_study(bad)
    screenshot = tmp_path / "error.png"
    run = run_app(xvfb_run, tiny_bundle, [bad], tmp_path, screenshot=screenshot)
    assert run.payloads("ERROR") == [str(expected.value)]
    assert run.payloads("VERDICT") == []
    assert _pixels_near(Image.open(screenshot), BANNER) > 5000  # the message is on screen


@pytest.mark.slow
def test_an_invalid_bundle_shows_a_message(xvfb_run, tmp_path, save_jpeg, make_radiograph):
    bundle = tmp_path / "not-a-bundle"
    bundle.mkdir()
    image = save_jpeg(tmp_path / "hand.jpg", make_radiograph(120, 100))
    run = run_app(xvfb_run, bundle, [image], tmp_path)
    errors = run.payloads("ERROR")
    assert errors and "is not a model bundle: model_card.json is missing" in errors[0]
    assert run.payloads("VERDICT") == []


@pytest.mark.slow
def test_a_hostile_card_shows_its_message_in_the_window(
    xvfb_run, tiny_bundle, tmp_path, save_jpeg, make_radiograph
):
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    card = json.loads((bundle / "model_card.json").read_text())
    card["calibration_temperature"] = float("inf")
    (bundle / "model_card.json").write_text(json.dumps(card))
    image = save_jpeg(tmp_path / "hand.jpg", make_radiograph(120, 100))
    run = run_app(xvfb_run, bundle, [image], tmp_path)  # exit 0, no traceback
    errors = run.payloads("ERROR")
    assert errors and all("'calibration_temperature' must be a finite number" in e for e in errors)
    assert run.payloads("VERDICT") == [] and run.payloads("MODEL") == []


@pytest.mark.slow
def test_a_folder_is_one_study_with_a_list_and_exports_a_report(
    xvfb_run, tiny_bundle, tmp_path, save_jpeg, make_radiograph
):
    folder = tmp_path / "study"
    for index in range(2):
        save_jpeg(folder / f"view{index}.jpg", make_radiograph(200, 160 + 40 * index, index))
    screenshot = tmp_path / "study.png"
    run = run_app(
        xvfb_run, tiny_bundle, [folder], tmp_path, screenshot=screenshot, auto_export=True
    )
    [verdict] = run.json("VERDICT")
    assert verdict["images"] == 2
    names = [Path(image["path"]).name for image in verdict["per_image"]]
    assert names == ["view0.jpg", "view1.jpg"]
    shot = Image.open(screenshot)
    assert _pixels_near(shot, STUDY_ENTRY_SELECTED, _side_panel(shot)) > 5000  # the list
    [files] = run.json("REPORT")
    image, report_json = Path(files["image"]), Path(files["json"])
    assert image.parent == report_json.parent == tmp_path / "reports"
    # the shown (first) image at full resolution, the legend beside it
    assert Image.open(image).size == (160 + legend_width(200, 160), 200)
    report = json.loads(report_json.read_text())
    assert report["prediction"] == verdict
    card = json.loads((tiny_bundle / "model_card.json").read_text())
    assert report["model"]["sha256"] == card["model_sha256"]
    assert report["shown_image"]["index"] == 0


def test_no_screen_is_a_clear_error_not_a_hang():
    from edge_app.app_cli import NoDisplayError, check_display

    with pytest.raises(NoDisplayError, match="xvfb-run"):
        check_display({}, "linux")
    check_display({"DISPLAY": ":99"}, "linux")
    check_display({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    check_display({}, "darwin")  # macOS and Windows have a screen of their own
    check_display({"ANDROID_ARGUMENT": "x"}, "linux")


# --------------------------------------------------------------------------- the six samples

SAMPLES = REPO / "models" / "samples"


def _viewer(image: Image.Image) -> tuple[int, int, int, int]:
    """The image area of a wide window: left of the side panel, under the toolbar."""
    width, height = image.size
    return 0, int(height * 0.09), int(width * 0.64), int(height * 0.9)


@pytest.mark.slow
@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.jpg")))
def test_the_samples_show_a_visible_overlay_and_a_box_for_each_fracture(
    xvfb_run, tmp_path, sample, screenshots
):
    warm_pixels, keep_screenshot = screenshots
    screenshot = tmp_path / "app.png"
    run = run_app(xvfb_run, DEFAULT_BUNDLE, [SAMPLES / sample], tmp_path, screenshot=screenshot)
    [verdict] = run.json("VERDICT")
    shot = Image.open(screenshot)
    viewer = _viewer(shot)
    box_lines = _pixels_near(shot, BOX_COLOUR, viewer, tolerance=40)
    if verdict["verdict"] == "no_fracture":
        assert verdict["box"] is None
        assert box_lines == 0  # a calm film: no box, no key for one
        assert warm_pixels(shot, viewer) < 3000  # the legend's colour bar at most
    else:
        assert verdict["box"] is not None
        assert box_lines > 600, box_lines  # the box (and its key in the legend)
        assert warm_pixels(shot, viewer) > 20000  # the overlay, clearly visible
    keep_screenshot(screenshot, f"app-{Path(sample).stem.split('_IMG')[0]}.png")


@pytest.mark.slow
def test_another_bundle_is_opened_from_the_model_panel(
    xvfb_run, tiny_bundle, tmp_path, save_jpeg, make_radiograph
):
    """The "Open another model…" button, its folder chooser, and the panel's calibration row:
    the shown image is scored again with the bundle chosen."""
    other = Path(shutil.copytree(tiny_bundle, tmp_path / "site-bundle"))
    card = json.loads((other / "model_card.json").read_text())
    card["name"] = "tiny-site-bundle"
    card["site_calibration"] = {"site": "st-elsewhere", "date": "2026-12-01"}
    (other / "model_card.json").write_text(json.dumps(card))
    image = save_jpeg(tmp_path / "wrist.jpg", make_radiograph(120, 100))
    driver = tmp_path / "driver.py"  # a file: Kivy's App looks up its class's source file
    driver.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from edge_app.app_cli import configure_kivy\n"
        "configure_kivy()\n"
        "from kivy.core.window import Window\n"
        "from edge_app.app_ui import FractureEdgeApp, OpenDialog\n"
        "class Driver(FractureEdgeApp):\n"
        "    verdicts = 0\n"
        "    def _on_outcome(self, view, kind):\n"
        "        if kind == 'error':\n"
        "            self.stop()\n"
        "        if kind != 'verdict':\n"
        "            return\n"
        "        self.verdicts += 1\n"
        "        if self.verdicts == 2:\n"
        "            self.stop()\n"
        "            return\n"
        "        view.ids.model_button.trigger_action(0)\n"
        "        dialog = next(w for w in Window.children if isinstance(w, OpenDialog))\n"
        "        dialog.choose([sys.argv[2]])\n"
        "Driver(bundle=Path(sys.argv[1]), paths=[Path(sys.argv[3])]).run()\n"
    )
    env = dict(os.environ, KIVY_HOME=str(tmp_path / "kivy-home"))
    command = [xvfb_run, "-a", "-s", "-screen 0 1280x800x24", sys.executable, str(driver)]
    result = subprocess.run(
        command + [str(tiny_bundle), str(other), str(image)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=180, check=False,
    )  # fmt: skip
    run = AppRun(result.returncode, result.stdout + result.stderr)
    assert run.returncode == 0 and "Traceback" not in run.output, run.output
    first, second = run.json("MODEL")
    original = json.loads((tiny_bundle / "model_card.json").read_text())
    assert first["name"] == original.get("name", "tiny") and first["site_calibration"] is None
    assert second["name"] == "tiny-site-bundle"
    assert second["site_calibration"] == card["site_calibration"]
    assert second["folder"] == str(other)
    assert [v["path"] for v in run.json("VERDICT")] == [str(image)] * 2  # scored again
