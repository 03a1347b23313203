"""Read radiographs (and, for exploration, CT/MRI slices) into 2-D float arrays in [0, 1].

Every input becomes a :class:`Radiograph`: one channel, float32, 0 = black, bone bright as on a
normal X-ray display. :func:`load_study` is what the app calls; it accepts

* a 2-D image: JPEG, PNG or anything else Pillow opens (:func:`load_radiograph`);
* a DICOM file, recognised by the ``DICM`` magic at byte 128 whatever its extension (a ``.dcm``
  file without that preamble is accepted when pydicom finds pixel data in its first MiB);
* a NIfTI volume (``.nii``/``.nii.gz``), a multi-frame DICOM, or a folder holding one DICOM
  series (:func:`load_volume`, one :class:`Radiograph` per slice);
* a folder of 2-D images (each image, sorted by file name).

The readers live in their own modules, below this one: :mod:`edge_app.sniff` (format from
content), :mod:`edge_app.image_io` (Pillow), :mod:`edge_app.dicom_io`, :mod:`edge_app.volume_io`
(multi-frame DICOM, DICOM series, NIfTI) with :mod:`edge_app.windowing`, on top of
:mod:`edge_app.film` (the :class:`Radiograph` type and shared pixel arithmetic) and
:mod:`edge_app.limits` (every bound checked before decoding). Import from this module.

CT and MRI are read slice by slice. The model is 2-D and was trained on radiographs; a slice is
not a radiograph, so results on slices are exploratory, and every slice carries a warning that
says so.

Decisions worth knowing:

* **Bit depth.** 8-bit images are divided by 255 (no contrast stretching). Integer images with
  more bits (``I;16``, ``I``) are divided by ``2**bits - 1`` for the smallest ``bits`` in
  8, 10, 12, 14, 16 (or more, for 32-bit data) that holds the image's maximum: a 16-bit PNG whose
  brightest pixel is 4000 is taken as 12-bit and divided by 4095. PNG files rarely record their
  real bit depth, and detectors store 10-16 bits in 16-bit containers, so the stored maximum is
  the best evidence available; the bits used are in ``metadata["bits"]``. Integer images with
  negative values and float images outside [0, 1] are min-max scaled, with a warning.
* **Colour.** Colour becomes luminance with the ITU-R BT.601 weights (0.299 R + 0.587 G +
  0.114 B, as Pillow's ``convert("L")``) computed in float, without rounding to 8 bits.
* **Alpha** is dropped, not composited: the stored colour of each pixel is used as if opaque
  (radiographs carry no meaningful transparency, and compositing would invent a background).
  When some pixels are transparent a warning says so.
* **EXIF orientation** is applied, so the array is the image as a viewer shows it.
* **Truncated files** are decoded strictly first; if Pillow reports truncation, they are decoded
  again tolerantly and the radiograph carries a warning starting with ``"truncated"`` that says
  how many rows at the bottom are filled in. A JPEG with no end-of-image marker after its last
  scan (cut short and padded, which libjpeg decodes without complaint), or whose bottom rows
  are libjpeg's flat fill grey (data that end early, then an end marker), gets the same warning.
  When the filled-in rows are more than ``MAX_MISSING_SHARE`` (half) of the image, too little
  film is left: :class:`EmptyImageError`.
* **Films without content** (pixels whose standard deviation is below one 8-bit grey level:
  all black, all white, one flat grey, a blank decode) raise :class:`EmptyImageError`: they
  must get no verdict. In a study (a folder, a volume, a multi-page TIFF) blank films or slices
  are left out with a warning on the others; when all are blank, the error is raised.
* **Size guard.** ``width * height`` is checked against ``max_pixels`` and the proportions
  against ``MAX_ASPECT_RATIO`` (10:1) before any pixel is decoded (:class:`ImageTooLargeError`,
  :class:`ImageShapeError`). Images over ``WORKING_PIXELS`` (4096²) are reduced while decoding
  by the smallest integer factor (JPEG: DCT scaling; others: box filter), so the returned
  pixels, and their copies, stay small; ``metadata["original_size"]`` keeps the stored size.
  For volumes the size applies to each slice, and a study (a volume, a folder, a multi-page
  TIFF) may hold at most ``VOLUME_PIXEL_FACTOR * max_pixels`` pixels together, as decoded, and
  ``MAX_STUDY_IMAGES`` images: every image of a study is returned at once, so this bounds the
  memory the caller holds. Pillow's own decompression-bomb error becomes
  :class:`ImageTooLargeError` too. Pillow's warning (above ``PIL.Image.MAX_IMAGE_PIXELS``,
  about 89 million) is not caught, because that would need a process-wide warning filter; with
  the default ``max_pixels`` every image that triggers it is rejected by our own guard anyway.
* **Several frames.** A multi-page TIFF is a study of its pages (views) in :func:`load_study`;
  :func:`load_radiograph` reads its first page with a warning. An animation (GIF, APNG, WebP)
  is no radiograph: its first frame is read, with a warning.
* **DICOM** applies the Modality LUT, then the file's VOI LUT or its first window (else the
  image's min-max), then scales to [0, 1]; MONOCHROME1 is inverted with a warning.
* **Volumes** are windowed on the whole volume: ``window="bone"`` uses the bone preset for CT
  (DICOM Modality CT, or a NIfTI whose values look like Hounsfield units: minimum between
  -3100 and -500) and the 1st-99th percentile otherwise (MRI has no absolute scale).
* **4-D NIfTI**: the first volume is used, with a warning; 5-D and more raise.
* **Several DICOM series in one folder** raise an error listing them: picking one would hide
  the choice from the person reading the result.
* **A folder of DICOM files without ImagePositionPatient** (projection radiographs such as
  CR/DX, each usually its own series) is read by :func:`load_study` as separate radiographs,
  sorted by file name, rather than as a volume.
* **Regular files only.** FIFOs, devices and sockets (and links to them) are refused with
  :class:`NotARegularFileError` before they are opened: a pipe blocks, ``/dev/zero`` never ends.
* **Folders.** Hidden files (names starting with ``.``) are ignored; files named ``DICOMDIR``,
  subfolders, broken links, FIFOs, devices, sockets and unreadable files are skipped with a
  warning on every radiograph that names each one and why; any other file that cannot be read
  raises.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from edge_app.dicom_io import (
    SUPPORTED_PHOTOMETRIC,
    dicom_errors,
    dicom_file_frame_count,
    dicom_pixel_count,
    load_dicom_image,
)
from edge_app.errors import EmptyImageError, ImageReadError
from edge_app.film import Radiograph, require_content, with_warnings
from edge_app.image_io import decoded_sizes, load_image
from edge_app.limits import (
    DEFAULT_MAX_PIXELS,
    MAX_ASPECT_RATIO,
    MAX_STUDY_IMAGES,
    VOLUME_PIXEL_FACTOR,
    WORKING_PIXELS,
    check_max_pixels,
    check_study_count,
    check_study_size,
)
from edge_app.nifti_io import load_nifti
from edge_app.sniff import SUPPORTED_FORMATS, file_problem, sniff_format
from edge_app.volume_io import load_dicom_series, load_dicom_volume, read_series_headers
from edge_app.windowing import WINDOW_PRESETS, Window, validate_window

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_ASPECT_RATIO",
    "MAX_STUDY_IMAGES",
    "SUPPORTED_FORMATS",
    "SUPPORTED_PHOTOMETRIC",
    "VOLUME_PIXEL_FACTOR",
    "WINDOW_PRESETS",
    "WORKING_PIXELS",
    "Radiograph",
    "Window",
    "load_radiograph",
    "load_study",
    "load_volume",
    "sniff_format",
]

LOGGER = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def load_radiograph(
    path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None
) -> Radiograph:
    """Load one 2-D image: anything Pillow opens, or a single-frame DICOM file.

    ``draft_size`` lets a JPEG decode at a reduced scale (1/2, 1/4 or 1/8, never below
    ``draft_size`` on either side) straight from its DCT coefficients: much faster when only a
    thumbnail is needed, e.g. for the data audit. ``metadata["original_size"]`` keeps the
    stored ``(width, height)`` either way. Other formats ignore it. A multi-page TIFF gives its
    first page, with a warning (:func:`load_study` reads every page). Raises
    :class:`EmptyImageError` for a film without image content.
    """
    path = Path(path)
    check_max_pixels(max_pixels)
    file_format = sniff_format(path)
    if file_format == "image":
        radiograph = load_image(path, max_pixels, draft_size)
        pages = radiograph.metadata.get("page_count", 1)
        if pages > 1:
            warning = f"pages: the TIFF holds {pages} pages; only the first was read"
            radiograph = with_warnings([radiograph], (warning,))[0]
        return require_content(radiograph)
    if file_format == "dicom":
        return require_content(load_dicom_image(path, max_pixels))
    if file_format == "directory":
        raise ImageReadError(f"{path} is a folder; open it with load_study() or load_volume().")
    raise ImageReadError(
        f"{path} is a NIfTI volume, not a 2-D image; open it with load_volume() or load_study()."
    )


def load_volume(
    path: str | Path,
    *,
    window: str | tuple[float, float] = "bone",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[Radiograph]:
    """Load a NIfTI volume, a multi-frame DICOM or a folder holding one DICOM series.

    Returns one :class:`Radiograph` per slice with ``metadata["slice_index"]`` and
    ``metadata["slice_count"]``; slices without image content are left out, with a warning
    naming them (:class:`EmptyImageError` when every slice is blank). ``window`` is a name from
    :data:`WINDOW_PRESETS` (Hounsfield units; ``"bone"`` falls back to percentiles for non-CT
    data), ``"auto"`` (1st-99th percentile of the whole volume) or an explicit
    ``(center, width)``.
    """
    path = Path(path)
    check_max_pixels(max_pixels)
    window = validate_window(window)
    file_format = sniff_format(path)
    if file_format == "nifti":
        return load_nifti(path, window, max_pixels)
    if file_format == "dicom":
        return load_dicom_volume(path, window, max_pixels)
    if file_format == "directory":
        files, folder_warnings = _folder_files(path)
        _require_only_dicom(path, files)
        radiographs = load_dicom_series(read_series_headers(files), path, window, max_pixels)
        return with_warnings(radiographs, folder_warnings)
    raise ImageReadError(f"{path} is a 2-D image, not a volume; open it with load_radiograph().")


def load_study(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Radiograph]:
    """Load whatever the user picked: an image, a DICOM or NIfTI file, or a folder.

    A folder of DICOM files is a series (read as a volume) unless none of them has
    ImagePositionPatient, in which case each file is a radiograph. A folder of images yields
    each image, sorted by file name; a multi-page TIFF yields each page. Files that cannot be
    read raise; films without image content are left out with a warning on the others
    (:class:`EmptyImageError` when nothing is left); nothing is skipped silently.

    Every image comes back at once, so the study is bounded before anything is decoded: at most
    ``MAX_STUDY_IMAGES`` images and ``VOLUME_PIXEL_FACTOR × max_pixels`` pixels together, as
    decoded (:class:`ImageTooLargeError`).
    """
    path = Path(path)
    check_max_pixels(max_pixels)
    file_format = sniff_format(path)
    if file_format == "directory":
        return _load_folder(path, max_pixels)
    if file_format == "nifti":
        return load_volume(path, max_pixels=max_pixels)
    if file_format == "dicom" and dicom_file_frame_count(path) > 1:
        return load_volume(path, max_pixels=max_pixels)
    if file_format == "image":
        return _load_images([path], path, max_pixels)
    return [load_radiograph(path, max_pixels=max_pixels)]


# ---------------------------------------------------------------------------------------------
# Folders and other studies of several images
# ---------------------------------------------------------------------------------------------


def _folder_files(folder: Path) -> tuple[list[Path], tuple[str, ...]]:
    """The files a folder offers, sorted by name, and warnings naming each entry skipped."""
    entries = sorted(
        (entry for entry in folder.iterdir() if not entry.name.startswith(".")),
        key=lambda entry: entry.name,
    )
    files: list[Path] = []
    subfolders: list[str] = []
    warnings: list[str] = []
    for entry in entries:
        if entry.name.upper() == "DICOMDIR":
            warnings.append(f"folder: skipped the DICOM index file {entry.name}")
        elif entry.is_dir():
            subfolders.append(entry.name)
        elif (problem := file_problem(entry)) is not None:
            warnings.append(f"folder: skipped {entry.name}: {problem}")
        else:
            files.append(entry)
    if not files:
        inside = f" (only the subfolders {subfolders})" if subfolders else ""
        skipped = f" ({'; '.join(warnings)})" if warnings else ""
        raise ImageReadError(
            f"{folder} holds no files{inside}{skipped}. Choose the folder that holds the images "
            "directly."
        )
    check_study_count(len(files), folder)
    if subfolders:
        warnings.append(f"folder: subfolders are not read: {', '.join(subfolders)}")
    return files, tuple(warnings)


def _require_only_dicom(folder: Path, files: Sequence[Path]) -> None:
    others = [file.name for file in files if sniff_format(file) != "dicom"]
    if others:
        raise ImageReadError(
            f"{folder} holds files that are not DICOM: {', '.join(others[:5])}. A volume folder "
            "must hold one DICOM series only; move the other files out."
        )


def _load_folder(folder: Path, max_pixels: int) -> list[Radiograph]:
    files, folder_warnings = _folder_files(folder)
    formats = {file: sniff_format(file) for file in files}
    kinds = set(formats.values())
    if kinds == {"image"}:
        radiographs = _load_images(files, folder, max_pixels)
    elif kinds == {"dicom"}:
        radiographs = _load_dicom_folder(files, folder, max_pixels)
    else:
        summary = ", ".join(f"{file.name} ({kind})" for file, kind in formats.items())
        raise ImageReadError(
            f"{folder} mixes kinds of files: {summary[:500]}. A folder must hold one DICOM "
            "series or 2-D images only; open NIfTI volumes one file at a time."
        )
    return with_warnings(radiographs, folder_warnings)


def _load_images(files: Sequence[Path], source: Path, max_pixels: int) -> list[Radiograph]:
    """Every page of every image file, bounded from the headers, decoded one at a time."""
    plan = [(file, decoded_sizes(file, max_pixels)) for file in files]
    total = sum(width * height for _, sizes in plan for width, height in sizes)
    check_study_size(sum(len(sizes) for _, sizes in plan), total, max_pixels, source)
    kept: list[Radiograph] = []
    blank: list[tuple[str, EmptyImageError]] = []
    for file, sizes in plan:
        for page in range(len(sizes)):
            name = f"{file.name} page {page + 1}" if len(sizes) > 1 else file.name
            try:
                kept.append(require_content(load_image(file, max_pixels, page=page)))
            except EmptyImageError as error:
                blank.append((name, error))
    return _with_blank_warnings(kept, blank, source)


def _load_dicom_folder(files: Sequence[Path], folder: Path, max_pixels: int) -> list[Radiograph]:
    headers = read_series_headers(files)
    if any("ImagePositionPatient" in dataset for _, dataset in headers):
        return load_dicom_series(headers, folder, "bone", max_pixels)
    LOGGER.info("%s: no ImagePositionPatient, reading each DICOM file as a radiograph", folder)
    total = 0
    for file, dataset in headers:
        with dicom_errors(file):
            total += dicom_pixel_count(dataset, file)
    check_study_size(len(headers), total, max_pixels, folder)
    kept: list[Radiograph] = []
    blank: list[tuple[str, EmptyImageError]] = []
    for file in files:
        try:
            kept.extend(load_study(file, max_pixels=max_pixels))
        except EmptyImageError as error:
            blank.append((file.name, error))
    return _with_blank_warnings(kept, blank, folder)


def _with_blank_warnings(
    kept: list[Radiograph], blank: list[tuple[str, EmptyImageError]], source: Path
) -> list[Radiograph]:
    """The films with content, each warned about the blank ones left out; all blank raises."""
    if not kept and len(blank) == 1:
        raise blank[0][1]
    if not kept:
        names = ", ".join(name for name, _ in blank)
        raise EmptyImageError(
            f"{source} holds no image content: every film in it is blank or mostly missing "
            f"({names}). A blank film gets no verdict; check the files or export them again."
        ) from blank[0][1]
    warnings = tuple(
        f"blank: left out {name}, which holds no image content, so it gets no verdict"
        for name, _ in blank
    )
    return with_warnings(kept, warnings)
