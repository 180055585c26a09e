"""Interpretability: per-atom energy reports, Shapley values, counterfactual motif removal.

Shapley values of a cooperative game ``v`` over ``n`` players (features or groups
of features)::

    phi_i = sum_{S not containing i} |S|! (n - |S| - 1)! / n! * (v(S + i) - v(S))

computed exactly by enumerating all ``2^n`` coalitions (n <= 16).  For a model
``f``, an input ``x`` and background rows ``b`` the game is interventional:
``v(S) = mean_b f(x_S, b_rest)``, the players present take ``x``'s values and the
others the background's, so ``sum_i phi_i = f(x) - mean_b f(b)`` (efficiency).
:func:`shap_group_shapley` computes the same numbers with shap.

Motif importance: remove (or re-label) a set of atoms, optionally relax the
positions with the potential, and report::

    dE = E(modified) - E(original) + sum_removed mu_e + sum_relabelled (mu_old - mu_new)

in eV, the energy cost of moving the motif's atoms into reservoirs at chemical
potentials ``mu_e`` (eV/atom; default: the original structure's energy per atom,
the bulk value for a one-element crystal), so the comparison keeps the composition.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from math import factorial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.neighborlist import neighbor_list

from mlip.analysis._extra import require
from mlip.analysis.plotting import new_figure, save_figure
from mlip.model import Model, make_model_functions
from mlip.precision import float64_scope
from mlip.batch import compute_descriptors

MAX_PLAYERS = 16


# --------------------------------------------------------------------------- per-atom energies


@dataclass(frozen=True)
class AtomicEnergyReport:
    """Per-atom energies (eV) of one structure and their summary."""

    symbols: tuple[str, ...]
    energies: np.ndarray
    total: float

    def table(self, top: int = 5) -> str:
        """Per-element count, mean, spread, min and max (eV), then the ``top`` highest atoms."""
        symbols = np.array(self.symbols)
        lines = [f"total {self.total:.6f} eV, sum of atomic energies {self.energies.sum():.6f} eV",
                 f"{'element':>8s} {'count':>6s} {'mean eV':>12s} {'std eV':>10s} {'min eV':>12s} {'max eV':>12s}"]
        for element in dict.fromkeys(self.symbols):
            e = self.energies[symbols == element]
            lines.append(f"{element:>8s} {len(e):6d} {e.mean():12.5f} {e.std():10.5f} {e.min():12.5f} {e.max():12.5f}")
        lines.append("highest-energy atoms: " + ", ".join(
            f"{i} ({self.symbols[i]}, {self.energies[i]:.5f} eV)" for i in np.argsort(-self.energies)[:top]))
        return "\n".join(lines)


def atomic_energy_report(atoms: Atoms, calculator: Calculator) -> AtomicEnergyReport:
    """Per-atom energies from a calculator that provides ``energies``
    (:class:`~mlip.calculator.MLIPCalculator`, ASE's EMT, ...)."""
    atoms = atoms.copy()
    atoms.calc = calculator
    return AtomicEnergyReport(tuple(atoms.get_chemical_symbols()), np.asarray(atoms.get_potential_energies()),
                              float(atoms.get_potential_energy()))


def plot_atomic_energies(path: str | os.PathLike, atoms: Atoms, energies, title: str = "") -> Path:
    """3D scatter of the atoms coloured by their energy (eV), with a colour bar."""
    energies = np.asarray(energies, dtype=float)
    if energies.shape != (len(atoms),):
        raise ValueError(f"need one energy per atom ({len(atoms)}), got shape {energies.shape}")
    fig = new_figure(5.8, 4.8)
    ax = fig.add_subplot(projection="3d")
    points = ax.scatter(*atoms.positions.T, c=energies, cmap="coolwarm", s=60, edgecolors="k", linewidths=0.3)
    fig.colorbar(points, ax=ax, shrink=0.7, pad=0.12, label="atomic energy (eV)")
    ax.set_xlabel("x (Å)")
    ax.set_ylabel("y (Å)")
    ax.set_zlabel("z (Å)")
    ax.set_title(title or atoms.get_chemical_formula())
    return save_figure(fig, path)


# --------------------------------------------------------------------------- Shapley values


def _check_players(n: int) -> None:
    if not 1 <= n <= MAX_PLAYERS:
        raise ValueError(f"exact Shapley values need 1 to {MAX_PLAYERS} players, got {n}")


def coalition_masks(n: int) -> np.ndarray:
    """``[2^n, n]`` boolean masks; row ``k`` has player ``i`` present iff bit ``i`` of ``k`` is set."""
    _check_players(n)
    return (np.arange(2**n)[:, None] >> np.arange(n)) & 1 == 1


def shapley_from_coalitions(values) -> np.ndarray:
    """Exact Shapley values from the values ``[2^n]`` of all coalitions (order of :func:`coalition_masks`)."""
    values = np.asarray(values, dtype=float)
    n = int(round(np.log2(len(values))))
    if 2**n != len(values):
        raise ValueError(f"need 2^n coalition values, got {len(values)}")
    sizes = coalition_masks(n).sum(axis=1)
    weights = np.array([factorial(s) * factorial(n - s - 1) / factorial(n) if s < n else 0.0 for s in sizes])
    phi = np.empty(n)
    for i in range(n):
        without = np.flatnonzero(((np.arange(2**n) >> i) & 1) == 0)
        phi[i] = np.sum(weights[without] * (values[without | (1 << i)] - values[without]))
    return phi


def shapley_values(value: Callable[[np.ndarray], float], n_players: int) -> np.ndarray:
    """Exact Shapley values of the game ``value(mask)`` (``mask``: bool ``[n]``)."""
    return shapley_from_coalitions([value(mask) for mask in coalition_masks(n_players)])


def _check_groups(groups: Sequence[Sequence[int]], n_features: int) -> list[np.ndarray]:
    groups = [np.asarray(g, dtype=int) for g in groups]
    flat = np.concatenate(groups) if groups else np.zeros(0, int)
    if len(flat) != len(set(flat.tolist())) or np.any(flat < 0) or np.any(flat >= n_features):
        raise ValueError(f"groups must be disjoint feature indices in [0, {n_features}), got {[g.tolist() for g in groups]}")
    return groups


def coalition_values(predict: Callable[[np.ndarray], np.ndarray], x, background,
                     groups: Sequence[Sequence[int]]) -> np.ndarray:
    """``v(S) = mean_b predict(x_S, b_rest)`` for all ``2^n`` group coalitions, in one
    ``predict`` call on ``[2^n * n_background, d]`` rows.  Features outside every
    group always keep ``x``'s values."""
    x = np.asarray(x, dtype=float).ravel()
    background = np.atleast_2d(np.asarray(background, dtype=float))
    if background.shape[1] != len(x):
        raise ValueError(f"background rows have {background.shape[1]} features, x has {len(x)}")
    groups = _check_groups(groups, len(x))
    membership = np.zeros((len(groups), len(x)), bool)
    for g, columns in enumerate(groups):
        membership[g, columns] = True
    present = (coalition_masks(len(groups)) @ membership) | ~membership.any(axis=0)  # [2^n, d]
    rows = np.where(present[:, None, :], x, background[None])
    predictions = np.asarray(predict(rows.reshape(-1, len(x))), dtype=float).reshape(len(present), len(background))
    return predictions.mean(axis=1)


def group_shapley(predict: Callable[[np.ndarray], np.ndarray], x, background,
                  groups: Sequence[Sequence[int]]) -> np.ndarray:
    """Exact interventional Shapley values of ``predict`` at ``x`` over feature ``groups``."""
    return shapley_from_coalitions(coalition_values(predict, x, background, groups))


def _kernel_shap(game: Callable[[np.ndarray], np.ndarray], x, background) -> np.ndarray:
    """shap's ``KernelExplainer`` on all ``2^n`` coalitions: with every coalition
    enumerated its weighted least-squares problem has the Shapley values as its
    exact solution (no sampling; pure numpy, no numba compilation)."""
    require("shap")
    import shap

    x = np.atleast_2d(x)
    _check_players(x.shape[1])
    explainer = shap.KernelExplainer(game, np.atleast_2d(background))
    return np.asarray(explainer.shap_values(x, nsamples=2 ** x.shape[1], silent=True), dtype=float)


def shap_group_shapley(predict: Callable[[np.ndarray], np.ndarray], x, background,
                       groups: Sequence[Sequence[int]]) -> np.ndarray:
    """The values of :func:`group_shapley` computed by shap: its players are the groups,
    an input ``z in {0, 1}^n`` says which groups take ``x``'s values, and the
    background ``z = 0`` has every group absent."""
    x = np.asarray(x, dtype=float).ravel()
    background = np.atleast_2d(np.asarray(background, dtype=float))
    groups = _check_groups(groups, len(x))
    values = coalition_values(predict, x, background, groups)
    weights = 1 << np.arange(len(groups))

    def game(z):
        return values[(np.asarray(z) > 0.5).astype(int) @ weights]

    return _kernel_shap(game, np.ones(len(groups)), np.zeros(len(groups)))[0]


def shap_feature_values(predict: Callable[[np.ndarray], np.ndarray], x, background) -> np.ndarray:
    """Per-feature interventional Shapley values ``[n_rows, d]`` of rows ``x`` by shap
    (exact: all coalitions, background rows averaged)."""
    return _kernel_shap(predict, np.asarray(x, dtype=float), np.asarray(background, dtype=float))


def shap_summary_plot(path: str | os.PathLike, values, names: Sequence[str], title: str = "") -> Path:
    """Bar chart of the mean |Shapley value| per feature over the explained rows."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    importance = np.abs(values).mean(axis=0)
    order = np.argsort(importance)
    fig = new_figure(5.5, 0.35 * len(names) + 1.2)
    ax = fig.subplots()
    ax.barh(np.array(names)[order], importance[order], color="tab:blue")
    ax.set_xlabel("mean |Shapley value| (unit of the prediction)")
    ax.set_title(title)
    return save_figure(fig, path)


def symmetry_function_groups(model: Model, element: str, by: str = "type") -> dict[str, np.ndarray]:
    """Feature indices of ``element``'s symmetry functions grouped ``by`` ``"type"``
    (radial / narrow / wide angular) or ``"neighbors"`` (neighbour elements)."""
    names = {2: "radial", 3: "angular (narrow)", 9: "angular (wide)"}
    groups: dict[str, list[int]] = {}
    for index, function in enumerate(model.config.symmetry_functions.functions_of(element)):
        if by == "type":
            key = names[function.kind]
        elif by == "neighbors":
            key = "-".join(function.neighbors)
        else:
            raise ValueError(f"by must be 'type' or 'neighbors', got {by!r}")
        groups.setdefault(key, []).append(index)
    return {k: np.array(v) for k, v in groups.items()}


def atom_energy_function(model: Model, element: str) -> Callable[[np.ndarray], np.ndarray]:
    """``features [m, n_features(element)] -> energies [m]`` (eV): the model's network
    half (scaling, ``element``'s network, reference energy) on raw symmetry functions."""
    functions = make_model_functions(model.config)
    sf_set = model.config.symmetry_functions
    columns = sf_set.feature_columns(element)
    species_index = model.elements.index(element)
    evaluate = jax.jit(lambda u: functions.energies_from_features(
        model.params, u, jnp.full(u.shape[0], species_index, dtype=jnp.int32)))

    def predict(features):
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))
        union = np.zeros((len(features), sf_set.n_union))
        union[:, columns] = features
        with float64_scope():
            return np.asarray(evaluate(jnp.asarray(union)))

    return predict


def atom_energy_shapley(model: Model, atoms: Atoms, atom_index: int, groups: Mapping[str, np.ndarray],
                        background: np.ndarray) -> dict[str, float]:
    """Shapley values (eV) of atom ``atom_index``'s energy over groups of its symmetry
    functions, absent functions taking the values of ``background`` environments
    (``[m, n_features]`` raw descriptors of the same element, e.g. a training set)."""
    element = atoms[atom_index].symbol
    features = compute_descriptors(model, [atoms])[element]
    row = sum(1 for s in atoms.get_chemical_symbols()[:atom_index] if s == element)
    phi = group_shapley(atom_energy_function(model, element), features[row], background, list(groups.values()))
    return dict(zip(groups, phi.tolist()))


# --------------------------------------------------------------------------- counterfactual motifs


def motif_indices(atoms: Atoms, center: int, shell_cutoff: float) -> np.ndarray:
    """``center`` and every atom within ``shell_cutoff`` Å of it (minimum image), sorted."""
    i, j = neighbor_list("ij", atoms, shell_cutoff)
    return np.unique(np.concatenate([[center], j[i == center]]))


@dataclass(frozen=True)
class MotifResult:
    """Energy cost of removing / re-labelling a motif (see module docstring).

    Attributes:
        energy_change: dE after relaxing the modified structure, eV (equals
            ``unrelaxed_change`` when relaxation is off).
        unrelaxed_change: dE with the remaining atoms at their original positions, eV.
        removed: indices of removed atoms; relabelled: ``{index: new symbol}``.
        chemical_potentials: eV/atom used for the reservoir terms.
        structure: the modified (relaxed) structure.
    """

    energy_change: float
    unrelaxed_change: float
    removed: np.ndarray
    relabelled: Mapping[int, str]
    chemical_potentials: Mapping[str, float]
    structure: Atoms


def _energy(atoms: Atoms, calculator: Calculator) -> float:
    atoms.calc = calculator
    return float(atoms.get_potential_energy())


def relax_positions(atoms: Atoms, calculator: Calculator, fmax: float = 0.01, steps: int = 500) -> Atoms:
    """A copy of ``atoms`` with positions relaxed at fixed cell (ASE's FIRE), eV/Å."""
    from ase.optimize import FIRE

    relaxed = atoms.copy()
    relaxed.calc = calculator
    FIRE(relaxed, logfile=None).run(fmax=fmax, steps=steps)
    return relaxed


def motif_importance(atoms: Atoms, calculator: Calculator, remove: Sequence[int] = (),
                     relabel: Mapping[int, str] | None = None,
                     chemical_potentials: Mapping[str, float] | None = None,
                     relax: bool = True, fmax: float = 0.01, steps: int = 500) -> MotifResult:
    """Energy cost (eV) of removing atoms ``remove`` and re-labelling ``relabel`` (see module docstring).

    ``atoms`` is taken as the reference as given (relax it first if it is not at
    equilibrium); with ``relax`` the modified structure's positions are relaxed.

    Raises:
        ValueError: empty motif, bad indices, an index both removed and relabelled, or a
            missing chemical potential (needed for every removed or exchanged element;
            only a one-element structure has a default).
    """
    relabel = dict(relabel or {})
    remove = np.unique(np.asarray(remove, dtype=int))
    if len(remove) == 0 and not relabel:
        raise ValueError("the motif is empty: give atoms to remove or relabel")
    indices = np.concatenate([remove, np.fromiter(relabel, int, len(relabel))])
    if np.any(indices < 0) or np.any(indices >= len(atoms)):
        raise ValueError(f"motif indices must lie in [0, {len(atoms)}), got {sorted(indices.tolist())}")
    if set(remove.tolist()) & set(relabel):
        raise ValueError(f"atoms {sorted(set(remove.tolist()) & set(relabel))} are both removed and relabelled")
    symbols = atoms.get_chemical_symbols()
    e_original = _energy(atoms.copy(), calculator)
    mu = dict(chemical_potentials or {})
    if not mu and len(set(symbols)) == 1 and not relabel:
        mu = {symbols[0]: e_original / len(atoms)}
    needed = {symbols[i] for i in remove} | {symbols[i] for i in relabel} | set(relabel.values())
    missing = sorted(needed - set(mu))
    if missing:
        raise ValueError(f"give chemical_potentials (eV/atom) for {missing}")
    reservoir = sum(mu[symbols[i]] for i in remove) + sum(mu[symbols[i]] - mu[s] for i, s in relabel.items())

    modified = atoms.copy()
    for index, symbol in relabel.items():
        modified[index].symbol = symbol
    del modified[remove.tolist()]
    unrelaxed = _energy(modified.copy(), calculator) - e_original + reservoir
    if relax:
        modified = relax_positions(modified, calculator, fmax, steps)
    relaxed = _energy(modified, calculator) - e_original + reservoir
    return MotifResult(relaxed, unrelaxed, remove, relabel, mu, modified)
