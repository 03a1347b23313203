"""The Gradio page: same answers as the runtime, readable errors, localhost only, nothing fetched
from outside, and a page a browser can use."""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio", reason="the web page needs the 'web' extra (gradio)")
gradio_client = pytest.importorskip("gradio_client", reason="needs gradio_client ('web' extra)")

from edge_app import web  # noqa: E402  (after the skip: it imports gradio)
from edge_app.render import BOX_COLOUR, DEFAULT_OPACITY, legend_width  # noqa: E402
from edge_app.runtime import DEFAULT_BUNDLE, FractureDetector  # noqa: E402
from edge_app.text import percent  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _is_loopback(host: object) -> bool:
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like never leave the machine
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name: resolving it is already a call outside


class OutsideCalls:
    """Records every connection or name lookup, from any thread, that leaves the machine."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def install(self, patch: pytest.MonkeyPatch) -> None:
        connect, connect_ex = socket.socket.connect, socket.socket.connect_ex
        getaddrinfo = socket.getaddrinfo

        def guarded(original):
            def call(sock, address, *args):
                if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(
                    address[0]
                ):
                    self.seen.append(f"connect {address}")
                return original(sock, address, *args)

            return call

        def lookup(host, *args, **kwargs):
            if not _is_loopback(host.decode() if isinstance(host, bytes) else host):
                self.seen.append(f"getaddrinfo {host}")
            return getaddrinfo(host, *args, **kwargs)

        patch.setattr(socket.socket, "connect", guarded(connect))
        patch.setattr(socket.socket, "connect_ex", guarded(connect_ex))
        patch.setattr(socket, "getaddrinfo", lookup)


@pytest.fixture(scope="module")
def outside_calls():
    recorder = OutsideCalls()
    with pytest.MonkeyPatch.context() as patch:
        recorder.install(patch)
        yield recorder


@pytest.fixture(scope="module")
def server(tiny_bundle, outside_calls):
    """The page on a free local port, in a background thread. Gradio's own variables ask for
    every interface and a share link: the page must ignore them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
        patch.setenv("GRADIO_SHARE", "True")
        demo = web.launch(tiny_bundle, "127.0.0.1", _free_port(), block=False)
    yield demo
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    """The test's own client: its telemetry and Hub look-ups are off, so that any outside call
    the recorder sees comes from the page."""
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield gradio_client.Client(
            server.local_url, verbose=False, download_files=False, analytics_enabled=False
        )


def _predict(client, *paths: Path):
    files = [gradio_client.handle_file(str(path)) for path in paths]
    verdict_html, _image, _choice, table, details = client.predict(
        files, True, DEFAULT_OPACITY, api_name="/predict"
    )
    return verdict_html, table, details


# --------------------------------------------------------------------------- through the server


def test_upload_gives_the_runtimes_answer(
    client, tiny_bundle, tmp_path, make_radiograph, save_jpeg, outside_calls
):
    path = save_jpeg(tmp_path / "wrist.jpg", make_radiograph(96, 80, 3, 3))
    expected = FractureDetector(tiny_bundle).predict_path(path)
    verdict_html, table, details = _predict(client, path)
    assert details["verdict"] == expected.verdict
    assert details["fracture_probability"] == round(expected.probability, 6)
    assert details["path"] == "wrist.jpg"  # the file's name, not the server's upload path
    assert expected.verdict_text.capitalize() in verdict_html
    assert percent(expected.probability) in verdict_html
    assert details["peak"] == (list(expected.predictions[0].peak or []) or None)
    assert details["box"] == (list(expected.predictions[0].box or []) or None)
    assert table["visible"] is False  # no per-image table for a single image
    assert outside_calls.seen == []


def test_several_files_are_one_study(
    client, tiny_bundle, tmp_path, make_radiograph, save_jpeg, outside_calls
):
    paths = [
        save_jpeg(tmp_path / "study" / f"view{index}.jpg", make_radiograph(72, 90, index, index))
        for index in range(3)
    ]
    expected = FractureDetector(tiny_bundle).predict_path(tmp_path / "study")
    _verdict, table, details = _predict(client, *paths)
    assert details["images"] == 3
    assert details["verdict"] == expected.verdict
    assert details["fracture_probability"] == pytest.approx(expected.probability, abs=1e-6)
    rows = table["value"]["data"]  # a component update: the table is shown for studies only
    assert table["visible"] is True
    assert [row[1] for row in rows] == ["view0.jpg", "view1.jpg", "view2.jpg"]
    assert outside_calls.seen == []


def test_nifti_volume_is_a_study_of_its_slices(client, tiny_bundle, tmp_path):
    nibabel = pytest.importorskip("nibabel")
    volume = np.random.default_rng(0).normal(300, 200, (40, 40, 4)).astype(np.float32)
    path = tmp_path / "ct.nii.gz"
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), str(path))
    expected = FractureDetector(tiny_bundle).predict_path(path)
    _verdict, table, details = _predict(client, path)
    assert details["images"] == 4
    assert [row[1] for row in table["value"]["data"]][-1] == "ct.nii.gz [slice 4/4]"
    assert details["fracture_probability"] == round(expected.probability, 6)


def test_corrupt_upload_gives_a_readable_message(client, tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    verdict_html, _table, details = _predict(client, path)
    assert "broken.jpg" in details["error"]
    assert "/broken.jpg" not in details["error"]  # the name, not the server's upload path
    assert "Could not score this upload" in verdict_html
    assert "Traceback" not in verdict_html and "Traceback" not in details["error"]


def test_binds_to_loopback_only_by_default(server):
    bound = {
        sock.getsockname()[0] for listener in server.server.servers for sock in listener.sockets
    }
    assert bound == {"127.0.0.1"}
    assert server.share is False and server.share_url is None
    if sys.platform.startswith("linux"):  # all of 127/8 is loopback there: not bound, refused
        port = int(server.local_url.rstrip("/").rsplit(":", 1)[1])
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.settimeout(5)
            probe.connect(("127.0.0.2", port))


def test_page_assets_are_served_locally(server):
    """No font, script or stylesheet is fetched from another host."""
    import urllib.request

    with urllib.request.urlopen(server.local_url, timeout=30) as response:
        page = response.read().decode()
    for host in ("fonts.googleapis", "fonts.gstatic", "cdn.jsdelivr", "unpkg.com", "cdnjs"):
        assert host not in page


def _nifti_with_nan_intercept(path: Path) -> Path:
    """A single-file NIfTI-1 of 8 × 8 × 2 voxels whose scaling intercept is NaN."""
    import struct

    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, 8, 8, 2, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 2, 8)  # uint8
    struct.pack_into("<8f", header, 76, *[1.0] * 8)
    struct.pack_into("<fff", header, 108, 352.0, 1.0, float("nan"))  # vox_offset, slope, inter
    struct.pack_into("<hh", header, 252, 0, 1)
    for row in range(3):
        struct.pack_into("<4f", header, 280 + 16 * row, *np.eye(4)[row])
    header[344:348] = b"n+1\x00"
    path.write_bytes(bytes(header) + bytes(4) + bytes(range(128)))
    return path


@pytest.mark.parametrize(
    ("make", "headline"),
    [
        ("blank", "Blank film: no image content, no verdict"),
        ("nifti", "Damaged file"),
        ("dicom", "Damaged file"),
    ],
)
def test_blank_and_damaged_uploads_get_the_grey_card_with_their_own_headline(
    client, tmp_path, make, headline
):
    """A ValueError deep in a DICOM or NIfTI reader used to reach Gradio as a generic error."""
    from PIL import Image

    if make == "blank":
        path = tmp_path / "blank.png"
        Image.new("L", (64, 48), 0).save(path)
    elif make == "nifti":
        path = _nifti_with_nan_intercept(tmp_path / "ct.nii")
    else:
        path = tmp_path / "cut.dcm"
        path.write_bytes((ROOT / "models/samples/leg_fractured_IMG0003569.dcm").read_bytes()[:2000])
    verdict_html, _table, details = _predict(client, path)
    assert "Could not score this upload" in verdict_html and headline in verdict_html
    assert path.name in details["error"] and f"/{path.name}" not in details["error"]
    assert "Traceback" not in verdict_html
    assert path.is_file()  # the original is untouched


def test_files_of_one_upload_are_bounded_together(
    tiny_bundle, tmp_path, make_radiograph, save_jpeg, monkeypatch
):
    """Each file alone is within its limit; together they are a study over the study limit
    (shrunk here, so that small films reach it), refused before any is decoded."""
    import edge_app.runtime

    monkeypatch.setattr(edge_app.runtime, "DEFAULT_MAX_PIXELS", 10_000)  # study limit 20,000
    paths = [
        str(save_jpeg(tmp_path / f"view{index}.jpg", make_radiograph(96, 80, index, index)))
        for index in range(3)
    ]
    page = web.PageModel(tiny_bundle)
    verdict_html, picture, *_rest, details, shown = web._analyse(page, paths, True, 0.55)
    assert "study limit of 2 × max_pixels = 20,000" in details["error"]
    assert "3 images of 23,040 pixels" in details["error"]
    assert "Could not score this upload" in verdict_html and picture is None and shown == []
    assert web._analyse(page, paths[:2], True, 0.55)[4]["images"] == 2  # 15,360: within


def test_a_hostile_card_is_refused_in_place_of_the_result(tiny_bundle, tmp_path):
    nan_card = Path(shutil.copytree(tiny_bundle, tmp_path / "nan-card"))
    card = json.loads((nan_card / "model_card.json").read_text())
    card["operating_points"]["doubt"] = float("nan")
    (nan_card / "model_card.json").write_text(json.dumps(card))  # NaN, as json writes it
    page = web.PageModel(tiny_bundle)
    folder, about, verdict_html, picture, *_rest, details, shown = web._switch_bundle(
        page, str(nan_card), [], True, DEFAULT_OPACITY
    )
    assert "No model loaded" in about and "operating_points.doubt" in about
    assert "finite number in [0, 1]" in details["error"]
    assert "The model bundle cannot be used" in verdict_html and picture is None
    assert "unusable" in web.bundle_label(nan_card)


# --------------------------------------------------------------------------- the run's files


def _default_hangup() -> None:
    import signal

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _start_web(tmp_path: Path, bundle: Path) -> tuple[subprocess.Popen, str]:
    """``fracture-edge web`` in a child process on a free port, with its own TMPDIR and a
    GRADIO_TEMP_DIR the page must not use; returns the process and its address."""
    import os

    port = _free_port()
    env = dict(
        os.environ,
        TMPDIR=str(tmp_path / "tmp"),
        GRADIO_TEMP_DIR=str(tmp_path / "shared-gradio"),
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
    )
    (tmp_path / "tmp").mkdir(exist_ok=True)
    command = [sys.executable, "-m", "fracture_edge.cli", "web", "--model", str(bundle)]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # a runner started under nohup ignores SIGHUP, and a child inherits that: the page
        # rightly keeps an ignored SIGHUP ignored, so give the child the default disposition
        preexec_fn=_default_hangup,
    )
    for line in process.stdout:
        if "FractureEdge page:" in line:
            return process, f"http://127.0.0.1:{port}/"
    process.wait(timeout=30)
    raise AssertionError(f"the page did not start (exit {process.returncode})")


@pytest.mark.slow
@pytest.mark.parametrize("signum", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_uploads_and_overlays_are_private_to_the_run_and_gone_after_it(
    tiny_bundle, tmp_path, make_radiograph, save_jpeg, signum
):
    """The page keeps what it was given in a folder of its own (0700, files 0600), never in
    GRADIO_TEMP_DIR's shared folder, removes it however the server is stopped, and a later
    instance does not serve an earlier one's files."""
    import signal
    import stat
    import urllib.error
    import urllib.request

    image = save_jpeg(tmp_path / "wrist.jpg", make_radiograph(96, 80, 3, 3))
    process, address = _start_web(tmp_path, tiny_bundle)
    try:
        client = gradio_client.Client(address, verbose=False, download_files=False)
        result = client.predict(
            [gradio_client.handle_file(str(image))], True, 0.55, api_name="/predict"
        )
        overlay = Path(result[1]["path"])
        (private,) = (tmp_path / "tmp").glob("fracture-edge-web-*")
        assert private in overlay.parents and overlay.is_file()
        kept = sorted(private.rglob("*"))
        assert any(path.name == "wrist.jpg" for path in kept)  # the upload itself
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        for path in kept:
            expected = 0o700 if path.is_dir() else 0o600
            assert stat.S_IMODE(path.stat().st_mode) == expected, path
        assert not (tmp_path / "shared-gradio").exists()
        process.send_signal(getattr(signal, signum))
        code = process.wait(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert code in (0, -getattr(signal, signum))  # Ctrl-C ends cleanly, the others by signal
    assert not private.exists()
    assert not any("wrist" in path.name for path in (tmp_path / "tmp").rglob("*"))
    later, later_address = _start_web(tmp_path, tiny_bundle)
    try:
        old_url = later_address + result[1]["url"].split("/", 3)[3]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(old_url, timeout=30)
        assert refused.value.code in (403, 404)
    finally:
        later.terminate()
        later.wait(timeout=30)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_importing_the_page_changes_nothing_in_the_process():
    probe = (
        "import os, sys\n"
        "before = dict(os.environ)\n"
        "import edge_app.web\n"
        "print(dict(os.environ) == before, 'gradio' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.stdout.split() == ["True", "False"], result.stderr


def test_files_outside_the_runs_folder_are_not_served(server, tmp_path):
    import urllib.error
    import urllib.request

    secret = tmp_path / "secret.txt"
    secret.write_text("not for visitors")
    folder = server.private_run.folder
    for target in (secret, Path("/etc/passwd"), folder / ".." / secret.relative_to("/")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.local_url}gradio_api/file={target}", timeout=30)
        assert refused.value.code in (403, 404), target


# --------------------------------------------------------------------------- pieces


def _prediction(tiny_bundle, make_radiograph, probability: float):
    detector = FractureDetector(tiny_bundle)
    prediction = detector.predict_pixels(make_radiograph(64, 64, 0, 0) / 255.0, "/tmp/x/a.jpg")
    prediction.probability = probability
    prediction.verdict = detector.verdict(probability)
    return detector, prediction


@pytest.mark.parametrize(
    ("probability", "wording", "colour"),
    [
        (0.9, "Fracture", "#912018"),
        (0.5, "Uncertain — review", "#93370d"),
        (0.1, "No fracture seen", "#05603a"),
    ],
)
def test_verdict_card_is_colour_coded(tiny_bundle, make_radiograph, probability, wording, colour):
    detector, prediction = _prediction(tiny_bundle, make_radiograph, probability)
    card = web.verdict_card(prediction, detector.thresholds)
    assert f">{wording}<" in card and percent(probability) in card
    assert f"color:{colour}" in card


def test_error_card_escapes_the_message():
    card = web.error_card("<script>alert(1)</script> is not an image")
    assert "<script>" not in card and "&lt;script&gt;" in card


def test_heatmap_toggle_and_opacity(make_radiograph):
    from PIL import Image

    pixels = make_radiograph(64, 64, 0, 0)
    heatmap = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    shown = web.ShownImage("a.jpg", pixels, heatmap, "fracture", (0.5, 0.1, 1.0, 0.9))
    plain = web.picture(shown, show_heatmap=False, opacity=0.8)
    side = web.DISPLAY_MIN_SIDE  # a small film is enlarged, the legend beside it
    assert plain.shape == (side, side + legend_width(side, side), 3)
    film = plain[:, :side]
    enlarged = np.asarray(Image.fromarray(pixels).resize((side, side), Image.Resampling.BILINEAR))
    assert np.array_equal(film[..., 0], enlarged) and np.array_equal(film[..., 0], film[..., 2])
    faint, strong = web.picture(shown, True, 0.2), web.picture(shown, True, 0.9)
    change = [np.abs(image[:, :side].astype(int) - film).sum() for image in (faint, strong)]
    assert change[1] > change[0] > 0
    assert (strong[:, :side] == BOX_COLOUR).all(axis=2).sum() > 200  # the box, with the map
    assert not (film == BOX_COLOUR).all(axis=2).any()


def test_display_size_bounds_the_longest_side():
    assert web.display_size(3000, 1500) == (512, 1024)
    assert web.display_size(800, 900) == (900, 800)
    assert web.display_size(200, 300) == (720, 480)  # small films are enlarged for the legend
    assert web.display_size(200, 300, min_side=0) == (300, 200)


def test_model_info_names_model_quantization_and_auroc(tiny_bundle, tmp_path):
    detector = FractureDetector(tiny_bundle)  # its card records no metrics: an untrained fixture
    text = web.model_info(detector)
    assert f"`{detector.bundle.name}`" in text and "float32" in text
    assert "**not site-calibrated**" in text
    assert "**Validation AUROC** not recorded in this bundle's card" in text
    assert "**Test AUROC** not recorded" in text
    measured = Path(shutil.copytree(tiny_bundle, tmp_path / "measured"))
    card = json.loads((measured / "model_card.json").read_text())
    card["metrics"] = {
        "val_auroc": 0.5,
        "val_auroc_ci95": [0.4, 0.6],
        "test_auroc": 0.55,
        "test_auroc_ci95": [0.45, 0.65],
        "test_counts": {"images": 120},
    }
    (measured / "model_card.json").write_text(json.dumps(card))
    text = web.model_info(FractureDetector(measured))
    assert "**Validation AUROC** 0.500 (95 % CI 0.400–0.600)" in text
    assert "**Test AUROC** 0.550 (95 % CI 0.450–0.650), 120 test images" in text


def test_bundles_are_found_beside_the_default_and_named_with_their_calibration(
    tiny_bundle, tmp_path
):
    site = Path(shutil.copytree(tiny_bundle, tmp_path / "models" / "site"))
    card = json.loads((site / "model_card.json").read_text())
    card["site_calibration"] = {"site": "st-elsewhere", "date": "2026-12-01"}
    (site / "model_card.json").write_text(json.dumps(card))
    plain = Path(shutil.copytree(tiny_bundle, tmp_path / "models" / "plain"))
    (tmp_path / "models" / "samples").mkdir()  # not a bundle: left out
    assert web.find_bundles(plain, plain.parent) == [plain, site]
    assert web.bundle_label(site).endswith("— site-calibrated: st-elsewhere, 2026-12-01")
    assert web.bundle_label(plain).endswith("— not site-calibrated")
    assert "unusable" in web.bundle_label(tmp_path / "models" / "samples")


def test_switching_bundle_rescores_the_upload_and_reports_a_bad_one(
    tiny_bundle, tmp_path, make_radiograph, save_jpeg
):
    site = Path(shutil.copytree(tiny_bundle, tmp_path / "site"))
    card = json.loads((site / "model_card.json").read_text())
    card.update(name="tiny-site", site_calibration={"site": "st-elsewhere", "date": "2026-12-01"})
    card["operating_points"] = {"doubt": 0.0, "fracture": 0.0}  # everything is a fracture
    (site / "model_card.json").write_text(json.dumps(card))
    image = str(save_jpeg(tmp_path / "hand.jpg", make_radiograph(80, 70, 2, 2)))
    page = web.PageModel(tiny_bundle)
    folder, about, verdict_html, picture, *_rest, details, shown = web._switch_bundle(
        page, str(site), [image], True, DEFAULT_OPACITY
    )
    assert folder == str(site)
    assert "**site-calibrated: st-elsewhere, 2026-12-01**" in about
    assert ">Fracture<" in verdict_html and "model tiny-site" in verdict_html
    assert details["verdict"] == "fracture" and shown[0].verdict == "fracture"
    side = web.DISPLAY_MIN_SIDE  # 80 × 70 enlarged to 720 × 630, the legend beside it
    assert picture.shape == (side, 630 + legend_width(side, 630), 3)
    # the session keeps its bundle: the next upload is scored with it, the default untouched
    again = web._analyse(page, [image], True, DEFAULT_OPACITY, folder)
    assert again[4]["verdict"] == "fracture"
    assert page.score([image]).verdict == FractureDetector(tiny_bundle).predict_path(image).verdict
    folder, about, verdict_html, picture, *_rest, details, shown = web._switch_bundle(
        page, str(tmp_path / "nowhere"), [image], True, DEFAULT_OPACITY
    )
    assert "No model loaded" in about and "model bundle not found" in details["error"]
    assert "Could not score this upload" in verdict_html and picture is None and shown == []


def test_public_json_hides_server_paths(tiny_bundle, make_radiograph):
    _detector, prediction = _prediction(tiny_bundle, make_radiograph, 0.5)
    assert web.public_json(prediction)["path"] == "a.jpg"


def test_web_verb_defaults_to_localhost_without_importing_gradio():
    probe = (
        "import argparse, sys\n"
        "from edge_app.web_cli import add_web_parser\n"
        "parser = argparse.ArgumentParser()\n"
        "add_web_parser(parser.add_subparsers(dest='verb'))\n"
        "args = parser.parse_args(['web'])\n"
        "print(args.host, args.port, args.model, 'gradio' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.stdout.split() == ["127.0.0.1", "7860", "None", "False"], result.stderr


# --------------------------------------------------------------------------- in a browser


def _chrome(webdriver, browser: str, driver_path: str, profile: Path, size: str):
    """Headless Chromium with its own profile and no background traffic, logging requests."""
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={size}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=webdriver.ChromeService(driver_path), options=options)


def _browser_paths() -> tuple[str, str]:
    browser = next(
        (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None
    )
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip(
            "headless browser test needs chromium and chromedriver (apt: chromium chromium-driver)"
        )
    return browser, driver


def _overlay_source(driver) -> str | None:
    from selenium.webdriver.common.by import By

    images = driver.find_elements(By.CSS_SELECTOR, "#fe-overlay img")
    return images[0].get_attribute("src") if images else None


@pytest.mark.slow
def test_page_in_headless_chromium(server, tmp_path, make_radiograph, save_jpeg):
    browser, driver_path = _browser_paths()
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip)")
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = save_jpeg(tmp_path / "hand.jpg", make_radiograph(240, 200, 5, 5))
    driver = _chrome(webdriver, browser, driver_path, tmp_path / "profile", "1280,1100")
    try:
        driver.get(server.local_url)
        # Gradio replaces elements as results arrive: a stale one is looked up again.
        wait = WebDriverWait(driver, 90, ignored_exceptions=(StaleElementReferenceException,))
        wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#fe-upload input[type=file]"))
        driver.find_element(By.CSS_SELECTOR, "#fe-upload input[type=file]").send_keys(str(image))
        wait.until(lambda page: "probability" in page.find_element(By.ID, "fe-verdict").text)
        wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#fe-overlay img"))
        verdict_text = driver.find_element(By.ID, "fe-verdict").text
        page_text = driver.find_element(By.TAG_NAME, "body").text
        screenshot = tmp_path / "page.png"
        driver.save_screenshot(str(screenshot))
        with_heatmap = _overlay_source(driver)
        driver.find_element(By.CSS_SELECTOR, "#fe-heatmap input[type=checkbox]").click()
        wait.until(lambda page: _overlay_source(page) not in (with_heatmap, None))
        log = driver.get_log("performance")
    finally:
        driver.quit()
    assert "Research tool, not a diagnostic device" in page_text
    assert any(word in verdict_text for word in ("Fracture", "Uncertain — review", "No fracture"))
    from PIL import Image

    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float32)
    assert pixels.shape[0] > 500 and pixels.std() > 10  # not a blank page
    requested = {
        json.loads(entry["message"])["message"]["params"]["request"]["url"]
        for entry in log
        if '"Network.requestWillBeSent"' in entry["message"]
    }
    outside = [
        url
        for url in requested
        if url.split(":", 1)[0] in ("http", "https", "ws", "wss")
        and not url.startswith(server.local_url.rstrip("/"))
    ]
    assert outside == []


@pytest.fixture(scope="module")
def sample_server():
    """The page on the shipped bundle, for the samples."""
    if not (DEFAULT_BUNDLE / "model_card.json").is_file():
        pytest.skip("needs the shipped bundle models/fracture-lite0-int8")
    demo = web.launch(None, "127.0.0.1", _free_port(), block=False)
    yield demo
    demo.close()


@pytest.mark.slow
def test_the_samples_in_headless_chromium_show_overlay_and_box(
    sample_server, tmp_path, screenshots
):
    """Each of the six samples uploaded in a browser: a visible overlay and a box for every
    flagged film, a calm film without a box otherwise (read from the picture's pixels)."""
    import io

    from PIL import Image

    browser, driver_path = _browser_paths()
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip)")
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    warm_pixels, keep_screenshot = screenshots
    samples = sorted((ROOT / "models" / "samples").glob("*.jpg"))
    detector = FractureDetector(DEFAULT_BUNDLE)
    driver = _chrome(webdriver, browser, driver_path, tmp_path / "profile", "1280,1250")
    pictures = {}
    try:
        wait = WebDriverWait(driver, 90, ignored_exceptions=(StaleElementReferenceException,))
        for sample in samples:
            driver.get(sample_server.local_url)  # a fresh page: one upload, not a study
            wait.until(lambda page: page.find_elements(By.CSS_SELECTOR, "#fe-upload input"))
            upload = driver.find_element(By.CSS_SELECTOR, "#fe-upload input[type=file]")
            upload.send_keys(str(sample))
            wait.until(lambda page: "probability" in page.find_element(By.ID, "fe-verdict").text)
            wait.until(
                lambda page: page.execute_script(
                    "const i = document.querySelector('#fe-overlay img');"
                    "return i !== null && i.complete && i.naturalWidth > 0;"
                )
            )
            page_shot = tmp_path / f"web-{sample.stem.split('_IMG')[0]}.png"
            driver.save_screenshot(str(page_shot))
            element = driver.find_element(By.CSS_SELECTOR, "#fe-overlay img")
            pictures[sample] = (
                driver.find_element(By.ID, "fe-verdict").text,
                Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB"),
                page_shot,
            )
    finally:
        driver.quit()
    flagged = 0
    for sample, (verdict_text, picture, page_shot) in pictures.items():
        expected = detector.predict_path(sample)
        assert expected.verdict_text.capitalize() in verdict_text
        colours = np.asarray(picture, dtype=np.int16)
        box_lines = int((np.abs(colours - np.array(BOX_COLOUR)) <= 40).all(axis=2).sum())
        warm = warm_pixels(picture) / (picture.width * picture.height)
        if expected.verdict == "no_fracture":
            assert box_lines == 0 and warm < 0.02, (sample.name, box_lines, warm)
        else:
            flagged += 1
            assert box_lines > 300 and warm > 0.08, (sample.name, box_lines, warm)
        keep_screenshot(page_shot, page_shot.name)
    assert flagged == 4
