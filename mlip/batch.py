"""The one batch path: ASE structures to validated, neighbour-listed, padded arrays.

Every consumer of the model (the ASE calculator, compiled MD, the LAMMPS coupling,
training features, evaluation, feature scaling, the linear output-layer fit, EOS
terms and analysis) turns structures into model inputs here, in one order:

1. **validate** (:func:`validate_structure`): finite positions, a usable cell,
   elements the model knows;
2. **neighbour pairs** (:func:`structure_pairs`): vesin's O(N) list at the model
   cutoff, or the pairs of a Verlet list or a caller that already has them;
3. **minimum distance** (:func:`check_distances`): no two atoms closer than the
   model's trained range ``r_min``;
4. **pad** (:func:`pad_structure`): atom counts to a few bucket sizes
   (:func:`atom_bucket`), neighbour capacity with headroom
   (:func:`neighbor_bucket`), per-element rows (:func:`element_rows`), so a
   jit-compiled function sees few distinct shapes.

:func:`prepare_structure` runs the four steps for one structure;
:func:`bucket_structures` runs them for a data set and groups the results into
buckets of one padded shape (one compilation per bucket).  The descriptors of a
data set (:func:`compute_descriptors`) come from the model's own descriptor
function on those buckets, the same function the calculator differentiates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms

from mlip.kernels.neighbor_list import (
    NeighborList,
    VerletNeighborList,
    check_cell,
    dense_from_pairs,
    host_pairs,
    round_up,
    shortest_pair,
)
from mlip.model import Model, make_model_functions
from mlip.precision import with_float64

Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]  # (i, j, S): ordered pairs and cell shifts


# --- bucket sizes ------------------------------------------------------------------


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


def max_neighbors(pairs: Pairs, n_atoms: int) -> int:
    """Largest number of neighbours of any atom in a pair list."""
    return int(np.bincount(pairs[0], minlength=n_atoms).max(initial=0))


# --- validation ------------------------------------------------------------------


def check_positions(positions) -> np.ndarray:
    """Positions as float64; ``ValueError`` naming atoms with NaN/infinite coordinates."""
    positions = np.asarray(positions, dtype=np.float64)
    finite = np.all(np.isfinite(positions), axis=1)
    if not finite.all():
        raise ValueError(f"positions of atoms {np.flatnonzero(~finite)[:10].tolist()} are NaN or infinite")
    return positions


def validate_structure(model: Model, atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(positions Å, cell Å, species)`` of ``atoms`` after the checks every
    consumer needs.

    Raises:
        ValueError: NaN/infinite positions, a non-finite or degenerate periodic
            cell, an element the model does not know.
    """
    positions = check_positions(atoms.positions)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    check_cell(cell, atoms.pbc)
    species = model.species_indices(atoms.get_chemical_symbols())
    return positions, cell, species


def structure_pairs(atoms: Atoms, cutoff: float, neighbors: VerletNeighborList | None = None) -> Pairs:
    """Neighbour pairs of ``atoms`` within ``cutoff`` (Å): from ``neighbors`` (a
    Verlet list, rebuilt only when its skin is used up) or a fresh vesin list."""
    positions = check_positions(atoms.positions)
    if neighbors is not None:
        return neighbors.pairs(positions, atoms.cell.array, np.asarray(atoms.pbc, dtype=bool))
    return host_pairs(positions, atoms.cell.array, atoms.pbc, cutoff)


def check_distances(model: Model, positions: np.ndarray, cell: np.ndarray, pairs: Pairs,
                    names: np.ndarray | None = None) -> float:
    """Shortest pair distance (Å, ``inf`` for no pairs); ``ValueError`` naming the
    two atoms (by ``names``, default their indices) if it is below the model's
    ``r_min``."""
    closest, distance = shortest_pair(positions, cell, pairs)
    if distance < model.config.r_min:
        i, j, _ = pairs
        a, b = (i[closest], j[closest]) if names is None else (names[i[closest]], names[j[closest]])
        raise ValueError(
            f"atoms {a} and {b} are {distance:.4f} Å apart, closer than "
            f"the model's trained range (r_min = {model.config.r_min} Å)"
        )
    return distance


def closest_pair(atoms: Atoms, limit: float) -> tuple[int, int, float] | None:
    """``(i, j, distance Å)`` of the closest two atoms of ``atoms`` if they are
    closer than ``limit`` (Å), else None.  Positions must be finite."""
    pairs = host_pairs(atoms.positions, atoms.cell.array, atoms.pbc, limit)
    if len(pairs[0]) == 0:
        return None
    closest, distance = shortest_pair(np.asarray(atoms.positions, np.float64), atoms.cell.array, pairs)
    return int(pairs[0][closest]), int(pairs[1][closest]), distance


def shortest_distance(structures: Iterable[Atoms], limit: float) -> float:
    """Shortest interatomic distance over ``structures`` (Å), or ``limit`` if none is shorter."""
    shortest = limit
    for atoms in structures:
        found = closest_pair(atoms, shortest)
        if found is not None:
            shortest = min(shortest, found[2])
    return shortest


# --- padding ---------------------------------------------------------------------


@dataclass(frozen=True)
class PaddedStructure:
    """A structure in the padded layout of :mod:`mlip.model` (numpy arrays)."""

    positions: np.ndarray  # [N_pad, 3] Å, zeros on padding rows
    cell: np.ndarray  # [3, 3] Å
    species: np.ndarray  # [N_pad] element index, -1 on padding rows
    nl: NeighborList
    n_atoms: int
    element_rows: tuple[np.ndarray, ...] | None = None  # see element_rows()
    min_distance: float = np.inf  # shortest listed pair distance, Å

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


def pad_structure(model: Model, atoms: Atoms, pairs: Pairs, capacity: int | None = None,
                  n_padded: int | None = None, exact_capacity: bool = False) -> PaddedStructure:
    """Validate ``atoms`` against ``model`` and pad it to bucket sizes, given its
    neighbour ``pairs`` (:func:`prepare_structure` finds them too).

    Args:
        model: the model (elements, r_min).
        atoms: the structure.
        pairs: ``(i, j, S)`` neighbour pairs of ``atoms`` covering the model cutoff.
        capacity: current neighbour capacity to keep if it still fits.
        n_padded: atom rows to pad to (default: :func:`atom_bucket`); must hold the atoms.
        exact_capacity: use ``capacity`` as given instead of a bucket around the need
            (it still grows if a row needs more: nothing is ever dropped).

    Raises:
        ValueError: unknown element, NaN positions, a degenerate cell, atoms closer
            than ``r_min``, ``n_padded`` smaller than the atom count.
    """
    return prepare_structure(model, atoms, pairs=pairs, capacity=capacity, n_padded=n_padded,
                             exact_capacity=exact_capacity)


def _pad(model: Model, positions: np.ndarray, cell: np.ndarray, species: np.ndarray, pairs: Pairs,
         capacity: int | None, n_padded: int | None, exact_capacity: bool,
         min_distance: float = np.inf) -> PaddedStructure:
    n_atoms = len(positions)
    n_padded = atom_bucket(n_atoms) if n_padded is None else int(n_padded)
    if not exact_capacity or capacity is None:
        capacity = neighbor_bucket(max_neighbors(pairs, n_atoms), capacity)
    nl = dense_from_pairs(*pairs, n_atoms, capacity=capacity, n_padded=n_padded)
    padded_positions = np.zeros((n_padded, 3))
    padded_positions[:n_atoms] = positions
    padded_species = np.full(n_padded, -1, dtype=np.int32)
    padded_species[:n_atoms] = species
    return PaddedStructure(padded_positions, cell, padded_species, nl, n_atoms,
                           element_rows(padded_species, len(model.elements)), min_distance)


def prepare_structure(model: Model, atoms: Atoms, *, pairs: Pairs | None = None,
                      neighbors: VerletNeighborList | None = None, cutoff: float | None = None,
                      capacity: int | None = None, n_padded: int | None = None,
                      exact_capacity: bool = False, names: np.ndarray | None = None) -> PaddedStructure:
    """The whole batch path for one structure: validate, neighbour pairs (from
    ``pairs``, a Verlet list ``neighbors`` or a fresh list at ``cutoff``, default the
    model's), minimum distance (errors name atoms by ``names``, default their
    indices), pad (see :func:`pad_structure` for the other arguments)."""
    positions, cell, species = validate_structure(model, atoms)
    if pairs is None:
        pairs = structure_pairs(atoms, model.cutoff if cutoff is None else cutoff, neighbors)
    distance = check_distances(model, positions, cell, pairs, names)
    return _pad(model, positions, cell, species, pairs, capacity, n_padded, exact_capacity, distance)


# --- buckets of a data set -------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """Structures padded to one shape: ``n_padded`` atom rows, ``capacity``
    neighbour slots, element rows of common lengths; ``members`` index the
    structures given to :func:`bucket_structures`."""

    members: tuple[int, ...]
    structures: tuple[PaddedStructure, ...]

    @property
    def n_padded(self) -> int:
        return self.structures[0].positions.shape[0]

    @property
    def capacity(self) -> int:
        return self.structures[0].nl.capacity

    def stacked(self, name: str) -> np.ndarray:
        """Field ``name`` of :class:`PaddedStructure` stacked over the bucket."""
        return np.stack([getattr(s, name) for s in self.structures])

    def stacked_element_rows(self) -> tuple[np.ndarray, ...] | None:
        """Per element ``[S, L_e]`` rows (None for one-element models)."""
        if self.structures[0].element_rows is None:
            return None
        return tuple(np.stack(per_element) for per_element in zip(*(s.element_rows for s in self.structures)))


def bucket_structures(model: Model, structures: Sequence[Atoms], cutoff: float | None = None) -> list[Bucket]:
    """The batch path for a data set: every structure validated, listed and padded
    once, grouped by :func:`atom_bucket` (ascending), with one neighbour capacity
    per bucket (the largest need, to a multiple of 8) and per-element rows of one
    length per bucket, so each bucket is one compiled shape.

    Raises:
        ValueError: from :func:`validate_structure` and :func:`check_distances`.
    """
    cutoff = model.cutoff if cutoff is None else float(cutoff)
    checked = [validate_structure(model, atoms) for atoms in structures]
    pairs = [structure_pairs(atoms, cutoff) for atoms in structures]
    distances = [check_distances(model, positions, cell, p) for (positions, cell, _), p in zip(checked, pairs)]
    by_shape: dict[int, list[int]] = {}
    for n, atoms in enumerate(structures):
        by_shape.setdefault(atom_bucket(len(atoms)), []).append(n)
    buckets = []
    for n_padded, members in sorted(by_shape.items()):
        capacity = round_up(max(max_neighbors(pairs[n], len(structures[n])) for n in members), 8)
        padded = [_pad(model, *checked[n], pairs[n], capacity, n_padded, True, distances[n]) for n in members]
        buckets.append(Bucket(tuple(members), tuple(_common_element_rows(model, padded))))
    return buckets


def _common_element_rows(model: Model, padded: list[PaddedStructure]) -> list[PaddedStructure]:
    """``padded`` with element rows of one length per element (the bucket's largest count)."""
    n_elements = len(model.elements)
    if n_elements < 2:
        return padded
    counts = np.max([[(s.species == e).sum() for e in range(n_elements)] for s in padded], axis=0)
    lengths = element_row_lengths(counts, padded[0].species.shape[0])
    return [replace(s, element_rows=element_rows(s.species, n_elements, lengths)) for s in padded]


@with_float64
def compute_descriptors(model: Model, structures: Iterable[Atoms]) -> dict[str, np.ndarray]:
    """Raw symmetry functions of every atom, grouped by element, in structure then
    atom order (the model's descriptor function on :func:`bucket_structures`).

    Returns:
        ``{element: [n_atoms_of_element, n_features(element)]}``.
    """
    structures = list(structures)
    descriptors = jax.jit(make_model_functions(model.config).descriptors)
    sf_set = model.config.symmetry_functions
    per_structure: list[np.ndarray | None] = [None] * len(structures)
    species: list[np.ndarray | None] = [None] * len(structures)
    for bucket in bucket_structures(model, structures):
        for n, padded in zip(bucket.members, bucket.structures):
            per_structure[n] = np.asarray(descriptors(*padded.as_jax()))[: padded.n_atoms]
            species[n] = padded.species[: padded.n_atoms]
    collected: dict[str, list[np.ndarray]] = {e: [] for e in model.elements}
    for union, kinds in zip(per_structure, species):
        for index, element in enumerate(model.elements):
            collected[element].append(union[kinds == index][:, sf_set.feature_columns(element)])
    return {
        e: np.concatenate(v) if v else np.zeros((0, sf_set.n_features(e))) for e, v in collected.items()
    }
