"""Tell DICOM, NIfTI, 2-D images and folders apart from a file's content, not its name."""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

from PIL import Image

from edge_app._optional import require
from edge_app.errors import EmptyFileError, ImageNotFoundError, ImageReadError, NotAnImageError

LOGGER = logging.getLogger(__name__)

SUPPORTED_FORMATS = (
    "2-D images Pillow can open (PNG, JPEG, TIFF, BMP, GIF, WebP, ...), DICOM files, "
    "NIfTI volumes (.nii, .nii.gz) and folders of DICOM series or images"
)
_IMAGE_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",
    b"MM\x00*",
)
HEADER_BYTES = 540  # the NIfTI-2 header; NIfTI-1 needs 348, the DICOM magic 132


def sniff_format(path: str | Path) -> str:
    """Return ``"dicom"``, ``"nifti"``, ``"image"`` or ``"directory"`` from the file's content.

    Raises :class:`ImageNotFoundError` for a missing path, :class:`EmptyFileError` for a
    zero-byte file and :class:`NotAnImageError` for anything else.
    """
    path = Path(path)
    if path.is_dir():
        return "directory"
    header = read_header(path)
    if header[128:132] == b"DICM":
        return "dicom"
    if is_nifti_header(uncompressed_header(path, header)):
        return "nifti"
    if _pillow_identifies(path) or header.startswith(_IMAGE_SIGNATURES):
        return "image"
    if path.suffix.lower() == ".dcm" and _reads_as_headerless_dicom(path):
        return "dicom"
    raise NotAnImageError(
        f"{path} is not a file FractureEdge can read (it starts with {header[:8]!r}). "
        f"Supported: {SUPPORTED_FORMATS}."
    )


def read_header(path: Path) -> bytes:
    """The first :data:`HEADER_BYTES` bytes of a file, with the failures users meet named."""
    try:
        with path.open("rb") as stream:
            header = stream.read(HEADER_BYTES)
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


def uncompressed_header(path: Path, header: bytes) -> bytes:
    """The first bytes after gunzipping, for ``.nii.gz``; the header itself otherwise."""
    if not header.startswith(b"\x1f\x8b"):
        return header
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read(HEADER_BYTES)
    except (OSError, EOFError, zlib.error):
        return b""


def is_nifti_header(header: bytes) -> bool:
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
