"""Android only: the gallery, the camera and the runtime permissions, through plyer.

Nothing here runs on a laptop or in the tests; the desktop path never imports plyer or the
python-for-android ``android`` module. Callbacks arrive on Android's UI thread, so the caller
wraps them for Kivy's thread (see ``MainView`` in :mod:`edge_app.app_ui`). Known limit:
plyer's camera hands the camera app a ``file://`` URI, which Android 7+ refuses
(``FileUriExposedException``, kivy/plyer#549 and #812); the app then shows that error instead
of crashing, and the gallery still works (docs/app.md).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from edge_app._optional import require

#: Android 13+ grants READ_MEDIA_IMAGES, older versions READ_EXTERNAL_STORAGE.
PERMISSIONS = ("READ_MEDIA_IMAGES", "READ_EXTERNAL_STORAGE", "CAMERA")


def request_permissions() -> None:
    permissions = require("android.permissions", "ask for Android permissions")
    wanted = [getattr(permissions.Permission, name, None) for name in PERMISSIONS]
    permissions.request_permissions([p for p in wanted if p is not None])


def pick_file(on_path: Callable[[Path | None], None]) -> None:
    """The system picker, any type (DICOM and NIfTI have no image/* MIME type); ``on_path``
    gets the file, or None when it was cancelled or its URI has no file path."""
    filechooser = require("plyer", "open the Android gallery").filechooser

    def chosen(selection: list[str | None] | None) -> None:
        paths = [path for path in selection or [] if path]
        on_path(Path(paths[0]) if paths else None)

    filechooser.open_file(on_selection=chosen)


def take_photo(folder: Path, on_path: Callable[[Path], None]) -> None:
    """Photograph a radiograph (film on a light box, a screen) into ``folder``."""
    camera = require("plyer", "use the camera").camera
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"photo-{datetime.now():%Y%m%d-%H%M%S}.jpg"

    def taken(filename: str) -> bool:
        on_path(Path(filename))
        return False  # plyer deletes the file when this returns True

    camera.take_picture(filename=str(target), on_complete=taken)
