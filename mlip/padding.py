"""Turning ASE structures into the padded, fixed-shape arrays the JAX core takes.

Atom counts are padded to a small set of bucket sizes and neighbour capacities
are kept with headroom, so a jit-compiled function sees few distinct shapes and
is reused across MD steps, optimiser steps and structures of similar size.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from ase import Atoms

from mlip.kernels.neighbor_list import NeighborList, dense_from_pairs, round_up, shortest_pair
from mlip.model import Model


def atom_bucket(n_atoms: int) -> int:
    """Padded atom count: 16, then 2^k and 1.5 * 2^k (rounded to multiples of 8)."""
    size = 16
    while size < n_atoms:
        size = round_up(int(size * 1.5), 8) if size & (size - 1) == 0 else 1 << size.bit_length()
    return size


def neighbor_bucket(needed: int, current: int | None = None) -> int:
    """Neighbour capacity: keep ``current`` while it fits without gross waste,
    otherwise the need plus 20 % headroom, rounded up to a multiple of 8."""
    if current is not None and needed <= current <= 2 * needed + 8:
        return current
    return round_up(int(needed * 1.2) + 1, 8)


def check_positions(positions) -> np.ndarray:
    """Positions as float64; ``ValueError`` naming atoms with NaN/infinite coordinates."""
    positions = np.asarray(positions, dtype=np.float64)
    finite = np.all(np.isfinite(positions), axis=1)
    if not finite.all():
        raise ValueError(f"positions of atoms {np.flatnonzero(~finite)[:10].tolist()} are NaN or infinite")
    return positions


def check_distances(model: Model, positions: np.ndarray, cell: np.ndarray,
                    pairs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """``ValueError`` if two atoms are closer than the model's ``r_min`` (Å)."""
    closest, distance = shortest_pair(positions, cell, pairs)
    if distance < model.config.r_min:
        i, j, _ = pairs
        raise ValueError(
            f"atoms {i[closest]} and {j[closest]} are {distance:.4f} Å apart, closer than "
            f"the model's trained range (r_min = {model.config.r_min} Å)"
        )


@dataclass(frozen=True)
class PaddedStructure:
    """A structure in the padded layout of :mod:`mlip.model` (numpy arrays)."""

    positions: np.ndarray  # [N_pad, 3] Å, zeros on padding rows
    cell: np.ndarray  # [3, 3] Å
    species: np.ndarray  # [N_pad] element index, -1 on padding rows
    nl: NeighborList
    n_atoms: int
    element_rows: tuple[np.ndarray, ...] | None = None  # see element_rows()

    def as_jax(self, dtype=jnp.float64, with_element_rows: bool = False) -> tuple:
        """``(positions, cell, species, nl)`` as JAX arrays, floats in ``dtype``;
        with ``with_element_rows`` also :attr:`element_rows`, the last argument of
        the model's energy functions."""
        arrays = (
            jnp.asarray(self.positions, dtype),
            jnp.asarray(self.cell, dtype),
            jnp.asarray(self.species),
            NeighborList(jnp.asarray(self.nl.idx), jnp.asarray(self.nl.shifts)),
        )
        if not with_element_rows:
            return arrays
        rows = None if self.element_rows is None else tuple(jnp.asarray(r) for r in self.element_rows)
        return (*arrays, rows)


def element_row_lengths(counts, n_rows: int) -> tuple[int, ...]:
    """Static lengths of :func:`element_rows` for ``counts`` atoms per element:
    :func:`atom_bucket` of the count, at most ``n_rows``, 0 for an absent element."""
    return tuple(min(atom_bucket(int(c)), n_rows) if c else 0 for c in counts)


def element_rows(species: np.ndarray, n_elements: int,
                 lengths: tuple[int, ...] | None = None) -> tuple[np.ndarray, ...] | None:
    """Per element, the rows of ``species`` holding that element, padded with
    ``len(species)`` (dropped by the model) to a static length (default
    :func:`element_row_lengths`), so each element's network runs on its own atoms
    only and the shapes stay fixed while the composition does.  ``None`` for a
    one-element model, whose network runs on every row anyway.
    """
    if n_elements < 2:
        return None
    n_rows = len(species)
    own = [np.flatnonzero(species == index).astype(np.int32) for index in range(n_elements)]
    if lengths is None:
        lengths = element_row_lengths([len(rows) for rows in own], n_rows)
    if any(len(rows) > length for rows, length in zip(own, lengths)):
        raise ValueError(f"element counts {[len(r) for r in own]} exceed the row lengths {list(lengths)}")
    return tuple(np.concatenate([rows, np.full(length - len(rows), n_rows, dtype=np.int32)])
                 for rows, length in zip(own, lengths))


def max_neighbors(pairs: tuple[np.ndarray, np.ndarray, np.ndarray], n_atoms: int) -> int:
    """Largest number of neighbours of any atom in a pair list."""
    return int(np.bincount(pairs[0], minlength=n_atoms).max(initial=0))


def pad_structure(model: Model, atoms: Atoms, pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
                  capacity: int | None = None, n_padded: int | None = None,
                  exact_capacity: bool = False) -> PaddedStructure:
    """Validate ``atoms`` against ``model`` and pad it to bucket sizes.

    Args:
        model: the model (elements, r_min).
        atoms: the structure.
        pairs: ``(i, j, S)`` neighbour pairs of ``atoms`` covering the model cutoff.
        capacity: current neighbour capacity to keep if it still fits.
        n_padded: atom rows to pad to (default: :func:`atom_bucket`); must hold the atoms.
        exact_capacity: use ``capacity`` as given instead of a bucket around the need
            (it still grows if a row needs more: nothing is ever dropped).

    Raises:
        ValueError: unknown element, NaN positions, atoms closer than ``r_min``,
            ``n_padded`` smaller than the atom count.
    """
    positions = check_positions(atoms.positions)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    species = model.species_indices(atoms.get_chemical_symbols())
    check_distances(model, positions, cell, pairs)
    n_atoms = len(atoms)
    n_padded = atom_bucket(n_atoms) if n_padded is None else int(n_padded)
    if not exact_capacity or capacity is None:
        capacity = neighbor_bucket(max_neighbors(pairs, n_atoms), capacity)
    nl = dense_from_pairs(*pairs, n_atoms, capacity=capacity, n_padded=n_padded)
    padded_positions = np.zeros((n_padded, 3))
    padded_positions[:n_atoms] = positions
    padded_species = np.full(n_padded, -1, dtype=np.int32)
    padded_species[:n_atoms] = species
    return PaddedStructure(padded_positions, cell, padded_species, nl, n_atoms,
                           element_rows(padded_species, len(model.elements)))
