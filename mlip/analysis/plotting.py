"""Figures of the analysis toolkit: off-screen (Agg) and saved atomically like mlip's training plots."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure


def new_figure(width: float = 5.5, height: float = 4.6) -> Figure:
    """A matplotlib figure on an Agg canvas (no display needed), inches."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix) via a temporary file + rename."""
    from mlip.training.plots import _save_atomic

    return _save_atomic(fig, path, dpi)
