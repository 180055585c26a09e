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

import numpy as np
import pytest
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from mlip import Model
from mlip.calculator import MLIPCalculator
from mlip.kernels.neighbor_list import VerletNeighborList
from mlip.training.linear import random_feature_si

SKIN = 0.3


@pytest.fixture(scope="module")
def sw_model() -> Model:
    """Random hidden layer, output layer fitted to Stillinger-Weber Si (diamond
    minimum near a = 5.42 Å)."""
    return random_feature_si()


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
