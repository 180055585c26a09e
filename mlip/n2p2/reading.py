"""Reading an n2p2 potential directory (``input.nn``, ``scaling.data``,
``weights.ZZZ.data``) into an ordinary :class:`~mlip.model.Model`."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers

from mlip.kernels.cutoff import CUTOFF_NAMES
from mlip.kernels.symmetry_functions import SymmetryFunction, SymmetryFunctionSet
from mlip.model import Model, ModelConfig
from mlip.n2p2.common import (
    ACTIVATION_CODES,
    PREDICTION_KEYWORDS,
    TRAINING_KEYWORDS,
    N2P2Error,
    n2p2_order,
    parse_units,
    sorted_elements,
)
from mlip.precision import with_float64

_REPEATABLE = {"symfunction_short", "atom_energy", "element_nodes_short"}
_SHORT_RANGE_TYPES = {"0", "2", "2G-HDNNP"}  # old enum SHORT_ONLY = 0; newer HDNNP_2G

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
        per_element[function.element].append((n2p2_order(function, index), function))
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

    elements = sorted_elements(nn.words("elements"), f"{nn.path} line {nn.line('elements')}")
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
    return Model(config, params, ranges), ranges


def read_n2p2(directory: str | os.PathLike, units: str = "angstrom,ev", r_min: float = 0.5) -> Model:
    """Read an n2p2 potential directory into a model that predicts what n2p2 predicts.

    Args:
        directory: folder with ``input.nn``, ``scaling.data`` and ``weights.ZZZ.data``.
        units: the potential's ``"length,energy"`` units (see :func:`parse_units`),
            e.g. ``"bohr,hartree"``; the model works in Å and eV.
        r_min: shortest interatomic distance the model accepts, Å (n2p2 has no
            such limit; see :class:`~mlip.model.ModelConfig`).

    Returns:
        A :class:`~mlip.model.Model` (calculator, MD and training work on it)
        whose feature range is scaling.data's (Gmin, Gmax), so the calculator
        and MD flag extrapolation as n2p2 does.

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
