"""Inputs that must not hurt (issue 15): each test feeds one hostile file, checks the specific
refusal or warning, and checks that the other inputs of the same folder or list still load.

Liveness is checked with generous bounds (``finishes_within``): they catch a hang or a
whole-file scan (17 s, forever), not a slow machine.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edge_app.errors import (
    ImageNotFoundError,
    NotAnImageError,
    NotARegularFileError,
)
from edge_app.radiograph import load_radiograph, load_study, sniff_format


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
