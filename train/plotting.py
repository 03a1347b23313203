"""Figures through matplotlib's object API, so pyplot's global state and backend stay untouched."""

from __future__ import annotations

from pathlib import Path

from edge_app._optional import require


def new_figure(width: float, height: float, purpose: str = "draw plots", dpi: int = 110):
    figure_module = require("matplotlib.figure", purpose)
    backend = require("matplotlib.backends.backend_agg", purpose)
    figure = figure_module.Figure(figsize=(width, height), dpi=dpi)
    backend.FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path)
    return path
