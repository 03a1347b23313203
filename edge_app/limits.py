"""The bounds the loader enforces before it decodes anything, in one place.

Each check runs on sizes read from a file's header, so a refusal costs no pixel memory. The
values and their reasons are listed in ``docs/security.md`` ("Limits").
"""

from __future__ import annotations

import math
from pathlib import Path

from edge_app.errors import ImageShapeError, ImageTooLargeError

# The stored size a 2-D image (or one slice) may have, checked from the header. At the 4 bytes
# a pixel Pillow uses for RGB, RGBA, LA, CMYK, I and F, decoding 64 MP takes 256 MB.
DEFAULT_MAX_PIXELS = 64_000_000
# Images stored larger are reduced while decoding (JPEG: DCT scaling; others: box filter by an
# integer factor) to at most this many pixels: 4096 × 4096, more than any detector's native
# size and far more than the model's input (a few hundred pixels a side), so what the model
# sees barely changes, while the float32 image and its copies stay within 64 MB each.
WORKING_PIXELS = 4096 * 4096
# The long side may be at most this many times the short side. A long-leg or full-spine film
# is about 1:4; 1 × 1,000,000 is no radiograph, and letterboxing it gives a line.
MAX_ASPECT_RATIO = 10
# pydicom parses zero bytes as empty elements, 8 at a time (64 MB of them: a minute); this many
# zero-only element reads in a row end the read of a file with a DICOM preamble.
DICOM_ZERO_RUN_LIMIT = 4096
# A NIfTI header and its extensions are parsed from at most this many (decompressed) bytes; the
# voxels must start within them. Real headers are 352 bytes plus a few kilobytes of extensions.
NIFTI_HEADER_BYTES = 1024 * 1024
# A study (a folder, a volume, a multi-page TIFF) may hold at most this many images: each
# becomes an object, a prediction and a line of output.
MAX_STUDY_IMAGES = 4096
# A truncated image whose filled-in part (the flat rows after the data end) is more than this
# share of its height holds too little film to judge: refused, not warned about.
MAX_MISSING_SHARE = 0.5
# A film whose pixels (in [0, 1]) vary by a standard deviation below one 8-bit grey level holds
# no image content: all black, all white, one flat grey. It gets no verdict.
MIN_CONTENT_STD = 1 / 255
# A study (a volume, a folder, a multi-page TIFF) may hold this many times max_pixels pixels
# together, as decoded: 128 million by default, 512 MB as float32, all of which the caller holds
# at once. (It was 16, about a billion voxels: 4 GB as float32 before any copy.)
VOLUME_PIXEL_FACTOR = 2
# A DICOM file without the 128-byte preamble is recognised only if its elements reach the pixel
# data within this prefix; the sniff never reads further (a 64 MB file of zeros took 17 s).
HEADERLESS_DICOM_SNIFF_BYTES = 1024 * 1024


def check_max_pixels(max_pixels: int) -> None:
    if int(max_pixels) < 1:
        raise ValueError(f"max_pixels must be a positive number of pixels, got {max_pixels}")


def check_pixel_count(width: int, height: int, max_pixels: int, source: Path) -> None:
    """Refuse, from the header, an image over ``max_pixels`` or out of proportion."""
    pixels = width * height
    if pixels > max_pixels:
        raise ImageTooLargeError(
            f"{source} is {width}×{height} = {pixels:,} pixels, more than the limit of "
            f"{max_pixels:,}. If you trust the file, raise the limit: max_pixels={pixels}."
        )
    check_aspect_ratio(width, height, source)


def check_aspect_ratio(width: int, height: int, source: Path) -> None:
    short, long = sorted((int(width), int(height)))
    if short < 1 or long > MAX_ASPECT_RATIO * short:
        ratio = f"{long / short:,.0f}:1" if short >= 1 else "degenerate"
        raise ImageShapeError(
            f"{source} is {width:,}×{height:,} pixels, an aspect ratio of {ratio}; FractureEdge "
            f"reads images whose long side is at most {MAX_ASPECT_RATIO} times the short side "
            "(a long-leg film is about 4:1). This is no radiograph, or it was exported wrongly; "
            "export the image again."
        )


def reduction_factor(width: int, height: int, budget: int = WORKING_PIXELS) -> int:
    """The smallest integer ``k`` such that a ``width`` × ``height`` image reduced by ``k``
    (each side rounded up) holds at most ``budget`` pixels."""
    factor = max(1, math.isqrt(width * height // budget))
    while -(-width // factor) * -(-height // factor) > budget:
        factor += 1
    return factor


def check_volume_size(plane_pixels: int, slice_count: int, max_pixels: int, source: Path) -> None:
    if plane_pixels > max_pixels:
        raise ImageTooLargeError(
            f"{source} has slices of {plane_pixels:,} pixels, more than the limit of "
            f"{max_pixels:,}. If you trust the file, raise the limit: max_pixels={plane_pixels}."
        )
    check_study_count(slice_count, source)
    voxels = plane_pixels * slice_count
    if voxels > VOLUME_PIXEL_FACTOR * max_pixels:
        needed = -(-voxels // VOLUME_PIXEL_FACTOR)
        raise ImageTooLargeError(
            f"{source} holds {voxels:,} voxels ({slice_count} slices), more than the volume "
            f"limit of {VOLUME_PIXEL_FACTOR} × max_pixels = {VOLUME_PIXEL_FACTOR * max_pixels:,}. "
            f"If you trust the file, raise the limit: max_pixels={needed}."
        )


def check_study_count(image_count: int, source: Path) -> None:
    if image_count > MAX_STUDY_IMAGES:
        raise ImageTooLargeError(
            f"{source} holds more than {MAX_STUDY_IMAGES:,} images (slices, pages or files), "
            "the most a study may hold. Open a subset at a time (one series, one folder of "
            "views)."
        )


def check_study_size(image_count: int, total_pixels: int, max_pixels: int, source: Path) -> None:
    """Refuse a study whose images, as decoded, hold too many pixels together."""
    check_study_count(image_count, source)
    limit = VOLUME_PIXEL_FACTOR * max_pixels
    if total_pixels > limit:
        needed = -(-total_pixels // VOLUME_PIXEL_FACTOR)
        raise ImageTooLargeError(
            f"{source} holds {image_count} images of {total_pixels:,} pixels together (as "
            f"decoded), more than the study limit of {VOLUME_PIXEL_FACTOR} × max_pixels = "
            f"{limit:,} (about {limit * 4 / 1e6:,.0f} MB as float32), which bounds the memory a "
            "study holds at once. Open fewer images at a time or, if you trust the files, raise "
            f"the limit: max_pixels={needed}."
        )
