"""The app's entry point: the ``app`` verb of ``fracture-edge`` (``fracture-edge app [--model
DIR] [PATH...]``) and :func:`run_app`, which Android's ``main.py`` calls too.

Kept out of :mod:`fracture_edge.cli` and free of Kivy imports at import time, so
``fracture-edge --help`` works without the ``app`` extra: :func:`run_app` configures Kivy and
only then imports the window (:mod:`edge_app.app_ui`). ``python -m edge_app.app_cli [options]
[PATH...]`` runs the same thing without the CLI.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from edge_app._optional import require
from edge_app.errors import FractureEdgeError
from edge_app.files import check_output


def run_app(
    model: Path | None,
    paths: list[Path],
    screenshot: Path | None = None,
    exit_after: float | None = None,
) -> int:
    """Open the window on the bundle ``model`` (default: the shipped one) and the ``paths``.

    The first path is analysed at start; the others wait in the "Recent" list. ``screenshot``
    saves the window once the first result (or error) is on screen; ``exit_after`` seconds
    after that result the app closes.
    """
    configure_kivy()
    from edge_app.app import AUTO_EXPORT_ENV
    from edge_app.app_ui import FractureEdgeApp  # Kivy may only be imported after the above
    from edge_app.runtime import DEFAULT_BUNDLE

    FractureEdgeApp(
        bundle=Path(model) if model else DEFAULT_BUNDLE,
        paths=[Path(path) for path in paths],
        screenshot=Path(screenshot) if screenshot else None,
        exit_after=exit_after,
        auto_export=os.environ.get(AUTO_EXPORT_ENV) == "1",
    ).run()
    return 0


def configure_kivy() -> None:
    """Settings Kivy reads once, when it is first imported; they belong to this entry point
    (call it before anything imports Kivy)."""
    os.environ.setdefault("KIVY_NO_ARGS", "1")  # the fracture-edge CLI owns sys.argv
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")  # Kivy logs through the caller's logging
    # ... at the caller's level (fracture-edge -v: INFO), from its first line on
    level = "info" if logging.getLogger().getEffectiveLevel() <= logging.INFO else "warning"
    os.environ.setdefault("KCFG_KIVY_LOG_LEVEL", level)
    Config = require("kivy.config", "run the app").Config  # noqa: N806 (Kivy's name)

    Config.set("graphics", "width", "1000")
    Config.set("graphics", "height", "700")
    Config.set("graphics", "minimum_width", "760")
    Config.set("graphics", "minimum_height", "520")
    # No multisample anti-aliasing: the app draws images and text, not polygons, and MSAA
    # buffers cost ~12 MB under a software renderer (measured with Mesa llvmpipe).
    Config.set("graphics", "multisamples", "0")
    Config.set("input", "mouse", "mouse,disable_multitouch")  # no red dots on right click


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
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="let --screenshot replace an existing file (never one of the PATHs)",
    )


class NoDisplayError(FractureEdgeError):
    """A desktop app was asked for on a Linux machine without a screen."""


def check_display(environ=None, platform: str = sys.platform) -> None:
    """Refuse to start on Linux with neither X11 nor Wayland: SDL would open an invisible
    window and the app would wait forever. Android and other systems are not checked."""
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
    if args.screenshot is not None:  # before the window: a refusal is a message, exit 2
        check_output(args.screenshot, args.paths, args.overwrite, what="screenshot")
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
