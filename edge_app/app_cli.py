"""The ``app`` verb of ``fracture-edge``: ``fracture-edge app [--model DIR] [PATH...]``.

Kept out of :mod:`fracture_edge.cli` and free of Kivy imports, so ``fracture-edge --help``
works without the ``app`` extra: the handler imports :mod:`edge_app.app` when it runs.
``python -m edge_app.app_cli [options] [PATH...]`` runs the same thing without the CLI.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from edge_app.errors import FractureEdgeError


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds ≥ 0, got {text}")
    return value


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="image, DICOM or NIfTI file, or folder, to open at start (the first is analysed)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="model bundle folder (default: models/fracture-lite0-int8)",
    )
    parser.add_argument(
        "--screenshot",
        type=Path,
        metavar="PNG",
        help="save the window as PNG once the first result is on screen",
    )
    parser.add_argument(
        "--exit-after",
        type=_seconds,
        metavar="S",
        help="close the app S seconds after the first result (headless runs, demos)",
    )


class NoDisplayError(FractureEdgeError):
    """A desktop app was asked for on a Linux machine without a screen."""


def check_display(environ=None, platform: str = sys.platform) -> None:
    """Refuse to start on Linux with neither X11 nor Wayland: SDL would open an invisible
    window and the app would wait forever. Android and other systems are not checked."""
    import os

    environ = os.environ if environ is None else environ
    if not platform.startswith("linux") or "ANDROID_ARGUMENT" in environ:
        return
    if not (environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")):
        raise NoDisplayError(
            "no screen found (DISPLAY and WAYLAND_DISPLAY are unset). On a headless machine run "
            "the app on a virtual screen: `xvfb-run -a fracture-edge app ... --screenshot "
            "app.png --exit-after 10` (Debian: apt-get install xvfb xauth libgl1 "
            "libgl1-mesa-dri libmtdev1), or score files without a window: `fracture-edge "
            "predict PATH...`"
        )


def _app(args: argparse.Namespace) -> int:
    from edge_app.app import run_app  # imports no Kivy: run_app configures it first

    check_display()

    return run_app(args.model, args.paths, args.screenshot, args.exit_after)


def add_app_parser(verbs: argparse._SubParsersAction) -> None:
    """Register ``app`` on the ``fracture-edge`` sub-parsers."""
    app = verbs.add_parser(
        "app",
        help="the desktop app: open radiographs, see verdict and heatmap, export reports",
        description="Open the FractureEdge app (Kivy). Everything runs on this machine; a report "
        "is written only when you press 'Export report'. See docs/app.md.",
    )
    _add_options(app)
    app.set_defaults(handler=_app)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge_app.app_cli",
        description="Open the FractureEdge app (the same as `fracture-edge app`).",
    )
    _add_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _app(args)
    except FractureEdgeError as error:
        print(f"fracture-edge app: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
