"""Training diagnostics (``mlip train``, ``mlip evaluate``): learning curves and metric tables.

* :func:`learning_curve`: losses and validation MAEs vs epoch;
* :func:`metrics_table`: aligned plain-text table of error metrics.

Parity plots and the MAE / RMSE summary are in :mod:`mlip.plots` (shared with
the analysis toolkit). Figures are drawn on an Agg canvas (no display, no global
``pyplot`` state; matplotlib is imported lazily) and written atomically with
:func:`mlip.files.save_figure`, so a reader never sees a half-written plot.

Units are whatever the caller passes: this module does not convert anything.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlip.files import save_figure
from mlip.plots import new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "learning_curve",
    "learning_curve_figure",
    "metrics_table",
]

# Units of the learning-curve metrics, matched against the key (after ``*_mae``).
_METRIC_UNITS = (("energy", "meV/atom"), ("force", "meV/Å"), ("stress", "GPa"))


# --------------------------------------------------------------------------- learning curve


def learning_curve_figure(history: Sequence[Mapping[str, Any]]) -> Figure:
    """The learning-curve figure (see :func:`learning_curve`), not saved."""
    from matplotlib.ticker import MaxNLocator

    keys: dict[str, None] = {}  # ordered union of keys
    for entry in history:
        keys.update(dict.fromkeys(entry))
    loss_keys = [k for k in keys if k.endswith("loss")]
    mae_keys = [k for k in keys if k.endswith("_mae")]

    fig = new_figure(11.0, 4.2)
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
    return save_figure(learning_curve_figure(history), path, dpi)


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
