"""From ``ase.Atoms`` and a model to the arrays and the force field of a compiled MD run.

The structure goes through the one batch path (:func:`mlip.batch.prepare_structure`:
validation, element rows, bucketed atom count); the neighbours come from the jit
cell list (:class:`mlip.kernels.cell_list.CellList`) so that they are rebuilt inside
the compiled loop, with ``r_min`` and non-finite checks in its error bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from ase import Atoms

from mlip.batch import prepare_structure
from mlip.kernels.cell_list import CellList, CellListState
from mlip.model import Model, cast_params, make_model_functions


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
        element_rows: per-element rows (see :func:`mlip.batch.element_rows`).
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
                   capacity_multiplier: float = 1.25, cutoff: float | None = None) -> "MDSystem":
        """Validate ``atoms`` (elements, r_min, NaN) and pad it.

        ``cutoff`` (Å, at least the model's) is the interaction range of the
        neighbour list; give the largest cutoff when other models share the list
        (:meth:`potential` with ``model``, e.g. to couple two models in TI).

        Raises:
            ValueError: unknown element, non-finite position, atoms closer than the
                model's ``r_min``, a degenerate periodic cell.
        """
        pbc = tuple(bool(p) for p in atoms.pbc)
        cutoff = model.cutoff if cutoff is None else float(cutoff)
        if cutoff < model.cutoff:
            raise ValueError(f"the neighbour-list cutoff {cutoff} Å is below the model's {model.cutoff} Å")
        padded = prepare_structure(model, atoms)
        n = len(atoms)
        mass = np.ones(padded.positions.shape[0])
        mass[:n] = atoms.get_masses()
        mask = np.arange(len(mass)) < n
        cell_list = CellList(cutoff, skin=skin, pbc=pbc, r_min=model.config.r_min,
                             capacity_multiplier=capacity_multiplier)
        return cls(model, n, padded.positions, mass, mask, padded.species, padded.element_rows,
                   np.asarray(atoms.cell.array, np.float64), pbc, cell_list, dtype)

    def allocate_neighbors(self, position, cell) -> CellListState:
        """A new jit neighbour list for ``position`` and ``cell`` (host; sizes with headroom)."""
        return self.cell_list.allocate(position, cell, atom_mask=self.atom_mask)

    def potential(self, model: Model | None = None):
        """The system's model (or another ``model`` of the same elements, whose cutoff
        fits the neighbour list) as ``(position, cell, neighbors) -> (neighbors, energy
        eV, force eV/Å, virial eV)``, pure and jit-able: updates the neighbour list,
        then evaluates.  Models with a shorter cutoff than the list's ignore the
        farther neighbours (their cutoff functions vanish there)."""
        model = self.model if model is None else model
        if sorted(model.elements) != sorted(self.model.elements):
            raise ValueError(f"model elements {list(model.elements)} differ from the system's "
                             f"{list(self.model.elements)}")
        if model.cutoff > self.cell_list.cutoff:
            raise ValueError(f"model cutoff {model.cutoff} Å exceeds the neighbour list's {self.cell_list.cutoff} Å; "
                             "build the system with MDSystem.from_atoms(..., cutoff=...)")
        order = [self.model.elements.index(e) for e in model.elements]  # model's element -> system's index
        to_model = np.full(len(order) + 1, -1)
        to_model[order] = np.arange(len(order))
        functions = make_model_functions(model.config)
        params = cast_params(model.params, self.dtype)
        species = jnp.asarray(to_model[self.species])  # -1 (padding) stays -1
        rows = None if self.element_rows is None else tuple(jnp.asarray(self.element_rows[i]) for i in order)
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


