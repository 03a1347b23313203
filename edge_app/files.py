"""File helpers shared by the runtime, training and export (numpy-free, torch-free)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output(
    out: str | Path,
    protected: list[str | Path] | tuple = (),
    overwrite: bool = False,
    folder: bool = False,
    what: str = "output",
) -> Path:
    """Refuse an output path that could destroy input data; returns it resolved.

    - never inside (or equal to) a ``protected`` folder, nor equal to a protected file — even
      with ``overwrite``: originals are never touched;
    - never over an existing file, or into an existing non-empty folder (``folder=True``),
      unless ``overwrite``.
    """
    from edge_app.errors import UsageError

    target = Path(out).expanduser().resolve()
    for item in protected:
        source = Path(item).expanduser().resolve()
        if (source.is_dir() and _inside(target, source)) or target == source:
            raise UsageError(
                f"refusing to write the {what} to {out}: it is inside the input {item}, which "
                "must never be modified; choose a folder outside it"
            )
        if target.is_dir() and source.is_file() and _inside(source, target) and folder:
            raise UsageError(
                f"refusing to write the {what} into {out}: it holds the input {item}; choose "
                "an empty folder elsewhere"
            )
    if target.exists() and not overwrite:
        if target.is_dir() and folder and not any(target.iterdir()):
            return target
        kind = "folder" if target.is_dir() else "file"
        raise UsageError(
            f"{out} already exists ({kind}); refusing to write the {what} over it. Choose "
            "another path, or pass --overwrite to replace it"
        )
    return target
