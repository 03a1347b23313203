"""The ``calibrate`` verb of ``fracture-edge``: refit a bundle's temperature and operating
points on a site's labelled films and write a new bundle (docs/calibration.md).

Needs only the ``app`` extra (numpy, Pillow, LiteRT); the handler imports the runtime when it
runs, so ``fracture-edge --help`` stays light.
"""

from __future__ import annotations

import argparse
import json

from edge_app.site_calibration import (
    DEFAULT_MAX_CI_WIDTH,
    DEFAULT_MIN_FRACTURED,
    DEFAULT_MIN_UNFRACTURED,
    calibrate_folder,
    summary_lines,
)


def _calibrate(args: argparse.Namespace) -> int:
    from edge_app.runtime import DEFAULT_BUNDLE

    card = calibrate_folder(
        args.folder,
        args.labels,
        args.model or DEFAULT_BUNDLE,
        args.out,
        site=args.site,
        target=args.sensitivity,
        min_fractured=args.min_fractured,
        min_unfractured=args.min_unfractured,
        max_ci_width=args.max_ci_width,
        resamples=args.resamples,
        seed=args.seed,
        threads=args.threads,
        overwrite=args.overwrite,
    )
    if args.json:
        print(json.dumps(card["site_calibration"], indent=1))
    else:
        print("\n".join(summary_lines(card)))
    print(f"bundle: {args.out}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {text}")
    return value


def add_calibrate_parser(verbs: argparse._SubParsersAction) -> None:
    """Add ``fracture-edge calibrate`` to the top-level subparsers."""
    calibrate = verbs.add_parser(
        "calibrate",
        help="refit a bundle's temperature and operating points on a site's labelled films",
        description="Score a site's labelled films with a bundle, refit the temperature and "
        "the doubt (target sensitivity, from the card: 0.95) and fracture (Youden J) points "
        "on them, and write a new bundle to --out: the same model.tflite (same sha256) and a "
        "card recording the site, the date, the counts, the achieved sensitivity and "
        "specificity with bootstrap CIs, warnings, and the previous points. Refuses (exit 2) "
        "when a class has too few films. Rows of unknown label (fracture empty) are ignored. "
        "See docs/calibration.md.",
    )
    calibrate.add_argument("folder", metavar="DIR", help="folder the CSV's paths are relative to")
    calibrate.add_argument(
        "--labels",
        required=True,
        metavar="CSV",
        help="file,fracture[,boxes], as for bench --external (fracture 1, 0 or empty)",
    )
    calibrate.add_argument("--model", help="source bundle (default: the shipped bundle)")
    calibrate.add_argument(
        "--out", required=True, help="new bundle folder, e.g. models/NAME (not the source)"
    )
    calibrate.add_argument("--site", help="site name for the card (default: DIR's folder name)")
    calibrate.add_argument(
        "--sensitivity",
        type=float,
        help="target sensitivity of the doubt point (default: the card's, else 0.95)",
    )
    calibrate.add_argument(
        "--min-fractured",
        type=_positive,
        default=DEFAULT_MIN_FRACTURED,
        help=f"refuse with fewer fractured films (default {DEFAULT_MIN_FRACTURED})",
    )
    calibrate.add_argument(
        "--min-unfractured",
        type=_positive,
        default=DEFAULT_MIN_UNFRACTURED,
        help=f"refuse with fewer unfractured films (default {DEFAULT_MIN_UNFRACTURED})",
    )
    calibrate.add_argument(
        "--max-ci-width",
        type=float,
        default=DEFAULT_MAX_CI_WIDTH,
        help="warn when a point's sensitivity CI is wider than this "
        f"(default {DEFAULT_MAX_CI_WIDTH})",
    )
    calibrate.add_argument("--resamples", type=_positive, default=2000, help="bootstrap (2000)")
    calibrate.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")
    calibrate.add_argument("--threads", type=_positive, default=2, help="LiteRT threads (2)")
    calibrate.add_argument(
        "--overwrite",
        action="store_true",
        help="replace model.tflite and model_card.json in an existing --out (never the source)",
    )
    calibrate.add_argument("--json", action="store_true", help="print the card's record as JSON")
    calibrate.set_defaults(handler=_calibrate)
