"""Open input files safely, and tell DICOM, NIfTI, 2-D images and folders apart by content.

Only regular files are opened: a FIFO blocks the reader until someone writes to it, and a
device such as ``/dev/zero`` never ends, so both (and sockets, and links to any of them) are
refused from ``stat`` before anything is read. Every sniff reads a bounded prefix.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import stat
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from edge_app._optional import require
from edge_app.errors import (
    CorruptImageError,
    EmptyFileError,
    ImageNotFoundError,
    ImageReadError,
    NotAnImageError,
    NotARegularFileError,
)
from edge_app.library_logs import quiet_library_logs
from edge_app.limits import HEADERLESS_DICOM_SNIFF_BYTES

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

    Raises :class:`ImageNotFoundError` for a missing path (or a broken link),
    :class:`NotARegularFileError` for a FIFO, device or socket, :class:`EmptyFileError` for a
    zero-byte file and :class:`NotAnImageError` for anything else.
    """
    path = Path(path)
    if path.is_dir():
        return "directory"
    with open_regular_file(path) as stream:
        header = _read_header(stream, path)
        if header[128:132] == b"DICM":
            return "dicom"
        if is_nifti_header(_uncompressed_header(stream, header)):
            return "nifti"
        if _pillow_identifies(stream, path) or header.startswith(_IMAGE_SIGNATURES):
            return "image"
        if path.suffix.lower() == ".dcm" and _reads_as_headerless_dicom(stream, path):
            return "dicom"
    raise NotAnImageError(
        f"{path} is not a file FractureEdge can read (it starts with {header[:8]!r}). "
        f"Supported: {SUPPORTED_FORMATS}."
    )


def open_regular_file(path: Path) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file (links followed).

    Refuses FIFOs, devices, sockets and folders, and links to them, with
    :class:`NotARegularFileError`, checked on the path before opening and again on the open
    descriptor (the path may have been replaced in between). ``O_NONBLOCK`` keeps even that
    open from waiting for a FIFO's writer.
    """
    _refuse_non_regular(path, _stat(path).st_mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        raise _os_error(path, error) from error
    try:
        _refuse_non_regular(path, os.fstat(descriptor).st_mode)
    except BaseException:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "rb")


class ClampedReader:
    """A read-only view of an open regular file whose ``read(n)`` never asks for more than the
    file still holds.

    Parsers trust length fields: pydicom reads a value of the length the element declares, and
    Python allocates the whole request before reading. A 2 GB length in a 1 MB file then costs
    1 MB (and the parser meets the end of the file) instead of a 2 GB allocation.

    With ``zero_run_limit``, that many small reads in a row that return only zero bytes raise
    :class:`CorruptImageError`: pydicom parses a zero-filled region as empty elements, eight
    bytes at a time, which took a minute for 64 MB; no DICOM header holds such a run.
    """

    def __init__(
        self, stream: BinaryIO, source: Path | None = None, zero_run_limit: int | None = None
    ) -> None:
        self._stream = stream
        self._size = os.fstat(stream.fileno()).st_size
        self._source = source
        self._zero_run_limit = zero_run_limit
        self._zero_run = 0

    def read(self, size: int | None = -1) -> bytes:
        remaining = max(0, self._size - self._stream.tell())
        if size is None or size < 0 or size > remaining:
            size = remaining
        data = self._stream.read(size)
        if self._zero_run_limit is not None and 0 < len(data) <= 16:
            self._zero_run = self._zero_run + 1 if not any(data) else 0
            if self._zero_run > self._zero_run_limit:
                raise CorruptImageError(
                    f"{self._source}: a long run of zero bytes stands where DICOM elements "
                    "belong; the file is padded with zeros or damaged. Export it again."
                )
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a regular file (e.g. "a FIFO (named pipe), not a regular
    file"), or None when it can: what a folder listing says about an entry it skips."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return _broken_link(path) if path.is_symlink() else "missing"
    except OSError as error:
        return f"unreadable ({error.strerror or error})"
    kind = _special_kind(path, mode)
    if kind is not None:
        return f"{kind}, not a regular file"
    if not os.access(path, os.R_OK):
        return "unreadable (permission denied)"
    return None


_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def _special_kind(path: Path, mode: int) -> str | None:
    """What a non-regular file is (naming the link it was reached through), or None."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), "a special file")
    if path.is_symlink():
        kind += f" (through the link to {os.path.realpath(path)})"
    return kind


def _broken_link(path: Path) -> str:
    return f"a broken link (to {os.readlink(path)}, which does not exist)"


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as error:
        raise _os_error(path, error) from error


def _os_error(path: Path, error: OSError) -> ImageReadError:
    if isinstance(error, FileNotFoundError) and path.is_symlink():
        return ImageNotFoundError(f"{path} is {_broken_link(path)}. Fix the link or copy the file.")
    if isinstance(error, FileNotFoundError):
        return ImageNotFoundError(
            f"{path} does not exist. Check the spelling; relative paths start from {Path.cwd()}."
        )
    return ImageReadError(
        f"Cannot read {path}: {error.strerror or error}. Check that the file is readable."
    )


def _refuse_non_regular(path: Path, mode: int) -> None:
    kind = _special_kind(path, mode)
    if kind is not None:
        raise NotARegularFileError(
            f"{path} is {kind}, not a regular file. FractureEdge opens regular files only: "
            "reading a pipe or a device can block forever or never end. Copy the image into a "
            "file and open that."
        )


def _read_header(stream: BinaryIO, path: Path) -> bytes:
    """The first :data:`HEADER_BYTES` bytes of a file, with the failures users meet named."""
    try:
        header = stream.read(HEADER_BYTES)
    except OSError as error:
        raise _os_error(path, error) from error
    if not header:
        raise EmptyFileError(
            f"{path} is empty (0 bytes); the copy or download probably failed. Copy it again."
        )
    return header


def _uncompressed_header(stream: BinaryIO, header: bytes) -> bytes:
    """The first bytes after gunzipping, for ``.nii.gz``; the header itself otherwise."""
    if not header.startswith(b"\x1f\x8b"):
        return header
    stream.seek(0)
    try:
        with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
            return unzipped.read(HEADER_BYTES)  # bounded: a bomb is never inflated here
    except (OSError, EOFError, zlib.error):
        return b""


def is_nifti_header(header: bytes) -> bool:
    return header[344:348] in (b"n+1\x00", b"ni1\x00") or header[4:8] in (b"n+2\x00", b"ni2\x00")


def _pillow_identifies(stream: BinaryIO, path: Path) -> bool:
    stream.seek(0)
    try:
        with Image.open(ClampedReader(stream)):  # type: ignore[arg-type]  # the header only
            return True
    except Image.DecompressionBombError:
        return True  # an image, only too large: loading it reports that
    # Pillow's plugins raise many types on bytes that are not theirs (see image_io); each means
    # "not an image Pillow reads", which the caller reports.
    except Exception as error:  # noqa: BLE001
        LOGGER.debug("Pillow does not identify %s: %s", path, error)
        return False


# A dataset without the 128-byte preamble starts with its lowest group: the file meta (0002)
# or, without one, a group such as 0008 (identification). Zeros, text and other formats fail
# this two-byte test before pydicom is asked to parse anything.
_FIRST_GROUPS = frozenset(
    group.to_bytes(2, order) for group in range(0x0002, 0x0030, 2) for order in ("little", "big")
)
_PIXEL_DATA_TAGS = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")  # (7FE0,0010) LE, BE


def _reads_as_headerless_dicom(stream: BinaryIO, path: Path) -> bool:
    """True when the first :data:`HEADERLESS_DICOM_SNIFF_BYTES` parse as DICOM elements that
    reach the pixel data; the rest of the file is never read here."""
    stream.seek(0)
    prefix = stream.read(HEADERLESS_DICOM_SNIFF_BYTES)
    if prefix[:2] not in _FIRST_GROUPS:
        return False
    pydicom = require("pydicom", "read DICOM files")
    buffer = io.BytesIO(prefix)
    try:
        with quiet_library_logs("pydicom"):
            pydicom.dcmread(buffer, force=True, stop_before_pixels=True)
    # A forced read of arbitrary bytes fails in many ways (struct, key, value, EOF errors...);
    # any of them means "not DICOM", which the caller reports.
    except Exception as error:  # noqa: BLE001
        LOGGER.debug("pydicom cannot read %s even with force=True: %s", path, error)
        return False
    # stop_before_pixels leaves the buffer at the pixel data element, if it was reached.
    position = buffer.tell()
    return prefix[position : position + 4] in _PIXEL_DATA_TAGS
