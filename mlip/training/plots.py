"""Diagnostic plots and tables for training and evaluation (``mlip train``, ``mlip evaluate``).

* :func:`parity_plot`: predicted vs reference scatter, one panel per quantity
  (energy, forces, stress), with MAE / RMSE written in each panel;
* :func:`learning_curve`: losses and validation MAEs vs epoch;
* :func:`metrics_table`: aligned plain-text table of error metrics;
* :func:`error_summary`: the MAE / RMSE used by the parity panels.

Figures are drawn with :class:`matplotlib.figure.Figure` on an Agg canvas, so no
display and no global ``pyplot`` state are involved. matplotlib is imported
lazily inside the functions, so importing this module stays cheap. Files are
written atomically: to a temporary file in the destination directory, then moved
into place with :func:`os.replace`, so a reader never sees a half-written plot.

Units are whatever the caller passes: this module does not convert anything.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "ParityPanel",
    "error_summary",
    "learning_curve",
    "learning_curve_figure",
    "metrics_table",
    "parity_figure",
    "parity_plot",
]

#: ``gid`` of the MAE / RMSE text artist in every parity panel (for tests and tools).
ERROR_TEXT_GID = "error-summary"

# Units of the learning-curve metrics, matched against the key (after ``*_mae``).
_METRIC_UNITS = (("energy", "meV/atom"), ("force", "meV/Å"), ("stress", "GPa"))


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
    """

    title: str
    reference: np.ndarray
    predicted: np.ndarray
    unit: str = ""
    groups: np.ndarray | None = None


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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
    fig = Figure(figsize=(4.6 * n, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
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
    return _save_atomic(parity_figure(panels), path, dpi)


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
                    label=f"{labels[g]} (n={counts[g]}, MAE {mae:.3g})", **style)
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
    ax.text(0.04, 0.96, _error_text(mae, rmse, panel.unit, n), transform=ax.transAxes,
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


# --------------------------------------------------------------------------- learning curve


def learning_curve_figure(history: Sequence[Mapping[str, Any]]) -> Figure:
    """The learning-curve figure (see :func:`learning_curve`), not saved."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    keys: dict[str, None] = {}  # ordered union of keys
    for entry in history:
        keys.update(dict.fromkeys(entry))
    loss_keys = [k for k in keys if k.endswith("loss")]
    mae_keys = [k for k in keys if k.endswith("_mae")]

    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_mae = fig.subplots(1, 2)
    for ax, series_keys, title, ylabel in (
        (ax_loss, loss_keys, "Loss", "Loss"),
        (ax_mae, mae_keys, "Mean absolute errors", "MAE"),
    ):
        plotted = 0
        for key in series_keys:
            x, y = _series(history, key)
            if x.size == 0:
                continue
            label = key
            if key.endswith("_mae"):
                unit = _metric_unit(key)
                label = f"{key} ({unit})" if unit else key
            marker = "o" if x.size <= 100 else None  # dots only while they stay legible
            ax.plot(x, y, marker=marker, markersize=3, linewidth=1.2, label=label)
            plotted += 1
        ax.set_title(title)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if plotted:
            ax.set_yscale("log")
            ax.legend(fontsize="small")
            ax.grid(True, which="both", linewidth=0.4, alpha=0.4)
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center",
                    color="0.5")
    return fig


def learning_curve(path: str | os.PathLike, history: Sequence[Mapping[str, Any]],
                   dpi: int = 150) -> Path:
    """Save a learning curve: losses (left) and validation MAEs (right) vs epoch.

    Args:
        path: output file; its suffix picks the format (PNG when there is none).
            Parent directories are created. Written atomically.
        history: one dict per epoch, e.g. ``{"epoch": 1, "train_loss": ...,
            "val_loss": ..., "val_energy_mae": ..., "val_force_mae": ...,
            "val_stress_mae": ..., "lr": ...}``. Any key may be missing or
            ``None`` in any entry; such points are left out. ``epoch`` defaults
            to the 1-based position in ``history``.

    Both panels use a log y axis, so only positive finite values are drawn. The
    left panel has every key ending in ``loss``; the right panel every key ending
    in ``_mae``, labelled with its unit, which is assumed from the key: ``energy``
    meV/atom, ``force`` meV/Å, ``stress`` GPa (values are not converted). Other
    keys (``lr``, ...) are ignored. A panel with nothing to draw says "no data".

    Returns:
        ``Path(path)``.
    """
    return _save_atomic(learning_curve_figure(history), path, dpi)


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epoch, value) points of ``key`` that can go on a log axis."""
    xs, ys = [], []
    for index, entry in enumerate(history):
        value = _as_float(entry.get(key))
        if value is None or not math.isfinite(value) or value <= 0:
            continue
        epoch = _as_float(entry.get("epoch"))
        xs.append(index + 1 if epoch is None else epoch)
        ys.append(value)
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def _as_float(value) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _metric_unit(key: str) -> str:
    lowered = key.lower()
    for word, unit in _METRIC_UNITS:
        if word in lowered:
            return unit
    return ""


# --------------------------------------------------------------------------- table


def metrics_table(rows: Mapping[str, Mapping[str, Any]], name_header: str = "") -> str:
    """Aligned plain-text table of metrics.

    Args:
        rows: ``{row name: {column: value}}``, e.g. ``{"val": {"E MAE meV/atom": 1.2,
            "F MAE meV/Å": 45.0, "n": 120}, "bulk": {...}}`` (row name: a split or a
            config_type). Columns are the union of the rows' keys, in order of
            first appearance.
        name_header: header of the first (row name) column.

    Values: integers (and integral floats) are printed as integers, other numbers
    with 4 significant digits, strings as they are; missing, ``None`` and NaN
    values as ``-``. The name column is left-aligned, the others right-aligned;
    a dashed rule separates the header. No trailing newline; ``""`` for no rows.
    """
    if not rows:
        return ""
    columns: dict[str, None] = {}
    for values in rows.values():
        columns.update(dict.fromkeys(values))
    header = [name_header] + list(columns)
    body = [[str(name)] + [_format_value(values.get(c)) for c in columns]
            for name, values in rows.items()]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(w) for cell, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(line) for line in body)])


def _format_value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    if 1e4 <= abs(v) < 1e12:
        return f"{v:.0f}"
    return f"{v:.4g}"


# --------------------------------------------------------------------------- saving


def _save_atomic(fig: Figure, path: str | os.PathLike, dpi: int) -> Path:
    """Save ``fig`` to ``path`` via a temporary file in the same directory + os.replace."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"unsupported plot format {fmt!r} (from {path}); "
                         f"use one of {sorted(supported)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as handle:  # mode 0o666 & ~umask, like a normal file
            fig.savefig(handle, format=fmt, dpi=dpi)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
