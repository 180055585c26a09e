"""Figures of the analysis toolkit: off-screen (Agg) figures, saved atomically like
mlip's training plots.  The helpers are the package-wide ones of :mod:`mlip.plots`
and :mod:`mlip.files`, named here for the analysis modules."""

from mlip.files import save_figure
from mlip.plots import new_figure

__all__ = ["new_figure", "save_figure"]
