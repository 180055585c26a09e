"""What the n2p2 reader and writer share: the error type, activation codes,
``input.nn`` keyword tables, units, element and symmetry-function order, and
the number format of written files."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from ase import units as ase_units
from ase.data import atomic_numbers

from mlip.kernels.network import ACTIVATIONS
from mlip.kernels.symmetry_functions import SymmetryFunction


class N2P2Error(ValueError):
    """An n2p2 directory or file cannot be read exactly, or a model cannot be
    written as n2p2 files; the message names the file and what is wrong."""


#: n2p2's one-letter activation codes (``global_activation_short``) and mlip's names.
ACTIVATION_CODES: dict[str, str] = {
    "l": "identity",
    "t": "tanh",
    "s": "logistic",
    "p": "softplus",
    "r": "relu",
    "g": "gaussian",
    "c": "cos",
    "S": "revlogistic",
    "e": "negexp",
    "h": "harmonic",
}
#: mlip's activation names and n2p2's codes.
CODE_OF: dict[str, str] = {name: code for code, name in ACTIVATION_CODES.items()}
assert set(CODE_OF) <= set(ACTIVATIONS)

#: Keywords that determine n2p2's prediction; all of them are read.
PREDICTION_KEYWORDS = frozenset({
    "number_of_elements", "elements", "atom_energy", "cutoff_type", "symfunction_short",
    "scale_symmetry_functions", "scale_min_short", "scale_max_short", "center_symmetry_functions",
    "scale_symmetry_functions_sigma", "global_hidden_layers_short", "global_nodes_short",
    "global_activation_short", "element_nodes_short", "normalize_nodes", "mean_energy", "conv_length",
    "conv_energy", "conv_charge", "nnp_type", "nn_type", "committee_mode", "committee_dir_prefix",
})

#: Keywords that only steer n2p2's training (``nnp-train``); they are ignored.
TRAINING_KEYWORDS = frozenset({
    "random_seed", "test_fraction", "epochs", "use_short_forces", "rmse_threshold", "rmse_threshold_energy",
    "rmse_threshold_force", "rmse_threshold_charge", "rmse_threshold_trials", "rmse_threshold_trials_energy",
    "rmse_threshold_trials_force", "rmse_threshold_trials_charge", "energy_fraction", "force_fraction",
    "charge_fraction", "use_old_weights_short", "use_old_weights_charge", "weights_min", "weights_max",
    "nguyen_widrow_weights_short", "nguyen_widrow_weights_charge", "precondition_weights",
    "main_error_metric", "write_trainpoints", "write_trainforces", "write_traincharges",
    "write_weights_epoch", "write_neuronstats", "write_trainlog", "repeated_energy_update", "updater_type",
    "parallel_mode", "jacobian_mode", "update_strategy", "selection_mode", "selection_mode_energy",
    "selection_mode_force", "selection_mode_charge", "task_batch_size_energy", "task_batch_size_force",
    "task_batch_size_charge", "gradient_type", "gradient_eta", "gradient_adam_eta", "gradient_adam_beta1",
    "gradient_adam_beta2", "gradient_adam_epsilon", "kalman_type", "kalman_epsilon", "kalman_eta",
    "kalman_etatau", "kalman_etamax", "kalman_q0", "kalman_qtau", "kalman_qmin", "kalman_lambda_short",
    "kalman_nue_short", "memorize_symfunc_results", "force_weight", "short_energy_error_threshold",
    "short_force_error_threshold", "short_energy_fraction", "short_force_fraction",
})

#: Length units (size in Å) and energy units (size in eV) accepted by ``units``
#: (ASE's values, as its ``runnerdata`` reader uses).
LENGTH_UNITS: dict[str, float] = {"angstrom": 1.0, "bohr": ase_units.Bohr, "nm": 10.0}
ENERGY_UNITS: dict[str, float] = {
    "ev": 1.0, "mev": 1e-3, "hartree": ase_units.Hartree, "rydberg": ase_units.Rydberg,
    "kcal/mol": ase_units.kcal / ase_units.mol, "kj/mol": ase_units.kJ / ase_units.mol,
}


def parse_units(units: str) -> tuple[float, float]:
    """``(length unit in Å, energy unit in eV)`` of a ``"length,energy"`` string.

    Each part is a name (``angstrom``, ``bohr``, ``nm``; ``ev``, ``mev``,
    ``hartree``, ``rydberg``, ``kcal/mol``, ``kj/mol``; case-insensitive) or the
    unit's size as a number (Å, eV), e.g. ``"bohr,hartree"`` or
    ``"0.52917721067,27.211386"``.  These are the inverses of LAMMPS'
    ``cflength``/``cfenergy`` (which convert LAMMPS units into the potential's).
    """
    parts = [p.strip() for p in str(units).split(",")]
    if len(parts) != 2:
        raise ValueError(f"units must be 'length,energy' (e.g. 'bohr,hartree'), got {units!r}")
    sizes = []
    for part, table, kind in zip(parts, (LENGTH_UNITS, ENERGY_UNITS), ("length", "energy")):
        if part.lower() in table:
            sizes.append(table[part.lower()])
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"unknown {kind} unit {part!r}; use one of {sorted(table)} or a number") from None
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{kind} unit must be a positive number, got {part!r}")
        sizes.append(value)
    return sizes[0], sizes[1]


def n2p2_order(function: SymmetryFunction, index: Mapping[str, int]) -> tuple:
    """n2p2's sort key of a symmetry function within its element (``SymFnc*::operator<``;
    neighbour elements by their index, i.e. by atomic number)."""
    if function.kind == 2:
        return (2, function.r_cut, function.eta, function.r_shift, index[function.neighbors[0]])
    e1, e2 = sorted(index[e] for e in function.neighbors)
    return (function.kind, function.r_cut, function.eta, function.r_shift, function.zeta, function.lam, e1, e2)


def sorted_elements(symbols: Iterable[str], where: str) -> tuple[str, ...]:
    """The element symbols in n2p2's order (by atomic number); ``where`` prefixes
    the error for unknown or repeated symbols."""
    symbols = list(symbols)
    unknown = [s for s in symbols if s not in atomic_numbers or s == "X"]
    if unknown:
        raise N2P2Error(f"{where}: unknown chemical element(s) {unknown}")
    if len(set(symbols)) != len(symbols):
        raise N2P2Error(f"{where}: elements {symbols} repeat")
    return tuple(sorted(symbols, key=atomic_numbers.__getitem__))


def format_number(value: float) -> str:
    """A number as n2p2 files write it: 17 significant digits, 24 characters wide."""
    return f"{value:24.16E}"
