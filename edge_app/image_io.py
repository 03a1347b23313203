"""2-D images through Pillow: JPEG, PNG, TIFF, BMP, GIF, WebP and the rest.

The rules (bit depth, colour, alpha, EXIF orientation, truncation) are described in
:mod:`edge_app.radiograph`; this module implements them.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from edge_app.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageReadError,
    ImageTooLargeError,
)
from edge_app.film import Radiograph, check_finite, luminance, scale_to_unit
from edge_app.limits import (
    MAX_MISSING_SHARE,
    MAX_STUDY_IMAGES,
    check_pixel_count,
    reduction_factor,
)
from edge_app.sniff import ClampedReader, open_regular_file

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
    image: Image.Image  # reduced (if it was large) and turned upright
    file_format: str | None
    original_mode: str
    exif_orientation: int
    original_size: tuple[int, int]
    page_count: int  # TIFF pages (each a view); 1 for other formats
    animated: bool  # GIF, APNG, WebP... with more than one frame
    stored_height: int  # rows as decoded, before reduction and turning upright
    flat_bottom_rows: int  # trailing stored rows that are one flat value (how much is filled in)
    flat_bottom_value: Any
    jpeg_end_missing: bool


# What Pillow's plugins raise on damaged data: besides OSError and SyntaxError (its documented
# ones), a malformed TIFF directory can raise TypeError or KeyError, a bad chunk struct.error.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    TypeError,
    KeyError,
    IndexError,
    ZeroDivisionError,
    OverflowError,
    struct.error,
)
_JPEG_FILL = 128  # libjpeg's grey for data that are missing (DC 0)
_JPEG_END_WINDOW = 1024 * 1024  # bytes before the decoder's stop searched for the end marker
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def load_image(
    path: Path, max_pixels: int, draft_size: int | None = None, page: int = 0
) -> Radiograph:
    """One image (a TIFF's ``page``; the first frame of an animation, with a warning)."""
    decoded, decode_warnings = _decode_image(path, max_pixels, draft_size, page)
    pixels, metadata, pixel_warnings = _image_pixels(decoded.image, decoded.original_mode, path)
    metadata.update(
        format=decoded.file_format,
        exif_orientation=decoded.exif_orientation,
        original_size=decoded.original_size,
    )
    warnings = decode_warnings + pixel_warnings
    if decoded.page_count > 1:
        metadata.update(page_index=page, page_count=decoded.page_count)
    if decoded.animated:
        warnings += (
            f"frames: the {decoded.file_format} file holds several frames (an animation is no "
            "radiograph); only the first was read",
        )
    return Radiograph(
        pixels=pixels, source=str(path), kind="image", warnings=warnings, metadata=metadata
    )


def decoded_sizes(path: Path, max_pixels: int) -> list[tuple[int, int]]:
    """The ``(width, height)`` each page will decode to (at most), from the headers only.

    One entry per TIFF page (counted up to ``MAX_STUDY_IMAGES + 1``), one for any other image.
    Raises the size and shape refusals of :func:`~edge_app.limits.check_pixel_count` for the
    first page that breaks them, before any pixel is decoded.
    """
    try:
        return _decoded_sizes(path, max_pixels)
    except ImageReadError:
        raise
    except _DECODE_ERRORS as error:
        raise _corrupt_image_error(path, error) from error


def _decoded_sizes(path: Path, max_pixels: int) -> list[tuple[int, int]]:
    with open_regular_file(path) as stream:
        image = _open_image(stream, path)
        count = _tiff_page_count(image) if image.format == "TIFF" else 1
        sizes = []
        for page in range(count):
            image.seek(page)
            check_pixel_count(image.width, image.height, max_pixels, path)
            factor = reduction_factor(image.width, image.height)
            sizes.append((-(-image.width // factor), -(-image.height // factor)))
        return sizes


def _tiff_page_count(image: Image.Image) -> int:
    """Pages counted by seeking, not with ``n_frames``: a file may chain millions of them."""
    count = 1
    try:
        while count <= MAX_STUDY_IMAGES:
            image.seek(count)
            count += 1
    except EOFError:
        pass
    image.seek(0)
    return count


def _decode_image(
    path: Path, max_pixels: int, draft_size: int | None = None, page: int = 0
) -> tuple[_DecodedImage, tuple[str, ...]]:
    """Decode strictly; if Pillow reports truncation, decode again tolerantly with a warning.

    A decode whose missing (filled-in) part is most of the image raises
    :class:`EmptyImageError`: there is too little film left to judge.
    """
    try:
        with _pillow_truncation_mode(tolerant=False):
            decoded = _open_and_load(path, max_pixels, draft_size, page)
        return decoded, _strict_decode_warnings(decoded, path)
    except ImageReadError:
        raise
    except _DECODE_ERRORS as error:
        if not _is_truncation(error):
            raise _corrupt_image_error(path, error) from error
        strict_message = str(error)
    LOGGER.info("%s is truncated (%s); decoding it tolerantly", path, strict_message)
    try:
        with _pillow_truncation_mode(tolerant=True):
            decoded = _open_and_load(path, max_pixels, draft_size, page)
    except ImageReadError:
        raise
    except _DECODE_ERRORS as error:
        raise _corrupt_image_error(path, error) from error
    filled = _filled_rows_text(decoded, path) or "the missing part of the image is filled in"
    warning = (
        f"truncated: decoded tolerantly after Pillow reported '{strict_message}'; "
        f"{filled}, not real"
    )
    return decoded, (warning,)


def _strict_decode_warnings(decoded: _DecodedImage, path: Path) -> tuple[str, ...]:
    if decoded.jpeg_end_missing:
        return (
            "truncated: the JPEG has no end-of-image marker, so its last part is missing "
            "or padded; the bottom of the image is not real",
        )
    # libjpeg fills scans whose data end early with flat grey and only warns on stderr, which
    # Pillow does not pass on: a JPEG cut and closed with an end marker decodes "cleanly".
    # A whole band of rows of exactly that grey at the bottom (at least one MCU row) is what
    # that leaves; no exposure produces it.
    if (
        decoded.file_format == "JPEG"
        and decoded.flat_bottom_rows >= 8
        and np.all(np.asarray(decoded.flat_bottom_value) == _JPEG_FILL)
    ):
        filled = _filled_rows_text(decoded, path)
        return (f"truncated: the JPEG's data end early; {filled}, not real",)
    return ()


def _filled_rows_text(decoded: _DecodedImage, path: Path) -> str:
    """Describe the filled-in rows; refuse the image when they are most of it."""
    rows, height = decoded.flat_bottom_rows, decoded.stored_height
    if rows == 0:
        return ""
    share = rows / height
    if share > MAX_MISSING_SHARE:
        raise EmptyImageError(
            f"{path} holds no usable image: the bottom {share:.0%} of it is missing (filled in "
            f"with one flat value where the file's data end), more than the "
            f"{MAX_MISSING_SHARE:.0%} FractureEdge accepts. The file is truncated; copy or "
            "export it again."
        )
    return f"the bottom {rows} of its {height} rows ({share:.0%}) are filled in"


def _open_and_load(
    path: Path, max_pixels: int, draft_size: int | None = None, page: int = 0
) -> _DecodedImage:
    with open_regular_file(path) as stream:
        image = _open_image(stream, path)
        page_count = _tiff_page_count(image) if image.format == "TIFF" else 1
        animated = page_count == 1 and bool(getattr(image, "is_animated", False))
        if page:
            image.seek(page)
        check_pixel_count(image.width, image.height, max_pixels, path)
        original_size, original_mode = (image.width, image.height), image.mode
        factor = reduction_factor(image.width, image.height)
        if draft_size:
            image.draft(image.mode, (draft_size, draft_size))
        elif factor > 1:  # JPEG: decode at 1/2, 1/4 or 1/8 scale straight from the DCT
            image.draft(image.mode, (-(-image.width // factor), -(-image.height // factor)))
        image.load()
        jpeg_end_missing = image.format == "JPEG" and _jpeg_end_marker_missing(
            stream, stream.tell()
        )
        flat_rows, flat_value = _flat_bottom_rows(image)
        orientation = int(image.getexif().get(0x0112, 1))
        return _DecodedImage(
            image=_upright(_reduce_to_budget(image), orientation),
            file_format=image.format,
            original_mode=original_mode,
            exif_orientation=orientation,
            original_size=original_size,
            stored_height=image.height,
            page_count=page_count,
            animated=animated,
            flat_bottom_rows=flat_rows,
            flat_bottom_value=flat_value,
            jpeg_end_missing=jpeg_end_missing,
        )


def _reduce_to_budget(image: Image.Image) -> Image.Image:
    """Box-filter an image over :data:`WORKING_PIXELS` down by the smallest integer factor."""
    factor = reduction_factor(image.width, image.height)
    if factor == 1:
        return image
    LOGGER.info("reducing a %d×%d image by %d while decoding", image.width, image.height, factor)
    # Image.reduce averages pixel values, which is wrong for palette indices and unsupported
    # for bilevel and 16-bit modes: convert those first.
    if image.mode == "P":
        image = image.convert("RGBA")
    elif image.mode == "1":
        image = image.convert("L")
    elif image.mode.startswith("I;16"):
        image = image.convert("I")
    return image.reduce(factor)


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    """The image as a viewer shows it (EXIF orientation applied), as a new image."""
    method = _TRANSPOSE.get(orientation)
    return image.transpose(method) if method is not None else image.copy()


def _flat_bottom_rows(image: Image.Image, band: int = 64) -> tuple[int, Any]:
    """How many stored rows at the bottom hold one single value, and that value.

    Read in bands of ``band`` rows from the bottom up, so a large image is never copied whole.
    """
    width, height = image.size
    value = None
    flat = 0
    while flat < height:
        bottom = height - flat
        top = max(0, bottom - band)
        rows = np.asarray(image.crop((0, top, width, bottom)))
        if value is None:
            value = rows[-1, 0].copy()
        same = (rows == value).reshape(bottom - top, -1).all(axis=1)
        if not same.all():
            return flat + int(np.argmin(same[::-1])), value
        flat += bottom - top
    return flat, value


def _jpeg_end_marker_missing(stream: BinaryIO, decoded_up_to: int) -> bool:
    """True when a JPEG has no end-of-image marker after its last scan.

    libjpeg decodes a JPEG cut short and padded (e.g. with zeros) without complaint, so Pillow's
    strict mode misses it. Inside entropy-coded data every 0xFF byte is stuffed (0xFF00) or a
    restart marker, so an 0xFFD9 after the last start-of-scan can only be the real end marker.
    Only the last MiB before the point where the decoder stopped reading is searched (and a few
    bytes after it): a trailer after the image, even of gigabytes, is never read.
    """
    start = max(0, decoded_up_to - _JPEG_END_WINDOW)
    stream.seek(start)
    window = stream.read(decoded_up_to - start + 4096)
    last_scan = window.rfind(b"\xff\xda")
    if last_scan >= 0:
        return window.find(b"\xff\xd9", last_scan) < 0
    return b"\xff\xd9" not in window  # the window starts inside the last scan's data


def _open_image(stream: BinaryIO, path: Path) -> Image.Image:
    """``Image.open`` reads only the header, so the size is known before any pixel is decoded.

    Pillow reads through :class:`ClampedReader`: a chunk length of gigabytes in a small file
    must not become an allocation of gigabytes.
    """
    try:
        return Image.open(ClampedReader(stream))  # type: ignore[arg-type]
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(
            f"Pillow refused {path} as a possible decompression bomb ({error}). That is above "
            "Pillow's own hard limit (twice PIL.Image.MAX_IMAGE_PIXELS), which max_pixels= "
            "cannot lift; downscale the image with another tool first."
        ) from error
    except (UnidentifiedImageError, *_DECODE_ERRORS) as error:
        raise CorruptImageError(
            f"{path} starts like an image but Pillow cannot read its header ({error}); the file "
            "is damaged. Export or copy it again."
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
    image: Image.Image, original_mode: str, path: Path
) -> tuple[np.ndarray, dict[str, Any], tuple[str, ...]]:
    """One channel in [0, 1], the metadata describing how, and any warnings.

    ``image.mode`` may differ from ``original_mode`` when the image was reduced (bilevel to L,
    palette to RGBA, 16-bit to 32-bit integers); the arithmetic follows the mode at hand.
    """
    mode = image.mode
    metadata: dict[str, Any] = {"original_mode": original_mode}
    if mode == "F":
        pixels, warnings = _float_pixels(np.asarray(image), path)
        return pixels, {**metadata, "bits": 32}, warnings
    if mode == "I" or mode.startswith("I;16"):
        pixels, bits, warnings = _integer_pixels(np.asarray(image))
        return pixels, {**metadata, "bits": bits}, warnings
    if mode in ("1", "L"):
        grey = np.asarray(image.convert("L"), dtype=np.float32)
        grey /= np.float32(255.0)
        return grey, {**metadata, "bits": 1 if original_mode == "1" else 8}, ()
    warnings = _alpha_warnings(image)
    rgb = np.asarray(image.convert("RGBA").convert("RGB") if mode == "P" else image.convert("RGB"))
    pixels = luminance(rgb)
    pixels /= np.float32(255.0)
    return pixels, {**metadata, "bits": 8}, warnings


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
