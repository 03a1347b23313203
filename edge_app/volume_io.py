"""DICOM volumes, read slice by slice: multi-frame files and folders holding one series.

Each slice becomes a :class:`~edge_app.film.Radiograph` carrying the exploratory warning; the
volume is windowed as a whole (:mod:`edge_app.windowing`). NIfTI is in :mod:`edge_app.nifti_io`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.dicom_io import (
    check_dicom_image,
    check_photometric,
    dicom_errors,
    dicom_frame_count,
    dicom_metadata,
    dicom_shape,
    dicom_values,
    frame_values,
    iter_dicom_frames,
    read_dicom,
)
from edge_app.errors import CorruptImageError, ImageReadError, InvalidVolumeError
from edge_app.film import Radiograph
from edge_app.limits import check_aspect_ratio, check_volume_size
from edge_app.windowing import Window, display_volume, looks_like_hounsfield, slices_to_radiographs


def load_dicom_volume(path: Path, window: str | Window, max_pixels: int) -> list[Radiograph]:
    """A multi-frame (or single-frame) DICOM file as a volume, one radiograph per frame.

    The frames are decoded one at a time from the file into the float32 volume, which is then
    windowed in place: the peak is that volume and one frame.
    """
    with dicom_errors(path):
        return _load_dicom_volume(path, window, max_pixels)


def _load_dicom_volume(path: Path, window: str | Window, max_pixels: int) -> list[Radiograph]:
    header = read_dicom(path, header_only=True)
    photometric = check_photometric(header, path)
    (rows, columns), frames = dicom_shape(header, path), dicom_frame_count(header)
    check_aspect_ratio(columns, rows, path)
    check_volume_size(rows * columns, frames, max_pixels, path)
    volume = np.empty((frames, rows, columns), dtype=np.float32)
    decoded = 0
    for index, stored in enumerate(iter_dicom_frames(path, header)):
        if index >= frames or stored.shape[:2] != (rows, columns):
            raise CorruptImageError(
                f"{path}: its pixel data do not match the header ({frames} frames of "
                f"{rows}×{columns}). The file is damaged; export it again."
            )
        volume[index] = frame_values(stored, header, index, photometric, path)
        decoded += 1
    if decoded != frames:
        raise CorruptImageError(
            f"{path}: the header declares {frames} frames but the pixel data hold {decoded}. "
            "The file is truncated; export it again."
        )
    pixels, window_metadata, warnings = display_volume(
        volume,
        window,
        is_ct=_is_ct(header, volume),
        monochrome1=photometric == "MONOCHROME1",
        in_place=True,
    )
    metadata = {**dicom_metadata(header, photometric), **window_metadata}
    return slices_to_radiographs(pixels, [str(path)] * frames, "dicom", metadata, warnings)


def _is_ct(dataset: Any, volume: np.ndarray) -> bool:
    modality = str(dataset.get("Modality", "")).upper()
    return modality == "CT" if modality else looks_like_hounsfield(volume)


def read_series_headers(files: Sequence[Path]) -> list[tuple[Path, Any]]:
    headers = []
    for file in files:
        with dicom_errors(file):
            headers.append((file, read_dicom(file, header_only=True)))
    return headers


def load_dicom_series(
    headers: list[tuple[Path, Any]], folder: Path, window: str | Window, max_pixels: int
) -> list[Radiograph]:
    """The slices of one series (the files' headers given), sorted along the slice normal."""
    with dicom_errors(folder):
        return _load_dicom_series(headers, folder, window, max_pixels)


def _load_dicom_series(
    headers: list[tuple[Path, Any]], folder: Path, window: str | Window, max_pixels: int
) -> list[Radiograph]:
    series = _single_series(headers, folder)
    ordered, order_warnings = _sort_slices(series)
    first_file, first = ordered[0]
    rows, columns = dicom_shape(first, first_file)
    check_volume_size(rows * columns, len(ordered), max_pixels, folder)
    volume, photometric = _read_series_values(ordered, rows, columns)
    pixels, window_metadata, warnings = display_volume(
        volume,
        window,
        is_ct=_is_ct(first, volume),
        monochrome1=photometric == "MONOCHROME1",
        in_place=True,
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
