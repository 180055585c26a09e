"""Cell relaxations with ASE's FrechetCellFilter + BFGS reuse the host neighbour list.

The Verlet list compares positions in fractional coordinates and spends its skin on
the cell deformation, so a relaxation of a strained cell rebuilds it a few times at
most instead of at every step, and ends on the same structure and energy as
rebuilding at every call.

The potential is a small random-feature network (random hidden layer, output layer
fitted by linear least squares to Stillinger-Weber energies, forces and virials):
unlike a random network it has a stable diamond minimum, so relaxations converge.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from mlip import Model
from mlip.calculator import MLIPCalculator
from mlip.kernels.neighbor_list import VerletNeighborList, host_pairs
from mlip.model import make_model_functions
from mlip.padding import pad_structure
from mlip.training import fit_feature_scaling
from mlip.training.generate import stillinger_weber_si

HIDDEN = 24
SKIN = 0.3


@pytest.fixture(scope="module")
def sw_model() -> Model:
    """Random hidden layer, output layer fitted to Stillinger-Weber Si (diamond
    minimum near a = 5.42 Å).  The energy is linear in the output weights, so the
    Jacobian of (energy, forces, virial) with respect to them is the design matrix."""
    sw = stillinger_weber_si()
    rng = np.random.default_rng(0)
    labelled = []
    for _ in range(12):
        atoms = bulk("Si", "diamond", a=5.431, cubic=True)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.04, 0.04, (3, 3))), scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.06, atoms.positions.shape)
        atoms.calc = sw
        labelled.append((atoms.copy(), atoms.get_potential_energy(), atoms.get_forces(),
                         atoms.get_stress(voigt=False) * atoms.get_volume()))
    model = Model.create(elements=["Si"], r_cut=4.0, n_radial=4, n_angular=2, hidden_layers=(HIDDEN,), seed=0)
    model = fit_feature_scaling(model, [atoms for atoms, *_ in labelled])
    energy_forces_virial = make_model_functions(model.config).energy_forces_virial

    def with_output_layer(theta):
        params = jax.tree_util.tree_map(lambda x: x, model.params)
        network = dict(params["networks"]["Si"]["params"])
        network["Dense_1"] = {"kernel": theta[:HIDDEN, None], "bias": theta[HIDDEN:]}
        params["networks"] = {"Si": {"params": network}}
        return params

    def outputs(theta, positions, cell, species, nl):
        result = energy_forces_virial(with_output_layer(theta), positions, cell, species, nl)
        return jnp.concatenate([result.energy[None], result.forces.ravel(), result.virial.ravel()])

    jacobian = jax.jit(jax.jacfwd(outputs))
    rows, targets, weights = [], [], []
    for atoms, energy, forces, virial in labelled:
        pairs = host_pairs(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff)
        padded = pad_structure(model, atoms, pairs, 64, exact_capacity=True)
        design = np.asarray(jacobian(jnp.zeros(HIDDEN + 1), *padded.as_jax()))
        n, n_padded = len(atoms), padded.positions.shape[0]
        rows += [design[:1] / n, design[1:1 + 3 * n], design[1 + 3 * n_padded:] / n]
        targets += [[energy / n], forces.ravel(), virial.ravel() / n]
        weights += [[10.0], np.ones(3 * n), np.full(9, 3.0)]
    design, target, weight = np.vstack(rows), np.concatenate(targets), np.concatenate(weights)
    theta = np.linalg.lstsq(design * weight[:, None], target * weight, rcond=None)[0]
    return Model(model.config, with_output_layer(jnp.asarray(theta)))


@pytest.fixture(scope="module")
def calculators(sw_model) -> dict[float, MLIPCalculator]:
    """One calculator (one compilation) per skin, shared by the relaxations."""
    return {skin: MLIPCalculator(sw_model, skin=skin) for skin in (0.0, SKIN)}


def relax(calc: MLIPCalculator, atoms, fmax: float = 1e-4):
    calc.reset()
    calc.neighbors = VerletNeighborList(calc.neighbors.cutoff, calc.neighbors.skin)
    atoms = atoms.copy()
    atoms.calc = calc
    optimizer = BFGS(FrechetCellFilter(atoms), logfile=None)
    energies = []
    optimizer.attach(lambda: energies.append(atoms.get_potential_energy()))
    converged = optimizer.run(fmax=fmax, steps=200)
    return atoms, converged, optimizer.nsteps, np.array(energies)


@pytest.mark.filterwarnings("ignore:logm result may be inaccurate")
@pytest.mark.parametrize("strain", [
    0.03 * np.eye(3),
    np.array([[0.02, 0.03, 0.0], [0.0, -0.01, 0.02], [0.0, 0.0, 0.01]]),
], ids=["isotropic+3%", "sheared"])
def test_cell_relaxation_reuses_the_list_and_matches_rebuilding(calculators, strain):
    atoms = bulk("Si", "diamond", a=5.431, cubic=True)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    atoms.rattle(0.02, seed=3)
    reference, converged_ref, steps_ref, energies_ref = relax(calculators[0.0], atoms)
    relaxed, converged, steps, energies = relax(calculators[SKIN], atoms)
    assert converged_ref and converged
    assert steps == steps_ref >= 20
    np.testing.assert_allclose(energies, energies_ref, rtol=0.0, atol=1e-8)
    np.testing.assert_allclose(relaxed.cell.array, reference.cell.array, atol=1e-6)
    np.testing.assert_allclose(relaxed.positions, reference.positions, atol=1e-6)
    assert abs(relaxed.get_volume() / len(relaxed) - 5.42**3 / 8) < 0.3  # the fitted diamond minimum
    assert calculators[0.0].neighbors.n_builds == steps_ref + 1  # every call
    assert calculators[SKIN].neighbors.n_builds <= 3  # the first call and at most two more
    # the final structure: same energy, forces and stress as a fresh list
    np.testing.assert_allclose(relaxed.get_forces(), reference.get_forces(), atol=1e-8)
    np.testing.assert_allclose(relaxed.get_stress(), reference.get_stress(), atol=1e-10)
