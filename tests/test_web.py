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
from edge_app.runtime import FractureDetector  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


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
        demo = web.launch(tiny_bundle, port=_free_port(), block=False)
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
        files, True, web.DEFAULT_OPACITY, api_name="/predict"
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
    assert f"{expected.probability:.1%}" in verdict_html
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
    assert f">{wording}<" in card and f"{probability:.1%}" in card
    assert f"color:{colour}" in card


def test_error_card_escapes_the_message():
    card = web.error_card("<script>alert(1)</script> is not an image")
    assert "<script>" not in card and "&lt;script&gt;" in card


def test_heatmap_toggle_and_opacity(make_radiograph):
    pixels = make_radiograph(64, 64, 0, 0)
    heatmap = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    shown = web.ShownImage("a.jpg", pixels, heatmap)
    plain = web.render(shown, show_heatmap=False, opacity=0.8)
    assert np.array_equal(plain[..., 0], pixels) and np.array_equal(plain[..., 0], plain[..., 2])
    faint, strong = web.render(shown, True, 0.2), web.render(shown, True, 0.9)
    assert np.abs(strong.astype(int) - plain).sum() > np.abs(faint.astype(int) - plain).sum() > 0


def test_display_size_caps_the_longest_side():
    assert web.display_size(3000, 1500) == (512, 1024)
    assert web.display_size(200, 300) == (300, 200)


def test_model_info_names_model_quantization_and_auroc(tiny_bundle):
    detector = FractureDetector(tiny_bundle)
    text = web.model_info(detector)
    assert f"`{detector.bundle.name}`" in text and "float32" in text
    assert "Validation AUROC** 0.500" in text
    assert "95 % CI 0.400–0.600" in text


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
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,1100",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    image = save_jpeg(tmp_path / "hand.jpg", make_radiograph(240, 200, 5, 5))
    driver = webdriver.Chrome(service=webdriver.ChromeService(driver_path), options=options)
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
