"""A split file's rows as an external labels CSV, to treat FracAtlas films as "another site".

    fracture-edge data labels splits/fracatlas-heldout-fde7e443b154.csv --split test \
        --out runs/heldout-site/labels.csv

writes ``file,fracture`` with ``file`` the row's path relative to the FracAtlas root (the
split's ``relpath``), so ``--external ../shared/data/fracatlas --labels runs/heldout-site/
labels.csv`` reads the originals where they are: nothing is copied. Used for the
site-calibration measurement of docs/calibration.md (the 351 large-format films).
"""

from __future__ import annotations

import csv
from pathlib import Path

from edge_app.errors import InputPathError, UsageError
from edge_app.files import check_output
from train.splits import read_split


def write_labels(
    split_csv: str | Path, split: str, out: str | Path, overwrite: bool = False
) -> dict[str, int]:
    """Write ``out`` from the rows of ``split``; returns the counts written. Refuses to write
    over an existing file unless ``overwrite``, and never over the split file itself."""
    if not Path(split_csv).is_file():
        raise InputPathError(f"split file {split_csv} does not exist")
    rows = [row for row in read_split(split_csv) if row.split == split]
    if not rows:
        raise UsageError(f"{split_csv} has no '{split}' rows; choose another --split")
    out = check_output(out, [split_csv], overwrite, what="labels CSV")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "fracture"])
        writer.writerows([row.relpath, int(row.label)] for row in rows)
    return {"films": len(rows), "fractured": sum(int(row.label) for row in rows)}
