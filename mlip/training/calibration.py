"""Calibration of an ensemble's uncertainties, and how well they rank and cover the errors.

An ensemble's raw uncertainties are its members' population spreads
(:mod:`mlip.uncertainty`): ``sigma_E`` of the energy per structure and DeePMD's
``devi_f`` per atom, ``sigma_F,i = sqrt(mean_k |F_ik - <F_i>|^2) = sqrt(sum_c
var_k F_ikc)``.  Calibration (after apax's ``calibration.py``) is one factor per
quantity, fitted on held-out (validation) structures so that the errors divided by
the calibrated spread have unit mean square:

* energy: ``s_E = sqrt(mean_S (e_S / sigma_E,S)^2)`` with ``e_S`` the error of the
  energy (per atom or total: the ratio is the same);
* forces: a component's spread is taken as ``sigma_F,i / sqrt(3)`` (isotropic), so
  ``s_F = sqrt(mean_{i,c} (e_ic / (sigma_F,i / sqrt 3))^2) = sqrt(mean_i |e_i|^2 /
  sigma_F,i^2)``: ``s_F * devi_f`` estimates the size ``|e_i|`` of the atom's force
  error and ``s_F * devi_f / sqrt(3)`` the standard deviation of each component.

Entries whose spread is exactly zero are left out of a fit.  The factors are data
(:attr:`mlip.model.Model.calibration`, stored in the model file); the calculator
multiplies ``energy_uncertainty`` and ``forces_uncertainty`` by them.

:func:`uncertainty_metrics` reports Spearman rank correlations of spread and error
(per atom, per structure's maximum, per structure's energy) and the fraction of
force components and energies within one sigma, raw and calibrated (0.683 for
Gaussian errors of the right size); :func:`write_calibration_plot` draws the
observed against the expected fraction within ``±k sigma`` for every ``k``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from mlip.model import Model
from mlip.training.data import Sample
from mlip.training.evaluate import PredictionSet, predict_samples

#: Expected fraction of Gaussian errors within one standard deviation.
ONE_SIGMA = math.erf(1.0 / math.sqrt(2.0))


def _factor(errors: np.ndarray, sigmas: np.ndarray, what: str) -> float:
    """``sqrt(mean((errors / sigmas)^2))`` over the entries with ``sigmas > 0``."""
    errors, sigmas = np.asarray(errors, dtype=np.float64), np.asarray(sigmas, dtype=np.float64)
    keep = sigmas > 0
    if not keep.any():
        raise ValueError(f"cannot calibrate the {what} uncertainty: every member predicts the same {what}")
    return float(np.sqrt(np.mean((errors[keep] / sigmas[keep]) ** 2)))


def _require_sigmas(predictions: PredictionSet) -> None:
    if predictions.energy_sigma is None or predictions.forces_sigma is None:
        raise ValueError("these predictions hold no spread: use predict_samples(ensemble, ..., uncertainty=True)")


def calibration_factors(predictions: PredictionSet) -> dict[str, float]:
    """``{"energy": s_E, "forces": s_F}`` (dimensionless, see the module docstring)
    from an ensemble's predictions with their spread.

    Raises:
        ValueError: no spread in ``predictions``, or every spread of a quantity is zero.
    """
    _require_sigmas(predictions)
    force_errors = np.linalg.norm(predictions.forces_pred - predictions.forces_ref, axis=-1)
    return {"energy": _factor(predictions.energy_pred - predictions.energy_ref, predictions.energy_sigma, "energy"),
            "forces": _factor(force_errors, predictions.forces_sigma, "forces")}


def fit_calibration(model: Model, samples: list[Sample], dtype: str = "float64") -> dict[str, float]:
    """Calibration factors ``{"energy": s_E, "forces": s_F}`` of the ensemble
    ``model`` on ``samples`` (labelled held-out structures, e.g. the validation
    split), for :attr:`mlip.model.Model.calibration`."""
    return calibration_factors(predict_samples(model, samples, dtype, uncertainty=True))


# ----------------------------------------------------------------------------- metrics


def rank_data(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values`` (flattened), ties given the average of their ranks."""
    values = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    first = np.concatenate([[True], ordered[1:] != ordered[:-1]])  # start of each run of equal values
    run = np.cumsum(first) - 1  # run index of each sorted entry
    starts = np.flatnonzero(np.concatenate([first, [True]]))  # run boundaries, n at the end
    average = 0.5 * (starts[:-1] + starts[1:] - 1) + 1.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(values))
    ranks[order] = average[run]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of ``x`` and ``y``: Pearson's correlation of
    their ranks (ties averaged); NaN when either is constant or has < 2 entries."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"spearman: {x.shape} values against {y.shape}")
    if len(x) < 2:
        return math.nan
    rx, ry = rank_data(x) - (len(x) + 1) / 2.0, rank_data(y) - (len(y) + 1) / 2.0
    norm = math.sqrt(float(np.sum(rx * rx)) * float(np.sum(ry * ry)))
    return float(np.sum(rx * ry)) / norm if norm > 0 else math.nan


def within(errors: np.ndarray, sigmas: np.ndarray, k: float | np.ndarray = 1.0) -> float | np.ndarray:
    """Fraction of ``|errors| <= k * sigmas`` (``sigmas`` broadcast against
    ``errors``); one fraction per entry of an array ``k``."""
    with np.errstate(divide="ignore", invalid="ignore"):  # sigma 0: only an exact prediction is within
        ratio = np.abs(np.asarray(errors, dtype=np.float64)) / np.asarray(sigmas, dtype=np.float64)
    ratio = np.where(np.isnan(ratio), 0.0, ratio).ravel()  # 0 / 0: an exact prediction is within
    k = np.asarray(k, dtype=np.float64)
    fractions = np.mean(ratio[None, :] <= k.reshape(-1, 1), axis=1)
    return float(fractions[0]) if k.ndim == 0 else fractions


def _component_errors_and_sigmas(predictions: PredictionSet) -> tuple[np.ndarray, np.ndarray]:
    """Force-component errors ``[atoms, 3]`` (eV/Å) and their raw per-component
    sigma ``devi_f / sqrt(3)`` ``[atoms, 1]``."""
    return predictions.forces_pred - predictions.forces_ref, predictions.forces_sigma[:, None] / math.sqrt(3.0)


def uncertainty_metrics(predictions: PredictionSet, calibration: dict[str, float] | None = None) -> dict[str, float]:
    """How an ensemble's spread matches its errors on ``predictions`` (with spread).

    Keys: ``spearman F atom`` (per-atom ``devi_f`` vs ``|F error|``), ``spearman F
    max`` (per structure, the largest of each), ``spearman E`` (energy sigma vs
    ``|E error|`` per atom); ``F within 1σ raw`` / ``cal`` (fraction of force
    components with ``|error| <= sigma_F / sqrt(3)``, times ``s_F`` when
    calibrated), ``E within 1σ raw`` / ``cal``; the factors applied (``s_E``,
    ``s_F``: those of ``calibration``, 1 when absent) and those this data would
    give (``s_E here``, ``s_F here``; NaN where every spread is zero).  Fractions
    are 0.683 for Gaussian errors whose standard deviation the (calibrated) sigma is.
    """
    _require_sigmas(predictions)
    calibration = calibration or {}
    s_energy, s_forces = float(calibration.get("energy", 1.0)), float(calibration.get("forces", 1.0))
    force_error = np.linalg.norm(predictions.forces_pred - predictions.forces_ref, axis=-1)
    structure = predictions.atom_structures
    n = len(predictions.samples)
    max_sigma, max_error = np.full(n, -np.inf), np.full(n, -np.inf)
    np.maximum.at(max_sigma, structure, predictions.forces_sigma)
    np.maximum.at(max_error, structure, force_error)
    energy_error = predictions.energy_pred - predictions.energy_ref
    components, component_sigma = _component_errors_and_sigmas(predictions)
    try:
        here = calibration_factors(predictions)
    except ValueError:  # members that agree exactly: nothing to fit
        here = {"energy": math.nan, "forces": math.nan}
    return {
        "spearman F atom": spearman(predictions.forces_sigma, force_error),
        "spearman F max": spearman(max_sigma, max_error),
        "spearman E": spearman(predictions.energy_sigma, np.abs(energy_error)),
        "F within 1σ raw": within(components, component_sigma),
        "F within 1σ cal": within(components, s_forces * component_sigma),
        "E within 1σ raw": within(energy_error, predictions.energy_sigma),
        "E within 1σ cal": within(energy_error, s_energy * predictions.energy_sigma),
        "s_E": s_energy, "s_F": s_forces, "s_E here": here["energy"], "s_F here": here["forces"],
    }


def write_calibration_plot(path: str | os.PathLike, predictions: PredictionSet,
                           calibration: dict[str, float] | None = None, title: str = "") -> Path:
    """Save a calibration plot: for force components and energies, the observed
    fraction of errors within ``±k sigma`` against the fraction a Gaussian of that
    sigma would put there (``erf(k / sqrt 2)``, k = 0..4), raw and calibrated; a
    well-calibrated ensemble lies on the diagonal."""
    from math import erf

    from mlip.files import save_figure
    from mlip.plots import new_figure

    _require_sigmas(predictions)
    calibration = calibration or {}
    k = np.linspace(0.0, 4.0, 81)
    expected = np.array([erf(x / math.sqrt(2.0)) for x in k])
    components, component_sigma = _component_errors_and_sigmas(predictions)
    quantities = [
        ("force components", components, component_sigma, float(calibration.get("forces", 1.0))),
        ("energies", predictions.energy_pred - predictions.energy_ref, predictions.energy_sigma,
         float(calibration.get("energy", 1.0))),
    ]
    fig = new_figure(9.2, 4.6)
    prefix = f"{title}: " if title else ""
    for ax, (name, errors, sigmas, factor) in zip(fig.subplots(1, 2, squeeze=False)[0], quantities):
        ax.plot([0, 1], [0, 1], color="k", linestyle="--", linewidth=0.8, alpha=0.7, label="ideal")
        ax.plot(expected, within(errors, sigmas, k), color="C0", label="raw")
        if factor != 1.0:
            ax.plot(expected, within(errors, factor * sigmas, k), color="C1", label=f"calibrated (x{factor:.3g})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(f"{prefix}{name}")
        ax.set_xlabel("expected fraction within ±kσ (Gaussian)")
        ax.set_ylabel("observed fraction within ±kσ")
        ax.grid(True, linewidth=0.4, alpha=0.4)
        ax.legend(loc="lower right", fontsize="small")
    return save_figure(fig, path)


__all__ = ["ONE_SIGMA", "calibration_factors", "fit_calibration", "rank_data", "spearman", "uncertainty_metrics",
           "within", "write_calibration_plot"]
