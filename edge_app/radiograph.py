"""Read radiographs (and, for exploration, CT/MRI slices) into 2-D float arrays in [0, 1].

Every input becomes a :class:`Radiograph`: one channel, float32, 0 = black, bone bright as on a
normal X-ray display. :func:`load_study` is what the app calls; it accepts

* a 2-D image: JPEG, PNG or anything else Pillow opens (:func:`load_radiograph`);
* a DICOM file, recognised by the ``DICM`` magic at byte 128 whatever its extension (a ``.dcm``
  file without that preamble is accepted when pydicom finds pixel data in it);
* a NIfTI volume (``.nii``/``.nii.gz``), a multi-frame DICOM, or a folder holding one DICOM
  series (:func:`load_volume`, one :class:`Radiograph` per slice);
* a folder of 2-D images (each image, sorted by file name).

CT and MRI are read slice by slice. The model is 2-D and was trained on radiographs; a slice is
not a radiograph, so results on slices are exploratory, and every slice carries a warning that
says so.

Decisions worth knowing:

* **Bit depth.** 8-bit images are divided by 255 (no contrast stretching). Integer images with
  more bits (``I;16``, ``I``) are divided by ``2**bits - 1`` for the smallest ``bits`` in
  8, 10, 12, 14, 16 (or more, for 32-bit data) that holds the image's maximum: a 16-bit PNG whose
  brightest pixel is 4000 is taken as 12-bit and divided by 4095. PNG files rarely record their
  real bit depth, and detectors store 10-16 bits in 16-bit containers, so the stored maximum is
  the best evidence available; the bits used are in ``metadata["bits"]``. Integer images with
  negative values and float images outside [0, 1] are min-max scaled, with a warning.
* **Colour.** Colour becomes luminance with the ITU-R BT.601 weights (0.299 R + 0.587 G +
  0.114 B, as Pillow's ``convert("L")``) computed in float, without rounding to 8 bits.
* **Alpha** is dropped, not composited: the stored colour of each pixel is used as if opaque
  (radiographs carry no meaningful transparency, and compositing would invent a background).
  When some pixels are transparent a warning says so.
* **EXIF orientation** is applied, so the array is the image as a viewer shows it.
* **Truncated files** are decoded strictly first; if Pillow reports truncation, they are decoded
  again tolerantly and the radiograph carries a warning starting with ``"truncated"``. A JPEG
  with no end-of-image marker after its last scan (cut short and padded, which libjpeg decodes
  without complaint) gets the same warning.
* **Size guard.** ``width * height`` is checked against ``max_pixels`` before any pixel is
  decoded (:class:`ImageTooLargeError`). For volumes it applies to each slice, and the whole
  volume may hold at most ``VOLUME_PIXEL_FACTOR * max_pixels`` voxels. Pillow's own
  decompression-bomb error becomes :class:`ImageTooLargeError` too. Pillow's warning (above
  ``PIL.Image.MAX_IMAGE_PIXELS``, about 89 million) is not caught, because that would need a
  process-wide warning filter; with the default ``max_pixels`` every image that triggers it is
  rejected by our own guard anyway.
* **DICOM** applies the Modality LUT, then the file's VOI LUT or its first window (else the
  image's min-max), then scales to [0, 1]; MONOCHROME1 is inverted with a warning.
* **Volumes** are windowed on the whole volume: ``window="bone"`` uses the bone preset for CT
  (DICOM Modality CT, or a NIfTI whose values look like Hounsfield units: minimum between
  -3100 and -500) and the 1st-99th percentile otherwise (MRI has no absolute scale).
* **4-D NIfTI**: the first volume is used, with a warning; 5-D and more raise.
* **Several DICOM series in one folder** raise an error listing them: picking one would hide
  the choice from the person reading the result.
* **A folder of DICOM files without ImagePositionPatient** (projection radiographs such as
  CR/DX, each usually its own series) is read by :func:`load_study` as separate radiographs,
  sorted by file name, rather than as a volume.
* **Folders.** Hidden files (names starting with ``.``) are ignored; files named ``DICOMDIR``
  and subfolders are skipped with a warning on every radiograph; any other file that cannot be
  read raises.
"""

from __future__ import annotations

import gzip
import logging
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from edge_app._optional import require
from edge_app.errors import (
    CorruptImageError,
    EmptyFileError,
    ImageNotFoundError,
    ImageReadError,
    ImageTooLargeError,
    InvalidVolumeError,
    MissingDecoderError,
    NotAnImageError,
    UnsupportedPhotometricError,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "VOLUME_PIXEL_FACTOR",
    "WINDOW_PRESETS",
    "Radiograph",
    "Window",
    "load_radiograph",
    "load_study",
    "load_volume",
    "sniff_format",
]

LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 64_000_000
# A volume may hold this many times max_pixels voxels (64 million × 16 ≈ 1 billion by default).
VOLUME_PIXEL_FACTOR = 16


class Window(NamedTuple):
    """A display window: intensities from ``center - width/2`` (black) to ``center + width/2``."""

    center: float
    width: float


# Hounsfield units, for CT.
WINDOW_PRESETS: dict[str, Window] = {
    "bone": Window(center=400.0, width=1800.0),
    "soft_tissue": Window(center=40.0, width=400.0),
    "lung": Window(center=-600.0, width=1500.0),
    "brain": Window(center=40.0, width=80.0),
}
_AUTO_WINDOW = "auto"

SUPPORTED_FORMATS = (
    "2-D images Pillow can open (PNG, JPEG, TIFF, BMP, GIF, WebP, ...), DICOM files, "
    "NIfTI volumes (.nii, .nii.gz) and folders of DICOM series or images"
)
SUPPORTED_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422")
_COLOUR_PHOTOMETRIC = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422"})
_LUMINANCE_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)
_INTEGER_BIT_DEPTHS = (8, 10, 12, 14, 16)
_IMAGE_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",
    b"MM\x00*",
)
_TRUNCATION_MESSAGES = ("truncated", "broken data stream")
_HEADER_BYTES = 540  # the NIfTI-2 header; NIfTI-1 needs 348, the DICOM magic 132

_JPEG_DECODERS = "pylibjpeg pylibjpeg-libjpeg"
_JPEG_2000_DECODERS = "pylibjpeg pylibjpeg-openjpeg"
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": _JPEG_DECODERS,  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": _JPEG_DECODERS,  # JPEG Extended (12-bit)
    "1.2.840.10008.1.2.4.57": _JPEG_DECODERS,  # JPEG Lossless
    "1.2.840.10008.1.2.4.70": _JPEG_DECODERS,  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "pyjpegls",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "pyjpegls",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90": _JPEG_2000_DECODERS,  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": _JPEG_2000_DECODERS,  # JPEG 2000
    "1.2.840.10008.1.2.4.201": _JPEG_2000_DECODERS,  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": _JPEG_2000_DECODERS,  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": _JPEG_2000_DECODERS,  # HTJ2K
}
_FALLBACK_DECODER = "python-gdcm"

_EXPLORATORY_WARNING = (
    "exploratory: this is a slice of a volume (CT/MRI) or a frame of a multi-frame file, not a "
    "radiograph; the model was trained on radiographs, so its output here is exploratory"
)
_MONOCHROME1_WARNING = "MONOCHROME1 inverted so that bone is bright"


@dataclass(frozen=True, eq=False)
class Radiograph:
    """One 2-D image ready for :func:`edge_app.preprocess.preprocess`.

    ``eq=False`` keeps identity comparison: comparing numpy arrays with ``==`` is element-wise.
    """

    pixels: np.ndarray
    source: str
    kind: str
    warnings: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pixels.ndim != 2 or self.pixels.dtype != np.float32:
            raise ValueError(
                f"Radiograph.pixels must be a 2-D float32 array, got {self.pixels.ndim}-D "
                f"{self.pixels.dtype}"
            )

    @property
    def truncated(self) -> bool:
        """True when the file was truncated and decoded tolerantly."""
        return any(warning.startswith("truncated") for warning in self.warnings)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def sniff_format(path: str | Path) -> str:
    """Return ``"dicom"``, ``"nifti"``, ``"image"`` or ``"directory"`` from the file's content.

    Raises :class:`ImageNotFoundError` for a missing path, :class:`EmptyFileError` for a
    zero-byte file and :class:`NotAnImageError` for anything else.
    """
    path = Path(path)
    if path.is_dir():
        return "directory"
    header = _read_header(path)
    if header[128:132] == b"DICM":
        return "dicom"
    if _is_nifti_header(_uncompressed_header(path, header)):
        return "nifti"
    if _pillow_identifies(path) or header.startswith(_IMAGE_SIGNATURES):
        return "image"
    if path.suffix.lower() == ".dcm" and _reads_as_headerless_dicom(path):
        return "dicom"
    raise NotAnImageError(
        f"{path} is not a file FractureEdge can read (it starts with {header[:8]!r}). "
        f"Supported: {SUPPORTED_FORMATS}."
    )


def load_radiograph(
    path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None
) -> Radiograph:
    """Load one 2-D image: anything Pillow opens, or a single-frame DICOM file.

    ``draft_size`` lets a JPEG decode at a reduced scale (1/2, 1/4 or 1/8, never below
    ``draft_size`` on either side) straight from its DCT coefficients: much faster when only a
    thumbnail is needed, e.g. for the data audit. ``metadata["original_size"]`` keeps the
    stored ``(width, height)`` either way. Other formats ignore it.
    """
    path = Path(path)
    _check_max_pixels(max_pixels)
    file_format = sniff_format(path)
    if file_format == "image":
        return _load_image(path, max_pixels, draft_size)
    if file_format == "dicom":
        return _load_dicom_image(path, max_pixels)
    if file_format == "directory":
        raise ImageReadError(f"{path} is a folder; open it with load_study() or load_volume().")
    raise ImageReadError(
        f"{path} is a NIfTI volume, not a 2-D image; open it with load_volume() or load_study()."
    )


def load_volume(
    path: str | Path,
    *,
    window: str | tuple[float, float] = "bone",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[Radiograph]:
    """Load a NIfTI volume, a multi-frame DICOM or a folder holding one DICOM series.

    Returns one :class:`Radiograph` per slice with ``metadata["slice_index"]`` and
    ``metadata["slice_count"]``. ``window`` is a name from :data:`WINDOW_PRESETS`
    (Hounsfield units; ``"bone"`` falls back to percentiles for non-CT data), ``"auto"``
    (1st-99th percentile of the whole volume) or an explicit ``(center, width)``.
    """
    path = Path(path)
    _check_max_pixels(max_pixels)
    window = _validate_window(window)
    file_format = sniff_format(path)
    if file_format == "nifti":
        return _load_nifti(path, window, max_pixels)
    if file_format == "dicom":
        return _load_dicom_volume(path, window, max_pixels)
    if file_format == "directory":
        files, folder_warnings = _folder_files(path)
        _require_only_dicom(path, files)
        radiographs = _load_dicom_series(_read_series_headers(files), path, window, max_pixels)
        return _with_warnings(radiographs, folder_warnings)
    raise ImageReadError(f"{path} is a 2-D image, not a volume; open it with load_radiograph().")


def load_study(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Radiograph]:
    """Load whatever the user picked: an image, a DICOM or NIfTI file, or a folder.

    A folder of DICOM files is a series (read as a volume) unless none of them has
    ImagePositionPatient, in which case each file is a radiograph. A folder of images yields
    each image, sorted by file name. Files that cannot be read raise; nothing is skipped
    silently.
    """
    path = Path(path)
    _check_max_pixels(max_pixels)
    file_format = sniff_format(path)
    if file_format == "directory":
        return _load_folder(path, max_pixels)
    if file_format == "nifti":
        return load_volume(path, max_pixels=max_pixels)
    if file_format == "dicom" and _dicom_frame_count(_read_dicom(path, header_only=True)) > 1:
        return load_volume(path, max_pixels=max_pixels)
    return [load_radiograph(path, max_pixels=max_pixels)]


# ---------------------------------------------------------------------------------------------
# Sniffing
# ---------------------------------------------------------------------------------------------


def _read_header(path: Path) -> bytes:
    try:
        with path.open("rb") as stream:
            header = stream.read(_HEADER_BYTES)
    except FileNotFoundError as error:
        raise ImageNotFoundError(
            f"{path} does not exist. Check the spelling; relative paths start from {Path.cwd()}."
        ) from error
    except OSError as error:
        raise ImageReadError(
            f"Cannot read {path}: {error.strerror or error}. Check that the file is readable."
        ) from error
    if not header:
        raise EmptyFileError(
            f"{path} is empty (0 bytes); the copy or download probably failed. Copy it again."
        )
    return header


def _uncompressed_header(path: Path, header: bytes) -> bytes:
    """The first bytes after gunzipping, for ``.nii.gz``; the header itself otherwise."""
    if not header.startswith(b"\x1f\x8b"):
        return header
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read(_HEADER_BYTES)
    except (OSError, EOFError, zlib.error):
        return b""


def _is_nifti_header(header: bytes) -> bool:
    return header[344:348] in (b"n+1\x00", b"ni1\x00") or header[4:8] in (b"n+2\x00", b"ni2\x00")


def _pillow_identifies(path: Path) -> bool:
    try:
        with Image.open(path):
            return True
    except Image.DecompressionBombError:
        return True  # an image, only too large: loading it reports that
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        LOGGER.debug("Pillow does not identify %s: %s", path, error)
        return False


def _reads_as_headerless_dicom(path: Path) -> bool:
    pydicom = require("pydicom", "read DICOM files")
    try:
        dataset = pydicom.dcmread(path, force=True)
    # A forced read of arbitrary bytes fails in many ways (struct, key, value, EOF errors...);
    # any of them means "not DICOM", which the caller reports.
    except Exception as error:  # noqa: BLE001
        LOGGER.debug("pydicom cannot read %s even with force=True: %s", path, error)
        return False
    return "PixelData" in dataset


# ---------------------------------------------------------------------------------------------
# 2-D images through Pillow
# ---------------------------------------------------------------------------------------------

# Pillow has no per-image switch for decoding truncated files: it reads the module global
# ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``. House style forbids process-wide side effects, so the
# switch is set only around one decode and restored in ``finally``, even when decoding raises.
# The lock serialises our decodes: without it two threads could interleave their save/restore
# and leave the switch on for good, or a strict decode could run while another thread has it on
# and miss a truncation. Code outside this module that decodes during that window still sees our
# value; Pillow offers no way around that.
_PILLOW_DECODING_LOCK = threading.Lock()


@contextmanager
def _pillow_truncation_mode(*, tolerant: bool) -> Iterator[None]:
    """Decode strictly or tolerantly inside the block; Pillow's global is restored after."""
    with _PILLOW_DECODING_LOCK:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = tolerant
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


@dataclass(frozen=True)
class _DecodedImage:
    image: Image.Image
    file_format: str | None
    exif_orientation: int
    original_size: tuple[int, int]


_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


def _load_image(path: Path, max_pixels: int, draft_size: int | None = None) -> Radiograph:
    decoded, decode_warnings = _decode_image(path, max_pixels, draft_size)
    pixels, metadata, pixel_warnings = _image_pixels(decoded.image, path)
    metadata.update(
        format=decoded.file_format,
        exif_orientation=decoded.exif_orientation,
        original_size=decoded.original_size,
    )
    return Radiograph(
        pixels=pixels,
        source=str(path),
        kind="image",
        warnings=decode_warnings + pixel_warnings,
        metadata=metadata,
    )


def _decode_image(
    path: Path, max_pixels: int, draft_size: int | None = None
) -> tuple[_DecodedImage, tuple[str, ...]]:
    """Decode strictly; if Pillow reports truncation, decode again tolerantly with a warning."""
    try:
        with _pillow_truncation_mode(tolerant=False):
            decoded = _open_and_load(path, max_pixels, draft_size)
        if decoded.file_format == "JPEG" and _jpeg_end_marker_missing(path):
            return decoded, (
                "truncated: the JPEG has no end-of-image marker, so its last part is missing "
                "or padded; the bottom of the image is not real",
            )
        return decoded, ()
    except ImageReadError:
        raise
    except _DECODE_ERRORS as error:
        if not _is_truncation(error):
            raise _corrupt_image_error(path, error) from error
        strict_message = str(error)
    LOGGER.info("%s is truncated (%s); decoding it tolerantly", path, strict_message)
    try:
        with _pillow_truncation_mode(tolerant=True):
            decoded = _open_and_load(path, max_pixels, draft_size)
    except ImageReadError:
        raise
    except _DECODE_ERRORS as error:
        raise _corrupt_image_error(path, error) from error
    warning = (
        f"truncated: decoded tolerantly after Pillow reported '{strict_message}'; "
        "the missing part of the image is filled in, not real"
    )
    return decoded, (warning,)


def _jpeg_end_marker_missing(path: Path) -> bool:
    """True when a JPEG has no end-of-image marker after its last scan.

    libjpeg decodes a JPEG cut short and padded (e.g. with zeros) without complaint, so Pillow's
    strict mode misses it. Inside entropy-coded data every 0xFF byte is stuffed (0xFF00) or a
    restart marker, so an 0xFFD9 after the last start-of-scan can only be the real end marker.
    """
    data = path.read_bytes()
    last_scan = data.rfind(b"\xff\xda")
    return last_scan >= 0 and data.find(b"\xff\xd9", last_scan) < 0


def _open_and_load(path: Path, max_pixels: int, draft_size: int | None = None) -> _DecodedImage:
    image = _open_image(path)
    with image:
        _check_pixel_count(image.width, image.height, max_pixels, path)
        original_size = (image.width, image.height)
        if draft_size:
            image.draft(image.mode, (draft_size, draft_size))
        image.load()
        orientation = int(image.getexif().get(0x0112, 1))
        # exif_transpose returns a copy (transposed or not), so closing the original is safe.
        return _DecodedImage(
            ImageOps.exif_transpose(image), image.format, orientation, original_size
        )


def _open_image(path: Path) -> Image.Image:
    """``Image.open`` reads only the header, so the size is known before any pixel is decoded."""
    try:
        return Image.open(path)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(
            f"Pillow refused {path} as a possible decompression bomb ({error}). That is above "
            "Pillow's own hard limit (twice PIL.Image.MAX_IMAGE_PIXELS), which max_pixels= "
            "cannot lift; downscale the image with another tool first."
        ) from error
    except UnidentifiedImageError as error:
        raise CorruptImageError(
            f"{path} starts like an image but Pillow cannot read its header; the file is "
            "damaged. Export or copy it again."
        ) from error


def _is_truncation(error: BaseException) -> bool:
    message = str(error).lower()
    return isinstance(error, OSError) and any(text in message for text in _TRUNCATION_MESSAGES)


def _corrupt_image_error(path: Path, error: BaseException) -> CorruptImageError:
    return CorruptImageError(
        f"{path} could not be decoded, even tolerantly ({type(error).__name__}: {error}). "
        "The file is damaged; export or copy it again."
    )


def _image_pixels(
    image: Image.Image, path: Path
) -> tuple[np.ndarray, dict[str, Any], tuple[str, ...]]:
    """One channel in [0, 1], the metadata describing how, and any warnings."""
    mode = image.mode
    if mode == "F":
        pixels, warnings = _float_pixels(np.asarray(image), path)
        return pixels, {"original_mode": mode, "bits": 32}, warnings
    if mode == "I" or mode.startswith("I;16"):
        pixels, bits, warnings = _integer_pixels(np.asarray(image))
        return pixels, {"original_mode": mode, "bits": bits}, warnings
    if mode in ("1", "L"):
        grey = np.asarray(image.convert("L"), dtype=np.float32) / np.float32(255.0)
        return grey, {"original_mode": mode, "bits": 1 if mode == "1" else 8}, ()
    warnings = _alpha_warnings(image)
    rgb = np.asarray(image.convert("RGBA").convert("RGB") if mode == "P" else image.convert("RGB"))
    pixels = (_luminance(rgb) / 255.0).astype(np.float32)
    return pixels, {"original_mode": mode, "bits": 8}, warnings


def _float_pixels(values: np.ndarray, path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    values = values.astype(np.float32)
    _check_finite(values, path)
    low, high = float(values.min()), float(values.max())
    if 0.0 <= low and high <= 1.0:
        return values, ()
    warning = f"float: values span [{low:g}, {high:g}], not [0, 1]; min-max scaled"
    return _scale_to_unit(values, low, high), (warning,)


def _integer_pixels(values: np.ndarray) -> tuple[np.ndarray, int | None, tuple[str, ...]]:
    """Divide by the largest value of the bit depth actually used (see the module docstring)."""
    values = values.astype(np.int64)
    low, high = int(values.min()), int(values.max())
    if low < 0:
        warning = f"integer: values span [{low}, {high}], including negatives; min-max scaled"
        return _scale_to_unit(values, low, high), None, (warning,)
    bits = next((depth for depth in _INTEGER_BIT_DEPTHS if high < 2**depth), high.bit_length())
    return _scale_to_unit(values, 0, 2**bits - 1), bits, ()


def _alpha_warnings(image: Image.Image) -> tuple[str, ...]:
    has_alpha = "A" in image.getbands() or "a" in image.getbands()
    if not has_alpha and "transparency" not in image.info:
        return ()
    alpha = np.asarray(image.convert("RGBA").getchannel("A"))
    if alpha.min() == 255:
        return ()
    return ("alpha: transparency ignored; every pixel's stored colour is used as if opaque",)


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------


def _read_dicom(path: Path, *, header_only: bool = False) -> Any:
    """Read a DICOM dataset (``force=True``: the caller already sniffed it as DICOM)."""
    pydicom = require("pydicom", "read DICOM files")
    errors = require("pydicom.errors", "read DICOM files")
    try:
        dataset = pydicom.dcmread(path, force=True, stop_before_pixels=header_only)
    except (errors.InvalidDicomError, OSError, EOFError, ValueError, KeyError) as error:
        raise CorruptImageError(
            f"{path} looks like DICOM but pydicom cannot parse it ({error}). The file is "
            "damaged; export it again from the PACS or the modality."
        ) from error
    _fill_transfer_syntax(dataset)
    return dataset


def _fill_transfer_syntax(dataset: Any) -> None:
    """Files without a file meta header lack a transfer syntax, which pydicom 3 needs to decode.

    Use the encoding pydicom detected while parsing.
    """
    if dataset.file_meta.get("TransferSyntaxUID") is not None:
        return
    uid = require("pydicom.uid", "read DICOM files")
    implicit, little_endian = dataset.original_encoding
    if implicit:
        dataset.file_meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian
    elif little_endian:
        dataset.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    else:
        dataset.file_meta.TransferSyntaxUID = uid.ExplicitVRBigEndian


def _dicom_frame_count(dataset: Any) -> int:
    return int(dataset.get("NumberOfFrames") or 1)


def _dicom_shape(dataset: Any, path: Path) -> tuple[int, int]:
    """Rows and columns, read from the header before any pixel is decoded."""
    rows, columns = dataset.get("Rows"), dataset.get("Columns")
    if not rows or not columns:
        raise CorruptImageError(
            f"{path} has pixel data but no Rows/Columns, so its size is unknown; the header is "
            "damaged. Export the file again."
        )
    return int(rows), int(columns)


def _check_dicom_image(dataset: Any, path: Path) -> str:
    """Check that the dataset holds a supported image; return its photometric interpretation."""
    if not any(name in dataset for name in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        sop_class = dataset.get("SOPClassUID")
        kind = f" ({sop_class.name})" if sop_class is not None else ""
        raise ImageReadError(
            f"{path} is a DICOM file{kind} that holds no image, e.g. a structured report or "
            "a plan. Open the DICOM file that holds the pixel data."
        )
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in SUPPORTED_PHOTOMETRIC:
        raise UnsupportedPhotometricError(
            f"{path} uses PhotometricInterpretation '{photometric}', which FractureEdge does not "
            f"support; supported: {', '.join(SUPPORTED_PHOTOMETRIC)}. Convert it first (e.g. "
            "dcmtk's dcmconv or gdcmconv) or export the image as greyscale."
        )
    return photometric


def _decode_dicom_pixels(dataset: Any, path: Path) -> np.ndarray:
    """``dataset.pixel_array`` with pydicom's failures turned into actionable errors."""
    try:
        return np.asarray(dataset.pixel_array)
    except RuntimeError as error:
        # pydicom 3 raises RuntimeError both when every decoder plugin lacks its dependencies
        # and when the installed plugins all refused the data (e.g. Pillow and 12-bit JPEG).
        message = str(error)
        if "missing dependencies" in message or "does not support" in message:
            raise _missing_decoder_error(dataset, path, message) from error
        raise CorruptImageError(
            f"{path}: pydicom could not decode the pixel data ({message}). The file may be "
            f"damaged; if not, try another decoder: pip install {_FALLBACK_DECODER}"
        ) from error
    except NotImplementedError as error:
        raise _missing_decoder_error(dataset, path, str(error)) from error
    except (ValueError, AttributeError, EOFError, OSError) as error:
        raise CorruptImageError(
            f"{path}: the pixel data do not match the DICOM header ({error}). The file is "
            "damaged or truncated; export it again."
        ) from error


def _missing_decoder_error(dataset: Any, path: Path, reason: str) -> MissingDecoderError:
    transfer_syntax = dataset.file_meta.get("TransferSyntaxUID")
    name = transfer_syntax.name if transfer_syntax is not None else "unknown transfer syntax"
    packages = _DECODER_PACKAGES.get(str(transfer_syntax), _FALLBACK_DECODER)
    last_line = reason.strip().splitlines()[-1].strip()
    return MissingDecoderError(
        f"{path} stores its pixels compressed as '{name}' ({transfer_syntax}), and no installed "
        f"decoder can read them ({last_line}). Install one: pip install {packages} "
        f"(or: pip install {_FALLBACK_DECODER})"
    )


def _dicom_values(dataset: Any, path: Path, photometric: str) -> np.ndarray:
    """Decoded values as float32: Modality LUT applied (monochrome) or luminance (colour)."""
    stored = _decode_dicom_pixels(dataset, path)
    if photometric in _COLOUR_PHOTOMETRIC:
        return _luminance(stored).astype(np.float32)  # pydicom already converted YBR to RGB
    values = _modality_values(stored, dataset).astype(np.float32)
    _check_finite(values, path)
    return values


def _modality_values(stored: np.ndarray, dataset: Any) -> np.ndarray:
    """Apply the Modality LUT or rescale, also where enhanced multi-frame files keep it."""
    processing = require("pydicom.pixels", "read DICOM files")
    if "ModalityLUTSequence" in dataset or "RescaleSlope" in dataset:
        return np.asarray(processing.apply_modality_lut(stored, dataset), dtype=np.float64)
    frames = stored.reshape(-1, *stored.shape[-2:])
    values = [
        processing.apply_modality_lut(frame, _frame_transform(dataset, index))
        for index, frame in enumerate(frames)
    ]
    return np.stack(values).astype(np.float64).reshape(stored.shape)


def _frame_transform(dataset: Any, frame_index: int) -> Any:
    """The item holding a frame's rescale in an enhanced multi-frame file, else the dataset."""
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence") or []
    shared = dataset.get("SharedFunctionalGroupsSequence") or []
    groups = ([per_frame[frame_index]] if frame_index < len(per_frame) else []) + list(shared[:1])
    for group in groups:
        transforms = group.get("PixelValueTransformationSequence") or []
        if transforms:
            return transforms[0]
    return dataset


def _load_dicom_image(path: Path, max_pixels: int) -> Radiograph:
    dataset = _read_dicom(path)
    photometric = _check_dicom_image(dataset, path)
    frames = _dicom_frame_count(dataset)
    if frames > 1:
        raise ImageReadError(
            f"{path} is a multi-frame DICOM ({frames} frames); open it with load_volume() or "
            "load_study(), which return one image per frame."
        )
    rows, columns = _dicom_shape(dataset, path)
    _check_pixel_count(columns, rows, max_pixels, path)
    values = _dicom_values(dataset, path, photometric)
    if photometric in _COLOUR_PHOTOMETRIC:
        pixels = _scale_to_unit(values, 0, 2 ** _bits_stored(dataset) - 1)
        voi = "bit depth"
        warnings: tuple[str, ...] = (f"colour: {photometric} converted to luminance",)
    else:
        pixels, voi, warnings = _dicom_display(values, dataset)
    if photometric == "MONOCHROME1":
        pixels = 1.0 - pixels
        warnings += (_MONOCHROME1_WARNING,)
    metadata = {**_dicom_metadata(dataset, photometric), "voi": voi}
    return Radiograph(
        pixels=pixels, source=str(path), kind="dicom", warnings=warnings, metadata=metadata
    )


def _dicom_display(values: np.ndarray, dataset: Any) -> tuple[np.ndarray, str, tuple[str, ...]]:
    """Apply the file's VOI LUT or first window and scale to [0, 1]; min-max if it has none."""
    processing = require("pydicom.pixels", "read DICOM files")
    output_range, voi = _voi_output_range(dataset)
    if output_range is None:
        return _min_max_scale(values), "min-max", ()
    if voi == "voi-lut":
        values = np.rint(values).astype(np.int64)  # a LUT is indexed by integers
    try:
        displayed = processing.apply_voi_lut(values, dataset, index=0)
    except (ValueError, NotImplementedError, IndexError) as error:
        warning = f"window: the file's {voi} is invalid ({error}); used the image's min-max"
        return _min_max_scale(values), "min-max", (warning,)
    return _scale_to_unit(displayed, *output_range), voi, ()


def _voi_output_range(dataset: Any) -> tuple[tuple[float, float] | None, str]:
    """The range ``apply_voi_lut`` maps onto, as the DICOM standard (PS3.3 C.11.2) defines it."""
    lut_items = dataset.get("VOILUTSequence") or []
    if lut_items and None not in (lut_items[0].get("LUTDescriptor"), lut_items[0].get("LUTData")):
        bits = int(lut_items[0].LUTDescriptor[2])
        return (0.0, float(2**bits - 1)), "voi-lut"
    if dataset.get("WindowCenter") is None or dataset.get("WindowWidth") is None:
        return None, "min-max"
    center, width = _first(dataset.WindowCenter), _first(dataset.WindowWidth)
    return _window_output_range(dataset), f"window {center:g}/{width:g}"


def _window_output_range(dataset: Any) -> tuple[float, float]:
    modality_lut = dataset.get("ModalityLUTSequence") or []
    bits = _bits_stored(dataset)
    if modality_lut:
        low, high = 0.0, float(2 ** int(modality_lut[0].LUTDescriptor[2]) - 1)
    elif int(dataset.get("PixelRepresentation", 0)) == 0:
        low, high = 0.0, float(2**bits - 1)
    else:
        low, high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = dataset.get("RescaleSlope"), dataset.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return min(low, high), max(low, high)


def _first(value: Any) -> float:
    """The first value of a possibly multi-valued DICOM element."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return float(value[0])
    return float(value)


def _bits_stored(dataset: Any) -> int:
    return int(dataset.get("BitsStored") or dataset.get("BitsAllocated") or 8)


def _dicom_metadata(dataset: Any, photometric: str) -> dict[str, Any]:
    transfer_syntax = dataset.file_meta.get("TransferSyntaxUID")
    return {
        "modality": str(dataset.get("Modality", "")),
        "photometric_interpretation": photometric,
        "bits": _bits_stored(dataset),
        "transfer_syntax": transfer_syntax.name if transfer_syntax is not None else "",
    }


def _load_dicom_volume(path: Path, window: str | Window, max_pixels: int) -> list[Radiograph]:
    """A multi-frame (or single-frame) DICOM file as a volume, one radiograph per frame."""
    dataset = _read_dicom(path)
    photometric = _check_dicom_image(dataset, path)
    (rows, columns), frames = _dicom_shape(dataset, path), _dicom_frame_count(dataset)
    _check_volume_size(rows * columns, frames, max_pixels, path)
    volume = _dicom_values(dataset, path, photometric).reshape(frames, rows, columns)
    pixels, window_metadata, warnings = _display_volume(
        volume, window, is_ct=_is_ct(dataset, volume), monochrome1=photometric == "MONOCHROME1"
    )
    metadata = {**_dicom_metadata(dataset, photometric), **window_metadata}
    return _slices_to_radiographs(pixels, [str(path)] * frames, "dicom", metadata, warnings)


def _is_ct(dataset: Any, volume: np.ndarray) -> bool:
    modality = str(dataset.get("Modality", "")).upper()
    return modality == "CT" if modality else _looks_like_hounsfield(volume)


# ---------------------------------------------------------------------------------------------
# DICOM series (a folder)
# ---------------------------------------------------------------------------------------------


def _read_series_headers(files: Sequence[Path]) -> list[tuple[Path, Any]]:
    return [(file, _read_dicom(file, header_only=True)) for file in files]


def _load_dicom_series(
    headers: list[tuple[Path, Any]], folder: Path, window: str | Window, max_pixels: int
) -> list[Radiograph]:
    series = _single_series(headers, folder)
    ordered, order_warnings = _sort_slices(series)
    first_file, first = ordered[0]
    rows, columns = _dicom_shape(first, first_file)
    _check_volume_size(rows * columns, len(ordered), max_pixels, folder)
    volume, photometric = _read_series_values(ordered, rows, columns)
    pixels, window_metadata, warnings = _display_volume(
        volume, window, is_ct=_is_ct(first, volume), monochrome1=photometric == "MONOCHROME1"
    )
    metadata = {
        **_dicom_metadata(first, photometric),
        **window_metadata,
        "series_instance_uid": str(first.get("SeriesInstanceUID", "")),
        "folder": str(folder),
    }
    sources = [str(file) for file, _ in ordered]
    return _slices_to_radiographs(
        pixels, sources, "dicom-series", metadata, order_warnings + warnings
    )


def _single_series(headers: list[tuple[Path, Any]], folder: Path) -> list[tuple[Path, Any]]:
    groups: dict[str, list[tuple[Path, Any]]] = {}
    for file, dataset in headers:
        groups.setdefault(str(dataset.get("SeriesInstanceUID", "unknown")), []).append(
            (file, dataset)
        )
    if len(groups) == 1:
        return next(iter(groups.values()))
    listing = "; ".join(
        f"{uid} '{members[0][1].get('SeriesDescription', '')}' ({len(members)} files)"
        for uid, members in sorted(groups.items(), key=lambda item: -len(item[1]))
    )
    raise ImageReadError(
        f"{folder} holds {len(groups)} DICOM series: {listing}. Move each series into its own "
        "folder and open that folder."
    )


def _sort_slices(
    headers: list[tuple[Path, Any]],
) -> tuple[list[tuple[Path, Any]], tuple[str, ...]]:
    """Sort along the slice normal; fall back to InstanceNumber, then to file names."""
    normal = _slice_normal(headers[0][1])
    positions = [_slice_position(dataset, normal) for _, dataset in headers]
    if None not in positions:
        order = sorted(range(len(headers)), key=lambda index: (positions[index], index))
        return [headers[index] for index in order], ()
    numbers = [dataset.get("InstanceNumber") for _, dataset in headers]
    if None not in numbers:
        order = sorted(range(len(headers)), key=lambda index: (int(numbers[index]), index))
        warning = "order: slices sorted by InstanceNumber (ImagePositionPatient missing)"
        return [headers[index] for index in order], (warning,)
    warning = "order: slices sorted by file name (no ImagePositionPatient or InstanceNumber)"
    return list(headers), (warning,)


def _slice_normal(dataset: Any) -> np.ndarray | None:
    orientation = dataset.get("ImageOrientationPatient")
    if orientation is None or len(orientation) != 6:
        return None
    values = np.asarray([float(value) for value in orientation])
    return np.cross(values[:3], values[3:])


def _slice_position(dataset: Any, normal: np.ndarray | None) -> float | None:
    position = dataset.get("ImagePositionPatient")
    if normal is None or position is None or len(position) != 3:
        return None
    return float(np.dot(normal, [float(value) for value in position]))


def _read_series_values(
    ordered: list[tuple[Path, Any]], rows: int, columns: int
) -> tuple[np.ndarray, str]:
    """Decode each slice with its own rescale (slopes may differ between slices)."""
    volume = np.empty((len(ordered), rows, columns), dtype=np.float32)
    photometric = "MONOCHROME2"
    for index, (file, _) in enumerate(ordered):
        dataset = _read_dicom(file)
        photometric = _check_dicom_image(dataset, file)
        if _dicom_frame_count(dataset) > 1 or _dicom_shape(dataset, file) != (rows, columns):
            raise InvalidVolumeError(
                f"{file} does not fit the series in its folder (it is multi-frame or not "
                f"{rows}×{columns}). Move it out, or open it on its own with load_study()."
            )
        volume[index] = _dicom_values(dataset, file, photometric)
    return volume, photometric


# ---------------------------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------------------------


def _load_nifti(path: Path, window: str | Window, max_pixels: int) -> list[Radiograph]:
    nibabel = require("nibabel", "read NIfTI volumes")
    image = _read_nifti(nibabel, path)
    image, shape_warnings = _spatial_volume(nibabel, image, path, max_pixels)
    try:
        canonical = nibabel.as_closest_canonical(image)
        data = np.asarray(canonical.dataobj, dtype=np.float32)
    except (OSError, EOFError, ValueError, zlib.error) as error:
        raise CorruptImageError(
            f"{path}: the NIfTI voxel data cannot be read ({error}); the file is truncated or "
            "damaged. Export it again."
        ) from error
    _check_finite(data, path)
    # After as_closest_canonical the axes point to the patient's Right, Anterior and Superior.
    # Show each axial slice as DICOM viewers do (radiological convention): anterior at the top,
    # the patient's right on the viewer's left.
    volume = np.flip(np.transpose(data, (2, 1, 0)), axis=(1, 2))
    pixels, window_metadata, warnings = _display_volume(
        volume, window, is_ct=_looks_like_hounsfield(volume), monochrome1=False
    )
    metadata = {**window_metadata, "orientation": "RAS, axial slices inferior to superior"}
    sources = [str(path)] * volume.shape[0]
    return _slices_to_radiographs(pixels, sources, "nifti", metadata, shape_warnings + warnings)


def _read_nifti(nibabel: Any, path: Path) -> Any:
    try:
        return nibabel.load(path)
    except (nibabel.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as error:
        raise CorruptImageError(
            f"{path} looks like NIfTI but nibabel cannot read it ({error}). Export it again."
        ) from error


def _spatial_volume(
    nibabel: Any, image: Any, path: Path, max_pixels: int
) -> tuple[Any, tuple[str, ...]]:
    """Reduce the image to three spatial axes, checking the size before reading any voxel."""
    shape = tuple(int(size) for size in image.shape)
    if len(shape) < 2 or any(size > 1 for size in shape[4:]):
        raise InvalidVolumeError(
            f"{path} has shape {shape}; FractureEdge reads 2-D, 3-D and 4-D NIfTI (the first "
            "volume of a 4-D series). Extract one 3-D volume first (e.g. fslroi)."
        )
    warnings: tuple[str, ...] = ()
    if len(shape) > 3:
        if shape[3] > 1:
            warnings = (f"4-D: used the first of {shape[3]} volumes",)
        image = image.slicer[(slice(None),) * 3 + (0,) * (len(shape) - 3)]
    plane_pixels, slice_count = _canonical_plane(nibabel, image)
    _check_volume_size(plane_pixels, slice_count, max_pixels, path)
    if len(shape) == 2:
        data = np.asanyarray(image.dataobj)[..., np.newaxis]
        image = nibabel.Nifti1Image(data, image.affine)
    return image, warnings


def _canonical_plane(nibabel: Any, image: Any) -> tuple[int, int]:
    """Pixels per slice and slice count once the image is in canonical (RAS) orientation."""
    shape = tuple(image.shape) + (1,) * (3 - len(image.shape))
    # io_orientation gives, for each stored axis, the RAS axis it becomes; RAS axis 2 (superior)
    # is the slice axis.
    orientation = nibabel.orientations.io_orientation(image.affine)
    slice_axis = next((axis for axis in range(3) if orientation[axis, 0] == 2), 2)
    plane = [shape[axis] for axis in range(3) if axis != slice_axis]
    return plane[0] * plane[1], shape[slice_axis]


# ---------------------------------------------------------------------------------------------
# Windowing and volumes
# ---------------------------------------------------------------------------------------------


def _validate_window(window: str | tuple[float, float]) -> str | Window:
    if isinstance(window, str):
        if window == _AUTO_WINDOW or window in WINDOW_PRESETS:
            return window
        raise ValueError(
            f"Unknown window '{window}'; expected one of "
            f"{sorted([*WINDOW_PRESETS, _AUTO_WINDOW])} or a (center, width) pair."
        )
    try:
        center, width = (float(value) for value in window)
    except (TypeError, ValueError) as error:
        message = f"window must be a name or a (center, width) pair, got {window!r}"
        raise ValueError(message) from error
    if not (np.isfinite(center) and np.isfinite(width) and width > 0):
        raise ValueError(f"window needs a finite center and a positive width, got {window!r}")
    return Window(center, width)


def _display_volume(
    volume: np.ndarray, window: str | Window, *, is_ct: bool, monochrome1: bool
) -> tuple[np.ndarray, dict[str, Any], tuple[str, ...]]:
    """Window the whole volume into [0, 1] and describe how; slices then share one scale."""
    chosen, how, warnings = _resolve_window(window, volume, is_ct)
    pixels = _apply_window(volume, chosen)
    if monochrome1:
        pixels = np.float32(1.0) - pixels
        warnings += (_MONOCHROME1_WARNING,)
    metadata = {"window": (chosen.center, chosen.width), "window_source": how, "hounsfield": is_ct}
    return pixels, metadata, (_EXPLORATORY_WARNING, *warnings)


def _resolve_window(
    window: str | Window, volume: np.ndarray, is_ct: bool
) -> tuple[Window, str, tuple[str, ...]]:
    if isinstance(window, Window):
        return window, "explicit", ()
    if window == _AUTO_WINDOW or (window == "bone" and not is_ct):
        return _percentile_window(volume), "percentile 1-99", ()
    warnings: tuple[str, ...] = ()
    if not is_ct:
        warnings = (
            f"window: preset '{window}' is in Hounsfield units but this volume is not CT; "
            "try window='auto'",
        )
    return WINDOW_PRESETS[window], f"preset {window}", warnings


def _percentile_window(volume: np.ndarray) -> Window:
    low, high = (float(value) for value in np.percentile(volume, [1.0, 99.0]))
    if high <= low:
        low, high = float(volume.min()), float(volume.max())
    return Window(center=(low + high) / 2.0, width=high - low)


def _apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Linear window into [0, 1]; a zero width (constant data) becomes a step, not a 0/0."""
    if window.width <= 0:
        return (values > window.center).astype(np.float32)
    low = window.center - window.width / 2.0
    return _scale_to_unit(values, low, low + window.width)


def _looks_like_hounsfield(volume: np.ndarray) -> bool:
    """CT in Hounsfield units has air near -1000 (padding down to about -3024)."""
    return volume.size > 0 and -3100.0 <= float(volume.min()) <= -500.0


def _slices_to_radiographs(
    pixels: np.ndarray,
    sources: Sequence[str],
    kind: str,
    metadata: dict[str, Any],
    warnings: tuple[str, ...],
) -> list[Radiograph]:
    count = pixels.shape[0]
    return [
        Radiograph(
            pixels=pixels[index],
            source=sources[index],
            kind=kind,
            warnings=warnings,
            metadata={**metadata, "slice_index": index, "slice_count": count},
        )
        for index in range(count)
    ]


# ---------------------------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------------------------


def _folder_files(folder: Path) -> tuple[list[Path], tuple[str, ...]]:
    """The files a folder offers, sorted by name, and warnings about what was skipped."""
    entries = sorted(
        (entry for entry in folder.iterdir() if not entry.name.startswith(".")),
        key=lambda entry: entry.name,
    )
    subfolders = [entry.name for entry in entries if entry.is_dir()]
    skipped = [entry.name for entry in entries if entry.name.upper() == "DICOMDIR"]
    files = [entry for entry in entries if entry.is_file() and entry.name not in skipped]
    if not files:
        inside = f" (only the subfolders {subfolders})" if subfolders else ""
        raise ImageReadError(
            f"{folder} holds no files{inside}. Choose the folder that holds the images directly."
        )
    warnings = tuple(f"folder: skipped the DICOM index file {name}" for name in skipped)
    if subfolders:
        warnings += (f"folder: subfolders are not read: {', '.join(subfolders)}",)
    return files, warnings


def _require_only_dicom(folder: Path, files: Sequence[Path]) -> None:
    others = [file.name for file in files if sniff_format(file) != "dicom"]
    if others:
        raise ImageReadError(
            f"{folder} holds files that are not DICOM: {', '.join(others[:5])}. A volume folder "
            "must hold one DICOM series only; move the other files out."
        )


def _load_folder(folder: Path, max_pixels: int) -> list[Radiograph]:
    files, folder_warnings = _folder_files(folder)
    formats = {file: sniff_format(file) for file in files}
    kinds = set(formats.values())
    if kinds == {"image"}:
        radiographs = [_load_image(file, max_pixels) for file in files]
    elif kinds == {"dicom"}:
        radiographs = _load_dicom_folder(files, folder, max_pixels)
    else:
        summary = ", ".join(f"{file.name} ({kind})" for file, kind in formats.items())
        raise ImageReadError(
            f"{folder} mixes kinds of files: {summary[:500]}. A folder must hold one DICOM "
            "series or 2-D images only; open NIfTI volumes one file at a time."
        )
    return _with_warnings(radiographs, folder_warnings)


def _load_dicom_folder(files: Sequence[Path], folder: Path, max_pixels: int) -> list[Radiograph]:
    headers = _read_series_headers(files)
    if any("ImagePositionPatient" in dataset for _, dataset in headers):
        return _load_dicom_series(headers, folder, "bone", max_pixels)
    LOGGER.info("%s: no ImagePositionPatient, reading each DICOM file as a radiograph", folder)
    return [radiograph for file in files for radiograph in load_study(file, max_pixels=max_pixels)]


def _with_warnings(radiographs: list[Radiograph], extra: tuple[str, ...]) -> list[Radiograph]:
    if not extra:
        return radiographs
    return [replace(radiograph, warnings=radiograph.warnings + extra) for radiograph in radiographs]


# ---------------------------------------------------------------------------------------------
# Small shared helpers
# ---------------------------------------------------------------------------------------------


def _check_max_pixels(max_pixels: int) -> None:
    if int(max_pixels) < 1:
        raise ValueError(f"max_pixels must be a positive number of pixels, got {max_pixels}")


def _check_pixel_count(width: int, height: int, max_pixels: int, source: Path) -> None:
    pixels = width * height
    if pixels > max_pixels:
        raise ImageTooLargeError(
            f"{source} is {width}×{height} = {pixels:,} pixels, more than the limit of "
            f"{max_pixels:,}. If you trust the file, raise the limit: max_pixels={pixels}."
        )


def _check_volume_size(plane_pixels: int, slice_count: int, max_pixels: int, source: Path) -> None:
    if plane_pixels > max_pixels:
        raise ImageTooLargeError(
            f"{source} has slices of {plane_pixels:,} pixels, more than the limit of "
            f"{max_pixels:,}. If you trust the file, raise the limit: max_pixels={plane_pixels}."
        )
    voxels = plane_pixels * slice_count
    if voxels > VOLUME_PIXEL_FACTOR * max_pixels:
        needed = -(-voxels // VOLUME_PIXEL_FACTOR)
        raise ImageTooLargeError(
            f"{source} holds {voxels:,} voxels ({slice_count} slices), more than the volume "
            f"limit of {VOLUME_PIXEL_FACTOR} × max_pixels = {VOLUME_PIXEL_FACTOR * max_pixels:,}. "
            f"If you trust the file, raise the limit: max_pixels={needed}."
        )


def _check_finite(values: np.ndarray, source: Path) -> None:
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        count = int(values.size - np.isfinite(values).sum())
        raise InvalidVolumeError(
            f"{source} holds {count:,} NaN or infinite values, which FractureEdge does not "
            "replace silently. Fix the file (e.g. set them to the background value) and retry."
        )


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luminance of the last axis (RGB), in float64, without 8-bit rounding."""
    return np.asarray(rgb, dtype=np.float64)[..., :3] @ _LUMINANCE_WEIGHTS


def _scale_to_unit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low``..``high`` onto 0..1 (clipped, float32); an empty range gives zeros."""
    if high <= low:
        return np.zeros(np.shape(values), dtype=np.float32)
    # float32 halves the memory of a large volume and is exact for 16-bit data.
    scaled = (np.asarray(values, dtype=np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def _min_max_scale(values: np.ndarray) -> np.ndarray:
    return _scale_to_unit(values, float(np.min(values)), float(np.max(values)))
