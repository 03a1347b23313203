"""2-D images through Pillow: JPEG, PNG, TIFF, BMP, GIF, WebP and the rest.

The rules (bit depth, colour, alpha, EXIF orientation, truncation) are described in
:mod:`edge_app.radiograph`; this module implements them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from edge_app.errors import CorruptImageError, ImageReadError, ImageTooLargeError
from edge_app.film import Radiograph, check_finite, luminance, scale_to_unit
from edge_app.limits import check_pixel_count
from edge_app.sniff import open_regular_file

LOGGER = logging.getLogger(__name__)

_INTEGER_BIT_DEPTHS = (8, 10, 12, 14, 16)
_TRUNCATION_MESSAGES = ("truncated", "broken data stream")

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


def load_image(path: Path, max_pixels: int, draft_size: int | None = None) -> Radiograph:
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
    with open_regular_file(path) as stream:
        image = _open_image(stream, path)
        with image:
            check_pixel_count(image.width, image.height, max_pixels, path)
            original_size = (image.width, image.height)
            if draft_size:
                image.draft(image.mode, (draft_size, draft_size))
            image.load()
            orientation = int(image.getexif().get(0x0112, 1))
            # exif_transpose returns a copy (transposed or not), so closing the original is safe.
            return _DecodedImage(
                ImageOps.exif_transpose(image), image.format, orientation, original_size
            )


def _open_image(stream: BinaryIO, path: Path) -> Image.Image:
    """``Image.open`` reads only the header, so the size is known before any pixel is decoded."""
    try:
        return Image.open(stream)
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
    pixels = (luminance(rgb) / 255.0).astype(np.float32)
    return pixels, {"original_mode": mode, "bits": 8}, warnings


def _float_pixels(values: np.ndarray, path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    values = values.astype(np.float32)
    check_finite(values, path)
    low, high = float(values.min()), float(values.max())
    if 0.0 <= low and high <= 1.0:
        return values, ()
    warning = f"float: values span [{low:g}, {high:g}], not [0, 1]; min-max scaled"
    return scale_to_unit(values, low, high), (warning,)


def _integer_pixels(values: np.ndarray) -> tuple[np.ndarray, int | None, tuple[str, ...]]:
    """Divide by the largest value of the bit depth actually used (see the module docstring)."""
    values = values.astype(np.int64)
    low, high = int(values.min()), int(values.max())
    if low < 0:
        warning = f"integer: values span [{low}, {high}], including negatives; min-max scaled"
        return scale_to_unit(values, low, high), None, (warning,)
    bits = next((depth for depth in _INTEGER_BIT_DEPTHS if high < 2**depth), high.bit_length())
    return scale_to_unit(values, 0, 2**bits - 1), bits, ()


def _alpha_warnings(image: Image.Image) -> tuple[str, ...]:
    has_alpha = "A" in image.getbands() or "a" in image.getbands()
    if not has_alpha and "transparency" not in image.info:
        return ()
    alpha = np.asarray(image.convert("RGBA").getchannel("A"))
    if alpha.min() == 255:
        return ()
    return ("alpha: transparency ignored; every pixel's stored colour is used as if opaque",)
