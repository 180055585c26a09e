"""Dense neighbour lists shared by every kernel of mlip.

A :class:`NeighborList` stores, for each of ``N`` (padded) atoms, up to ``M``
neighbours as

* ``idx``    -- ``int32 [N, M]``: index of the neighbour atom ``j``; empty slots
  hold ``N`` (one past the last atom), so ``idx < N`` is the validity mask;
* ``shifts`` -- ``int8`` or ``int32 [N, M, 3]``: integer lattice translation ``S``
  such that the neighbour sits at ``positions[j] + S @ cell`` (Å).  Host lists
  (:func:`dense_from_pairs`) store ``int8`` whenever every ``|S| <= 127`` (a quarter
  of the memory: 0.17 GB instead of 0.67 GB at a million atoms with 56 slots), the
  jit cell list ``int32``; consumers cast (``shifts.astype(dtype) @ cell``).

The pair vector is therefore ``r_ij = positions[j] + shifts @ cell - positions[i]``.
Both arrays are JAX pytree leaves, so a list can be passed into jit-compiled code
and rebuilt inside it (see :mod:`mlip.kernels.cell_list`).

The host builder here uses vesin's O(N) cell list (multi-threaded C++), which
handles open, periodic and mixed boundaries and cells thinner than the cutoff
(several images of the same atom) exactly like ASE's and matscipy's lists.  The
dense capacity ``M`` is never smaller than the largest neighbour count: nothing
is ever dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np
import vesin


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class NeighborList:
    """Dense, padded neighbour list (see module docstring for the layout)."""

    idx: jax.Array | np.ndarray
    shifts: jax.Array | np.ndarray

    @property
    def capacity(self) -> int:
        """Neighbour slots per atom (``M``)."""
        return int(self.idx.shape[1])

    def mask(self):
        """Boolean ``[N, M]`` array, True for occupied slots."""
        return self.idx < self.idx.shape[0]


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value`` (and >= ``multiple``)."""
    return max(multiple, -(-int(value) // multiple) * multiple)


def check_cell(cell: np.ndarray, pbc: np.ndarray) -> None:
    """Raise ``ValueError`` if a periodic direction has a degenerate cell vector.

    A periodic system needs a cell with non-zero volume spanned by its periodic
    vectors; a zero-length periodic vector would otherwise give infinite images.
    """
    cell = np.asarray(cell, dtype=float)
    pbc = np.asarray(pbc, dtype=bool)
    if not np.all(np.isfinite(cell)):
        raise ValueError("cell contains NaN or infinite entries")
    if pbc.any():
        lengths = np.linalg.norm(cell, axis=1)
        if np.any(lengths[pbc] < 1e-8):
            raise ValueError(
                f"cell vector(s) {np.flatnonzero(pbc & (lengths < 1e-8)).tolist()} are periodic "
                "but have zero length; give the cell or switch pbc off in that direction"
            )
        if abs(np.linalg.det(cell)) < 1e-10 and pbc.all():
            raise ValueError("periodic cell has zero volume")


def host_pairs(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs ``(i, j, S)`` with ``|r_ij| < cutoff`` (vesin, O(N)).

    Args:
        positions: ``[N, 3]`` Cartesian positions, Å.
        cell: ``[3, 3]`` cell vectors as rows, Å.
        pbc: three booleans, periodicity along each cell vector.
        cutoff: pair cutoff, Å.

    Returns:
        ``i``, ``j`` (``int32 [P]``) and ``S`` (``int32 [P, 3]``), without self pairs,
        in no particular order (12 bytes per pair: 0.5 GB for the 45 million pairs of
        a million Si atoms at 6 Å).
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    if len(positions) == 0:
        empty = np.zeros(0, dtype=np.int32)
        return empty, empty, np.zeros((0, 3), dtype=np.int32)
    if len(positions) >= 2**31 - 1:
        raise ValueError(f"{len(positions)} atoms do not fit int32 indices")
    check_cell(cell, pbc)
    if not pbc.all():
        cell = complete_open_directions(cell, pbc)
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    # copy=False: views into the calculator's buffers, copied by the conversions below
    i, j, shifts = calculator.compute(positions, cell, pbc, "ijS", copy=False)
    pairs = i.astype(np.int32), j.astype(np.int32), shifts.astype(np.int32, copy=True)
    del calculator
    return pairs


def shortest_pair(
    positions: np.ndarray, cell: np.ndarray, pairs: tuple[np.ndarray, np.ndarray, np.ndarray], chunk: int = 1 << 20
) -> tuple[int, float]:
    """Index into ``pairs`` of the shortest pair vector and its length (Å);
    ``(-1, inf)`` for no pairs.  Measured ``chunk`` pairs at a time, so the
    temporaries stay small (a million atoms have tens of millions of pairs)."""
    i, j, shifts = pairs
    closest, shortest = -1, np.inf
    for start in range(0, len(i), chunk):
        part = slice(start, start + chunk)
        vectors = np.take(positions, j[part], axis=0)
        vectors -= np.take(positions, i[part], axis=0)
        for axis in range(3):  # S @ cell, without numpy's slow [P, 3] x [3, 3] product
            vectors += shifts[part, axis, None] * cell[axis]
        squared = np.einsum("ij,ij->i", vectors, vectors)
        best = int(np.argmin(squared))
        if squared[best] < shortest:
            closest, shortest = start + best, float(squared[best])
    return closest, float(np.sqrt(shortest))


def complete_open_directions(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Make the cell non-singular by completing degenerate open-direction vectors.

    vesin needs an invertible cell even along non-periodic directions; no shift
    is ever applied along them, so any independent vector will do.
    """
    cell = np.array(cell, dtype=np.float64)
    for axis in np.flatnonzero(~pbc):
        others = np.delete(cell, axis, axis=0)
        others = others[np.linalg.norm(others, axis=1) > 1e-8]
        if np.linalg.norm(cell[axis]) > 1e-8 and not _is_dependent(cell[axis], others):
            continue
        for candidate in np.eye(3):
            if not _is_dependent(candidate, others):
                cell[axis] = candidate
                break
    return cell


def _is_dependent(vector: np.ndarray, others: np.ndarray) -> bool:
    stack = np.vstack([others, vector]) if len(others) else vector[None]
    return np.linalg.matrix_rank(stack, tol=1e-8) < len(stack)


def dense_from_pairs(
    i: np.ndarray,
    j: np.ndarray,
    shifts: np.ndarray,
    n_atoms: int,
    capacity: int | None = None,
    n_padded: int | None = None,
    multiple: int = 8,
    shift_dtype=None,
) -> NeighborList:
    """Pack a pair list into a dense :class:`NeighborList`.

    Each row keeps its pairs in the order they appear in ``i``.

    Args:
        i, j, shifts: pair list as returned by :func:`host_pairs` (any order).
        n_atoms: number of real atoms.
        capacity: neighbour slots per atom; ``None`` picks the largest count rounded
            up to ``multiple``.  A capacity below the largest count is grown (never
            truncated).
        n_padded: total number of atom rows (>= ``n_atoms``); padding rows are empty.
        multiple: rounding used when the capacity has to be chosen or grown.
        shift_dtype: dtype of the dense shifts; ``None``: ``int8`` when every
            component fits, else ``int32``.
    """
    n_rows = n_atoms if n_padded is None else int(n_padded)
    if n_rows < n_atoms:
        raise ValueError(f"n_padded={n_rows} is smaller than the number of atoms {n_atoms}")
    i = np.asarray(i)
    shifts = np.asarray(shifts).reshape(-1, 3)
    n_pairs = len(i)
    counts = np.bincount(i, minlength=n_rows) if n_pairs else np.zeros(n_rows, dtype=np.int64)
    needed = int(counts.max()) if len(counts) else 0
    if capacity is None or capacity < needed:
        capacity = round_up(needed, multiple)
    if shift_dtype is None:
        fits = n_pairs == 0 or (int(shifts.min()) >= -128 and int(shifts.max()) <= 127)
        shift_dtype = np.int8 if fits else np.int32
    shift_dtype = np.dtype(shift_dtype)
    # pairs in row order (stable: each row keeps the input order), and for each its slot
    # row * capacity + (rank within the row) in the flattened [n_rows * capacity] arrays
    order = None if n_pairs == 0 or np.all(i[1:] >= i[:-1]) else np.argsort(i, kind="stable")
    row_start = np.cumsum(counts) - counts
    flat = np.arange(n_pairs, dtype=np.int64)
    flat += np.repeat(np.arange(n_rows, dtype=np.int64) * capacity - row_start, counts)
    idx = np.full(n_rows * capacity, n_rows, dtype=np.int32)
    np.put(idx, flat, j if order is None else np.take(j, order))
    if shift_dtype == np.int8:
        # the three int8 components of a pair moved as one int32 word (a 4-byte row)
        words = np.zeros((n_pairs, 4), dtype=np.int8)
        words[:, :3] = shifts
        words = words.view(np.int32)[:, 0]
        dense_words = np.zeros(n_rows * capacity, dtype=np.int32)
        np.put(dense_words, flat, words if order is None else np.take(words, order))
        dense_shifts = np.ascontiguousarray(dense_words.view(np.int8).reshape(n_rows, capacity, 4)[:, :, :3])
    else:
        dense_shifts = np.zeros((n_rows * capacity, 3), dtype=shift_dtype)
        dense_shifts[flat] = shifts if order is None else shifts[order]
        dense_shifts = dense_shifts.reshape(n_rows, capacity, 3)
    return NeighborList(idx=idx.reshape(n_rows, capacity), shifts=dense_shifts)


def build_neighbor_list(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    cutoff: float,
    capacity: int | None = None,
    n_padded: int | None = None,
) -> NeighborList:
    """Host-side O(N) neighbour list in dense form (see :func:`dense_from_pairs`)."""
    i, j, shifts = host_pairs(positions, cell, pbc, cutoff)
    return dense_from_pairs(i, j, shifts, len(positions), capacity=capacity, n_padded=n_padded)


def pairs_from_dense(nl: NeighborList) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`dense_from_pairs`: ``(i, j, S)`` of all occupied slots."""
    idx = np.asarray(nl.idx)
    rows, cols = np.nonzero(idx < idx.shape[0])
    return rows.astype(np.int64), idx[rows, cols].astype(np.int64), np.asarray(nl.shifts)[rows, cols].astype(np.int64)


class VerletNeighborList:
    """Host neighbour list with a Verlet skin, rebuilt only when needed -- also while
    the cell changes (cell relaxations, NPT).

    Pairs ``(i, j, S)`` are collected out to ``cutoff + skin``; the list is reused for
    as long as it provably still contains every pair closer than ``cutoff``.

    Criterion.  Positions are compared in fractional coordinates ``s = r @ inv(h)`` of
    a frame ``h``: the cell, completed along open directions as in
    :func:`complete_open_directions`, or the identity when no direction is periodic
    (the cell then plays no role).  With ``h0, s0`` at the build and ``h, s`` now, a
    pair vector now is ``r = (s_j + S - s_i) @ h`` and was ``r0 = (s0_j + S - s0_i) @ h0``
    at the build, so

        r0 = r @ inv(h) @ h0 - (u_j - u_i),    u = (s - s0 - n) @ h0,

    where ``u`` is an atom's displacement with the affine cell deformation removed,
    measured in the build cell, and ``n`` the integer lattice translation (periodic
    directions only) by which the atom was wrapped since the build.  Hence
    ``|r0| <= ||inv(h) @ h0||_2 |r| + |u_i| + |u_j|``, and the list is kept while

        ||inv(h) @ h0||_2 * cutoff + u_(1) + u_(2) <= cutoff + skin

    (``u_(1)``, ``u_(2)``: the two largest ``|u|``; pairs of an atom with its own
    images have ``u_i = u_j``): every pair now closer than ``cutoff`` was closer than
    ``cutoff + skin`` at the build, so it is listed.  A fixed cell gives the familiar
    rule (never rebuilt unless an atom moved by more than ``skin / 2``); isotropic
    expansion costs nothing and compression by a factor ``1 - e`` uses up about
    ``e * cutoff`` of the skin.  Wrapped atoms do not force a rebuild: the stored
    shifts ``S`` of their pairs are translated instead, so that ``positions[j] + S @ cell
    - positions[i]`` stays the same pair vector.  A change of the boundary
    conditions or the atom count, a singular frame, ``skin == 0`` or a non-finite
    input rebuild.

    Args:
        cutoff: interaction cutoff, Å.
        skin: extra shell, Å (0 rebuilds on every call).
    """

    # relative safety margin on the criterion, far above rounding of distances
    _MARGIN = 1e-9

    def __init__(self, cutoff: float, skin: float = 0.3):
        if cutoff <= 0 or skin < 0:
            raise ValueError(f"need cutoff > 0 and skin >= 0, got {cutoff}, {skin}")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.n_builds = 0
        # fractional positions, frame and pbc at the last build
        self._reference: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @staticmethod
    def _frame(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
        if not pbc.any():
            return np.eye(3)
        return cell if pbc.all() else complete_open_directions(cell, pbc)

    @staticmethod
    def _inverse(frame: np.ndarray) -> np.ndarray | None:
        """``inv(frame)``, or None if the frame is non-finite or (nearly) flat."""
        volume = abs(np.linalg.det(frame))
        if not (np.isfinite(volume) and volume > 1e-6 * np.prod(np.linalg.norm(frame, axis=1))):
            return None
        return np.linalg.inv(frame)

    def _check(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray | None:
        """Lattice translations ``n`` (``int32 [N, 3]``) by which atoms were wrapped
        since the build if the list is still valid, None if it must be rebuilt."""
        if self._reference is None or self.skin == 0.0:
            return None
        ref_fractional, ref_frame, ref_pbc = self._reference
        if positions.shape != ref_fractional.shape or not np.array_equal(pbc, ref_pbc):
            return None
        if not (np.all(np.isfinite(cell)) and np.all(np.isfinite(positions))):
            return None
        inverse = self._inverse(self._frame(cell, pbc))
        if inverse is None:
            return None
        delta = positions @ inverse - ref_fractional
        wraps = np.where(pbc, np.rint(delta), 0.0)
        moved = np.linalg.norm((delta - wraps) @ ref_frame, axis=1)
        if len(moved) > 2:
            moved = np.partition(moved, len(moved) - 2)[-2:]
        # one atom: only pairs with its own images, whose vectors u_i - u_j vanish
        movement = float(np.sum(moved)) if len(moved) > 1 else 0.0
        deformation = inverse @ ref_frame
        stretch = np.sqrt(np.linalg.eigvalsh(deformation.T @ deformation)[-1])  # ||inv(h) @ h0||_2
        bound = stretch * self.cutoff + movement
        if not bound <= (self.cutoff + self.skin) * (1.0 - self._MARGIN):  # also catches NaN
            return None
        return wraps.astype(np.int32)

    def needs_rebuild(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> bool:
        """True unless the stored list provably contains every pair within ``cutoff``
        of ``positions`` in ``cell`` (see the class docstring)."""
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.asarray(cell, dtype=np.float64)
        pbc = np.asarray(pbc, dtype=bool)
        return self._check(positions, cell, pbc) is None

    def pairs(
        self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(i, j, S)`` of all pairs within ``cutoff + skin`` at the last build (a
        superset of the pairs within ``cutoff`` now), rebuilding if needed.  ``S``
        refers to the ``positions`` and ``cell`` given."""
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.asarray(cell, dtype=np.float64)
        pbc = np.asarray(pbc, dtype=bool)
        wraps = self._check(positions, cell, pbc)
        if wraps is None:
            self._pairs = host_pairs(positions, cell, pbc, self.cutoff + self.skin)
            frame = self._frame(cell, pbc)
            inverse = self._inverse(frame)
            # a frame host_pairs accepted but we cannot invert: NaN reference positions
            # make every later call rebuild
            fractional = np.full(positions.shape, np.nan) if inverse is None else positions @ inverse
            self._reference = (fractional, frame.copy(), pbc.copy())
            self.n_builds += 1
        elif wraps.any():
            # atom i now sits at (its build position + n_i @ cell): keep each pair's vector
            i, j, shifts = self._pairs
            self._pairs = (i, j, shifts + wraps[i] - wraps[j])
            ref_fractional, ref_frame, ref_pbc = self._reference
            self._reference = (ref_fractional + wraps, ref_frame, ref_pbc)
        return self._pairs
