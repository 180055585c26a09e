"""Per-atom energy reports, Shapley values and counterfactual motifs (mlip.analysis.interpret)."""

from __future__ import annotations

import itertools
from math import factorial

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("mendeleev")
pytest.importorskip("shap")

from ase.build import bulk  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.calculators.lj import LennardJones  # noqa: E402
from ase.neighborlist import neighbor_list  # noqa: E402
from conftest import random_structure  # noqa: E402

from mlip.analysis.interpret import (  # noqa: E402
    atom_energy_function,
    atom_energy_shapley,
    atomic_energy_report,
    coalition_masks,
    group_shapley,
    motif_importance,
    motif_indices,
    plot_atomic_energies,
    shap_feature_values,
    shap_group_shapley,
    shap_summary_plot,
    shapley_from_coalitions,
    shapley_values,
    symmetry_function_groups,
)
from mlip.batch import compute_descriptors  # noqa: E402
from mlip.kernels.symmetry_functions import default_symmetry_functions  # noqa: E402
from mlip.model import Model  # noqa: E402
from mlip.training import scaling_from_features  # noqa: E402


def permutation_shapley(value, n):
    """Brute force from the definition: the mean marginal contribution over all n! orderings."""
    phi = np.zeros(n)
    for order in itertools.permutations(range(n)):
        present = np.zeros(n, bool)
        for player in order:
            before = value(present.copy())
            present[player] = True
            phi[player] += value(present.copy()) - before
    return phi / factorial(n)


def test_exact_shapley_against_permutation_brute_force():
    rng = np.random.default_rng(0)
    table = rng.normal(size=2**5)  # an arbitrary game on 5 players
    weights = 1 << np.arange(5)

    def value(mask):
        return table[int(mask.astype(int) @ weights)]

    phi = shapley_values(value, 5)
    np.testing.assert_allclose(phi, permutation_shapley(value, 5), rtol=1e-12, atol=1e-12)
    assert phi.sum() == pytest.approx(table[-1] - table[0])  # efficiency
    np.testing.assert_allclose(shapley_from_coalitions(table), phi)
    assert coalition_masks(3)[5].tolist() == [True, False, True]
    with pytest.raises(ValueError, match="2\\^n"):
        shapley_from_coalitions(np.zeros(6))


def test_group_shapley_linear_model_is_analytic_and_matches_shap():
    """For f(x) = w.x the interventional group value is sum_{k in g} w_k (x_k - mean b_k);
    a non-linear model against shap (all coalitions enumerated), per group and per feature."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=6)
    x, background = rng.normal(size=6), rng.normal(size=(5, 6))
    groups = [[0, 3], [1], [2, 4, 5]]
    phi = group_shapley(lambda z: z @ w, x, background, groups)
    np.testing.assert_allclose(phi, [sum(w[k] * (x[k] - background[:, k].mean()) for k in g) for g in groups])

    def model(z):
        return np.tanh(z @ w) + z[:, 0] * z[:, 2]

    ours = group_shapley(model, x, background, groups)
    np.testing.assert_allclose(shap_group_shapley(model, x, background, groups), ours, rtol=1e-10, atol=1e-12)
    assert ours.sum() == pytest.approx(model(x[None])[0] - model(background).mean())
    singles = group_shapley(model, x, background, [[k] for k in range(6)])
    np.testing.assert_allclose(shap_feature_values(model, x, background)[0], singles, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="disjoint"):
        group_shapley(model, x, background, [[0, 1], [1, 2]])


@pytest.fixture(scope="module")
def small_model():
    sf = default_symmetry_functions(("Si", "C"), r_cut=4.0, n_radial=3, n_angular=1, zetas=(1.0,))
    raw = Model.create(symmetry_functions=sf, hidden_layers=(6,), seed=2)
    features = compute_descriptors(raw, [random_structure(s) for s in range(2)])
    return scaling_from_features(raw, features), features["Si"]


def test_atomic_energy_report_and_plot(tmp_path):
    crystal = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    shell = np.setdiff1d(motif_indices(crystal, 3, 2.6), [3])  # the 12 first neighbours of site 3 ...
    atoms = crystal.copy()
    del atoms[3]
    shell = np.where(shell > 3, shell - 1, shell)  # ... as indices after removing it
    report = atomic_energy_report(atoms, EMT())
    assert report.total == pytest.approx(EMT().get_potential_energy(atoms), rel=1e-12)
    assert report.energies.sum() == pytest.approx(report.total, rel=1e-10)
    highest = np.flatnonzero(report.energies > report.energies.max() - 1e-9)
    np.testing.assert_array_equal(np.sort(highest), np.sort(shell))  # the vacancy's neighbours, all 12
    assert f"{int(np.argmax(report.energies))} (Cu" in report.table()
    assert plot_atomic_energies(tmp_path / "energies.png", atoms, report.energies).stat().st_size > 1000
    with pytest.raises(ValueError, match="one energy per atom"):
        plot_atomic_energies(tmp_path / "bad.png", atoms, report.energies[:-1])


def test_atom_energy_shapley_sums_to_the_model_energy(small_model, tmp_path):
    """Efficiency against the model's own per-atom energy of the padded structure
    (the full pure energy function, not the features-to-energy half)."""
    import jax

    from mlip.kernels.neighbor_list import host_pairs
    from mlip.model import make_model_functions
    from mlip.batch import pad_structure
    from mlip.precision import float64_scope

    small_model, background = small_model
    atoms = random_structure(11)
    padded = pad_structure(small_model, atoms, host_pairs(atoms.positions, atoms.cell.array, atoms.pbc,
                                                         small_model.cutoff))
    with float64_scope():
        energies = np.asarray(jax.jit(make_model_functions(small_model.config).atomic_energies)(
            small_model.params, *padded.as_jax()))
    index = next(i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "Si")
    groups = symmetry_function_groups(small_model, "Si", by="neighbors")
    assert set(groups) == {"Si", "C", "C-C", "C-Si", "Si-Si"}
    phi = atom_energy_shapley(small_model, atoms, index, groups, background)
    baseline = atom_energy_function(small_model, "Si")(background).mean()
    assert sum(phi.values()) == pytest.approx(energies[index] - baseline, rel=1e-8, abs=1e-10)
    assert set(symmetry_function_groups(small_model, "Si")) == {"radial", "angular (wide)"}
    assert shap_summary_plot(tmp_path / "shap.png", [list(phi.values())], list(phi)).stat().st_size > 1000


def test_motif_removal_pair_potential_known_answer():
    """Lennard-Jones (pair-additive): removing a motif without relaxation changes the
    energy by minus every pair term touching the motif (pairs inside it once)."""
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    sigma, epsilon, rc = 3.4, 0.0104, 7.0
    calc = LennardJones(sigma=sigma, epsilon=epsilon, rc=rc)
    motif = motif_indices(atoms, 0, 4.0)
    assert len(motif) == 13  # the atom and its 12 nearest neighbours
    i, j, d = neighbor_list("ijd", atoms, rc)

    def pair(r):
        return 4 * epsilon * ((sigma / r) ** 12 - (sigma / r) ** 6) - 4 * epsilon * ((sigma / rc) ** 12 - (sigma / rc) ** 6)

    touching = np.isin(i, motif) | np.isin(j, motif)
    removed_pairs = 0.5 * pair(d[touching]).sum()  # each pair appears as (i, j) and (j, i)
    mu = -0.08
    result = motif_importance(atoms, calc, remove=motif, chemical_potentials={"Ar": mu}, relax=False)
    assert result.energy_change == pytest.approx(-removed_pairs + len(motif) * mu, rel=1e-10)
    assert len(result.structure) == len(atoms) - len(motif)


def test_vacancy_in_emt_copper_relaxes_downhill():
    atoms = bulk("Cu", "fcc", a=3.59, cubic=True).repeat(2)
    result = motif_importance(atoms, EMT(), remove=[0], fmax=0.005)
    e_bulk = EMT().get_potential_energy(atoms) / len(atoms)
    assert result.chemical_potentials == {"Cu": pytest.approx(e_bulk)}
    assert 0.0 < result.energy_change < result.unrelaxed_change  # vacancy formation energy, eV
    result.structure.calc = EMT()
    assert np.abs(result.structure.get_forces()).max() < 0.005
    swapped = motif_importance(atoms, EMT(), relabel={0: "Au"}, chemical_potentials={"Cu": e_bulk, "Au": -0.1},
                               relax=False)
    manual = atoms.copy()
    manual[0].symbol = "Au"
    assert swapped.energy_change == pytest.approx(EMT().get_potential_energy(manual) - e_bulk * len(atoms)
                                                  + e_bulk - (-0.1), rel=1e-10)
    with pytest.raises(ValueError, match="chemical_potentials"):
        motif_importance(manual, EMT(), remove=[0], relax=False)
    with pytest.raises(ValueError, match="empty"):
        motif_importance(atoms, EMT())
