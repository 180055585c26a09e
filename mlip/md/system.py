"""From ``ase.Atoms`` and a model to the arrays and the force field of a compiled MD run.

The structure goes through the one padding path (:func:`mlip.padding.pad_structure`:
validation, element rows, bucketed atom count); the neighbours come from the jit
cell list (:class:`mlip.kernels.cell_list.CellList`) so that they are rebuilt inside
the compiled loop, with ``r_min`` and non-finite checks in its error bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from ase import Atoms

from mlip.kernels.cell_list import CellList, CellListState
from mlip.kernels.neighbor_list import host_pairs
from mlip.model import Model, cast_params, make_model_functions
from mlip.padding import pad_structure


@dataclass(frozen=True)
class MDSystem:
    """Host-side description of a system to integrate.

    Attributes:
        model: the potential.
        n_atoms: real atoms (rows ``n_atoms:`` of every array are padding).
        position: ``[N_pad, 3]`` Å.
        mass: ``[N_pad]`` amu (1 on padding rows).
        atom_mask: ``[N_pad]`` bool.
        species: ``[N_pad]`` element index, -1 on padding rows.
        element_rows: per-element rows (see :func:`mlip.padding.element_rows`).
        cell: ``[3, 3]`` Å.
        pbc: periodic directions.
        cell_list: builder of the jit neighbour list (cutoff + skin).
        dtype: floating-point type of the run.
    """

    model: Model
    n_atoms: int
    position: np.ndarray
    mass: np.ndarray
    atom_mask: np.ndarray
    species: np.ndarray
    element_rows: tuple[np.ndarray, ...] | None
    cell: np.ndarray
    pbc: tuple[bool, bool, bool]
    cell_list: CellList
    dtype: object

    @classmethod
    def from_atoms(cls, model: Model, atoms: Atoms, skin: float = 0.5, dtype=jnp.float64,
                   capacity_multiplier: float = 1.25) -> "MDSystem":
        """Validate ``atoms`` (elements, r_min, NaN) and pad it.

        Raises:
            ValueError: unknown element, non-finite position, atoms closer than the
                model's ``r_min``, a degenerate periodic cell.
        """
        pbc = tuple(bool(p) for p in atoms.pbc)
        pairs = host_pairs(atoms.positions, atoms.cell.array, np.array(pbc), model.cutoff)
        padded = pad_structure(model, atoms, pairs)
        n = len(atoms)
        mass = np.ones(padded.positions.shape[0])
        mass[:n] = atoms.get_masses()
        mask = np.arange(len(mass)) < n
        cell_list = CellList(model.cutoff, skin=skin, pbc=pbc, r_min=model.config.r_min,
                             capacity_multiplier=capacity_multiplier)
        return cls(model, n, padded.positions, mass, mask, padded.species, padded.element_rows,
                   np.asarray(atoms.cell.array, np.float64), pbc, cell_list, dtype)

    def allocate_neighbors(self, position, cell) -> CellListState:
        """A new jit neighbour list for ``position`` and ``cell`` (host; sizes with headroom)."""
        return self.cell_list.allocate(position, cell, atom_mask=self.atom_mask)

    def potential(self):
        """The model as ``(position, cell, neighbors) -> (neighbors, energy eV, force eV/Å,
        virial eV)``, pure and jit-able: updates the neighbour list, then evaluates."""
        functions = make_model_functions(self.model.config)
        params = cast_params(self.model.params, self.dtype)
        species = jnp.asarray(self.species)
        rows = None if self.element_rows is None else tuple(jnp.asarray(r) for r in self.element_rows)
        update = self.cell_list.update

        def potential(position, cell, neighbors):
            neighbors = update(neighbors, position, cell)
            result = functions.energy_forces_virial(params, position, cell, species, neighbors.nl, rows)
            return neighbors, result.energy, result.forces, result.virial

        return potential

    def to_atoms(self, position, momentum, cell) -> Atoms:
        """An ``Atoms`` of the real rows (positions Å, momenta amu·Å/t, cell Å)."""
        symbols = [self.model.elements[s] for s in self.species[: self.n_atoms]]
        atoms = Atoms(symbols, positions=np.asarray(position, np.float64)[: self.n_atoms],
                      cell=np.asarray(cell, np.float64), pbc=self.pbc)
        atoms.set_masses(self.mass[: self.n_atoms])
        atoms.set_momenta(np.asarray(momentum, np.float64)[: self.n_atoms])
        return atoms


