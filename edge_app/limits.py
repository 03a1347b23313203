"""The bounds the loader enforces before it decodes anything, in one place.

Each check runs on sizes read from a file's header, so a refusal costs no pixel memory. The
values and their reasons are listed in ``docs/security.md`` ("Limits").
"""

from __future__ import annotations

from pathlib import Path

from edge_app.errors import ImageTooLargeError

DEFAULT_MAX_PIXELS = 64_000_000
# A volume may hold this many times max_pixels voxels (64 million × 16 ≈ 1 billion by default).
VOLUME_PIXEL_FACTOR = 16
# A DICOM file without the 128-byte preamble is recognised only if its elements reach the pixel
# data within this prefix; the sniff never reads further (a 64 MB file of zeros took 17 s).
HEADERLESS_DICOM_SNIFF_BYTES = 1024 * 1024


def check_max_pixels(max_pixels: int) -> None:
    if int(max_pixels) < 1:
        raise ValueError(f"max_pixels must be a positive number of pixels, got {max_pixels}")


def check_pixel_count(width: int, height: int, max_pixels: int, source: Path) -> None:
    pixels = width * height
    if pixels > max_pixels:
        raise ImageTooLargeError(
            f"{source} is {width}×{height} = {pixels:,} pixels, more than the limit of "
            f"{max_pixels:,}. If you trust the file, raise the limit: max_pixels={pixels}."
        )


def check_volume_size(plane_pixels: int, slice_count: int, max_pixels: int, source: Path) -> None:
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
