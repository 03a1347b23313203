"""A folder of a site's radiographs and the CSV that labels them, read the same way by
``fracture-edge calibrate`` and ``fracture-edge bench --external`` (docs/benchmarks.md):

.. code-block:: text

    file,fracture,boxes
    wrist/0001.png,1,0.41 0.52 0.55 0.63
    ankle/0003.dcm,0,
    ankle/0004.jpg,,

``file`` is relative to the folder; ``fracture`` is ``1``, ``0`` or empty (unknown); ``boxes``
(optional) are ``x0 y0 x1 y1`` corners normalised to 0–1, several separated by ``;``. A group
column (asked for by name; :func:`group_column_of` picks ``source`` when there is one) names
the films that belong together, e.g. augmented copies of one picture, for a bootstrap over
groups; an empty cell leaves the film a group of its own.
The CSV is validated before any image is read, and each kind of problem is reported in full.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from edge_app.errors import LabelsFileError

LABEL_COLUMNS = ("file", "fracture")
#: The group column a benchmark uses when none is named and the CSV has it (site B's copies of
#: one picture share their ``source``).
DEFAULT_GROUP_COLUMN = "source"

Box = tuple[float, float, float, float]
#: How far outside 0–1 a box corner may lie and still be read (clipped to the image): exports
#: that round pixel boxes overshoot the edge by a fraction of a per cent (site B: 1.0011).
BOX_EDGE_TOLERANCE = 0.005


@dataclass(frozen=True)
class LabelledFilm:
    """One row of a labels CSV. ``label`` None: unknown; ``group`` None: a group of its own."""

    file: str
    label: int | None
    path: Path
    boxes: tuple[Box, ...] = ()
    group: str | None = None


def _header(labels_csv: Path) -> list[str]:
    with open(labels_csv, newline="", encoding="utf-8-sig") as handle:
        return [name.strip() for name in next(csv.reader(handle), [])]


def group_column_of(labels_csv: str | Path, requested: str | None = None) -> str | None:
    """The group column to read: ``requested`` (which must be in the header), else
    :data:`DEFAULT_GROUP_COLUMN` when the CSV has it, else None (every film its own group)."""
    labels_csv = Path(labels_csv)
    if not labels_csv.is_file():
        raise LabelsFileError(f"labels CSV {labels_csv} does not exist")
    columns = _header(labels_csv)
    if requested is None:
        return DEFAULT_GROUP_COLUMN if DEFAULT_GROUP_COLUMN in columns else None
    if requested not in columns:
        raise LabelsFileError(
            f"{labels_csv} has no group column {requested!r} (found: "
            f"{', '.join(columns) or 'no header'}); name one of those with --group-column"
        )
    return requested


def read_labels_csv(
    folder: str | Path, labels_csv: str | Path, group_column: str | None = None
) -> list[LabelledFilm]:
    """Validate a labels CSV (``file``, ``fracture`` 1/0/empty, optional ``boxes``).

    Every problem of a kind is listed in one error: missing columns, unreadable cells (with
    their line numbers) and files that do not exist under ``folder``. With ``group_column``
    (which must be in the header) each film keeps that cell as its ``group``.
    """
    folder, labels_csv = Path(folder), Path(labels_csv)
    if not folder.is_dir():
        raise LabelsFileError(f"external folder {folder} does not exist")
    if not labels_csv.is_file():
        raise LabelsFileError(f"labels CSV {labels_csv} does not exist")
    with open(labels_csv, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in LABEL_COLUMNS if name not in columns]
        if missing:
            raise LabelsFileError(
                f"{labels_csv} lacks the column(s) {', '.join(missing)} (found: "
                f"{', '.join(columns) or 'no header'}); expected file,fracture[,boxes] with "
                "fracture 1, 0 or empty (unknown)"
            )
        if group_column is not None and group_column not in columns:
            raise LabelsFileError(
                f"{labels_csv} has no group column {group_column!r} (found: {', '.join(columns)})"
            )
        rows = [
            (line, {k.strip(): (v or "").strip() for k, v in row.items() if k})
            for line, row in enumerate(reader, start=2)
        ]
    problems: list[str] = []
    films = [_film(folder, line, row, problems, group_column) for line, row in rows]
    _raise_problems(labels_csv, problems)
    names = [film.file for film in films]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise LabelsFileError(f"{labels_csv} lists these files more than once: {repeated[:10]}")
    absent = [film.file for film in films if not film.path.is_file()]
    if absent:
        shown = ", ".join(absent[:20]) + (
            f" … and {len(absent) - 20} more" if len(absent) > 20 else ""
        )
        raise LabelsFileError(f"{len(absent)} file(s) of {labels_csv} are not in {folder}: {shown}")
    if not films:
        raise LabelsFileError(f"{labels_csv} has no rows")
    return films


def _film(
    folder: Path, line: int, row: dict[str, str], problems: list[str], group_column: str | None
) -> LabelledFilm:
    file = row.get("file", "")
    if not file:
        problems.append(f"line {line}: empty 'file'")
    label: int | None = None
    value = row.get("fracture", "")
    if value in ("0", "1"):
        label = int(value)
    elif value:
        problems.append(f"line {line}: fracture {value!r} is not 1, 0 or empty (unknown)")
    boxes = parse_boxes(row.get("boxes", ""), f"line {line}", problems)
    group = row.get(group_column, "") if group_column is not None else ""
    return LabelledFilm(file, label, folder / file, boxes, group or None)


def parse_boxes(text: str, where: str = "", problems: list[str] | None = None) -> tuple[Box, ...]:
    """``"x0 y0 x1 y1; x0 y0 x1 y1"`` (normalised to the image) → a tuple of boxes.

    With ``problems`` each bad box is appended to it and skipped; without, the first raises.
    """
    boxes = []
    for part in filter(None, (piece.strip() for piece in text.split(";"))):
        problem = _box_problem(part)
        if problem is None:
            x0, y0, x1, y1 = (min(max(float(value), 0.0), 1.0) for value in part.split())
            boxes.append((x0, y0, x1, y1))
            continue
        message = f"{where}: box {part!r} {problem}" if where else f"box {part!r} {problem}"
        if problems is None:
            raise LabelsFileError(message)
        problems.append(message)
    return tuple(boxes)


def _box_problem(part: str) -> str | None:
    values = part.split()
    if len(values) != 4:
        return f"has {len(values)} numbers; expected 4 (x0 y0 x1 y1)"
    try:
        x0, y0, x1, y1 = (float(value) for value in values)
    except ValueError:
        return "holds something that is not a number"
    low, high = -BOX_EDGE_TOLERANCE, 1.0 + BOX_EDGE_TOLERANCE
    if not all(low <= v <= high for v in (x0, y0, x1, y1)):
        return "is not normalised to 0–1 (divide pixels by the image width and height)"
    x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in (x0, y0, x1, y1))
    if x1 <= x0 or y1 <= y0:
        return "needs x0 < x1 and y0 < y1 (corners, not centre/size)"
    return None


def _raise_problems(path: Path, problems: list[str]) -> None:
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise LabelsFileError(f"{path} has {len(problems)} problem(s):\n  {shown}{more}")
