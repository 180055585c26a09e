"""Classical harmonic free energy of a crystal from a model's finite-displacement
phonons (ASE ``Phonons``, Γ point of the given cell), the low-temperature limit
that Frenkel-Ladd integration must approach.  Energies eV, temperatures K."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.phonons import Phonons

from mlip.calculator import MLIPCalculator
from mlip.model import Model
from mlip.ti.potentials import HBAR, harmonic_free_energy


def harmonic_crystal(model: Model, atoms: Atoms, temperature: float, delta: float = 0.01) -> dict:
    """``U0`` (static energy of ``atoms``, eV), ``F_harmonic = U0 + kT sum ln(hbar
    omega / kT)`` over the ``3N - 3`` non-translational Γ modes of the cell (eV; the
    free centre of mass is excluded, as in :func:`mlip.ti.frenkel_ladd`), and the
    lowest and highest mode energies (meV).  ``atoms`` should be at a minimum of the
    model; ``delta`` is the finite displacement, Å.

    Raises:
        ValueError: an imaginary (unstable) mode: the structure is not a minimum.
    """
    with tempfile.TemporaryDirectory() as directory:
        phonons = Phonons(atoms, MLIPCalculator(model), supercell=(1, 1, 1), delta=delta,
                          name=str(Path(directory) / "phonon"))
        phonons.run()
        phonons.read(acoustic=True)
        energies = np.sort(np.real(phonons.band_structure([[0.0, 0.0, 0.0]])[0]))  # hbar omega, eV
    modes = energies[3:]  # the three translations have zero frequency
    if modes[0] <= 0:
        raise ValueError(f"unstable mode of {1e3 * modes[0]:.3f} meV: the structure is not a minimum of the model")
    kT = units.kB * temperature
    atoms = atoms.copy()
    atoms.calc = MLIPCalculator(model)
    u0 = atoms.get_potential_energy()
    return {"U0": u0, "F_harmonic": u0 + harmonic_free_energy(modes / HBAR, kT),
            "lowest_mode_meV": 1e3 * modes[0], "highest_mode_meV": 1e3 * modes[-1]}
