"""Volumes, read slice by slice: multi-frame DICOM, a folder holding one DICOM series, NIfTI.

Each slice becomes a :class:`~edge_app.film.Radiograph` carrying the exploratory warning; the
volume is windowed as a whole (:mod:`edge_app.windowing`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_app._optional import require
from edge_app.dicom_io import (
    check_dicom_image,
    dicom_frame_count,
    dicom_metadata,
    dicom_shape,
    dicom_values,
    read_dicom,
)
from edge_app.errors import CorruptImageError, ImageReadError, InvalidVolumeError
from edge_app.film import Radiograph, check_finite
from edge_app.limits import check_volume_size
from edge_app.windowing import Window, display_volume, looks_like_hounsfield, slices_to_radiographs


def load_dicom_volume(path: Path, window: str | Window, max_pixels: int) -> list[Radiograph]:
    """A multi-frame (or single-frame) DICOM file as a volume, one radiograph per frame."""
    dataset = read_dicom(path)
    photometric = check_dicom_image(dataset, path)
    (rows, columns), frames = dicom_shape(dataset, path), dicom_frame_count(dataset)
    check_volume_size(rows * columns, frames, max_pixels, path)
    volume = dicom_values(dataset, path, photometric).reshape(frames, rows, columns)
    pixels, window_metadata, warnings = display_volume(
        volume, window, is_ct=_is_ct(dataset, volume), monochrome1=photometric == "MONOCHROME1"
    )
    metadata = {**dicom_metadata(dataset, photometric), **window_metadata}
    return slices_to_radiographs(pixels, [str(path)] * frames, "dicom", metadata, warnings)


def _is_ct(dataset: Any, volume: np.ndarray) -> bool:
    modality = str(dataset.get("Modality", "")).upper()
    return modality == "CT" if modality else looks_like_hounsfield(volume)


def read_series_headers(files: Sequence[Path]) -> list[tuple[Path, Any]]:
    return [(file, read_dicom(file, header_only=True)) for file in files]


def load_dicom_series(
    headers: list[tuple[Path, Any]], folder: Path, window: str | Window, max_pixels: int
) -> list[Radiograph]:
    series = _single_series(headers, folder)
    ordered, order_warnings = _sort_slices(series)
    first_file, first = ordered[0]
    rows, columns = dicom_shape(first, first_file)
    check_volume_size(rows * columns, len(ordered), max_pixels, folder)
    volume, photometric = _read_series_values(ordered, rows, columns)
    pixels, window_metadata, warnings = display_volume(
        volume, window, is_ct=_is_ct(first, volume), monochrome1=photometric == "MONOCHROME1"
    )
    metadata = {
        **dicom_metadata(first, photometric),
        **window_metadata,
        "series_instance_uid": str(first.get("SeriesInstanceUID", "")),
        "folder": str(folder),
    }
    sources = [str(file) for file, _ in ordered]
    return slices_to_radiographs(
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
        dataset = read_dicom(file)
        photometric = check_dicom_image(dataset, file)
        if dicom_frame_count(dataset) > 1 or dicom_shape(dataset, file) != (rows, columns):
            raise InvalidVolumeError(
                f"{file} does not fit the series in its folder (it is multi-frame or not "
                f"{rows}×{columns}). Move it out, or open it on its own with load_study()."
            )
        volume[index] = dicom_values(dataset, file, photometric)
    return volume, photometric


# ---------------------------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------------------------


def load_nifti(path: Path, window: str | Window, max_pixels: int) -> list[Radiograph]:
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
    check_finite(data, path)
    # After as_closest_canonical the axes point to the patient's Right, Anterior and Superior.
    # Show each axial slice as DICOM viewers do (radiological convention): anterior at the top,
    # the patient's right on the viewer's left.
    volume = np.flip(np.transpose(data, (2, 1, 0)), axis=(1, 2))
    pixels, window_metadata, warnings = display_volume(
        volume, window, is_ct=looks_like_hounsfield(volume), monochrome1=False
    )
    metadata = {**window_metadata, "orientation": "RAS, axial slices inferior to superior"}
    sources = [str(path)] * volume.shape[0]
    return slices_to_radiographs(pixels, sources, "nifti", metadata, shape_warnings + warnings)


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
    check_volume_size(plane_pixels, slice_count, max_pixels, path)
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
