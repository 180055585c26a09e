"""n2p2 potentials in and out, and n2p2/RuNNer ``input.data`` structure files.

An n2p2 potential is a directory with ``input.nn`` (settings), ``scaling.data``
(symmetry-function statistics) and one ``weights.ZZZ.data`` per element (ZZZ the
atomic number).  :func:`read_n2p2` turns it into an ordinary
:class:`~mlip.model.Model` (eV and Å) that predicts what n2p2 predicts;
:func:`write_n2p2` writes a model so that n2p2's ``nnp-predict`` and LAMMPS
``pair_style hdnnp`` (``cflength 1.0 cfenergy 1.0``) load it unchanged.

What n2p2 computes (n2p2 ``Mode``, ``Prediction``, ``NeuralNetwork``, ``SymFnc``),
and where it goes in the model:

* elements are sorted by atomic number, and each element's symmetry functions
  by n2p2's order (type, cutoff, eta, r_s, zeta, lambda, neighbour elements);
  ``scaling.data`` rows and the network inputs follow that order, and so do the
  model's features;
* symmetry-function parameters in ``input.nn`` are in the potential's length
  unit: converted to Å (eta to Å^-2).  ``conv_length`` cancels: n2p2 scales
  positions and parameters alike, so the values of types 2, 3 and 9 do not change;
* scaling, with S = (Smin, Smax) from ``scale_min_short`` / ``scale_max_short``:
  ``scale_symmetry_functions``: x = Smin + (Smax - Smin)(G - Gmin)/(Gmax - Gmin);
  with ``center_symmetry_functions`` as well, Gmean replaces Gmin;
  ``center_symmetry_functions`` alone: x = G - Gmean;
  ``scale_symmetry_functions_sigma``: x = Smin + (Smax - Smin)(G - Gmean)/Gsigma;
  none: x = G.  This is ``feature_shift`` (Gmin or Gmean) and ``feature_scale``,
  with Smin folded into the first layer's bias;
* ``normalize_nodes`` divides every neuron's input sum (weights and bias) by the
  number of neurons feeding it: folded into the weights;
* the output layer is linear (n2p2 ignores the last activation code); the
  physical atomic energy is ``E_i = NN_i / conv_energy + mean_energy +
  atom_energy[e_i]`` in the potential's energy unit: the output layer is scaled
  by ``energy_unit / conv_energy`` and ``reference_energies`` hold
  ``energy_unit * (mean_energy + atom_energy)``.

Forces and stress then follow from ``jax.grad`` as for every mlip model.  The
floating-point operations are n2p2's up to the order of summation, so energies
and forces agree to rounding (measured on n2p2's Cu2S example: see the tests).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase import units as ase_units
from ase.data import atomic_numbers

from mlip.kernels.cutoff import CUTOFF_NAMES, CUTOFF_TYPES
from mlip.kernels.network import ACTIVATIONS
from mlip.kernels.symmetry_functions import SymmetryFunction, SymmetryFunctionSet
from mlip.model import Model, ModelConfig
from mlip.precision import with_float64


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
_CODE_OF = {name: code for code, name in ACTIVATION_CODES.items()}
assert set(_CODE_OF) <= set(ACTIVATIONS)

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

_REPEATABLE = {"symfunction_short", "atom_energy", "element_nodes_short"}
_SHORT_RANGE_TYPES = {"0", "2", "2G-HDNNP"}  # old enum SHORT_ONLY = 0; newer HDNNP_2G

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


# --------------------------------------------------------------------------- input.nn


def _read_settings(path: Path) -> dict[str, list[tuple[list[str], int]]]:
    """``{keyword: [(arguments, line number), ...]}`` of an ``input.nn``, with n2p2's
    comment rules (everything after ``#`` or ``!`` is ignored)."""
    settings: dict[str, list[tuple[list[str], int]]] = {}
    for number, raw in enumerate(_read_text(path).splitlines(), start=1):
        words = raw.split("#", 1)[0].split("!", 1)[0].split()
        if words:
            settings.setdefault(words[0], []).append((words[1:], number))
    return settings


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise N2P2Error(f"{path} does not exist") from None
    except OSError as error:
        raise N2P2Error(f"cannot read {path}: {error}") from error


class _InputNN:
    """Checked access to the keywords of one ``input.nn``."""

    def __init__(self, path: Path):
        self.path = path
        self.entries = _read_settings(path)
        unknown = sorted(k for k in self.entries if k not in PREDICTION_KEYWORDS | TRAINING_KEYWORDS)
        if unknown:
            where = ", ".join(f"{k!r} (line {self.entries[k][0][1]})" for k in unknown)
            raise N2P2Error(
                f"{path}: keyword(s) {where} not supported: mlip reads n2p2's short-range (2G) potentials "
                f"and refuses what it cannot reproduce exactly (known prediction keywords: "
                f"{sorted(PREDICTION_KEYWORDS)}; ignored training keywords are listed in "
                f"mlip.n2p2.TRAINING_KEYWORDS)"
            )
        repeated = sorted(k for k, v in self.entries.items() if len(v) > 1 and k not in _REPEATABLE)
        if repeated:
            raise N2P2Error(f"{path}: keyword(s) {repeated} given more than once")

    def has(self, keyword: str) -> bool:
        return keyword in self.entries

    def all(self, keyword: str) -> list[tuple[list[str], int]]:
        return self.entries.get(keyword, [])

    def line(self, keyword: str) -> int:
        return self.entries[keyword][0][1]

    def words(self, keyword: str, required: bool = True) -> list[str] | None:
        if keyword not in self.entries:
            if required:
                raise N2P2Error(f"{self.path}: required keyword {keyword!r} is missing")
            return None
        return self.entries[keyword][0][0]

    def number(self, keyword: str, kind=float, index: int = 0, default=None):
        words = self.words(keyword, required=default is None)
        if words is None:
            return default
        try:
            return kind(words[index])
        except (IndexError, ValueError):
            raise N2P2Error(
                f"{self.path} line {self.line(keyword)}: {keyword} needs a {kind.__name__} "
                f"as argument {index + 1}, got {words}"
            ) from None

    def error(self, keyword: str, message: str, line: int | None = None) -> N2P2Error:
        line = self.line(keyword) if line is None else line
        return N2P2Error(f"{self.path} line {line}: {keyword}: {message}")


def _n2p2_order(function: SymmetryFunction, index: Mapping[str, int]) -> tuple:
    """n2p2's sort key of a symmetry function within its element (``SymFnc*::operator<``;
    neighbour elements by their index, i.e. by atomic number)."""
    if function.kind == 2:
        return (2, function.r_cut, function.eta, function.r_shift, index[function.neighbors[0]])
    e1, e2 = sorted(index[e] for e in function.neighbors)
    return (function.kind, function.r_cut, function.eta, function.r_shift, function.zeta, function.lam, e1, e2)


def _sorted_elements(symbols: Iterable[str], where: str) -> tuple[str, ...]:
    symbols = list(symbols)
    unknown = [s for s in symbols if s not in atomic_numbers or s == "X"]
    if unknown:
        raise N2P2Error(f"{where}: unknown chemical element(s) {unknown}")
    if len(set(symbols)) != len(symbols):
        raise N2P2Error(f"{where}: elements {symbols} repeat")
    return tuple(sorted(symbols, key=atomic_numbers.__getitem__))


def _symmetry_functions(nn: _InputNN, elements: tuple[str, ...], length: float) -> dict[str, list]:
    """Per element, its symmetry functions in n2p2's order, converted to Å."""
    index = {e: n for n, e in enumerate(elements)}
    per_element: dict[str, list] = {e: [] for e in elements}
    for words, line in nn.all("symfunction_short"):
        text = " ".join(["symfunction_short"] + words)
        try:
            function = SymmetryFunction.from_n2p2(text)
        except ValueError as error:
            raise nn.error("symfunction_short", f"{error} (mlip supports types 2, 3 and 9)", line) from None
        unknown = sorted(({function.element} | set(function.neighbors)) - set(elements))
        if unknown:
            raise nn.error("symfunction_short", f"element(s) {unknown} are not in 'elements' {list(elements)}", line)
        per_element[function.element].append((_n2p2_order(function, index), function))
    result = {}
    for element, entries in per_element.items():
        if not entries:
            raise N2P2Error(f"{nn.path}: element {element} has no symfunction_short lines")
        entries.sort(key=lambda entry: entry[0])
        result[element] = [
            SymmetryFunction(f.kind, f.element, f.neighbors, f.eta / length**2, f.r_cut * length,
                             f.r_shift * length, f.lam, f.zeta)
            for _, f in entries
        ]
    return result


def _network_layout(nn: _InputNN, elements: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Hidden-layer widths and activations (``global_*_short``; ``element_nodes_short``
    may only repeat the global widths, since mlip's elements share one architecture)."""
    n_hidden = nn.number("global_hidden_layers_short", int)
    if n_hidden < 1:
        raise nn.error("global_hidden_layers_short", f"need at least one hidden layer, got {n_hidden}")
    nodes = nn.words("global_nodes_short")
    codes = nn.words("global_activation_short")
    if len(nodes) < n_hidden:
        raise nn.error("global_nodes_short", f"{len(nodes)} widths {nodes} for {n_hidden} hidden layers")
    if len(codes) < n_hidden:
        raise nn.error("global_activation_short", f"{len(codes)} activation codes {codes} for {n_hidden} hidden layers")
    try:
        widths = tuple(int(w) for w in nodes[:n_hidden])
    except ValueError:
        raise nn.error("global_nodes_short", f"widths must be integers, got {nodes}") from None
    if any(w < 1 for w in widths):
        raise nn.error("global_nodes_short", f"widths must be positive, got {list(widths)}")
    unknown = [c for c in codes[:n_hidden] if c not in ACTIVATION_CODES]
    if unknown:
        raise nn.error("global_activation_short",
                       f"unknown activation code(s) {unknown}; n2p2's codes are {ACTIVATION_CODES}")
    activations = tuple(ACTIVATION_CODES[c] for c in codes[:n_hidden])
    if len(codes) > n_hidden and codes[n_hidden] != "l":
        warnings.warn(f"{nn.path}: output activation {codes[n_hidden]!r} of global_activation_short is ignored, "
                      "as n2p2 does (its output layer is always linear)", stacklevel=3)
    for words, line in nn.all("element_nodes_short"):
        try:
            element, layer, width = words[0], int(words[1]), int(words[2])
        except (IndexError, ValueError):
            raise nn.error("element_nodes_short", f"expected 'element layer nodes', got {words}", line) from None
        if element not in elements:
            raise nn.error("element_nodes_short", f"element {element} is not in 'elements'", line)
        if layer == 0:
            continue  # n2p2 replaces the input width by the number of symmetry functions
        expected = widths[layer - 1] if layer <= n_hidden else 1 if layer == n_hidden + 1 else None
        if expected is None:
            raise nn.error("element_nodes_short", f"layer {layer} does not exist ({n_hidden} hidden layers)", line)
        if width != expected:
            raise nn.error("element_nodes_short",
                           f"{element} layer {layer} has {width} nodes, the other elements {expected}: mlip's "
                           "elements share one network architecture, so this potential cannot be read exactly",
                           line)
    return widths, activations


# --------------------------------------------------------------------------- scaling.data, weights


def _read_scaling(path: Path, elements: tuple[str, ...], counts: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Per element ``[n_features, 4]`` rows (Gmin, Gmax, Gmean, Gsigma; sigma NaN if absent)."""
    rows = []
    for number, raw in enumerate(_read_text(path).splitlines(), start=1):
        if raw.strip() and not raw.lstrip().startswith("#"):
            rows.append((number, raw.split()))
    expected = sum(counts.values())
    if len(rows) != expected:
        raise N2P2Error(f"{path}: {len(rows)} data lines, but input.nn defines {expected} symmetry functions "
                        f"({dict(counts)})")
    result, position = {}, 0
    for element_index, element in enumerate(elements, start=1):
        values = np.full((counts[element], 4), np.nan)
        for sf_index in range(1, counts[element] + 1):
            number, words = rows[position]
            position += 1
            try:
                e, s = int(words[0]), int(words[1])
                numbers = [float(w) for w in words[2:6]]
            except (IndexError, ValueError):
                raise N2P2Error(f"{path} line {number}: expected 'e_index sf_index min max mean [sigma]', "
                                f"got {words}") from None
            if (e, s) != (element_index, sf_index) or len(numbers) < 3:
                raise N2P2Error(f"{path} line {number}: expected element {element_index} ({element}) function "
                                f"{sf_index} with min max mean [sigma], got {words}")
            values[sf_index - 1, : len(numbers)] = numbers
        result[element] = values
    return result


def _scaling_type(nn: _InputNN) -> str:
    """n2p2's ``Mode::setupSymmetryFunctionScaling`` choice."""
    scale, center = nn.has("scale_symmetry_functions"), nn.has("center_symmetry_functions")
    if scale:
        return "scalecenter" if center else "scale"
    if center:
        return "center"
    return "sigma" if nn.has("scale_symmetry_functions_sigma") else "none"


def _feature_scaling(kind: str, stats: np.ndarray, s_min: float, s_max: float, where: str):
    """``(shift, scale, offset)`` with x = offset + scale (G - shift), as n2p2 scales."""
    g_min, g_max, g_mean, g_sigma = stats.T
    if kind == "none":
        return np.zeros(len(stats)), np.ones(len(stats)), 0.0
    if kind == "center":
        return g_mean, np.ones(len(stats)), 0.0
    if kind == "sigma":
        if np.isnan(g_sigma).any():
            raise N2P2Error(f"{where}: scale_symmetry_functions_sigma needs the sigma column (6th)")
        spread, shift = g_sigma, g_mean
    else:
        spread, shift = g_max - g_min, (g_min if kind == "scale" else g_mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (s_max - s_min) / spread
    bad = np.flatnonzero(~np.isfinite(scale))
    if len(bad):
        raise N2P2Error(f"{where}: symmetry function(s) {list(bad + 1)} have zero spread "
                        f"({'sigma' if kind == 'sigma' else 'max - min'} = 0): n2p2's scaling factor is infinite")
    return shift, scale, s_min


def _read_weights(path: Path, sizes: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(kernel [n_in, n_out], bias [n_out]), ...]`` per layer, from n2p2's order:
    per layer, weights from every neuron of the previous layer to every neuron of
    this one (previous-layer index outer), then this layer's biases."""
    values, meta = [], []
    for number, raw in enumerate(_read_text(path).splitlines(), start=1):
        words = raw.split()
        if not words or words[0].startswith("#"):
            continue
        try:
            values.append(float(words[0]))
        except ValueError:
            raise N2P2Error(f"{path} line {number}: not a number: {words[0]!r}") from None
        meta.append((number, words[1:]))
    expected = sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    if len(values) != expected:
        raise N2P2Error(f"{path}: {len(values)} weights, the network {'-'.join(map(str, sizes))} needs {expected}")
    layers, position = [], 0
    for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        labels = [("a", layer - 1, j + 1, layer, k + 1) for j in range(n_in) for k in range(n_out)]
        labels += [("b", layer, k + 1) for k in range(n_out)]
        for label in labels:  # the optional columns (t, index, l_s, n_s, l_e, n_e) must agree
            number, words = meta[position]
            if len(words) >= len(label) + 1:
                try:
                    found = (words[0],) + tuple(int(w) for w in words[2 : len(label) + 1])
                except ValueError:
                    found = tuple(words)
                if found != label:
                    raise N2P2Error(f"{path} line {number}: connection {words} out of n2p2's order, "
                                    f"expected {label}")
            position += 1
        block = np.asarray(values[position - len(labels) : position])
        kernel, bias = block[: n_in * n_out].reshape(n_in, n_out), block[n_in * n_out :]
        layers.append((kernel, bias))
    if not np.isfinite(values).all():
        raise N2P2Error(f"{path}: weights are not all finite")
    return layers


# --------------------------------------------------------------------------- reading


def _check_directory(directory: str | os.PathLike) -> Path:
    directory = Path(directory)
    if not directory.is_dir():
        raise N2P2Error(f"n2p2 potential directory {directory} does not exist")
    return directory


@with_float64
def _load(directory: Path, units: str, r_min: float) -> tuple[Model, dict[str, np.ndarray]]:
    import jax.numpy as jnp

    length, energy = parse_units(units)
    nn = _InputNN(directory / "input.nn")
    if nn.has("nnp_type") or nn.has("nn_type"):
        key = "nnp_type" if nn.has("nnp_type") else "nn_type"
        if " ".join(nn.words(key)) not in _SHORT_RANGE_TYPES:
            raise nn.error(key, f"{nn.words(key)} is not a short-range (2G) potential; charge and "
                                "electrostatic NNPs cannot be represented by mlip")
    if nn.has("committee_mode") and nn.words("committee_mode")[0].lower() != "disabled":
        raise nn.error("committee_mode", "committee predictions (averages of several networks) are not supported")

    elements = _sorted_elements(nn.words("elements"), f"{nn.path} line {nn.line('elements')}")
    n_declared = nn.number("number_of_elements", int)
    if n_declared != len(elements):
        raise nn.error("number_of_elements", f"{n_declared}, but 'elements' lists {len(elements)}")

    normalisation = [nn.has(k) for k in ("mean_energy", "conv_energy", "conv_length")]
    if any(normalisation) and not all(normalisation):
        raise N2P2Error(f"{nn.path}: give all or none of mean_energy, conv_energy and conv_length")
    mean_energy = nn.number("mean_energy", float, default=0.0)
    conv_energy = nn.number("conv_energy", float, default=1.0)
    if not (math.isfinite(conv_energy) and conv_energy != 0.0):
        raise nn.error("conv_energy", f"must be a finite non-zero number, got {conv_energy}")

    offsets = dict.fromkeys(elements, 0.0)
    for words, line in nn.all("atom_energy"):
        if len(words) < 2 or words[0] not in elements:
            raise nn.error("atom_energy", f"expected 'element energy' for one of {list(elements)}, got {words}", line)
        try:
            offsets[words[0]] = float(words[1])
        except ValueError:
            raise nn.error("atom_energy", f"not a number: {words[1]!r}", line) from None

    cutoff_number = nn.number("cutoff_type", int)
    if cutoff_number not in CUTOFF_NAMES:
        raise nn.error("cutoff_type", f"unknown cutoff type {cutoff_number} (n2p2 has {sorted(CUTOFF_NAMES)})")
    alpha = nn.number("cutoff_type", float, index=1) if len(nn.words("cutoff_type")) > 1 else 0.0
    if not 0.0 <= alpha < 1.0:
        raise nn.error("cutoff_type", f"inner cutoff alpha must be in [0, 1), got {alpha}")

    functions = _symmetry_functions(nn, elements, length)
    widths, activations = _network_layout(nn, elements)
    normalize_nodes = nn.has("normalize_nodes")
    kind = _scaling_type(nn)
    s_min = nn.number("scale_min_short", float, default=0.0)
    s_max = nn.number("scale_max_short", float, default=1.0)

    scaling_path = directory / "scaling.data"
    stats = _read_scaling(scaling_path, elements, {e: len(f) for e, f in functions.items()})

    sf_set = SymmetryFunctionSet(elements, tuple(f for e in elements for f in functions[e]),
                                 CUTOFF_NAMES[cutoff_number], alpha)
    config = ModelConfig(sf_set, widths, activations, r_min)
    params: dict = {"networks": {}, "feature_shift": {}, "feature_scale": {}, "reference_energies": {}}
    output_factor = energy / conv_energy
    for element in elements:
        shift, scale, offset = _feature_scaling(kind, stats[element], s_min, s_max,
                                                f"{scaling_path} (element {element})")
        sizes = (len(functions[element]),) + widths + (1,)
        weights_path = directory / f"weights.{atomic_numbers[element]:03d}.data"
        layers = _read_weights(weights_path, sizes)
        dense = {}
        for number, (kernel, bias) in enumerate(layers):
            if number == 0:  # x = offset + scale (G - shift): the constant goes into the bias
                bias = bias + offset * kernel.sum(axis=0)
            if normalize_nodes:
                kernel, bias = kernel / kernel.shape[0], bias / kernel.shape[0]
            if number == len(layers) - 1:
                kernel, bias = kernel * output_factor, bias * output_factor
            dense[f"Dense_{number}"] = {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}
        params["networks"][element] = {"params": dense}
        params["feature_shift"][element] = jnp.asarray(shift)
        params["feature_scale"][element] = jnp.asarray(scale)
        params["reference_energies"][element] = jnp.asarray(energy * (mean_energy + offsets[element]))
    ranges = {e: stats[e][:, :2].copy() for e in elements}
    return Model(config, params), ranges


def read_n2p2(directory: str | os.PathLike, units: str = "angstrom,ev", r_min: float = 0.5) -> Model:
    """Read an n2p2 potential directory into a model that predicts what n2p2 predicts.

    Args:
        directory: folder with ``input.nn``, ``scaling.data`` and ``weights.ZZZ.data``.
        units: the potential's ``"length,energy"`` units (see :func:`parse_units`),
            e.g. ``"bohr,hartree"``; the model works in Å and eV.
        r_min: shortest interatomic distance the model accepts, Å (n2p2 has no
            such limit; see :class:`~mlip.model.ModelConfig`).

    Returns:
        A :class:`~mlip.model.Model` (calculator, MD and training work on it).

    Raises:
        N2P2Error: a missing or malformed file, a keyword mlip cannot honour
            (charge/electrostatic NNPs, committees, per-element layer widths,
            unknown keywords; training-only keywords, :data:`TRAINING_KEYWORDS`,
            are ignored), an unknown activation code or symmetry-function type,
            or a wrong number of weights.  The message names the file and line.
    """
    return _load(_check_directory(directory), units, r_min)[0]


def read_n2p2_feature_range(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """Per element, ``[n_features, 2]`` (Gmin, Gmax) of the potential's ``scaling.data``
    in the feature order of :func:`read_n2p2`'s model (symmetry functions of types
    2, 3 and 9 are dimensionless).  n2p2 warns about extrapolation outside this
    range; pass it to :func:`write_n2p2` to keep it."""
    return _load(_check_directory(directory), "angstrom,ev", 0.5)[1]


# --------------------------------------------------------------------------- writing

_HUGE = 1.0e300  # Gmax written when the training range is unknown: no extrapolation warnings


def _format(value: float) -> str:
    return f"{value:24.16E}"


def feature_range_from_structures(model: Model, structures: Iterable[Atoms]) -> dict[str, np.ndarray]:
    """Per element ``[n_features, 2]`` (min, max) of the model's raw symmetry functions
    over ``structures`` (e.g. the training set), for :func:`write_n2p2`'s
    ``feature_range``; elements absent from the structures get no entry."""
    from mlip.training.scaling import compute_descriptors

    values = compute_descriptors(model, structures)
    return {e: np.stack([v.min(axis=0), v.max(axis=0)], axis=1) for e, v in values.items() if len(v)}


def _export_checks(model: Model, feature_range) -> None:
    """Everything n2p2 cannot represent, before anything is written."""
    from mlip.io import check_param_values

    config = model.config
    if not config.hidden_layers:
        raise N2P2Error("n2p2 networks need at least one hidden layer; this model has none")
    lacking = sorted(set(config.activations) - set(_CODE_OF))
    if lacking:
        raise N2P2Error(f"activation(s) {lacking} have no n2p2 equivalent (n2p2 has {sorted(_CODE_OF)})")
    check_param_values(model.params, N2P2Error, "cannot export to n2p2")
    for element in config.elements:
        scale = np.asarray(model.params["feature_scale"][element])
        if (scale == 0).any():
            raise N2P2Error(f"feature_scale of {element} is 0 for feature(s) {list(np.flatnonzero(scale == 0))}: "
                            "n2p2's sigma scaling (1/sigma) cannot express it")
        if feature_range is not None and element in feature_range:
            shape = np.shape(feature_range[element])
            if shape != (config.symmetry_functions.n_features(element), 2):
                raise N2P2Error(f"feature_range[{element!r}] has shape {shape}, expected "
                                f"({config.symmetry_functions.n_features(element)}, 2)")


def write_n2p2(model: Model, directory: str | os.PathLike,
               feature_range: Mapping[str, np.ndarray] | None = None) -> list[Path]:
    """Write ``model`` as an n2p2 potential (units Å and eV, no normalisation).

    ``input.nn`` gets the elements, ``atom_energy`` (the model's reference
    energies, eV), the cutoff, ``scale_symmetry_functions_sigma`` with
    Smin = 0 and Smax = 1 (so n2p2's x = (G - Gmean)/Gsigma is the model's
    ``(G - feature_shift) * feature_scale`` with Gmean = shift and
    Gsigma = 1/scale), the network and every symmetry function (Å, Å^-2);
    ``scaling.data`` and ``weights.ZZZ.data`` follow n2p2's element and
    symmetry-function order and column layout.  Numbers are written with 17
    significant digits.

    Args:
        model: the model.
        directory: output folder (created if missing; the three kinds of files
            in it are replaced).
        feature_range: per element ``[n_features, 2]`` (Gmin, Gmax) in the model's
            feature order, written to ``scaling.data`` where n2p2 and LAMMPS use
            it for extrapolation warnings (:func:`feature_range_from_structures`
            of the training set, or :func:`read_n2p2_feature_range`).  Without
            it, [0, 1e300] is written: no extrapolation warnings.

    Returns:
        The paths written.

    Raises:
        N2P2Error: the model uses something n2p2 cannot represent (an activation
            it lacks, no hidden layer, a zero feature scale, an unknown element)
            or ``feature_range`` has the wrong shape; nothing is written.
    """
    from mlip.io import write_atomic

    config, params = model.config, model.params
    elements = _sorted_elements(config.elements, "n2p2 names weight files by atomic number")
    _export_checks(model, feature_range)
    sf_set = config.symmetry_functions
    index = {e: n for n, e in enumerate(elements)}
    order = {}
    for element in elements:
        own = sf_set.functions_of(element)
        order[element] = sorted(range(len(own)), key=lambda n: _n2p2_order(own[n], index))

    widths = config.hidden_layers
    lines = [
        "# n2p2 potential written by mlip (mlip.n2p2.write_n2p2). Units: Angstrom and eV",
        "# (LAMMPS pair_style hdnnp: cflength 1.0 cfenergy 1.0); no data-set normalisation.",
        f"number_of_elements {len(elements)}",
        "elements " + " ".join(elements),
    ]
    lines += [f"atom_energy {e} {_format(float(params['reference_energies'][e])).strip()}" for e in elements]
    lines += [
        f"cutoff_type {CUTOFF_TYPES[sf_set.cutoff_type]} {sf_set.cutoff_alpha!r}",
        "scale_symmetry_functions_sigma",
        "scale_min_short 0.0",
        "scale_max_short 1.0",
        f"global_hidden_layers_short {len(widths)}",
        "global_nodes_short " + " ".join(map(str, widths)),
        "global_activation_short " + " ".join(_CODE_OF[a] for a in config.activations) + " l",
    ]
    for element in elements:
        own = sf_set.functions_of(element)
        lines += [own[n].to_n2p2() for n in order[element]]
    files = {"input.nn": "\n".join(lines) + "\n"}

    rows = ["# Symmetry function scaling data written by mlip: Gmean = feature_shift, Gsigma = 1/feature_scale.",
            "# Gmin, Gmax: " + ("range given to write_n2p2 (extrapolation warnings)." if feature_range is not None
                                else "unknown, [0, 1e300] written (no extrapolation warnings)."),
            "#  e_index   sf_index                   sf_min                   sf_max"
            "                  sf_mean                 sf_sigma"]
    for e_index, element in enumerate(elements, start=1):
        shift = np.asarray(params["feature_shift"][element], dtype=np.float64)
        sigma = 1.0 / np.asarray(params["feature_scale"][element], dtype=np.float64)
        if feature_range is not None and element in feature_range:
            low, high = np.asarray(feature_range[element], dtype=np.float64).T
        else:
            low, high = np.zeros_like(shift), np.full_like(shift, _HUGE)
        for sf_index, n in enumerate(order[element], start=1):
            rows.append(f"{e_index:10d} {sf_index:10d} " + " ".join(
                _format(v) for v in (low[n], high[n], shift[n], sigma[n])))
    files["scaling.data"] = "\n".join(rows) + "\n"

    for element in elements:
        dense = params["networks"][element]["params"]
        layers = [(np.asarray(dense[f"Dense_{n}"]["kernel"], dtype=np.float64),
                   np.asarray(dense[f"Dense_{n}"]["bias"], dtype=np.float64)) for n in range(len(widths) + 1)]
        layers[0] = (layers[0][0][order[element]], layers[0][1])
        out = ["# Neural network connection values written by mlip, in n2p2's order.",
               "#              connection t     index   l_s   n_s   l_e   n_e"]
        count = 0
        for layer, (kernel, bias) in enumerate(layers, start=1):
            for j in range(kernel.shape[0]):
                for k in range(kernel.shape[1]):
                    count += 1
                    out.append(f"{_format(kernel[j, k])} a {count:9d} {layer - 1:5d} {j + 1:5d} {layer:5d} {k + 1:5d}")
            for k in range(len(bias)):
                count += 1
                out.append(f"{_format(bias[k])} b {count:9d} {layer:5d} {k + 1:5d}")
        files[f"weights.{atomic_numbers[element]:03d}.data"] = "\n".join(out) + "\n"

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [write_atomic(directory / name, text.encode()) for name, text in files.items()]


# --------------------------------------------------------------------------- input.data


def read_input_data(path: str | os.PathLike, units: str = "angstrom,ev", index: str | int = ":") -> list[Atoms]:
    """Structures of an n2p2/RuNNer ``input.data`` file, converted to Å and eV.

    Parsing is ASE's (``ase.io.runner``, read without its unit conversion);
    ``units`` are the file's ``"length,energy"`` units as in :func:`read_n2p2`
    (RuNNer files are often ``"bohr,hartree"``).  Energies and forces come as a
    single-point calculator (eV, eV/Å), like ``ase.io.read`` gives them.
    """
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import read
    from ase.io.runner.runneratoms import Units

    length, energy = parse_units(units)
    if not Path(path).is_file():
        raise N2P2Error(f"structure file {path} does not exist")
    frames = read(path, index=index, format="runnerdata", input_units=Units.ASE)
    frames = [frames] if isinstance(frames, Atoms) else list(frames)
    result = []
    for atoms in frames:
        results = dict(atoms.calc.results) if atoms.calc is not None else {}
        converted = atoms.copy()
        converted.positions = atoms.positions * length
        converted.cell = atoms.cell.array * length
        if "energy" in results:
            results["energy"] = results["energy"] * energy
        if "forces" in results:
            results["forces"] = results["forces"] * (energy / length)
        converted.calc = SinglePointCalculator(converted, **results) if results else None
        result.append(converted)
    return result


def write_input_data(path: str | os.PathLike, images: Atoms | Iterable[Atoms], units: str = "angstrom,ev",
                     comment: str | None = None) -> Path:
    """Write structures as an n2p2 ``input.data`` (atomic lines ``atom x y z element
    charge 0 fx fy fz``), in ``units`` (default Å and eV, as n2p2 potentials in
    those units expect).

    Energies and forces are taken from each structure's calculator results when
    present (else 0), charges from ``initial_charges``.  ASE's ``runnerdata``
    writer always converts to Bohr and Hartree and writes an extended header
    that n2p2 rejects, hence this writer.  Periodic structures must be periodic
    in all three directions (n2p2 has no partial periodicity).
    """
    from mlip.io import write_atomic

    length, energy = parse_units(units)
    images = [images] if isinstance(images, Atoms) else list(images)
    if comment is not None and "\n" in comment:
        raise ValueError("the comment must be a single line")
    blocks = []
    for number, atoms in enumerate(images):
        if any(atoms.pbc) and not all(atoms.pbc):
            raise N2P2Error(f"structure {number} is periodic along {list(atoms.pbc)}: n2p2 needs all three "
                            "directions periodic or none")
        results = atoms.calc.results if atoms.calc is not None else {}
        forces = np.asarray(results.get("forces", np.zeros((len(atoms), 3)))) / (energy / length)
        charges = atoms.get_initial_charges()
        lines = ["begin"]
        if comment is not None:
            lines.append(f"comment {comment}")
        if all(atoms.pbc):
            lines += ["lattice " + " ".join(_format(v) for v in row / length) for row in atoms.cell.array]
        for position, symbol, charge, force in zip(atoms.positions / length, atoms.get_chemical_symbols(),
                                                   charges, forces):
            lines.append("atom " + " ".join(_format(v) for v in position) + f" {symbol:2s} {_format(charge)} "
                         + _format(0.0) + " " + " ".join(_format(v) for v in force))
        lines.append(f"energy {_format(float(results.get('energy', 0.0)) / energy)}")
        lines.append(f"charge {_format(float(np.sum(charges)))}")
        lines.append("end")
        blocks.append("\n".join(lines) + "\n")
    return write_atomic(path, "".join(blocks).encode())


__all__ = [
    "ACTIVATION_CODES", "N2P2Error", "PREDICTION_KEYWORDS", "TRAINING_KEYWORDS", "feature_range_from_structures",
    "parse_units", "read_input_data", "read_n2p2", "read_n2p2_feature_range", "write_input_data", "write_n2p2",
]
