"""Tests for edge_app.radiograph on tiny synthetic files and pydicom's bundled test files."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from edge_app.errors import (
    CorruptImageError,
    EmptyFileError,
    EmptyImageError,
    ImageNotFoundError,
    ImageReadError,
    ImageTooLargeError,
    InvalidVolumeError,
    MissingDecoderError,
    NotAnImageError,
    UnsupportedPhotometricError,
)
from edge_app.radiograph import (
    WINDOW_PRESETS,
    Radiograph,
    load_radiograph,
    load_study,
    load_volume,
    sniff_format,
)

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
UID_ROOT = "1.2.826.0.1.3680043.8.498.4242."


# ---------------------------------------------------------------------------------------------
# Helpers that write tiny files
# ---------------------------------------------------------------------------------------------


def save_image(path: Path, array: np.ndarray, **options: object) -> Path:
    Image.fromarray(array).save(path, **options)
    return path


def gradient_8bit(height: int = 16, width: int = 20) -> np.ndarray:
    return (np.arange(height * width) % 256).astype(np.uint8).reshape(height, width)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def write_png_header_only(path: Path, width: int, height: int) -> Path:
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def bundled_file(name: str) -> Path:
    data = pytest.importorskip("pydicom.data")
    return Path(data.get_testdata_file(name))


def write_ct_slice(
    path: Path,
    stored: np.ndarray,
    *,
    series: str = "1",
    instance: int | None = None,
    z: float | None = None,
) -> Path:
    """A minimal CT slice: int16 stored values, RescaleIntercept -1024 (so HU = stored - 1024)."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    instance_uid = f"{UID_ROOT}{series}.{abs(hash(path.name)) % 10**8}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = CT_IMAGE_STORAGE
    dataset.SOPInstanceUID = instance_uid
    dataset.SeriesInstanceUID = f"{UID_ROOT}{series}"
    dataset.Modality = "CT"
    dataset.Rows, dataset.Columns = stored.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.PixelRepresentation = 1
    dataset.RescaleSlope, dataset.RescaleIntercept = 1, -1024
    if instance is not None:
        dataset.InstanceNumber = instance
    if z is not None:
        dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        dataset.ImagePositionPatient = [0.0, 0.0, z]
    dataset.PixelData = stored.astype("<i2").tobytes()
    pydicom.dcmwrite(path, dataset, enforce_file_format=True)
    return path


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nibabel = pytest.importorskip("nibabel")
    nibabel.save(nibabel.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def decoder_available(name: str) -> bool:
    pydicom = pytest.importorskip("pydicom")
    try:
        pydicom.dcmread(bundled_file(name)).pixel_array  # noqa: B018 - decoding is the probe
    except RuntimeError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Module hygiene
# ---------------------------------------------------------------------------------------------


def test_import_does_not_load_optional_or_heavy_libraries() -> None:
    code = (
        "import sys, edge_app.radiograph; "
        "loaded = {'pydicom', 'nibabel', 'torch', 'tensorflow'} & set(sys.modules); "
        "print(','.join(sorted(loaded)))"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_radiograph_rejects_non_2d_pixels_and_reports_truncation() -> None:
    with pytest.raises(ValueError, match="2-D float32"):
        Radiograph(pixels=np.zeros((2, 2, 3), np.float32), source="x", kind="image")
    plain = Radiograph(pixels=np.zeros((2, 2), np.float32), source="x", kind="image")
    cut = Radiograph(np.zeros((2, 2), np.float32), "x", "image", warnings=("truncated: yes",))
    assert not plain.truncated
    assert cut.truncated


# ---------------------------------------------------------------------------------------------
# 2-D images
# ---------------------------------------------------------------------------------------------


def test_8bit_png_is_divided_by_255_without_stretching(tmp_path: Path) -> None:
    array = gradient_8bit()
    radiograph = load_radiograph(save_image(tmp_path / "scan.png", array))
    assert radiograph.pixels.dtype == np.float32
    assert radiograph.kind == "image"
    np.testing.assert_allclose(radiograph.pixels, array / 255.0, atol=1e-7)
    assert radiograph.metadata["bits"] == 8
    assert radiograph.warnings == ()


@pytest.mark.parametrize(("maximum", "bits"), [(4000, 12), (65535, 16), (1000, 10), (200, 8)])
def test_16bit_png_is_divided_by_the_bit_depth_actually_used(
    tmp_path: Path, maximum: int, bits: int
) -> None:
    array = np.linspace(0, maximum, 6 * 7).astype(np.uint16).reshape(6, 7)
    radiograph = load_radiograph(save_image(tmp_path / "scan.png", array))
    assert radiograph.metadata == {**radiograph.metadata, "original_mode": "I;16", "bits": bits}
    np.testing.assert_allclose(radiograph.pixels, array / (2**bits - 1), rtol=1e-6)


def test_constant_16bit_image_is_refused_as_empty_not_divided_by_zero(tmp_path: Path) -> None:
    array = np.full((5, 5), 1000, dtype=np.uint16)
    with pytest.raises(EmptyImageError, match=r"every pixel is 0\.978"):
        load_radiograph(save_image(tmp_path / "flat.png", array))


def test_rgba_drops_alpha_and_warns_when_pixels_are_transparent(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 255
    rgba[0, 0, 3] = 0  # transparent, but its stored colour (red) is used
    rgba[:, 3, :3] = 0  # a black column, so that the film is not blank
    radiograph = load_radiograph(save_image(tmp_path / "scan.png", rgba))
    np.testing.assert_allclose(radiograph.pixels[:, :3], 0.299, atol=1e-6)
    np.testing.assert_allclose(radiograph.pixels[:, 3], 0.0, atol=1e-6)
    assert any(warning.startswith("alpha") for warning in radiograph.warnings)


def test_opaque_rgb_becomes_bt601_luminance_without_warning(tmp_path: Path) -> None:
    rgb = np.zeros((3, 3, 3), dtype=np.uint8)
    rgb[:, :2, 1] = 255  # green; the last column stays black
    radiograph = load_radiograph(save_image(tmp_path / "scan.png", rgb))
    np.testing.assert_allclose(radiograph.pixels[:, :2], 0.587, atol=1e-6)
    np.testing.assert_allclose(radiograph.pixels[:, 2], 0.0, atol=1e-6)
    assert radiograph.warnings == ()


def test_cmyk_jpeg_is_converted(tmp_path: Path) -> None:
    image = Image.new("CMYK", (16, 16), (0, 0, 0, 0))  # white
    image.paste((0, 0, 0, 255), (0, 0, 8, 16))  # left half black
    image.save(tmp_path / "scan.jpg", quality=95)
    radiograph = load_radiograph(tmp_path / "scan.jpg")
    assert radiograph.metadata["original_mode"] == "CMYK"
    assert radiograph.pixels[:, :6].max() < 0.05
    assert radiograph.pixels[:, 10:].min() > 0.95


def test_palette_image_uses_the_palette_colours(tmp_path: Path) -> None:
    image = Image.new("P", (4, 2), 1)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 1 is blue
    image.paste(0, (0, 0, 2, 2))
    image.save(tmp_path / "scan.png")
    radiograph = load_radiograph(tmp_path / "scan.png")
    np.testing.assert_allclose(radiograph.pixels[:, :2], 0.0, atol=1e-7)
    np.testing.assert_allclose(radiograph.pixels[:, 2:], 0.114, atol=1e-6)


def test_bilevel_and_grey_alpha_modes(tmp_path: Path) -> None:
    bilevel = Image.new("1", (4, 4), 0)
    bilevel.paste(1, (0, 0, 2, 4))
    bilevel.save(tmp_path / "bilevel.png")
    np.testing.assert_array_equal(
        load_radiograph(tmp_path / "bilevel.png").pixels[0], [1.0, 1.0, 0.0, 0.0]
    )
    grey_alpha = Image.new("LA", (3, 3), (51, 255))
    grey_alpha.putpixel((2, 2), (255, 255))
    grey_alpha.save(tmp_path / "grey_alpha.png")
    pixels = load_radiograph(tmp_path / "grey_alpha.png").pixels
    np.testing.assert_allclose(pixels.ravel()[:8], 0.2, atol=1e-6)
    assert pixels[2, 2] == 1.0


def test_float_tiff_in_unit_range_is_kept_and_other_ranges_are_scaled(tmp_path: Path) -> None:
    unit = np.linspace(0.0, 1.0, 12, dtype=np.float32).reshape(3, 4)
    kept = load_radiograph(save_image(tmp_path / "unit.tif", unit))
    np.testing.assert_array_equal(kept.pixels, unit)
    wide = save_image(tmp_path / "wide.tif", unit * 10 - 5)
    scaled = load_radiograph(wide)
    np.testing.assert_allclose(scaled.pixels, unit, atol=1e-6)
    assert any(warning.startswith("float") for warning in scaled.warnings)


def test_float_image_with_nan_raises(tmp_path: Path) -> None:
    values = np.zeros((3, 3), dtype=np.float32)
    values[1, 1] = np.nan
    with pytest.raises(InvalidVolumeError, match="NaN"):
        load_radiograph(save_image(tmp_path / "nan.tif", values))


def test_32bit_integer_image_uses_its_bit_length(tmp_path: Path) -> None:
    values = np.array([[0, 70000], [131071, 5]], dtype=np.int32)
    radiograph = load_radiograph(save_image(tmp_path / "wide.tif", values))
    assert radiograph.metadata["bits"] == 17
    np.testing.assert_allclose(radiograph.pixels, values / 131071, rtol=1e-6)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    array = np.zeros((20, 40), dtype=np.uint8)
    array[:8, :8] = 255  # stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90° clockwise
    Image.fromarray(array).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    radiograph = load_radiograph(tmp_path / "phone.jpg")
    assert radiograph.pixels.shape == (40, 20)
    assert radiograph.metadata["exif_orientation"] == 6
    assert radiograph.pixels[:6, -6:].mean() > 0.9  # now top-right
    assert radiograph.pixels[-6:, :6].mean() < 0.1


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_image_is_decoded_tolerantly_with_a_warning(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    whole = save_image(tmp_path / f"whole{suffix}", rng.integers(0, 256, (64, 80), np.uint8))
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 3 // 4])  # most of the image is left
    radiograph = load_radiograph(cut)
    assert radiograph.truncated
    assert radiograph.warnings[0].startswith("truncated")
    assert radiograph.pixels.shape == (64, 80)
    assert np.isfinite(radiograph.pixels).all()
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # Pillow's global was put back


def test_truncation_is_detected_even_if_the_process_enabled_tolerant_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = save_image(tmp_path / "whole.jpg", gradient_8bit(64, 64)).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 3 // 4])
    assert load_radiograph(tmp_path / "cut.jpg").truncated
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_jpeg_too_damaged_for_tolerant_decoding_raises_corrupt(tmp_path: Path) -> None:
    data = save_image(tmp_path / "whole.jpg", gradient_8bit()).read_bytes()
    (tmp_path / "stub.jpg").write_bytes(data[:40])
    with pytest.raises(CorruptImageError, match="damaged"):
        load_radiograph(tmp_path / "stub.jpg")


def test_zero_byte_file_raises_empty(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(EmptyFileError, match="0 bytes"):
        load_study(tmp_path / "empty.png")


def test_text_named_jpg_raises_not_an_image_naming_formats(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("patient notes, not a picture\n")
    with pytest.raises(NotAnImageError, match="DICOM") as caught:
        load_radiograph(tmp_path / "notes.jpg")
    assert "NIfTI" in str(caught.value) and "PNG" in str(caught.value)


def test_missing_path_raises_image_not_found(tmp_path: Path) -> None:
    with pytest.raises(ImageNotFoundError, match="does not exist") as caught:
        sniff_format(tmp_path / "nowhere.png")
    assert isinstance(caught.value, FileNotFoundError)
    assert isinstance(caught.value, ImageReadError)


def test_image_over_max_pixels_raises_before_decoding(tmp_path: Path) -> None:
    path = save_image(tmp_path / "scan.png", gradient_8bit(64, 80))
    with pytest.raises(ImageTooLargeError, match="max_pixels=5120"):
        load_radiograph(path, max_pixels=1000)
    assert load_radiograph(path, max_pixels=5120).pixels.shape == (64, 80)


def test_header_claiming_a_huge_image_raises_too_large(tmp_path: Path) -> None:
    # 10 billion pixels: Pillow's own bomb guard refuses it while reading the header.
    bomb = write_png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        load_study(bomb)


def test_header_above_max_pixels_but_below_pillows_limit_raises_too_large(tmp_path: Path) -> None:
    # No pixel data at all: only the header-based guard can answer before decoding.
    big = write_png_header_only(tmp_path / "big.png", 9_000, 8_000)
    with pytest.raises(ImageTooLargeError, match="72,000,000"):
        load_radiograph(big)


def test_load_volume_refuses_a_2d_image(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="load_radiograph"):
        load_volume(save_image(tmp_path / "scan.png", gradient_8bit()))


# ---------------------------------------------------------------------------------------------
# Format sniffing
# ---------------------------------------------------------------------------------------------


def test_sniff_format_reads_content_not_extensions(tmp_path: Path) -> None:
    dicom_as_png = tmp_path / "scan.png"
    shutil.copy(bundled_file("CT_small.dcm"), dicom_as_png)
    jpeg_as_dcm = save_image(tmp_path / "scan.dcm", gradient_8bit(), format="JPEG")
    volume = write_nifti(tmp_path / "volume.nii.gz", np.zeros((4, 4, 2), np.float32))
    assert sniff_format(dicom_as_png) == "dicom"
    assert sniff_format(jpeg_as_dcm) == "image"
    assert sniff_format(volume) == "nifti"
    assert sniff_format(tmp_path) == "directory"
    assert load_radiograph(dicom_as_png).kind == "dicom"
    assert load_radiograph(jpeg_as_dcm).kind == "image"


def test_dicom_without_preamble_is_read_only_with_dcm_extension(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    dataset = pydicom.dcmread(bundled_file("CT_small.dcm"))
    dataset.preamble = None
    del dataset.file_meta
    headerless = tmp_path / "slice.dcm"
    dataset.save_as(headerless, enforce_file_format=False, implicit_vr=False, little_endian=True)
    reference = load_radiograph(bundled_file("CT_small.dcm"))
    np.testing.assert_array_equal(load_radiograph(headerless).pixels, reference.pixels)
    renamed = tmp_path / "slice.bin"
    shutil.copy(headerless, renamed)
    with pytest.raises(NotAnImageError):
        sniff_format(renamed)


# ---------------------------------------------------------------------------------------------
# DICOM files (pydicom's bundled test data)
# ---------------------------------------------------------------------------------------------


def test_ct_without_window_is_min_max_scaled() -> None:
    radiograph = load_radiograph(bundled_file("CT_small.dcm"))
    assert radiograph.kind == "dicom"
    assert radiograph.pixels.shape == (128, 128)
    assert radiograph.pixels.min() == 0.0 and radiograph.pixels.max() == 1.0
    assert radiograph.metadata["modality"] == "CT"
    assert radiograph.metadata["voi"] == "min-max"


def test_mr_uses_the_files_first_window() -> None:
    pydicom = pytest.importorskip("pydicom")
    path = bundled_file("MR_small.dcm")
    stored = pydicom.dcmread(path).pixel_array.astype(np.float64)
    center, width = 600 - 0.5, 1600 - 1  # DICOM's LINEAR window (PS3.3 C.11.2.1.2.1)
    expected = np.clip((stored - center) / width + 0.5, 0.0, 1.0)
    radiograph = load_radiograph(path)
    assert radiograph.metadata["voi"] == "window 600/1600"
    np.testing.assert_allclose(radiograph.pixels, expected, atol=1e-4)


def test_monochrome1_is_inverted_with_a_warning(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    dataset = pydicom.dcmread(bundled_file("CT_small.dcm"))
    dataset.PhotometricInterpretation = "MONOCHROME1"
    dataset.save_as(tmp_path / "inverted.dcm")
    normal = load_radiograph(bundled_file("CT_small.dcm"))
    inverted = load_radiograph(tmp_path / "inverted.dcm")
    np.testing.assert_allclose(inverted.pixels, 1.0 - normal.pixels, atol=1e-6)
    assert "MONOCHROME1 inverted" in inverted.warnings[0]


@pytest.mark.parametrize("name", ["examples_rgb_color.dcm", "SC_ybr_full_422_uncompressed.dcm"])
def test_colour_dicom_becomes_luminance_with_a_warning(name: str) -> None:
    pydicom = pytest.importorskip("pydicom")
    rgb = pydicom.dcmread(bundled_file(name)).pixel_array.astype(np.float64)
    expected = (rgb @ [0.299, 0.587, 0.114]) / 255.0
    radiograph = load_radiograph(bundled_file(name))
    np.testing.assert_allclose(radiograph.pixels, expected, atol=1e-5)
    assert radiograph.warnings[0].startswith("colour")


def test_palette_colour_is_rejected_by_name() -> None:
    with pytest.raises(UnsupportedPhotometricError, match="PALETTE COLOR") as caught:
        load_radiograph(bundled_file("examples_palette.dcm"))
    assert "MONOCHROME2" in str(caught.value)


def test_structured_report_holds_no_image() -> None:
    with pytest.raises(ImageReadError, match="holds no pixel data"):
        load_study(bundled_file("test-SR.dcm"))


def test_truncated_dicom_pixel_data_raises_corrupt() -> None:
    with pytest.raises(CorruptImageError, match="truncated"):
        load_radiograph(bundled_file("MR_truncated.dcm"))


def test_jpeg_ls_without_decoder_names_syntax_and_package() -> None:
    if decoder_available("MR_small_jpeg_ls_lossless.dcm"):
        pytest.skip("a JPEG-LS decoder is installed, so the missing-decoder path cannot be hit")
    with pytest.raises(MissingDecoderError, match="JPEG-LS") as caught:
        load_radiograph(bundled_file("MR_small_jpeg_ls_lossless.dcm"))
    assert "pip install pyjpegls" in str(caught.value)


def test_jpeg2000_without_decoder_names_syntax_and_package() -> None:
    if decoder_available("JPEG2000.dcm"):
        pytest.skip("a JPEG 2000 decoder is installed (Pillow has OpenJPEG support here)")
    with pytest.raises(MissingDecoderError, match="JPEG 2000") as caught:
        load_radiograph(bundled_file("JPEG2000.dcm"))
    assert "pylibjpeg-openjpeg" in str(caught.value)


def test_pydicoms_missing_plugin_error_becomes_missing_decoder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dataset_module = pytest.importorskip("pydicom.dataset")

    def no_plugins(self: object) -> None:
        raise RuntimeError(
            "Unable to decompress 'JPEG 2000 Image Compression' pixel data because all plugins "
            "are missing dependencies:\n\tpylibjpeg - requires pylibjpeg-openjpeg>=2.0"
        )

    monkeypatch.setattr(dataset_module.Dataset, "pixel_array", property(no_plugins))
    with pytest.raises(MissingDecoderError, match="JPEG 2000") as caught:
        load_radiograph(bundled_file("JPEG2000.dcm"))
    assert "pip install pylibjpeg pylibjpeg-openjpeg" in str(caught.value)
    assert isinstance(caught.value, ImportError)


def test_multi_frame_dicom_is_a_volume() -> None:
    path = bundled_file("rtdose.dcm")  # 15 frames of 10×10
    with pytest.raises(ImageReadError, match="load_volume"):
        load_radiograph(path)
    slices = load_study(path)
    assert [radiograph.metadata["slice_index"] for radiograph in slices] == list(range(15))
    assert {radiograph.metadata["slice_count"] for radiograph in slices} == {15}
    stack = np.stack([radiograph.pixels for radiograph in slices])
    assert stack.min() == 0.0 and stack.max() == 1.0
    assert slices[0].warnings[0].startswith("exploratory")


def test_enhanced_multi_frame_rescale_from_functional_groups(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset

    frames = np.stack([np.full((4, 4), 1024 + 400 * index, np.int16) for index in range(3)])
    frames[:, 3, 3] = 1024 - 1000  # an air corner, so that no frame is blank
    path = write_ct_slice(tmp_path / "enhanced.dcm", frames[0])
    dataset = pydicom.dcmread(path)
    del dataset.RescaleSlope, dataset.RescaleIntercept
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 1, -1024, "HU"
    shared = Dataset()
    shared.PixelValueTransformationSequence = [transform]
    dataset.SharedFunctionalGroupsSequence = [shared]
    dataset.NumberOfFrames = 3
    dataset.PixelData = frames.astype("<i2").tobytes()
    dataset.save_as(path)
    slices = load_volume(path)  # HU 0, 400, 800 through the bone window (-500 .. 1300)
    values = [float(radiograph.pixels[0, 0]) for radiograph in slices]
    np.testing.assert_allclose(values, [500 / 1800, 900 / 1800, 1300 / 1800], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# DICOM series folders
# ---------------------------------------------------------------------------------------------


def write_shuffled_series(folder: Path, *, with_positions: bool = True) -> None:
    """Four slices whose HU equal 100 × (their position along z); names and numbers disagree."""
    folder.mkdir()
    # (file name, instance number, slice position index)
    layout = [("a.dcm", 1, 2), ("b.dcm", 4, 0), ("c.dcm", 2, 3), ("d.dcm", 3, 1)]
    for name, instance, position in layout:
        stored = np.full((6, 5), 1024 + 100 * position, dtype=np.int16)
        stored[5, 4] = 1024 + 1500  # a bright corner, so that no slice is blank
        z = 2.5 * position if with_positions else None
        write_ct_slice(
            folder / name, stored, instance=instance if with_positions else 5 - position, z=z
        )


def test_series_is_sorted_by_position_and_bone_windowed(tmp_path: Path) -> None:
    write_shuffled_series(tmp_path / "series")
    slices = load_volume(tmp_path / "series")
    assert [Path(radiograph.source).name for radiograph in slices] == [
        "b.dcm",
        "d.dcm",
        "a.dcm",
        "c.dcm",
    ]
    bone = WINDOW_PRESETS["bone"]
    low = bone.center - bone.width / 2
    expected = [(100 * index - low) / bone.width for index in range(4)]
    np.testing.assert_allclose(
        [radiograph.pixels[0, 0] for radiograph in slices], expected, rtol=1e-6
    )
    assert slices[0].kind == "dicom-series"
    assert not any(warning.startswith("order") for warning in slices[0].warnings)
    assert slices[2].metadata["slice_index"] == 2 and slices[2].metadata["slice_count"] == 4
    assert load_study(tmp_path / "series")[3].source == slices[3].source


def test_series_without_positions_is_sorted_by_instance_number(tmp_path: Path) -> None:
    write_shuffled_series(tmp_path / "series", with_positions=False)
    slices = load_volume(tmp_path / "series", window="auto")
    # instance = 5 - position, so sorting by InstanceNumber reverses the positions
    assert [Path(radiograph.source).name for radiograph in slices] == [
        "c.dcm",
        "a.dcm",
        "d.dcm",
        "b.dcm",
    ]
    assert any(warning.startswith("order") for warning in slices[0].warnings)


def test_dicom_folder_without_positions_is_read_as_separate_radiographs(tmp_path: Path) -> None:
    write_shuffled_series(tmp_path / "views", with_positions=False)
    radiographs = load_study(tmp_path / "views")
    assert [Path(radiograph.source).name for radiograph in radiographs] == [
        "a.dcm",
        "b.dcm",
        "c.dcm",
        "d.dcm",
    ]
    assert {radiograph.kind for radiograph in radiographs} == {"dicom"}


def test_folder_with_two_series_lists_them(tmp_path: Path) -> None:
    tmp_path.joinpath("mixed").mkdir()
    stored = np.zeros((4, 4), dtype=np.int16)
    write_ct_slice(tmp_path / "mixed" / "one.dcm", stored, series="1", z=0.0)
    write_ct_slice(tmp_path / "mixed" / "two.dcm", stored, series="2", z=0.0)
    with pytest.raises(ImageReadError, match="2 DICOM series") as caught:
        load_study(tmp_path / "mixed")
    assert f"{UID_ROOT}1" in str(caught.value) and f"{UID_ROOT}2" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------------------------


def ct_volume() -> np.ndarray:
    """(x, y, z) = (6, 5, 4) of air, a 400 HU line at y = 2, and a marker voxel per slice."""
    volume = np.full((6, 5, 4), -1000.0, dtype=np.float32)
    volume[:, 2, :] = 400.0
    volume[5, 4, :] = 1300.0  # patient's right-most, anterior-most voxel
    return volume


def test_nifti_slices_are_axial_radiological_and_bone_windowed(tmp_path: Path) -> None:
    slices = load_volume(write_nifti(tmp_path / "ct.nii.gz", ct_volume()))
    assert len(slices) == 4
    first = slices[0]
    assert first.kind == "nifti" and first.pixels.shape == (5, 6)
    assert first.metadata["slice_count"] == 4 and first.metadata["hounsfield"]
    assert first.pixels[0, 0] == 1.0  # anterior at the top, patient's right on the left
    np.testing.assert_allclose(first.pixels[2, 1:], 0.5, atol=1e-6)  # 400 HU, bone preset
    assert first.pixels[4, 5] == 0.0


def test_nifti_slices_run_inferior_to_superior(tmp_path: Path) -> None:
    volume = np.zeros((3, 3, 5), dtype=np.float32)
    volume += np.arange(5, dtype=np.float32)  # value = z index
    volume += 0.1 * np.arange(3, dtype=np.float32)[:, None, None]  # no slice is blank
    flipped = np.diag([1.0, 1.0, -1.0, 1.0])  # stored z runs superior to inferior
    slices = load_volume(write_nifti(tmp_path / "mr.nii", volume, flipped), window=(2.5, 5.0))
    means = [float(radiograph.pixels.mean()) for radiograph in slices]
    assert means == sorted(means, reverse=True)  # canonical order undoes the stored flip


def test_nifti_mr_uses_percentiles(tmp_path: Path) -> None:
    volume = np.random.default_rng(1).uniform(0, 900, (8, 8, 3)).astype(np.float32)
    slices = load_study(write_nifti(tmp_path / "mr.nii", volume))
    stack = np.stack([radiograph.pixels for radiograph in slices])
    assert slices[0].metadata["window_source"].startswith("percentile")
    assert stack.min() == 0.0 and stack.max() == 1.0
    assert 0.01 < (stack == 0.0).mean() < 0.03  # 1st percentile clipped to black


def test_nifti_with_nan_raises(tmp_path: Path) -> None:
    volume = ct_volume()
    volume[0, 0, 0] = np.nan
    with pytest.raises(InvalidVolumeError, match="NaN"):
        load_volume(write_nifti(tmp_path / "bad.nii", volume))


def test_4d_nifti_uses_the_first_volume_with_a_warning(tmp_path: Path) -> None:
    series = np.stack([ct_volume(), ct_volume() + 500], axis=-1)
    slices = load_volume(write_nifti(tmp_path / "fmri.nii", series))
    assert len(slices) == 4
    assert slices[0].warnings[0].startswith("4-D")
    np.testing.assert_allclose(slices[0].pixels[2, 1:], 0.5, atol=1e-6)


def test_2d_nifti_is_one_slice(tmp_path: Path) -> None:
    plane = np.arange(12, dtype=np.float32).reshape(3, 4)
    slices = load_volume(write_nifti(tmp_path / "plane.nii", plane), window="auto")
    assert len(slices) == 1 and slices[0].pixels.shape == (4, 3)


def test_nifti_over_max_pixels_raises_before_reading_voxels(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "ct.nii", ct_volume())
    with pytest.raises(ImageTooLargeError, match="max_pixels=30"):
        load_volume(path, max_pixels=20)
    thin = write_nifti(tmp_path / "thin.nii", np.zeros((2, 2, 40), np.float32))
    with pytest.raises(ImageTooLargeError, match="volume limit"):
        load_volume(thin, max_pixels=5)  # 4-pixel slices fit, 160 voxels exceed 16 × 5


def test_volume_window_choices(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "ct.nii", ct_volume())
    explicit = load_volume(path, window=(400.0, 200.0))[0]
    assert explicit.metadata["window"] == (400.0, 200.0)
    np.testing.assert_allclose(explicit.pixels[2, 1:], 0.5, atol=1e-6)
    with pytest.raises(ValueError, match="soft_tissue"):
        load_volume(path, window="bony")
    with pytest.raises(ValueError, match="positive width"):
        load_volume(path, window=(0.0, 0.0))


def test_load_radiograph_points_volumes_and_folders_elsewhere(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="load_volume"):
        load_radiograph(write_nifti(tmp_path / "ct.nii", ct_volume()))
    with pytest.raises(ImageReadError, match="load_study"):
        load_radiograph(tmp_path)


# ---------------------------------------------------------------------------------------------
# Folders of images
# ---------------------------------------------------------------------------------------------


def test_image_folder_is_sorted_by_name_and_skips_nothing_silently(tmp_path: Path) -> None:
    for name, value in [("b.png", 20), ("a.png", 10), ("c.png", 30)]:
        film = np.full((3, 3), value, np.uint8)
        film[2, 2] = 255  # not blank
        save_image(tmp_path / name, film)
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x01")
    (tmp_path / "older").mkdir()
    radiographs = load_study(tmp_path)
    assert [round(float(r.pixels[0, 0]) * 255) for r in radiographs] == [10, 20, 30]
    assert all("older" in r.warnings[-1] for r in radiographs)
    (tmp_path / "readme.txt").write_text("not an image")
    with pytest.raises(NotAnImageError, match="readme.txt"):
        load_study(tmp_path)


def test_empty_and_mixed_folders_raise(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="holds no files"):
        load_study(tmp_path / "empty")
    (tmp_path / "mixed").mkdir()
    save_image(tmp_path / "mixed" / "view.png", gradient_8bit())
    shutil.copy(bundled_file("CT_small.dcm"), tmp_path / "mixed" / "slice.dcm")
    with pytest.raises(ImageReadError, match="mixes"):
        load_study(tmp_path / "mixed")
    with pytest.raises(ImageReadError, match="not DICOM"):
        load_volume(tmp_path / "mixed")


def test_jpeg_cut_short_and_zero_padded_is_flagged_truncated(tmp_path):
    """libjpeg decodes zero padding without complaint; the missing end marker still tells."""
    rng = np.random.default_rng(5)
    source = tmp_path / "whole.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(source, quality=90)
    data = source.read_bytes()
    assert data.endswith(b"\xff\xd9")
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(data[: len(data) * 3 // 4] + b"\x00" * (len(data) // 4))
    radiograph = load_radiograph(padded)
    assert radiograph.truncated
    assert radiograph.pixels.shape == (64, 64)
    assert not load_radiograph(source).truncated
