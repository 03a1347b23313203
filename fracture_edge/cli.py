"""The ``fracture-edge`` command line. Each verb lives in its stage's package and is imported
only when it runs, so ``fracture-edge --help`` works with the base install alone.

Errors are mapped to messages in exactly one place (:func:`main`): a :class:`FractureEdgeError`
prints its message and exits 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from edge_app.errors import FractureEdgeError
from fracture_edge import __version__

logger = logging.getLogger("fracture_edge")


# --------------------------------------------------------------------------- data verbs


def _data_audit(args: argparse.Namespace) -> int:
    from train.audit import audit_dataset, write_json
    from train.audit_report import write_report
    from train.datasets import open_dataset

    result = audit_dataset(list(open_dataset(args.path)), workers=args.workers)
    out_dir = Path(args.out)
    report = write_report(result, out_dir)
    json_path = write_json(result, args.json or out_dir / "audit.json")
    print(json.dumps(result.summary["counts"], indent=1))
    print(f"report: {report}\njson:   {json_path}")
    return 0


def _data_split(args: argparse.Namespace) -> int:
    from train.audit import audit_dataset, read_json, write_json
    from train.datasets import open_dataset
    from train.splits import SplitConfig, make_split, split_counts, split_id, write_split

    samples = list(open_dataset(args.path))
    if args.audit:
        audit = read_json(args.audit)
    else:
        logger.info("no --audit given: auditing %s first", args.path)
        result = audit_dataset(samples, workers=args.workers)
        audit = result.to_json()
        write_json(result, Path(args.out).with_suffix(".audit.json"))
    config = SplitConfig(args.val, args.test, args.folds, args.seed, args.keep_truncated)
    root = Path(args.path) if Path(args.path).is_dir() else Path(args.path).parent
    rows = make_split(samples, audit, config, root=root.resolve())
    write_split(rows, args.out)
    print(json.dumps({"split_id": split_id(rows), "counts": split_counts(rows)}, indent=1))
    print(f"split: {args.out}")
    return 0


def _data_cache(args: argparse.Namespace) -> int:
    from train.cache import CacheConfig, build_cache
    from train.datasets import open_dataset
    from train.splits import read_split

    meta = build_cache(
        list(open_dataset(args.path)),
        read_split(args.split),
        args.out,
        CacheConfig(size=args.size, quality=args.quality),
        workers=args.workers,
    )
    print(json.dumps(meta, indent=1))
    return 0


def _add_data_parser(verbs: argparse._SubParsersAction) -> None:
    data = verbs.add_parser("data", help="audit, split and cache a data set")
    data_verbs = data.add_subparsers(dest="data_verb", required=True, metavar="VERB")

    audit = data_verbs.add_parser("audit", help="find duplicates, label conflicts, truncated files")
    audit.add_argument("path", help="FracAtlas root, folder-per-class tree or CSV manifest")
    audit.add_argument("--out", default="runs/audit", help="folder for the report and plots")
    audit.add_argument("--json", help="write the audit JSON here (default: OUT/audit.json)")
    audit.add_argument("--workers", type=int, default=2)
    audit.set_defaults(handler=_data_audit)

    split = data_verbs.add_parser("split", help="leak-free stratified grouped split")
    split.add_argument("path", help="FracAtlas root, folder-per-class tree or CSV manifest")
    split.add_argument("--audit", help="audit JSON to take duplicate groups from (else audit now)")
    split.add_argument("--out", default="runs/split.csv", help="split CSV to write")
    split.add_argument("--val", type=float, default=0.15, help="validation fraction")
    split.add_argument("--test", type=float, default=0.15, help="test fraction")
    split.add_argument("--folds", type=int, default=0, help="k folds over train+val (0: none)")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument(
        "--keep-truncated",
        action="store_true",
        help="keep truncated files instead of excluding them",
    )
    split.add_argument("--workers", type=int, default=2)
    split.set_defaults(handler=_data_split)

    cache = data_verbs.add_parser("cache", help="pre-letterboxed JPEG cache for the GPU machine")
    cache.add_argument("path", help="FracAtlas root, folder-per-class tree or CSV manifest")
    cache.add_argument("--split", required=True, help="split CSV from 'data split'")
    cache.add_argument("--out", default="cache/fracatlas-256")
    cache.add_argument("--size", type=int, default=256)
    cache.add_argument("--quality", type=int, default=90)
    cache.add_argument("--workers", type=int, default=2)
    cache.set_defaults(handler=_data_cache)


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fracture-edge",
        description="Bone-fracture detection on radiographs, from training to the phone.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    _add_data_parser(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except FractureEdgeError as error:
        print(f"fracture-edge: error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as error:
        # Bad paths and malformed files/flags from the user; a message beats a traceback.
        print(f"fracture-edge: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
