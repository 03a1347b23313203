"""Inputs that must not hurt (issue 15): each test feeds one hostile file, checks the specific
refusal or warning, and checks that the other inputs of the same folder or list still load.

Liveness is checked with generous bounds (``finishes_within``): they catch a hang or a
whole-file scan (17 s, forever), not a slow machine.
"""

from __future__ import annotations

import gzip
import logging
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
    CorruptImageError,
    EmptyImageError,
    ImageNotFoundError,
    ImageReadError,
    ImageShapeError,
    ImageTooLargeError,
    InvalidVolumeError,
    MissingDecoderError,
    NotAnImageError,
    NotARegularFileError,
)
from edge_app.radiograph import WORKING_PIXELS, load_radiograph, load_study, sniff_format

REPO = Path(__file__).resolve().parents[2]


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
    frames_warning = "frames: the GIF file holds several frames"
    assert any(w.startswith(frames_warning) for w in radiograph.warnings)
    np.testing.assert_allclose(radiograph.pixels, gradient() / 255.0, atol=1 / 255)


def test_multi_page_tiff_is_a_study_of_its_pages(tmp_path: Path) -> None:
    pages = [Image.fromarray(gradient()), Image.fromarray(gradient()[::-1])]
    pages[0].save(tmp_path / "views.tif", save_all=True, append_images=pages[1:])
    views = load_study(tmp_path / "views.tif")
    assert [view.metadata["page_index"] for view in views] == [0, 1]
    np.testing.assert_allclose(views[1].pixels, gradient()[::-1] / 255.0, atol=1e-7)
    first = load_radiograph(tmp_path / "views.tif")
    assert "pages: the TIFF holds 2 pages; only the first was read" in first.warnings


# ---------------------------------------------------------------------------------------------
# Volumes: bombs, bounded reads, blank volumes (items 2, 4)
# ---------------------------------------------------------------------------------------------


def nifti_header(shape: tuple[int, ...], datatype: int = 2, bitpix: int = 8, **fields) -> bytes:
    """A little-endian single-file NIfTI-1 header and its 4-byte extension flag."""
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, len(shape), *shape, *[1] * (7 - len(shape)))
    struct.pack_into("<hh", header, 70, datatype, bitpix)
    struct.pack_into("<8f", header, 76, *[1.0] * 8)
    struct.pack_into("<f", header, 108, fields.get("vox_offset", 352.0))
    struct.pack_into("<ff", header, 112, fields.get("slope", 1.0), fields.get("intercept", 0.0))
    struct.pack_into("<hh", header, 252, 0, 1)
    affine = fields.get("affine", np.eye(4))
    for row in range(3):
        struct.pack_into("<4f", header, 280 + 16 * row, *affine[row])
    header[344:348] = b"n+1\x00"
    return bytes(header) + b"\x00" * 4


def test_gzip_nifti_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    """About a billion voxels declared in a file of a few hundred bytes: refused before any
    voxel is inflated (it used to inflate and convert them: 8 GB)."""
    bomb = tmp_path / "bomb.nii.gz"
    with gzip.open(bomb, "wb") as stream:
        stream.write(nifti_header((1024, 1024, 960)) + bytes(4096))
    with pytest.raises(ImageTooLargeError, match=r"1,006,632,960 voxels.*volume limit"):
        finishes_within(10, lambda: load_study(bomb))


def test_nifti_whose_voxels_end_early_is_refused_as_truncated(tmp_path: Path) -> None:
    short = tmp_path / "short.nii.gz"
    with gzip.open(short, "wb") as stream:
        stream.write(nifti_header((64, 64, 8)) + bytes(64 * 64 * 3))
    with pytest.raises(CorruptImageError, match="voxel data end early"):
        load_study(short)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"vox_offset": 3e9}, "voxel data at byte 3,000,000,000"),
        ({"vox_offset": float("nan")}, "voxel data at byte nan"),
        ({"slope": 1.0, "intercept": float("nan")}, "invalid intercept"),
        ({"affine": np.zeros((4, 4))}, "orientation"),
        ({"affine": np.full((4, 4), np.nan)}, "orientation"),
    ],
)
def test_malformed_nifti_header_is_an_image_read_error(
    tmp_path: Path, fields: dict, message: str
) -> None:
    path = tmp_path / "bad.nii"
    path.write_bytes(nifti_header((8, 8, 2), **fields) + bytes(8 * 8 * 2))
    with pytest.raises(CorruptImageError, match=message):
        load_study(path)


def test_nifti_of_unsupported_voxel_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rgb.nii"
    path.write_bytes(nifti_header((8, 8, 2), datatype=128, bitpix=24) + bytes(8 * 8 * 2 * 3))
    with pytest.raises(InvalidVolumeError, match="integer and floating-point"):
        load_study(path)


def test_all_zero_volume_is_refused_and_blank_slices_are_left_out(tmp_path: Path) -> None:
    zeros = tmp_path / "zeros.nii"
    zeros.write_bytes(nifti_header((16, 16, 6)) + bytes(16 * 16 * 6))
    with pytest.raises(EmptyImageError, match="all 6 slices are blank"):
        load_study(zeros)
    volume = np.zeros((16, 16, 6), np.uint8)
    volume[:, :, 2:4] = gradient(16, 16)[..., None]  # only slices 2 and 3 hold anything
    mixed = tmp_path / "mixed.nii"
    mixed.write_bytes(nifti_header((16, 16, 6)) + volume.tobytes(order="F"))
    slices = load_study(mixed)
    assert [s.metadata["slice_index"] for s in slices] == [2, 3]
    assert "left out 4 of 6 slices that hold no image content" in "\n".join(slices[0].warnings)
    assert "(slices 0-1, 4-5)" in "\n".join(slices[0].warnings)


# ---------------------------------------------------------------------------------------------
# Every loader failure is an ImageReadError (item 7)
# ---------------------------------------------------------------------------------------------


def write_dicom(path: Path, pixels: np.ndarray, **elements: Any) -> Path:
    """A minimal single-frame MONOCHROME2 secondary-capture file."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "DX"
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
    dataset.PixelRepresentation = 0
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    dataset.PixelData = pixels.astype("<u2").tobytes()
    pydicom.dcmwrite(path, dataset, enforce_file_format=True)
    return path


def test_dicom_with_an_unreadable_window_falls_back_to_min_max_with_a_warning(
    tmp_path: Path,
) -> None:
    film = (gradient() * 16).astype(np.uint16)
    path = write_dicom(tmp_path / "film.dcm", film, WindowCenter="2000", WindowWidth="4000")
    data = path.read_bytes().replace(b"2000", b"2O00", 1)  # the letter O: not a number
    path.write_bytes(data)
    radiograph = load_radiograph(path)
    assert radiograph.metadata["voi"] == "min-max"
    assert any(w.startswith("window: the file's window") for w in radiograph.warnings)


def test_dicom_element_with_an_impossible_length_is_corrupt_not_a_2_gb_read(
    tmp_path: Path,
) -> None:
    path = write_dicom(tmp_path / "film.dcm", (gradient() * 16).astype(np.uint16))
    data = bytearray(path.read_bytes())
    # (0008,0060) Modality, "CS" with a 2-byte length, becomes an "OB" whose 4-byte length
    # claims about 2 GB in a file of a few kilobytes.
    modality = data.find(b"\x08\x00\x60\x00CS")
    data[modality + 4 : modality + 8] = b"OB\x00\x00" + struct.pack("<I", 0x7FFF_FFF0)
    path.write_bytes(bytes(data))
    result = run_capped(
        f"""
        from edge_app.errors import ImageReadError
        from edge_app.radiograph import load_study
        try:
            load_study({str(path)!r})
        except ImageReadError as error:
            print(error)
        """,
        cap_mb=1024,
    )
    assert result.returncode == 0, result.stderr[-2000:]  # a MemoryError would end up here
    assert "holds no pixel data" in result.stdout or "malformed" in result.stdout


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow and pydicom warn about the damage
def test_hostile_mutations_of_real_files_raise_image_read_errors_only(tmp_path: Path) -> None:
    """A small, seeded fuzz: truncations and corrupted bytes of a DICOM, a NIfTI, a PNG, a
    JPEG and a TIFF. Each either loads or raises an ImageReadError, never a bare ValueError,
    TypeError or KeyError (which front ends show as a crash)."""
    pydicom_data = pytest.importorskip("pydicom.data")
    seeds = {".dcm": Path(pydicom_data.get_testdata_file("CT_small.dcm")).read_bytes()}
    volume = np.zeros((16, 12, 4), np.uint8)
    volume[:] = gradient(16, 12)[..., None]
    seeds[".nii"] = nifti_header((16, 12, 4)) + volume.tobytes(order="F")
    for suffix in (".png", ".jpg", ".tif"):
        seeds[suffix] = save_png(tmp_path / f"seed{suffix}").read_bytes()
    rng = np.random.default_rng(15)
    escaped = []
    for suffix, data in seeds.items():
        for trial in range(60):
            mutated = bytearray(data)
            if trial % 3 == 0:
                mutated = mutated[: int(rng.integers(1, len(data)))]
            else:
                for _ in range(int(rng.integers(1, 6))):
                    position = int(rng.integers(0, min(len(mutated), 1500)))
                    mutated[position] = int(rng.integers(0, 256))
            path = tmp_path / f"case_{trial}{suffix}"
            path.write_bytes(bytes(mutated))
            try:
                load_study(path)
            except ImageReadError:
                pass
            except Exception as error:  # noqa: BLE001 - what the test is looking for
                escaped.append(f"{path.name}: {type(error).__name__}: {error}")
    assert not escaped, "\n".join(escaped[:10])


def test_pydicom_log_records_of_a_handled_failure_stay_out_of_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pydicom_data = pytest.importorskip("pydicom.data")
    path = pydicom_data.get_testdata_file("JPEG-lossy.dcm")  # 12-bit JPEG: Pillow refuses it
    caplog.set_level(logging.WARNING)
    try:
        load_radiograph(path)
    except MissingDecoderError as error:
        assert "pip install" in str(error)
    else:
        pytest.skip("a 12-bit JPEG decoder is installed, so pydicom does not fail here")
    assert [r for r in caplog.records if r.name.startswith("pydicom")] == []
    pydicom_loggers = [name for name in logging.root.manager.loggerDict if "pydicom" in name]
    assert all(not logging.getLogger(name).filters for name in pydicom_loggers)  # removed again


def test_dicom_preamble_followed_by_64_mb_of_zeros_is_refused_quickly(tmp_path: Path) -> None:
    """pydicom parses zeros as empty elements, eight bytes at a time: a minute for 64 MB."""
    path = write_dicom(tmp_path / "padded.dcm", (gradient() * 16).astype(np.uint16))
    data = path.read_bytes()
    meta_end = 144 + struct.unpack("<I", data[140:144])[0]  # the group length of (0002,xxxx)
    with path.open("r+b") as stream:
        stream.truncate(meta_end)
        stream.truncate(64 * 1024 * 1024)  # sparse zeros after the file meta
    with pytest.raises(CorruptImageError, match="run of zero bytes"):
        finishes_within(10, lambda: load_study(path))
