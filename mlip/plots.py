"""Plot primitives shared by training, evaluation and analysis.

* :func:`parity_plot` / :func:`parity_figure`: predicted vs reference scatter, one
  panel (:class:`ParityPanel`) per quantity, with MAE / RMSE written in each panel;
* :func:`error_summary`: the MAE / RMSE used by the parity panels;
* :func:`new_figure`: a figure on an Agg canvas.

Figures are drawn with :class:`matplotlib.figure.Figure` on an Agg canvas, so no
display and no global ``pyplot`` state are involved. matplotlib is imported
lazily inside the functions, so importing this module stays cheap. Files are
written atomically with :func:`mlip.files.save_figure`.

Units are whatever the caller passes: this module does not convert anything.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlip.files import save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "ERROR_TEXT_GID",
    "ParityPanel",
    "error_summary",
    "new_figure",
    "parity_figure",
    "parity_plot",
]

#: ``gid`` of the MAE / RMSE text artist in every parity panel (for tests and tools).
ERROR_TEXT_GID = "error-summary"


def new_figure(width: float = 5.5, height: float = 4.6) -> Figure:
    """A matplotlib figure on an Agg canvas (no display needed), inches, constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


@dataclass
class ParityPanel:
    """One panel of a parity plot.

    Attributes:
        title: quantity name, e.g. ``"Energy"``, ``"Forces"``, ``"Stress"``.
        reference: reference values, any shape (e.g. ``[n_structures]`` energies,
            ``[n_atoms, 3]`` forces, ``[n_structures, 6]`` Voigt stresses).
        predicted: predicted values, same shape as ``reference``.
        unit: unit of both arrays, e.g. ``"meV/atom"``, ``"eV/Å"``, ``"GPa"``;
            the MAE / RMSE are reported in it.
        groups: optional labels (e.g. ``config_type`` strings) used to colour the
            points; either one label per value (``groups.size == reference.size``)
            or one per row of ``reference`` (``len(groups) == reference.shape[0]``,
            e.g. one per atom for ``[n_atoms, 3]`` forces), repeated over the row.
        error_unit, error_factor: report MAE / RMSE (box and legend) as
            ``error_factor`` x the axes' values in ``error_unit`` (e.g. forces
            plotted in eV/Å, errors in meV/Å as in the metrics table: ``"meV/Å"``,
            1000); default: the axes' unit.
    """

    title: str
    reference: np.ndarray
    predicted: np.ndarray
    unit: str = ""
    groups: np.ndarray | None = None
    error_unit: str | None = None
    error_factor: float = 1.0


def error_summary(reference: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Mean absolute error and root-mean-square error of ``predicted - reference``.

    Both arrays are flattened; pairs where either value is NaN or infinite are
    ignored (e.g. structures without a reference stress). The results are in the
    unit of the inputs.

    Returns:
        ``(mae, rmse)``; ``(nan, nan)`` when no finite pair is left.

    Raises:
        ValueError: if the shapes differ.
    """
    ref, pred, _ = _finite_pairs(reference, predicted)
    if ref.size == 0:
        return math.nan, math.nan
    diff = pred - ref
    return float(np.mean(np.abs(diff))), float(np.sqrt(np.mean(diff * diff)))


# --------------------------------------------------------------------------- parity


def parity_figure(panels: Sequence[ParityPanel | Mapping[str, Any]]) -> Figure:
    """The parity-plot figure (see :func:`parity_plot`), not saved."""
    prepared = []
    for panel in panels:
        panel = panel if isinstance(panel, ParityPanel) else ParityPanel(**panel)
        groups = _expand_groups(panel.groups, panel.reference)
        ref, pred, keep = _finite_pairs(panel.reference, panel.predicted)
        if ref.size == 0:
            continue  # empty (or all non-finite): skip the panel
        prepared.append((panel, ref, pred, None if groups is None else groups[keep]))
    if not prepared:
        raise ValueError("parity plot: every panel is empty, nothing to plot")

    n = len(prepared)
    fig = new_figure(4.6 * n, 4.6)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (panel, ref, pred, groups) in zip(axes, prepared):
        _draw_parity_panel(ax, panel, ref, pred, groups)
    return fig


def parity_plot(path: str | os.PathLike, panels: Sequence[ParityPanel | Mapping[str, Any]],
                dpi: int = 150) -> Path:
    """Save a parity plot (predicted vs reference) with one subplot per panel.

    Each panel shows the points (small, rasterized markers: force components can
    number ~10^5), the ``y = x`` line, equal x / y limits, and a text box with MAE,
    RMSE (in the panel's ``unit``, see :func:`error_summary`) and the number of
    points. With ``groups`` the points are coloured by group, with a legend giving
    each group's size and MAE. Panels whose arrays are empty (or entirely
    non-finite) are skipped.

    Args:
        path: output file; its suffix picks the format (``.png``, ``.pdf``,
            ``.svg``, ...; PNG when there is no suffix). Parent directories are
            created. Written atomically.
        panels: :class:`ParityPanel` objects, or dicts with the same keys.
        dpi: resolution for raster formats.

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: if every panel is empty, if ``reference`` and ``predicted``
            shapes differ, or if ``groups`` does not fit ``reference``.
        TypeError: if a panel dict has unknown keys.
    """
    return save_figure(parity_figure(panels), path, dpi)


def _draw_parity_panel(ax: Axes, panel: ParityPanel, ref: np.ndarray, pred: np.ndarray,
                       groups: np.ndarray | None) -> None:
    n = ref.size
    markersize = 4.0 if n <= 500 else 2.5 if n <= 5000 else 1.5
    style = dict(linestyle="none", marker="o", markersize=markersize, markeredgewidth=0,
                 alpha=0.8 if n <= 5000 else 0.5, rasterized=True)
    if groups is None:
        ax.plot(ref, pred, color="C0", **style)
    else:
        labels, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
        colors = _group_colors(len(labels))
        # Largest groups first, so that small groups are drawn on top and stay visible.
        for g in np.argsort(-counts, kind="stable"):
            sel = inverse == g
            mae, _ = error_summary(ref[sel], pred[sel])
            ax.plot(ref[sel], pred[sel], color=colors[g],
                    label=f"{labels[g]} (n={counts[g]}, MAE {panel.error_factor * mae:.3g}"
                          f"{' ' + panel.error_unit if panel.error_unit else ''})", **style)
        # Legend in the order of the sorted group names.
        handles, texts = ax.get_legend_handles_labels()
        order = np.argsort(np.argsort(-counts, kind="stable"))
        ax.legend([handles[i] for i in order], [texts[i] for i in order], loc="lower right",
                  fontsize="x-small", markerscale=max(1.0, 6.0 / markersize), frameon=True,
                  framealpha=0.85)

    lo = float(min(ref.min(), pred.min()))
    hi = float(max(ref.max(), pred.max()))
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(lo), 1.0) * 0.05
    lo, hi = lo - pad, hi + pad
    ax.plot([lo, hi], [lo, hi], color="k", linestyle="--", linewidth=0.8, alpha=0.7, zorder=3)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")

    unit = f" ({panel.unit})" if panel.unit else ""
    ax.set_title(panel.title)
    ax.set_xlabel(f"Reference {panel.title.lower()}{unit}")
    ax.set_ylabel(f"Predicted {panel.title.lower()}{unit}")
    ax.grid(True, linewidth=0.4, alpha=0.4)

    mae, rmse = error_summary(ref, pred)
    factor = panel.error_factor
    error_unit = panel.unit if panel.error_unit is None else panel.error_unit
    ax.text(0.04, 0.96, _error_text(factor * mae, factor * rmse, error_unit, n), transform=ax.transAxes,
            va="top", ha="left", family="monospace", fontsize="small", gid=ERROR_TEXT_GID,
            bbox=dict(boxstyle="round", facecolor="white", alpha=0.85, edgecolor="0.7"))


def _error_text(mae: float, rmse: float, unit: str, n: int) -> str:
    suffix = f" {unit}" if unit else ""
    return f"MAE  = {mae:.4g}{suffix}\nRMSE = {rmse:.4g}{suffix}\nN    = {n}"


def _finite_pairs(reference, predicted) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flattened float arrays restricted to finite pairs, and the mask used."""
    ref = np.asarray(reference, dtype=float)
    pred = np.asarray(predicted, dtype=float)
    if ref.shape != pred.shape:
        raise ValueError(f"reference shape {ref.shape} != predicted shape {pred.shape}")
    ref, pred = ref.reshape(-1), pred.reshape(-1)
    keep = np.isfinite(ref) & np.isfinite(pred)
    return ref[keep], pred[keep], keep


def _expand_groups(groups, reference) -> np.ndarray | None:
    """One string label per flattened value of ``reference``."""
    if groups is None:
        return None
    groups = np.asarray(groups)
    ref_shape = np.shape(reference)
    size = int(np.prod(ref_shape))
    if groups.size == size:
        labels = groups.reshape(-1)
    elif len(ref_shape) >= 1 and groups.ndim == 1 and len(groups) == ref_shape[0] and ref_shape[0] > 0:
        labels = np.repeat(groups, size // ref_shape[0])
    else:
        raise ValueError(f"groups of shape {groups.shape} do not fit values of shape {ref_shape}: "
                         "give one label per value or one per row")
    return labels.astype(str)


def _group_colors(n: int) -> list:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    cmap = colormaps["turbo"]
    return [cmap(x) for x in np.linspace(0.05, 0.95, n)]
