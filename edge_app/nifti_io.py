"""NIfTI volumes (``.nii``, ``.nii.gz``, ``.hdr``/``.img`` pairs), read in bounded pieces.

nibabel (imported lazily) parses the header, from a prefix of at most ``NIFTI_HEADER_BYTES``;
the voxels are then read here, a few megabytes at a time, straight into the one float32 array
the slices share. So the declared size is checked before any voxel is read, a gzip bomb is
never inflated beyond the voxels the header declares (and the limits allow), and the peak
memory is that array plus one chunk: no float64 or reoriented copies of the whole volume.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from edge_app._optional import require
from edge_app.errors import CorruptImageError, InvalidVolumeError
from edge_app.film import Radiograph
from edge_app.limits import NIFTI_HEADER_BYTES, check_aspect_ratio, check_volume_size
from edge_app.sniff import open_regular_file
from edge_app.windowing import Window, display_volume, looks_like_hounsfield, slices_to_radiographs

_CHUNK_BYTES = 16 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_READ_ERRORS = (OSError, EOFError, zlib.error)


@dataclass(frozen=True)
class _Header:
    """What the loader needs from a NIfTI header, every value already validated."""

    shape: tuple[int, ...]
    dtype: np.dtype
    slope: float | None
    intercept: float | None
    affine: np.ndarray
    offset: int
    single_file: bool


def load_nifti(path: Path, window: str | Window, max_pixels: int) -> list[Radiograph]:
    nibabel = require("nibabel", "read NIfTI volumes")
    header = _read_header(nibabel, path)
    shape, warnings = _spatial_shape(header.shape, path)
    orientation = _orientation(nibabel, header.affine, path)
    (plane_width, plane_height), slice_count = _canonical_plane(shape, orientation)
    check_aspect_ratio(plane_width, plane_height, path)
    check_volume_size(plane_width * plane_height, slice_count, max_pixels, path)
    data = _read_voxels(header, shape, _data_path(path, header.single_file), path)
    # Reorienting to RAS and to slices are views of ``data``: nothing is copied. The axes then
    # point to the patient's Right, Anterior and Superior; each axial slice is shown as DICOM
    # viewers do (radiological convention): anterior at the top, the patient's right on the
    # viewer's left.
    canonical = nibabel.orientations.apply_orientation(data, orientation)
    volume = np.flip(np.transpose(canonical, (2, 1, 0)), axis=(1, 2))
    pixels, window_metadata, display_warnings = display_volume(
        volume, window, is_ct=looks_like_hounsfield(volume), monochrome1=False, in_place=True
    )
    metadata = {**window_metadata, "orientation": "RAS, axial slices inferior to superior"}
    sources = [str(path)] * volume.shape[0]
    return slices_to_radiographs(pixels, sources, "nifti", metadata, warnings + display_warnings)


@contextmanager
def _open_maybe_gzip(path: Path) -> Iterator[BinaryIO]:
    with open_regular_file(path) as stream:
        magic = stream.read(2)
        stream.seek(0)
        if magic != _GZIP_MAGIC:
            yield stream
            return
        with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
            yield unzipped  # type: ignore[misc]


def _read_header(nibabel: Any, path: Path) -> _Header:
    """The header (NIfTI-1 or -2, either byte order), parsed by nibabel from the first
    ``NIFTI_HEADER_BYTES`` (decompressed) bytes only, and checked."""
    try:
        with _open_maybe_gzip(path) as stream:
            prefix = stream.read(NIFTI_HEADER_BYTES)
    except _READ_ERRORS as error:
        raise _corrupt(path, "its header cannot be read", error) from error
    version_two = prefix[4:8] in (b"n+2\x00", b"ni2\x00")
    single_file = prefix[344:348] == b"n+1\x00" or prefix[4:8] == b"n+2\x00"
    header_class = nibabel.Nifti2Header if version_two else nibabel.Nifti1Header
    try:
        parsed = header_class.from_fileobj(io.BytesIO(prefix), check=True)
        slope, intercept = parsed.get_slope_inter()
        header = _Header(
            shape=tuple(int(size) for size in parsed.get_data_shape()),
            dtype=parsed.get_data_dtype(),
            slope=slope,
            intercept=intercept,
            affine=np.asarray(parsed.get_best_affine(), dtype=np.float64),
            offset=_voxel_offset(float(parsed["vox_offset"]), len(parsed.binaryblock), single_file),
            single_file=single_file,
        )
    except CorruptImageError as error:
        raise CorruptImageError(f"{path}: {error}") from error
    # nibabel validates what it parses and reports problems with several exception types
    # (HeaderDataError, ValueError, struct errors...); for bytes from a file, each means the same:
    # a damaged header.
    except Exception as error:  # noqa: BLE001
        raise _corrupt(path, "nibabel cannot parse its header", error) from error
    return header


def _voxel_offset(offset: float, header_size: int, single_file: bool) -> int:
    lowest = header_size if single_file else 0
    if not lowest <= offset <= NIFTI_HEADER_BYTES:  # NaN fails this too
        raise CorruptImageError(
            f"the header puts the voxel data at byte {offset:,.0f}; FractureEdge reads at most "
            f"{NIFTI_HEADER_BYTES:,} bytes of header and extensions. The file is damaged or "
            "carries unusually large extensions; export the volume again without them."
        )
    return int(offset)


def _data_path(path: Path, single_file: bool) -> Path:
    if single_file:
        return path
    name = path.name
    for header_suffix, data_suffix in ((".hdr.gz", ".img.gz"), (".hdr", ".img")):
        if name.lower().endswith(header_suffix):
            stem = name[: -len(header_suffix)]
            candidates = [path.with_name(stem + data_suffix), path.with_name(stem + ".img")]
            return next((c for c in candidates if c.exists()), candidates[0])
    return path.with_suffix(".img")


def _spatial_shape(
    shape: tuple[int, ...], path: Path
) -> tuple[tuple[int, int, int], tuple[str, ...]]:
    """The three spatial sizes to read (a 2-D image is one slice) and any warning."""
    if len(shape) < 2 or any(size > 1 for size in shape[4:]) or min(shape) < 1:
        raise InvalidVolumeError(
            f"{path} has shape {shape}; FractureEdge reads 2-D, 3-D and 4-D NIfTI (the first "
            "volume of a 4-D series). Extract one 3-D volume first (e.g. fslroi)."
        )
    warnings: tuple[str, ...] = ()
    if len(shape) > 3 and shape[3] > 1:
        warnings = (f"4-D: used the first of {shape[3]} volumes",)
    spatial = (shape + (1,))[:3]
    return (spatial[0], spatial[1], spatial[2]), warnings


def _orientation(nibabel: Any, affine: np.ndarray, path: Path) -> np.ndarray:
    """For each stored axis, the RAS axis it becomes and its direction (nibabel's ornt)."""
    try:
        if not np.isfinite(affine).all():
            raise ValueError("the affine holds NaN or infinite values")
        orientation = nibabel.orientations.io_orientation(affine)
        if np.isnan(orientation).any():
            raise ValueError("the affine does not map the three axes to three directions")
        return orientation
    except (ValueError, np.linalg.LinAlgError) as error:
        raise _corrupt(path, "its orientation (affine) is unusable", error) from error


def _canonical_plane(
    shape: tuple[int, int, int], orientation: np.ndarray
) -> tuple[tuple[int, int], int]:
    """(width, height) of an axial slice and the slice count, once in RAS orientation."""
    # RAS axis 2 (superior) is the slice axis; a slice is then (A rows) × (R columns).
    axis_of = {int(orientation[axis, 0]): axis for axis in range(3)}
    return (shape[axis_of[0]], shape[axis_of[1]]), shape[axis_of[2]]


def _read_voxels(
    header: _Header, shape: tuple[int, int, int], data_path: Path, path: Path
) -> np.ndarray:
    """The first volume's voxels as float32 (scaled by the header's slope and intercept), in
    stored (Fortran) order, read a chunk at a time."""
    dtype = header.dtype
    if dtype.kind not in "uif" or dtype.fields is not None:
        raise InvalidVolumeError(
            f"{path} stores its voxels as {dtype}; FractureEdge reads integer and floating-point "
            "NIfTI only. Convert the volume (e.g. fslmaths -odt float)."
        )
    slope, intercept = header.slope, header.intercept
    data = np.empty(shape, dtype=np.float32, order="F")
    flat = data.reshape(-1, order="F")  # a view: the file's order is Fortran order
    per_chunk = max(1, _CHUNK_BYTES // dtype.itemsize)
    non_finite = 0
    try:
        with _open_maybe_gzip(data_path) as stream:
            _skip(stream, header.offset)
            for start in range(0, flat.size, per_chunk):
                count = min(per_chunk, flat.size - start)
                raw = _read_exactly(stream, count * dtype.itemsize, path)
                values = np.frombuffer(raw, dtype=dtype).astype(np.float32)
                if slope is not None:
                    values *= np.float32(slope)
                    values += np.float32(intercept or 0.0)
                non_finite += int(values.size - np.count_nonzero(np.isfinite(values)))
                flat[start : start + count] = values
    except _READ_ERRORS as error:
        raise _corrupt(path, "its voxel data cannot be read", error) from error
    if non_finite:
        raise InvalidVolumeError(
            f"{path} holds {non_finite:,} NaN or infinite values, which FractureEdge does not "
            "replace silently. Fix the file (e.g. set them to the background value) and retry."
        )
    return data


def _skip(stream: BinaryIO, count: int) -> None:
    while count > 0:
        skipped = len(stream.read(min(count, _CHUNK_BYTES)))
        if skipped == 0:
            raise EOFError("the file ends inside its header")
        count -= skipped


def _read_exactly(stream: BinaryIO, count: int, path: Path) -> bytes:
    data = stream.read(count)
    if len(data) < count:
        raise CorruptImageError(
            f"{path}: the voxel data end early (the header declares more voxels than the file "
            "holds); the file is truncated. Export it again."
        )
    return data


def _corrupt(path: Path, what: str, error: BaseException) -> CorruptImageError:
    return CorruptImageError(
        f"{path} looks like NIfTI but {what} ({type(error).__name__}: {error}). The file is "
        "damaged; export it again."
    )
