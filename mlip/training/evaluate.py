"""Evaluate a model on labelled structures: predictions, error metrics per split and
per config_type, parity plots.

Predictions go through the model's full energy function (neighbour list, descriptor
kernel, ``jax.grad`` for forces and virial), independent of the descriptor cache the
trainer uses, so a final evaluation also cross-checks the training path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from ase.units import GPa

from mlip.batch import bucket_structures
from mlip.model import Model, cast_params, make_model_functions, virial_to_stress
from mlip.precision import DTYPES, with_float64
from mlip.training.data import Sample
from mlip.uncertainty import force_deviation, spread


@dataclass
class PredictionSet:
    """Reference and predicted labels of a list of samples (host arrays).

    Energies are per atom (eV/atom), forces eV/Å (atoms concatenated), stresses
    eV/Å^3 (NaN where a structure has no stress label or no periodic cell).  With
    ``predict_samples(..., uncertainty=True)`` (an ensemble) the predictions are the
    members' means and ``energy_sigma`` ``[S]`` (eV/atom: the members' population
    std of the energy over the atom count) and ``forces_sigma`` ``[atoms]`` (eV/Å:
    DeePMD's per-atom ``devi_f``) hold their raw spread; otherwise both are None.
    """

    samples: list[Sample]
    energy_ref: np.ndarray
    energy_pred: np.ndarray
    forces_ref: np.ndarray
    forces_pred: np.ndarray
    stress_ref: np.ndarray
    stress_pred: np.ndarray
    energy_sigma: np.ndarray | None = None
    forces_sigma: np.ndarray | None = None

    @property
    def atom_groups(self) -> np.ndarray:
        return np.concatenate([[s.config_type] * s.n_atoms for s in self.samples]) if self.samples else np.array([])

    @property
    def structure_groups(self) -> np.ndarray:
        return np.array([s.config_type for s in self.samples])

    @property
    def atom_structures(self) -> np.ndarray:
        """Index of each atom's structure (atoms concatenated as in the force arrays)."""
        return np.repeat(np.arange(len(self.samples)), [s.n_atoms for s in self.samples]).astype(int)


@with_float64
def predict_samples(model: Model, samples: Sequence[Sample], dtype: str = "float64",
                    uncertainty: bool = False) -> PredictionSet:
    """Energies, forces and stresses of ``samples`` from ``model``'s full energy
    function (one compilation per padded shape).

    ``uncertainty``: evaluate every member of an ensemble model (one batched
    descriptor pullback) and return their mean and raw spread
    (:attr:`PredictionSet.energy_sigma`, :attr:`PredictionSet.forces_sigma`).

    Raises:
        ValueError: ``uncertainty`` for a single model.
    """
    if uncertainty and model.config.ensemble == 1:
        raise ValueError("uncertainty=True needs an ensemble model; this one is a single model")
    jdtype = DTYPES[dtype]
    functions = make_model_functions(model.config)
    evaluate = jax.jit(functions.member_results if uncertainty else functions.energy_forces_virial)
    params = cast_params(model.params, jdtype)
    padded_of = {}  # one padded shape per atom bucket: few compilations
    for bucket in bucket_structures(model, [s.atoms for s in samples]):
        padded_of.update(zip(bucket.members, bucket.structures))
    e_ref, e_pred, f_ref, f_pred, s_ref, s_pred, e_sigma, f_sigma = [], [], [], [], [], [], [], []
    for n, sample in enumerate(samples):
        result = evaluate(params, *padded_of[n].as_jax(jdtype))
        n = sample.n_atoms
        if uncertainty:  # every member's values: the mean and the spread
            member_energy = np.asarray(result.energy, dtype=np.float64)
            member_forces = np.asarray(result.forces, dtype=np.float64)[:, :n]
            energy, forces = float(member_energy.mean()), member_forces.mean(axis=0)
            virial = np.asarray(result.virial, dtype=np.float64).mean(axis=0)
            e_sigma.append(float(spread(member_energy)) / n)
            f_sigma.append(force_deviation(member_forces))
        else:
            energy, virial = float(result.energy), result.virial
            forces = np.asarray(result.forces, dtype=np.float64)[:n]
        e_ref.append(sample.energy / n)
        e_pred.append(energy / n)
        f_ref.append(sample.forces)
        f_pred.append(forces)
        periodic = bool(sample.atoms.pbc.all())
        s_ref.append(sample.stress if (sample.stress is not None and periodic) else np.full(6, np.nan))
        s_pred.append(virial_to_stress(virial, sample.atoms.cell.array) if periodic else np.full(6, np.nan))
    empty = np.zeros((0, 3))
    sigmas = {}
    if uncertainty:
        sigmas = {"energy_sigma": np.array(e_sigma),
                  "forces_sigma": np.concatenate(f_sigma) if f_sigma else np.zeros(0)}
    return PredictionSet(
        list(samples), np.array(e_ref), np.array(e_pred),
        np.concatenate(f_ref) if f_ref else empty, np.concatenate(f_pred) if f_pred else empty,
        np.array(s_ref).reshape(-1, 6), np.array(s_pred).reshape(-1, 6), **sigmas,
    )


def error_metrics(predictions: PredictionSet, structures: np.ndarray | None = None) -> dict[str, float]:
    """MAE/RMSE of energy (meV/atom), forces (meV/Å) and stress (GPa), and the
    structure count, over all samples or the boolean selection ``structures``."""
    from mlip.plots import error_summary

    if structures is None:
        structures = np.ones(len(predictions.samples), dtype=bool)
    atoms = np.concatenate([[keep] * s.n_atoms for keep, s in zip(structures, predictions.samples)]).astype(bool)
    out: dict[str, float] = {"n": int(structures.sum())}
    e_mae, e_rmse = error_summary(predictions.energy_ref[structures], predictions.energy_pred[structures])
    f_mae, f_rmse = error_summary(predictions.forces_ref[atoms], predictions.forces_pred[atoms])
    out.update({"E MAE meV/atom": 1e3 * e_mae, "E RMSE meV/atom": 1e3 * e_rmse,
                "F MAE meV/Å": 1e3 * f_mae, "F RMSE meV/Å": 1e3 * f_rmse})
    if np.isfinite(predictions.stress_ref[structures]).any():
        s_mae, s_rmse = error_summary(predictions.stress_ref[structures], predictions.stress_pred[structures])
        out.update({"S MAE GPa": s_mae / GPa, "S RMSE GPa": s_rmse / GPa})
    return out


def metrics_by_group(predictions: PredictionSet) -> dict[str, dict[str, float]]:
    """``{"all": metrics, config_type: metrics, ...}`` (see :func:`error_metrics`)."""
    groups = predictions.structure_groups
    rows = {"all": error_metrics(predictions)}
    for group in sorted(set(groups.tolist())):
        rows[group] = error_metrics(predictions, groups == group)
    return rows


def write_parity_plot(path: str | Path, predictions: PredictionSet, title: str = "") -> Path | None:
    """Energy (meV/atom), force (eV/Å axes, errors in meV/Å like the metrics table)
    and stress (GPa) parity panels coloured by config_type; ``None`` when there is
    nothing to plot."""
    from mlip.plots import ParityPanel, parity_plot

    if not predictions.samples:
        return None
    prefix = f"{title}: " if title else ""
    panels = [
        ParityPanel(f"{prefix}energy", 1e3 * predictions.energy_ref, 1e3 * predictions.energy_pred,
                    "meV/atom", predictions.structure_groups),
        ParityPanel(f"{prefix}forces", predictions.forces_ref, predictions.forces_pred, "eV/Å",
                    predictions.atom_groups, error_unit="meV/Å", error_factor=1e3),  # errors as in the table
        ParityPanel(f"{prefix}stress", predictions.stress_ref / GPa, predictions.stress_pred / GPa, "GPa",
                    predictions.structure_groups),
    ]
    return parity_plot(path, panels)
