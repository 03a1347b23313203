"""A split file's rows as an external labels CSV, to treat FracAtlas films as "another site".

    python -m benchmarks.split_labels splits/fracatlas-heldout-fde7e443b154.csv --split test \
        --out runs/heldout-site/labels.csv

writes ``file,fracture`` with ``file`` the row's path relative to the FracAtlas root (the
split's ``relpath``), so ``--external ../shared/data/fracatlas --labels runs/heldout-site/
labels.csv`` reads the originals where they are: nothing is copied. Used for the
site-calibration measurement of docs/calibration.md (the 351 large-format films).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

from train.splits import read_split


def write_labels(split_csv: str | Path, split: str, out: str | Path) -> dict[str, int]:
    """Write ``out`` from the rows of ``split``; returns the counts written."""
    rows = [row for row in read_split(split_csv) if row.split == split]
    if not rows:
        raise ValueError(f"{split_csv} has no '{split}' rows")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "fracture"])
        writer.writerows([row.relpath, int(row.label)] for row in rows)
    return {"films": len(rows), "fractured": sum(int(row.label) for row in rows)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("split_csv", help="split CSV (file,split,label,...,relpath)")
    parser.add_argument("--split", default="test", help="which rows (default: test)")
    parser.add_argument("--out", required=True, help="labels CSV to write (must not exist)")
    args = parser.parse_args(argv)
    try:
        counts = write_labels(args.split_csv, args.split, args.out)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        print(f"split_labels: error: {error}", file=sys.stderr)
        return 2
    print(f"{args.out}: {counts['films']} films, {counts['fractured']} fractured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
