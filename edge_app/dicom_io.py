"""DICOM files through pydicom (imported lazily): sniffed, checked, decoded and displayed.

Single-frame files become one :class:`~edge_app.film.Radiograph` here; multi-frame files and
series are volumes (:mod:`edge_app.volume_io`), which reuse the reading functions below.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edge_app._optional import require
from edge_app.errors import (
    CorruptImageError,
    FractureEdgeError,
    ImageReadError,
    MissingDecoderError,
    UnsupportedPhotometricError,
)
from edge_app.film import (
    MONOCHROME1_WARNING,
    Radiograph,
    block_mean,
    check_finite,
    luminance,
    min_max_scale,
    scale_to_unit,
)
from edge_app.library_logs import quiet_library_logs
from edge_app.limits import DICOM_ZERO_RUN_LIMIT, check_pixel_count, reduction_factor
from edge_app.sniff import ClampedReader, open_regular_file

SUPPORTED_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422")
COLOUR_PHOTOMETRIC = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422"})

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
# What pydicom raises, besides its own errors, on bytes that do not match the header: every one
# of them means a damaged file, never a bug of ours, as long as only pydicom runs inside.
_PARSE_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    OverflowError,
    struct.error,
)


def read_dicom(path: Path, *, header_only: bool = False) -> Any:
    """Read a DICOM dataset (``force=True``: the caller already sniffed it as DICOM)."""
    pydicom = require("pydicom", "read DICOM files")
    errors = require("pydicom.errors", "read DICOM files")
    try:
        with open_regular_file(path) as stream, quiet_library_logs("pydicom"):
            reader = ClampedReader(stream, path, zero_run_limit=DICOM_ZERO_RUN_LIMIT)
            dataset = pydicom.dcmread(reader, force=True, stop_before_pixels=header_only)
    except ImageReadError:
        raise
    except _PARSE_ERRORS + (NotImplementedError, errors.InvalidDicomError) as error:
        raise CorruptImageError(
            f"{path} looks like DICOM but pydicom cannot parse it ({error}). The file is "
            "damaged; export it again from the PACS or the modality."
        ) from error
    _fill_transfer_syntax(dataset)
    return dataset


@contextmanager
def dicom_errors(path: Path) -> Iterator[None]:
    """Around code that reads a DICOM dataset: a failure of pydicom's or of the dataset's values
    becomes :class:`CorruptImageError`.

    pydicom converts each element's raw bytes when it is first accessed, so a damaged value (an
    unknown VR, a length that does not fit, text where a number belongs) raises wherever the
    element is read, not in ``dcmread``. Errors of our own (:class:`FractureEdgeError`) pass.
    """
    errors = require("pydicom.errors", "read DICOM files")
    try:
        yield
    except FractureEdgeError:
        raise
    except _PARSE_ERRORS + (
        NotImplementedError,
        RuntimeError,
        errors.InvalidDicomError,
        errors.BytesLengthException,
    ) as error:
        raise CorruptImageError(
            f"{path} looks like DICOM but its header or pixel data are malformed "
            f"({type(error).__name__}: {error}). The file is damaged; export it again from the "
            "PACS or the modality."
        ) from error


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


def dicom_file_frame_count(path: Path) -> int:
    """How many frames a DICOM file holds, from its header."""
    with dicom_errors(path):
        return dicom_frame_count(read_dicom(path, header_only=True))


def dicom_frame_count(dataset: Any) -> int:
    return int(dataset.get("NumberOfFrames") or 1)


def dicom_pixel_count(dataset: Any, path: Path) -> int:
    """Rows × columns × frames, from the header."""
    rows, columns = dicom_shape(dataset, path)
    return rows * columns * dicom_frame_count(dataset)


def dicom_shape(dataset: Any, path: Path) -> tuple[int, int]:
    """Rows and columns, read from the header before any pixel is decoded."""
    rows, columns = dataset.get("Rows"), dataset.get("Columns")
    if not rows or not columns:
        raise CorruptImageError(
            f"{path} has pixel data but no Rows/Columns, so its size is unknown; the header is "
            "damaged. Export the file again."
        )
    return int(rows), int(columns)


def check_dicom_image(dataset: Any, path: Path) -> str:
    """Check that the dataset holds a supported image; return its photometric interpretation."""
    if not any(name in dataset for name in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        sop_class = dataset.get("SOPClassUID")
        kind = f" ({getattr(sop_class, 'name', sop_class)})" if sop_class is not None else ""
        raise ImageReadError(
            f"{path} is a DICOM file{kind} that holds no pixel data: a structured report or a "
            "plan, or a file damaged before its pixel data. Open the DICOM file that holds the "
            "image, or export it again."
        )
    return check_photometric(dataset, path)


def check_photometric(dataset: Any, path: Path) -> str:
    """The photometric interpretation, if FractureEdge supports it (header only)."""
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
    with _decoder_errors(dataset, path):
        return np.asarray(dataset.pixel_array)


def iter_dicom_frames(path: Path, header: Any) -> Iterator[np.ndarray]:
    """The stored frames of a DICOM file, decoded one at a time straight from the file, so a
    multi-frame file's pixel data are never held whole (``header``: from ``read_dicom(path,
    header_only=True)``, which supplies the transfer syntax even for files without one)."""
    pixels = require("pydicom.pixels", "read DICOM files")
    transfer_syntax = header.file_meta.TransferSyntaxUID
    with open_regular_file(path) as stream, _decoder_errors(header, path):
        try:
            yield from pixels.iter_pixels(
                ClampedReader(stream), transfer_syntax_uid=transfer_syntax
            )
        except AttributeError as error:
            if "no pixel data" not in str(error):
                raise
            raise ImageReadError(
                f"{path} is a DICOM file that holds no pixel data: a structured report or a "
                "plan, or a file damaged before its pixel data. Open the DICOM file that holds "
                "the image, or export it again."
            ) from error


@contextmanager
def _decoder_errors(dataset: Any, path: Path) -> Iterator[None]:
    """Turn pydicom's decoding failures into actionable errors, and keep its logs quiet."""
    try:
        with quiet_library_logs("pydicom"):
            yield
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
    except _PARSE_ERRORS as error:
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


def dicom_values(dataset: Any, path: Path, photometric: str) -> np.ndarray:
    """Decoded values of a single-frame dataset as float32: Modality LUT applied (monochrome)
    or luminance (colour)."""
    return frame_values(_decode_dicom_pixels(dataset, path), dataset, 0, photometric, path)


def frame_values(
    stored: np.ndarray, dataset: Any, frame_index: int, photometric: str, path: Path
) -> np.ndarray:
    """One frame's stored values as float32: luminance for colour (pydicom already converted
    YBR to RGB), else the Modality LUT or rescale, also where enhanced multi-frame files keep
    it per frame."""
    if photometric in COLOUR_PHOTOMETRIC:
        return luminance(stored)
    processing = require("pydicom.pixels", "read DICOM files")
    whole_file = "ModalityLUTSequence" in dataset or "RescaleSlope" in dataset
    transform = dataset if whole_file else _frame_transform(dataset, frame_index)
    try:
        values = np.asarray(processing.apply_modality_lut(stored, transform), dtype=np.float32)
    except _PARSE_ERRORS as error:
        raise CorruptImageError(
            f"{path}: the Modality LUT or rescale in its header is unusable ({error}). The file "
            "is damaged; export it again."
        ) from error
    check_finite(values, path)
    return values


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


def load_dicom_image(path: Path, max_pixels: int) -> Radiograph:
    with dicom_errors(path):
        return _load_dicom_image(path, max_pixels)


def _load_dicom_image(path: Path, max_pixels: int) -> Radiograph:
    dataset = read_dicom(path)
    photometric = check_dicom_image(dataset, path)
    frames = dicom_frame_count(dataset)
    if frames > 1:
        raise ImageReadError(
            f"{path} is a multi-frame DICOM ({frames} frames); open it with load_volume() or "
            "load_study(), which return one image per frame."
        )
    rows, columns = dicom_shape(dataset, path)
    check_pixel_count(columns, rows, max_pixels, path)
    values = _reduced_values(dataset, path, photometric)
    if photometric in COLOUR_PHOTOMETRIC:
        pixels = scale_to_unit(values, 0, 2 ** _bits_stored(dataset) - 1)
        voi = "bit depth"
        warnings: tuple[str, ...] = (f"colour: {photometric} converted to luminance",)
    else:
        pixels, voi, warnings = _dicom_display(values, dataset)
    if photometric == "MONOCHROME1":
        pixels = 1.0 - pixels
        warnings += (MONOCHROME1_WARNING,)
    metadata = {**dicom_metadata(dataset, photometric), "voi": voi}
    if pixels.shape != (rows, columns):
        metadata["original_size"] = (columns, rows)
    return Radiograph(
        pixels=pixels, source=str(path), kind="dicom", warnings=warnings, metadata=metadata
    )


def _reduced_values(dataset: Any, path: Path, photometric: str) -> np.ndarray:
    """:func:`dicom_values`, box-reduced first when the image is over ``WORKING_PIXELS``.

    Reducing the stored values before the Modality LUT keeps the float copies small; a rescale
    is linear, so it commutes with the mean (a LUT is applied to the rounded means).
    """
    stored = _decode_dicom_pixels(dataset, path)
    factor = reduction_factor(stored.shape[1], stored.shape[0])
    if factor > 1:
        reduced = block_mean(stored, factor)
        if "ModalityLUTSequence" in dataset:
            reduced = np.rint(reduced).astype(stored.dtype)
        del stored
        stored = reduced
    return frame_values(stored, dataset, 0, photometric, path)


def _dicom_display(values: np.ndarray, dataset: Any) -> tuple[np.ndarray, str, tuple[str, ...]]:
    """Apply the file's VOI LUT or first window and scale to [0, 1]; min-max if it has none."""
    processing = require("pydicom.pixels", "read DICOM files")
    try:
        output_range, voi = _voi_output_range(dataset)
        if output_range is None:
            return min_max_scale(values), "min-max", ()
        # a LUT is indexed by integers
        indices = np.rint(values).astype(np.int64) if voi == "voi-lut" else values
        displayed = processing.apply_voi_lut(indices, dataset, index=0)
    except _PARSE_ERRORS + (NotImplementedError,) as error:
        warning = f"window: the file's window or VOI LUT is unusable ({error}); used min-max"
        return min_max_scale(values), "min-max", (warning,)
    return scale_to_unit(displayed, *output_range), voi, ()


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


def dicom_metadata(dataset: Any, photometric: str) -> dict[str, Any]:
    transfer_syntax = dataset.file_meta.get("TransferSyntaxUID")
    return {
        "modality": str(dataset.get("Modality", "")),
        "photometric_interpretation": photometric,
        "bits": _bits_stored(dataset),
        "transfer_syntax": transfer_syntax.name if transfer_syntax is not None else "",
    }
