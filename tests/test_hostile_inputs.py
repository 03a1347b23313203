"""Inputs that must not hurt (issue 15): each test feeds one hostile file, checks the specific
refusal or warning, and checks that the other inputs of the same folder or list still load.

Liveness is checked with generous bounds (``finishes_within``): they catch a hang or a
whole-file scan (17 s, forever), not a slow machine.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import textwrap
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edge_app.errors import (
    EmptyImageError,
    ImageNotFoundError,
    ImageShapeError,
    ImageTooLargeError,
    NotAnImageError,
    NotARegularFileError,
)
from edge_app.radiograph import WORKING_PIXELS, load_radiograph, load_study, sniff_format

REPO = Path(__file__).resolve().parents[1]


def finishes_within(
    seconds: float, call: Callable[[], Any], unblock: Callable[[], None] | None = None
) -> Any:
    """Run ``call`` in a thread; fail (instead of hanging the suite) if it is still running
    after ``seconds``. Returns its result or re-raises its exception."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: BLE001 - handed back to the test below
            outcome["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        if unblock is not None:
            unblock()
        pytest.fail(f"still running after {seconds} s: a hang or an unbounded read")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def gradient(height: int = 32, width: int = 40) -> np.ndarray:
    return ((np.arange(height)[:, None] * 7 + np.arange(width)[None, :] * 3) % 256).astype(np.uint8)


def save_png(path: Path, array: np.ndarray | None = None) -> Path:
    """Save ``array`` (default: a gradient); the suffix picks the format."""
    Image.fromarray(gradient() if array is None else array).save(path)
    return path


def unblock_fifo(path: Path) -> Callable[[], None]:
    """Open the FIFO for writing once, so that a reader blocked on it returns."""

    def unblock() -> None:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass

    return unblock


# ---------------------------------------------------------------------------------------------
# Non-regular files and bounded sniffing (item 5)
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX named pipes")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "scan.png"
    os.mkfifo(fifo)
    with pytest.raises(NotARegularFileError, match="FIFO") as caught:
        finishes_within(10, lambda: load_study(fifo), unblock_fifo(fifo))
    assert "regular file" in str(caught.value)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_dcm_link_to_dev_zero_is_refused_naming_the_target(tmp_path: Path) -> None:
    link = tmp_path / "slice.dcm"
    link.symlink_to("/dev/zero")
    with pytest.raises(NotARegularFileError, match="character device") as caught:
        finishes_within(10, lambda: load_study(link))
    assert "/dev/zero" in str(caught.value)


def test_64_mb_of_zeros_named_dcm_is_refused_from_a_bounded_prefix(tmp_path: Path) -> None:
    zeros = tmp_path / "zeros.dcm"
    with zeros.open("wb") as stream:
        stream.truncate(64 * 1024 * 1024)  # sparse: no disk space used
    with pytest.raises(NotAnImageError, match="not a file FractureEdge can read"):
        finishes_within(5, lambda: sniff_format(zeros))  # was 17 s: pydicom parsed every byte


def test_broken_link_is_reported_as_such(tmp_path: Path) -> None:
    link = tmp_path / "view.png"
    link.symlink_to(tmp_path / "moved-away.png")
    with pytest.raises(ImageNotFoundError, match="broken link"):
        load_study(link)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX named pipes")
def test_study_folder_skips_broken_links_and_fifos_with_a_warning_naming_each(
    tmp_path: Path,
) -> None:
    study = tmp_path / "study"
    study.mkdir()
    save_png(study / "a.png")
    save_png(study / "c.png", gradient()[::-1])
    (study / "b.png").symlink_to(tmp_path / "gone.png")
    os.mkfifo(study / "d.png")
    (study / "e.dcm").symlink_to("/dev/null")
    radiographs = finishes_within(10, lambda: load_study(study), unblock_fifo(study / "d.png"))
    assert [Path(r.source).name for r in radiographs] == ["a.png", "c.png"]
    for radiograph in radiographs:
        warnings = "\n".join(radiograph.warnings)
        assert "skipped b.png: a broken link" in warnings
        assert "skipped d.png: a FIFO (named pipe), not a regular file" in warnings
        assert "skipped e.dcm: a character device" in warnings
    np.testing.assert_allclose(radiographs[0].pixels, gradient() / 255.0, atol=1e-7)


def test_regular_files_next_to_a_hostile_one_still_load(tmp_path: Path) -> None:
    good = save_png(tmp_path / "good.png")
    (tmp_path / "zero.dcm").symlink_to("/dev/zero")
    outcomes = []
    for path in [tmp_path / "zero.dcm", good]:
        try:
            outcomes.append(load_radiograph(path).pixels.shape)
        except NotARegularFileError as error:
            outcomes.append(type(error).__name__)
    assert outcomes == ["NotARegularFileError", (32, 40)]


# ---------------------------------------------------------------------------------------------
# Memory from tiny files (item 2)
# ---------------------------------------------------------------------------------------------


def run_capped(code: str, cap_mb: int, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a child Python whose address space is capped at ``cap_mb`` MB: a
    regression fails there with MemoryError instead of taking the machine's memory."""
    prelude = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({cap_mb} * 1024**2, {cap_mb} * 1024**2))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        timeout=timeout,
        check=False,
    )


def write_png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares its size and holds no pixel data: only a header check can answer."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_1_by_1_000_000_png_is_refused_from_its_header(tmp_path: Path) -> None:
    line = tmp_path / "line.png"
    Image.fromarray((np.arange(1_000_000) % 256).astype(np.uint8)[None, :]).save(line)
    assert line.stat().st_size < 100_000
    with pytest.raises(ImageShapeError, match=r"1,000,000×1 pixels.* at most 10 times"):
        finishes_within(10, lambda: load_study(line))
    thin = write_png_header_only(tmp_path / "thin.png", 64_000_000, 1)  # no data to decode
    with pytest.raises(ImageShapeError, match="64,000,000:1"):
        load_study(thin)
    save_png(tmp_path / "good.png")
    assert load_radiograph(tmp_path / "good.png").pixels.shape == (32, 40)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_image_over_the_working_budget_is_reduced_while_decoding(
    tmp_path: Path, suffix: str
) -> None:
    side = 4100  # 16.8 MP: just over WORKING_PIXELS (4096²), so reduced by 2
    assert side * side > WORKING_PIXELS
    path = tmp_path / f"large{suffix}"
    Image.fromarray(gradient(side, side)).save(path)
    radiograph = load_radiograph(path)
    assert radiograph.pixels.shape == (side // 2, side // 2)
    assert radiograph.metadata["original_size"] == (side, side)
    assert radiograph.pixels.dtype == np.float32


def test_jpeg_with_a_2_gb_trailer_is_read_without_reading_the_trailer(tmp_path: Path) -> None:
    path = tmp_path / "trailer.jpg"
    Image.fromarray(gradient(64, 64)).save(path, quality=90)
    with path.open("r+b") as stream:
        stream.truncate(2 * 1024**3)  # sparse zeros after the end marker
    result = run_capped(
        f"""
        from edge_app.radiograph import load_radiograph
        radiograph = load_radiograph({str(path)!r})
        print(radiograph.pixels.shape, radiograph.truncated)
        """,
        cap_mb=1024,  # reading the whole file (as before) would need 2 GB
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(64, 64) False"


def test_study_over_the_pixel_budget_is_refused_before_decoding(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        save_png(tmp_path / name, gradient(30, 30))
    # 3 × 900 pixels > 2 × max_pixels = 2,000
    with pytest.raises(ImageTooLargeError, match=r"2,700 pixels.*study limit.*2,000"):
        load_study(tmp_path, max_pixels=1000)
    (tmp_path / "c.png").unlink()
    assert len(load_study(tmp_path, max_pixels=1000)) == 2


# ---------------------------------------------------------------------------------------------
# Films without content (item 4)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 128, 255])
def test_constant_film_is_refused_and_gets_no_verdict(tmp_path: Path, value: int) -> None:
    path = save_png(tmp_path / "blank.png", np.full((64, 64), value, np.uint8))
    with pytest.raises(EmptyImageError, match="holds no image content: every pixel is"):
        load_study(path)
    with pytest.raises(EmptyImageError, match="no verdict"):
        load_radiograph(path)


def test_blank_film_in_a_study_folder_is_left_out_with_a_warning(tmp_path: Path) -> None:
    save_png(tmp_path / "a.png")
    save_png(tmp_path / "b.png", np.zeros((32, 40), np.uint8))
    save_png(tmp_path / "c.png", gradient()[::-1])
    radiographs = load_study(tmp_path)
    assert [Path(r.source).name for r in radiographs] == ["a.png", "c.png"]
    assert all("blank: left out b.png" in "\n".join(r.warnings) for r in radiographs)
    (tmp_path / "a.png").unlink()
    (tmp_path / "c.png").unlink()
    save_png(tmp_path / "d.png", np.full((32, 40), 255, np.uint8))
    with pytest.raises(EmptyImageError, match=r"every film in it is blank.*b\.png, d\.png"):
        load_study(tmp_path)


def test_100_byte_png_is_refused_as_mostly_missing(tmp_path: Path) -> None:
    whole = save_png(tmp_path / "whole.png", gradient(256, 256))
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:100])
    with pytest.raises(EmptyImageError, match=r"bottom \d+% of it is missing"):
        load_study(cut)
    assert load_study(whole)[0].pixels.shape == (256, 256)


def test_jpeg_whose_data_end_early_is_refused_or_flagged(tmp_path: Path) -> None:
    noise = np.random.default_rng(3).integers(0, 256, (256, 256), dtype=np.uint8)
    data = save_png(tmp_path / "whole.jpg", noise).read_bytes()
    early = tmp_path / "early.jpg"
    early.write_bytes(data[: len(data) // 4] + b"\xff\xd9")  # ends early, then an end marker
    with pytest.raises(EmptyImageError, match=r"bottom 7\d% of it is missing"):
        load_study(early)
    late = tmp_path / "late.jpg"
    late.write_bytes(data[: len(data) * 3 // 4] + b"\xff\xd9")
    radiograph = load_radiograph(late)
    assert radiograph.truncated
    assert re.search(
        r"the bottom \d+ of its 256 rows \(2\d%\) are filled in", radiograph.warnings[0]
    )
    assert not load_radiograph(tmp_path / "whole.jpg").truncated


# ---------------------------------------------------------------------------------------------
# Several frames in one file (item 7)
# ---------------------------------------------------------------------------------------------


def test_animated_gif_reads_its_first_frame_with_a_warning(tmp_path: Path) -> None:
    frames = [Image.fromarray(gradient()), Image.fromarray(gradient()[::-1])]
    frames[0].save(tmp_path / "cine.gif", save_all=True, append_images=frames[1:])
    (radiograph,) = load_study(tmp_path / "cine.gif")
    assert any(w.startswith("frames: the GIF file is animated") for w in radiograph.warnings)
    np.testing.assert_allclose(radiograph.pixels, gradient() / 255.0, atol=1 / 255)


def test_multi_page_tiff_is_a_study_of_its_pages(tmp_path: Path) -> None:
    pages = [Image.fromarray(gradient()), Image.fromarray(gradient()[::-1])]
    pages[0].save(tmp_path / "views.tif", save_all=True, append_images=pages[1:])
    views = load_study(tmp_path / "views.tif")
    assert [view.metadata["page_index"] for view in views] == [0, 1]
    np.testing.assert_allclose(views[1].pixels, gradient()[::-1] / 255.0, atol=1e-7)
    first = load_radiograph(tmp_path / "views.tif")
    assert "pages: the TIFF holds 2 pages; only the first was read" in first.warnings
