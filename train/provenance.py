"""Where an artifact came from: the project's version and the git commit of the working tree.

Every stage that writes a card (training, export, benchmarks) records both; this is the one
place that finds them.
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

_REPOSITORY = Path(__file__).resolve().parents[1]


def project_version() -> str:
    try:
        return metadata.version("fracture-edge")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def _git(*arguments: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(
            ["git", *arguments], capture_output=True, text=True, timeout=10, cwd=_REPOSITORY
        )
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> str | None:
    """The commit checked out in the repository this package runs from (None outside git)."""
    result = _git("rev-parse", "HEAD")
    return (result.stdout.strip() or None) if result is not None else None


def git_dirty() -> bool | None:
    """Whether tracked files differ from the commit (None outside git)."""
    result = _git("status", "--porcelain", "--untracked-files=no")
    if result is None or result.returncode != 0:
        return None
    return bool(result.stdout.strip())
