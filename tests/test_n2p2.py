"""n2p2 potentials in and out.

* n2p2's own Cu2S potential and regression reference (``../shared/data/n2p2_Cu2S_PBE``,
  skipped when absent): energy and every force component within 1e-8, also after
  write -> read;
* a hand-written n2p2 directory (units Bohr/Hartree, normalisation, every scaling
  mode, ``normalize_nodes``, shuffled symmetry-function lines) against an
  independent evaluation: brute-force symmetry functions and a numpy network with
  n2p2's formulas, forces by finite differences;
* read(write(model)) == model to 1e-12 on random structures;
* clear errors for what cannot be read or written exactly; ``input.data`` both ways.

Compiled energy functions are cached per model configuration (compiling dominates).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import Bohr, Hartree

from mlip.cli import main
from mlip.io import load_model, save_model
from mlip.kernels.network import ACTIVATIONS
from mlip.kernels.neighbor_list import host_pairs
from mlip.kernels.symmetry_functions import SymmetryFunction, SymmetryFunctionSet
from mlip.model import Model, ModelConfig, make_model_functions
from mlip.n2p2 import (
    ACTIVATION_CODES,
    N2P2Error,
    parse_units,
    read_input_data,
    read_n2p2,
    read_n2p2_feature_range,
    write_input_data,
    write_n2p2,
)
from mlip.batch import max_neighbors, pad_structure

from conftest import random_structure
from reference_symmetry_functions import reference_symmetry_functions

CU2S = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "n2p2_Cu2S_PBE"

_COMPILED: dict = {}


def predict(model: Model, structures: list[Atoms]) -> list[tuple[float, np.ndarray]]:
    """(energy eV, forces eV/Å) of each structure, one compilation per configuration
    and padding (every structure padded to the same shape)."""
    function = _COMPILED.setdefault(model.config, jax.jit(make_model_functions(model.config).energy_forces_virial))
    pairs = [host_pairs(a.positions, a.cell.array, a.pbc, model.cutoff) for a in structures]
    capacity = max(max_neighbors(p, len(a)) for p, a in zip(pairs, structures))
    n_padded = max(len(a) for a in structures)
    results = []
    for atoms, pair in zip(structures, pairs):
        padded = pad_structure(model, atoms, pair, capacity, n_padded, exact_capacity=True)
        out = function(model.params, *padded.as_jax(with_element_rows=True))
        results.append((float(out.energy), np.asarray(out.forces)[: len(atoms)]))
    return results


# --------------------------------------------------------------------------- n2p2's Cu2S example


def cu2s_reference() -> tuple[float, np.ndarray]:
    lines = (CU2S / "reference_prediction.dat").read_text().splitlines()
    energy = next(float(line.split()[1]) for line in lines if line.startswith("energy"))
    forces = np.array([[float(w) for w in line.split()[1:4]] for line in lines if line[:1].isdigit()])
    return energy, forces


@pytest.fixture(scope="module")
def cu2s():
    if not CU2S.is_dir():
        pytest.skip(f"{CU2S} is absent")
    structure = read_input_data(CU2S / "input.data")[0]
    return read_n2p2(CU2S), structure, cu2s_reference()


def test_cu2s_input_data_reads_in_angstrom(cu2s):
    _, atoms, (_, forces) = cu2s
    np.testing.assert_allclose(atoms.cell[0], [15.246, 0.0, 0.0])
    assert len(atoms) == len(forces) == 144 and atoms.get_chemical_formula() == "Cu96S48"
    assert atoms.get_potential_energy() == pytest.approx(-573.700369, abs=1e-9)  # the DFT label, eV


def test_cu2s_matches_n2p2_reference_prediction(cu2s):
    model, atoms, (energy, forces) = cu2s
    assert model.elements == ("S", "Cu") and model.config.activation == "softplus"
    assert [model.config.symmetry_functions.n_features(e) for e in model.elements] == [72, 66]
    (ours, our_forces), = predict(model, [atoms])
    print(f"Cu2S: |dE| = {abs(ours - energy):.2e} eV, max |dF| = {np.abs(our_forces - forces).max():.2e} eV/Å")
    assert abs(ours - energy) < 1e-8
    assert np.abs(our_forces - forces).max() < 1e-8


def test_cu2s_write_then_read_reproduces_the_reference(cu2s, tmp_path):
    model, atoms, (energy, forces) = cu2s
    feature_range = read_n2p2_feature_range(CU2S)
    write_n2p2(model, tmp_path, feature_range)
    again = read_n2p2(tmp_path)
    assert again.config == model.config  # same functions, same order: same compiled function
    (ours, our_forces), = predict(again, [atoms])
    assert abs(ours - energy) < 1e-8 and np.abs(our_forces - forces).max() < 1e-8
    original = [line.split() for line in (CU2S / "scaling.data").read_text().splitlines() if line[:1] != "#"]
    written = [line.split() for line in (tmp_path / "scaling.data").read_text().splitlines() if line[:1] != "#"]
    original, written = np.array(original, dtype=float), np.array(written, dtype=float)
    np.testing.assert_array_equal(written[:, :5], original[:, :5])  # indices, min, max, mean exactly
    np.testing.assert_allclose(written[:, 5], original[:, 5], rtol=1e-15)  # sigma = 1/(1/sigma)


# --------------------------------------------------------------------------- a hand-written n2p2 directory

# n2p2's activations (NeuralNetwork::propagateLayer), written out independently of mlip
NUMPY_ACTIVATIONS = {
    "l": lambda x: x, "t": np.tanh, "s": lambda x: 1 / (1 + np.exp(-x)), "p": lambda x: np.log1p(np.exp(x)),
    "r": lambda x: np.maximum(x, 0.0), "g": lambda x: np.exp(-0.5 * x * x), "c": np.cos,
    "S": lambda x: 1 - 1 / (1 + np.exp(-x)), "e": lambda x: np.exp(-x), "h": lambda x: x * x,
}

# (centre, type, neighbours, eta [bohr^-2], r_s [bohr], r_c [bohr], lambda, zeta), deliberately unsorted
FUNCTIONS = [
    ("O", 9, ("H", "O"), 0.02, 0.0, 8.0, -1, 2.0),
    ("O", 2, ("H",), 0.3, 1.5, 8.0, 0, 0),
    ("H", 3, ("O", "H"), 0.01, 0.5, 7.5, 1, 1.0),
    ("O", 2, ("O",), 0.05, 0.0, 8.0, 0, 0),
    ("H", 2, ("O",), 0.2, 2.0, 7.5, 0, 0),
    ("H", 9, ("H", "H"), 0.03, 0.0, 7.5, 1, 2.0),
    ("O", 3, ("O", "O"), 0.02, 1.0, 8.0, -1, 1.0),
    ("H", 2, ("H",), 0.1, 0.0, 7.5, 0, 0),
    ("O", 9, ("O", "H"), 0.01, 0.0, 6.0, 1, 1.0),
    ("H", 2, ("O",), 0.2, 1.0, 7.5, 0, 0),
]
Z = {"H": 1, "O": 8}
WIDTHS = (4, 3)
CODES = ("s", "p")
OFFSETS = {"H": -0.5, "O": -75.0}  # atom_energy, Hartree
MEAN, CONV_ENERGY, CONV_LENGTH = -0.25, 3.5, 1.7


def line(f) -> str:
    centre, kind, neighbours, eta, r_s, r_c, lam, zeta = f
    if kind == 2:
        return f"symfunction_short {centre} 2 {neighbours[0]} {eta} {r_s} {r_c}"
    return f"symfunction_short {centre} {kind} {neighbours[0]} {neighbours[1]} {eta} {lam} {zeta} {r_c} {r_s}"


def sorted_functions(centre: str) -> list:
    """n2p2's order, as SymFnc*::operator< defines it (neighbours by atomic number)."""
    def key(f):
        _, kind, neighbours, eta, r_s, r_c, lam, zeta = f
        z = sorted(Z[n] for n in neighbours)
        return (kind, r_c, eta, r_s, z[0]) if kind == 2 else (kind, r_c, eta, r_s, zeta, lam, z[0], z[1])

    return sorted((f for f in FUNCTIONS if f[0] == centre), key=key)


def reference_set() -> SymmetryFunctionSet:
    """The functions in Å, n2p2's order, for the brute-force reference."""
    functions = [SymmetryFunction(k, c, n, eta / Bohr**2, rc * Bohr, rs * Bohr, lam or 1.0, zeta or 1.0)
                 for element in ("H", "O") for c, k, n, eta, rs, rc, lam, zeta in sorted_functions(element)]
    return SymmetryFunctionSet(("H", "O"), tuple(functions), "cos", 0.2)


SCALINGS = {  # input.nn scaling keywords
    "scalecenter": ["scale_symmetry_functions", "center_symmetry_functions", "scale_min_short -1.0",
                    "scale_max_short 1.0"],
    "scale": ["scale_symmetry_functions", "scale_min_short -0.5", "scale_max_short 2.0"],
    "sigma": ["scale_symmetry_functions_sigma", "scale_min_short 0.1", "scale_max_short 0.9"],
    "center": ["center_symmetry_functions"],
    "none": [],
}


def make_potential(directory: Path, seed: int = 0, scaling: str = "scalecenter", normalize_nodes: bool = True,
                   normalisation: bool = True, extra: tuple[str, ...] = ()) -> dict:
    """Write an n2p2 potential by hand; returns what the numpy reference needs."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    settings = ["# hand-written test potential", "number_of_elements 2", "elements O H  ! comment",
                "cutoff_type 1 0.2", f"global_hidden_layers_short {len(WIDTHS)}",
                "global_nodes_short " + " ".join(map(str, WIDTHS)), "global_activation_short " + " ".join(CODES) + " l",
                "epochs 10", "random_seed 3   # training-only keywords are ignored"]
    settings += [f"atom_energy {e} {v}" for e, v in OFFSETS.items()] + SCALINGS[scaling] + list(extra)
    if normalize_nodes:
        settings.append("normalize_nodes")
    if normalisation:
        settings += [f"mean_energy {MEAN}", f"conv_energy {CONV_ENERGY}", f"conv_length {CONV_LENGTH}"]
    settings += [line(f) for f in FUNCTIONS]
    (directory / "input.nn").write_text("\n".join(settings) + "\n")

    stats, rows = {}, ["# e_index sf_index min max mean sigma"]
    for e_index, element in enumerate(("H", "O"), start=1):
        n = len(sorted_functions(element))
        low = rng.uniform(0.0, 0.2, n)
        high = low + rng.uniform(0.5, 2.0, n)
        mean, sigma = low + rng.uniform(0.1, 0.4, n), rng.uniform(0.2, 1.0, n)
        stats[element] = (low, high, mean, sigma)
        rows += [f"{e_index} {s + 1} {float(low[s])!r} {float(high[s])!r} {float(mean[s])!r} {float(sigma[s])!r}"
                 for s in range(n)]
    (directory / "scaling.data").write_text("\n".join(rows) + "\n")

    weights = {}
    for element in ("H", "O"):
        sizes = (len(sorted_functions(element)),) + WIDTHS + (1,)
        layers = [(rng.normal(0, 1, (a, b)), rng.normal(0, 0.5, b)) for a, b in zip(sizes[:-1], sizes[1:])]
        weights[element] = layers
        out, count = ["#  connection t index l_s n_s l_e n_e"], 0
        for layer, (kernel, bias) in enumerate(layers, start=1):
            for j in range(kernel.shape[0]):
                for k in range(kernel.shape[1]):
                    count += 1
                    out.append(f"{float(kernel[j, k])!r} a {count} {layer - 1} {j + 1} {layer} {k + 1}")
            for k in range(len(bias)):
                count += 1
                out.append(f"{float(bias[k])!r} b {count} {layer} {k + 1}")
        (directory / f"weights.{Z[element]:03d}.data").write_text("\n".join(out) + "\n")
    return {"stats": stats, "weights": weights, "scaling": scaling, "normalize_nodes": normalize_nodes,
            "normalisation": normalisation, "smin_smax": _smin_smax(scaling)}


def _smin_smax(scaling: str) -> tuple[float, float]:
    words = dict(item.split() for item in SCALINGS[scaling] if " " in item)
    return float(words.get("scale_min_short", 0.0)), float(words.get("scale_max_short", 1.0))


def numpy_energy(atoms: Atoms, potential: dict, sf_set: SymmetryFunctionSet) -> float:
    """n2p2's prediction, written out: brute-force G, n2p2's scaling and network, eV."""
    s_min, s_max = potential["smin_smax"]
    total = 0.0
    for symbol, g in zip(atoms.get_chemical_symbols(), reference_symmetry_functions(atoms, sf_set)):
        low, high, mean, sigma = potential["stats"][symbol]
        x = {"none": g, "center": g - mean,
             "scale": s_min + (s_max - s_min) * (g - low) / (high - low),
             "scalecenter": s_min + (s_max - s_min) * (g - mean) / (high - low),
             "sigma": s_min + (s_max - s_min) * (g - mean) / sigma}[potential["scaling"]]
        layers = potential["weights"][symbol]
        for number, (kernel, bias) in enumerate(layers):
            x = x @ kernel + bias
            if potential["normalize_nodes"]:
                x = x / kernel.shape[0]
            if number < len(layers) - 1:
                x = NUMPY_ACTIVATIONS[CODES[number]](x)
        nn = float(x[0])
        if potential["normalisation"]:
            nn = nn / CONV_ENERGY + MEAN
        total += (nn + OFFSETS[symbol]) * Hartree
    return total


def numpy_forces(atoms: Atoms, potential: dict, sf_set: SymmetryFunctionSet, h: float = 1e-4) -> np.ndarray:
    forces = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for x in range(3):
            shifted = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[i, x] += sign * h
                shifted.append(numpy_energy(moved, potential, sf_set))
            forces[i, x] = -(shifted[0] - shifted[1]) / (2 * h)
    return forces


@pytest.fixture(scope="module")
def small_structure() -> Atoms:
    return random_structure(seed=11, n_atoms=6, symbols=("O", "H"), size=4.6, min_distance=0.9)


def test_reader_sorts_elements_and_functions_and_converts_units(tmp_path):
    make_potential(tmp_path)
    model = read_n2p2(tmp_path, units="bohr,hartree")
    assert model.elements == ("H", "O")  # by atomic number, as n2p2
    assert model.config.symmetry_functions == reference_set()
    assert model.config.hidden_layers == WIDTHS and model.config.activation == ("logistic", "softplus")


@pytest.mark.parametrize("scaling,normalize_nodes,normalisation", [
    ("scalecenter", True, True), ("scale", False, True), ("sigma", True, False), ("center", False, False),
    ("none", False, True),
])
def test_hand_written_potential_matches_independent_evaluation(tmp_path, small_structure, scaling,
                                                                normalize_nodes, normalisation):
    potential = make_potential(tmp_path, seed=1, scaling=scaling, normalize_nodes=normalize_nodes,
                               normalisation=normalisation)
    model = read_n2p2(tmp_path, units="bohr,hartree")
    sf_set = reference_set()
    (energy, forces), = predict(model, [small_structure])
    reference = numpy_energy(small_structure, potential, sf_set)
    assert energy == pytest.approx(reference, rel=1e-12, abs=1e-10)
    if scaling == "scalecenter":  # finite differences once (2 s): the energy checks cover the rest
        np.testing.assert_allclose(forces, numpy_forces(small_structure, potential, sf_set), atol=2e-7)


def test_conv_length_does_not_change_the_prediction(tmp_path, small_structure):
    """n2p2 scales positions and symmetry-function parameters alike by conv_length."""
    make_potential(tmp_path / "a")
    text = (tmp_path / "a" / "input.nn").read_text().replace(f"conv_length {CONV_LENGTH}", "conv_length 0.37")
    make_potential(tmp_path / "b")
    (tmp_path / "b" / "input.nn").write_text(text)
    a, b = read_n2p2(tmp_path / "a", "bohr,hartree"), read_n2p2(tmp_path / "b", "bohr,hartree")
    assert a.config == b.config
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("code", sorted(ACTIVATION_CODES))
def test_activations_follow_n2p2(code):
    x = np.linspace(-6.0, 6.0, 241)
    ours = np.asarray(ACTIVATIONS[ACTIVATION_CODES[code]](jnp.asarray(x)))
    np.testing.assert_allclose(ours, NUMPY_ACTIVATIONS[code](x), rtol=1e-13, atol=1e-15)


def test_units():
    assert parse_units("angstrom,ev") == (1.0, 1.0)
    assert parse_units("Bohr, Hartree") == (Bohr, Hartree)
    assert parse_units("0.5,2") == (0.5, 2.0)
    for bad in ("bohr", "parsec,ev", "bohr,-1"):
        with pytest.raises(ValueError):
            parse_units(bad)


# --------------------------------------------------------------------------- clear errors


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("change,message", [
    (lambda d: (d / "weights.008.data").unlink(), r"weights\.008\.data does not exist"),
    (lambda d: (d / "scaling.data").unlink(), r"scaling\.data does not exist"),
    (lambda d: _edit(d / "input.nn", "epochs 10", "ewald_prec 1e-6"), r"'ewald_prec' \(line 8\) not supported"),
    (lambda d: _edit(d / "input.nn", "global_activation_short s p", "global_activation_short s x"),
     r"unknown activation code\(s\) \['x'\]"),
    (lambda d: _edit(d / "input.nn", "symfunction_short O 2 O 0.05", "symfunction_short O 12 O 0.05"),
     r"input\.nn line \d+: symfunction_short: .*type 12"),
    (lambda d: _edit(d / "input.nn", "epochs 10", "element_nodes_short O 2 5"), r"O layer 2 has 5 nodes"),
    (lambda d: _edit(d / "input.nn", "epochs 10", "nnp_type 4G-HDNNP"), r"not a short-range \(2G\) potential"),
    (lambda d: _edit(d / "input.nn", f"conv_energy {CONV_ENERGY}", ""), r"all or none of mean_energy"),
    (lambda d: _edit(d / "input.nn", "number_of_elements 2", "number_of_elements 3"), r"number_of_elements: 3"),
    (lambda d: _edit(d / "input.nn", "cutoff_type 1 0.2", "cutoff_type 1 0.2\ncutoff_type 2"),
     r"\['cutoff_type'\] given more than once"),
    (lambda d: _edit(d / "input.nn", "symfunction_short H 2 H", "symfunction_short H 2 C"), r"\['C'\] are not in"),
    (lambda d: (d / "scaling.data").write_text("\n".join((d / "scaling.data").read_text().splitlines()[:-1])),
     r"scaling\.data: 9 data lines, but input\.nn defines 10"),
    (lambda d: (d / "weights.001.data").write_text(
        "\n".join((d / "weights.001.data").read_text().splitlines()[:-1])), r"weights\.001\.data: 42 weights"),
    (lambda d: _edit(d / "weights.001.data", " a 2 0 1 1 2", " a 2 0 2 1 1"), r"out of n2p2's order"),
])
def test_unreadable_potentials_are_clear_errors(tmp_path, change, message):
    make_potential(tmp_path)
    change(tmp_path)
    with pytest.raises(N2P2Error, match=message):
        read_n2p2(tmp_path, units="bohr,hartree")


def test_missing_directory_and_ignored_output_activation(tmp_path):
    with pytest.raises(N2P2Error, match="does not exist"):
        read_n2p2(tmp_path / "nowhere")
    make_potential(tmp_path)
    _edit(tmp_path / "input.nn", "global_activation_short s p l", "global_activation_short s p t")
    with pytest.warns(UserWarning, match="output activation 't'"):
        read_n2p2(tmp_path)


# --------------------------------------------------------------------------- writing


def tiny_set() -> SymmetryFunctionSet:
    """Si/C functions of types 2, 3 and 9 in an order that is not n2p2's."""
    functions = []
    for centre in ("Si", "C"):
        functions += [SymmetryFunction(9, centre, ("Si", "Si"), 0.3, 4.0, 0.5, -1.0, 2.0),
                      SymmetryFunction(2, centre, ("Si",), 1.0, 4.0, 2.0),
                      SymmetryFunction(3, centre, ("C", "Si"), 0.1, 3.5, 0.0, 1.0, 1.0),
                      SymmetryFunction(2, centre, ("C",), 0.5, 4.0, 0.0),
                      SymmetryFunction(2, centre, ("Si",), 0.5, 4.0, 0.0)]
    return SymmetryFunctionSet(("Si", "C"), tuple(functions), "poly2", 0.1)


def randomised(model: Model, seed: int = 0) -> Model:
    """``model`` with random weights, feature scaling (some negative) and offsets."""
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(rng.normal(0.0, 0.7, np.shape(x))), model.params)
    for element in model.elements:
        n = model.config.symmetry_functions.n_features(element)
        params["feature_shift"][element] = jnp.asarray(rng.uniform(0.0, 1.0, n))
        params["feature_scale"][element] = jnp.asarray(rng.uniform(0.3, 3.0, n) * rng.choice([-1, 1], n))
        params["reference_energies"][element] = jnp.asarray(rng.uniform(-8, -2))
    return Model(model.config, params)


def random_model(activation=("tanh", "softplus"), seed: int = 0) -> Model:
    """Si/C model (n2p2 order: C, Si; its functions reordered too)."""
    return randomised(Model.create(symmetry_functions=tiny_set(), hidden_layers=(5, 4), activation=activation), seed)


def test_read_of_write_predicts_the_same(tmp_path, small_structure):
    """Predictions of read(write(model)) on random structures (the model of the hand-written
    potential, so the compiled function is shared)."""
    make_potential(tmp_path / "hand")
    model = randomised(read_n2p2(tmp_path / "hand", units="bohr,hartree"), seed=5)
    write_n2p2(model, tmp_path / "out")
    again = read_n2p2(tmp_path / "out")
    assert again.config == model.config
    structures = [small_structure] + [random_structure(s, n_atoms=6, symbols=("O", "H"), size=4.6,
                                                       min_distance=0.9) for s in (31, 32)]
    worst_energy = worst_force = 0.0
    for (e0, f0), (e1, f1) in zip(predict(model, structures), predict(again, structures)):
        worst_energy = max(worst_energy, abs(e1 - e0) / abs(e0))
        worst_force = max(worst_force, np.abs(f1 - f0).max() / np.abs(f0).max())
    print(f"round trip: energy {worst_energy:.1e}, forces {worst_force:.1e} (relative)")
    assert worst_energy < 1e-12 and worst_force < 1e-12


def test_read_of_write_permutes_elements_and_functions_into_n2p2_order(tmp_path):
    """A model whose elements and functions are not in n2p2's order comes back with the
    same parameters, permuted (so it computes the same function)."""
    model = random_model()
    write_n2p2(model, tmp_path)
    again = read_n2p2(tmp_path)
    assert again.elements == ("C", "Si") and again.config.activation == ("tanh", "softplus")
    assert again.config.symmetry_functions.cutoff_type == "poly2" and again.config.symmetry_functions.cutoff_alpha == 0.1
    for element in model.elements:
        mine = model.config.symmetry_functions.functions_of(element)
        theirs = again.config.symmetry_functions.functions_of(element)
        assert sorted(mine) == sorted(theirs) and list(mine) != list(theirs)
        permutation = [mine.index(f) for f in theirs]
        p0, p1 = model.params, again.params
        np.testing.assert_array_equal(p1["feature_shift"][element], np.asarray(p0["feature_shift"][element])[permutation])
        np.testing.assert_allclose(p1["feature_scale"][element], np.asarray(p0["feature_scale"][element])[permutation],
                                   rtol=2e-16)
        assert float(p1["reference_energies"][element]) == float(p0["reference_energies"][element])
        dense0, dense1 = p0["networks"][element]["params"], p1["networks"][element]["params"]
        np.testing.assert_array_equal(dense1["Dense_0"]["kernel"], np.asarray(dense0["Dense_0"]["kernel"])[permutation])
        for layer in ("Dense_0", "Dense_1", "Dense_2"):
            np.testing.assert_array_equal(dense1[layer]["bias"], dense0[layer]["bias"])
        np.testing.assert_array_equal(dense1["Dense_2"]["kernel"], dense0["Dense_2"]["kernel"])


def test_written_files_follow_n2p2_layout(tmp_path):
    model = random_model()
    functions = {e: model.config.symmetry_functions.functions_of(e) for e in model.elements}
    feature_range = {e: np.column_stack([np.arange(len(f)), np.arange(len(f)) + 10.0]) for e, f in functions.items()}
    written = write_n2p2(model, tmp_path, feature_range)
    assert sorted(p.name for p in written) == ["input.nn", "scaling.data", "weights.006.data", "weights.014.data"]
    text = (tmp_path / "input.nn").read_text()
    assert "elements C Si\n" in text and "global_activation_short t p l\n" in text
    assert "scale_symmetry_functions_sigma\n" in text and "normalize_nodes" not in text
    # the range is written in n2p2's order and read back in the read model's order
    again = read_n2p2(tmp_path)
    ranges = read_n2p2_feature_range(tmp_path)
    for element in model.elements:
        for n, function in enumerate(again.config.symmetry_functions.functions_of(element)):
            np.testing.assert_array_equal(ranges[element][n], feature_range[element][functions[element].index(function)])
    n_weights = [len([w for w in (tmp_path / f"weights.{z}.data").read_text().splitlines() if w[:1] != "#"])
                 for z in ("006", "014")]
    assert n_weights == [(5 * 5 + 5) + (5 * 4 + 4) + (4 + 1)] * 2
    without = tmp_path / "no_range"
    write_n2p2(model, without)
    assert all((r[:, 0] == 0).all() and (r[:, 1] == 1e300).all() for r in read_n2p2_feature_range(without).values())


def test_what_n2p2_cannot_represent_is_refused_before_writing(tmp_path):
    silu = Model.create(symmetry_functions=tiny_set(), hidden_layers=(3,), activation="silu")
    with pytest.raises(N2P2Error, match=r"activation\(s\) \['silu'\] have no n2p2 equivalent"):
        write_n2p2(silu, tmp_path / "out")
    zero = random_model()
    zero.params["feature_scale"]["Si"] = zero.params["feature_scale"]["Si"].at[3].set(0.0)
    with pytest.raises(N2P2Error, match="feature_scale of Si is 0"):
        write_n2p2(zero, tmp_path / "out")
    with pytest.raises(N2P2Error, match="shape"):
        write_n2p2(random_model(), tmp_path / "out", {"Si": np.zeros((3, 2))})
    linear = Model.create(symmetry_functions=tiny_set(), hidden_layers=())
    with pytest.raises(N2P2Error, match="at least one hidden layer"):
        write_n2p2(linear, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_command(tmp_path, capsys):
    radial = SymmetryFunctionSet(("Si", "C"), tuple(f for f in tiny_set().functions if f.kind == 2), "poly2", 0.1)
    path = save_model(randomised(Model.create(symmetry_functions=radial, hidden_layers=(3,))), tmp_path / "m.mlip")
    data = tmp_path / "train.extxyz"
    from ase.io import write

    write(data, [random_structure(s) for s in (1, 2)])
    assert main(["export", "n2p2", str(path), str(tmp_path / "pot"), "--range-from", str(data)]) == 0
    assert "pair_style hdnnp 4 dir" in capsys.readouterr().out
    ranges = read_n2p2_feature_range(tmp_path / "pot")
    assert all(np.all(r[:, 0] <= r[:, 1]) and np.all(r[:, 1] < 10) for r in ranges.values())
    silu = save_model(Model.create(symmetry_functions=radial, hidden_layers=(2,), activation="silu"),
                      tmp_path / "silu.mlip")
    assert main(["export", "n2p2", str(silu), str(tmp_path / "bad")]) == 1
    assert "no n2p2 equivalent" in capsys.readouterr().err


def test_per_layer_activations_round_trip_through_config_and_model_file(tmp_path):
    config = ModelConfig(tiny_set(), (3, 2), ("logistic", "tanh"))
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert ModelConfig(tiny_set(), (3, 2), ("tanh", "tanh")).to_dict()["activation"] == "tanh"
    with pytest.raises(ValueError, match="2 activations"):
        ModelConfig(tiny_set(), (3,), ("tanh", "tanh"))
    model = random_model(("logistic", "harmonic"))
    loaded = load_model(save_model(model, tmp_path / "m.mlip"))
    assert loaded.config == model.config and loaded.config.activations == ("logistic", "harmonic")


# --------------------------------------------------------------------------- input.data


def test_input_data_round_trip_with_units(tmp_path):
    periodic = random_structure(5, n_atoms=4)
    periodic.set_initial_charges([0.1, -0.1, 0.2, -0.2])
    periodic.calc = SinglePointCalculator(periodic, energy=-12.5, forces=np.arange(12.0).reshape(4, 3) / 7)
    cluster = Atoms("H2O", positions=[[0, 0, 0], [0.9, 0, 0], [0, 0.8, 0.3]])
    path = write_input_data(tmp_path / "input.data", [periodic, cluster], units="bohr,hartree", comment="test")
    lattice = [line.split()[1:] for line in path.read_text().splitlines() if line.startswith("lattice")]
    np.testing.assert_allclose(np.array(lattice[:3], dtype=float), periodic.cell.array / Bohr, rtol=1e-15)
    first, second = read_input_data(path, units="bohr,hartree")
    np.testing.assert_allclose(first.positions, periodic.positions, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(first.cell.array, periodic.cell.array, rtol=1e-14, atol=1e-14)
    assert first.get_potential_energy() == pytest.approx(-12.5, rel=1e-14)
    np.testing.assert_allclose(first.get_forces(), periodic.get_forces(), rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(first.get_initial_charges(), periodic.get_initial_charges())
    assert not second.pbc.any() and second.get_chemical_symbols() == ["H", "H", "O"]
    np.testing.assert_allclose(second.positions, cluster.positions, atol=1e-14)
    with pytest.raises(N2P2Error, match="all three"):
        write_input_data(tmp_path / "x.data", Atoms("H", cell=np.eye(3) * 5, pbc=(True, True, False)))
