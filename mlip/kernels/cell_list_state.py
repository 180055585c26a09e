"""The state of the jit-able cell list (:mod:`mlip.kernels.cell_list`): static
sizes (:class:`CellListSpec`), the pytree carried through compiled steps
(:class:`CellListState`), its error bits and the host-side messages that name
the atoms behind them."""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field

import jax
import numpy as np

from mlip.kernels.neighbor_list import NeighborList, complete_open_directions, host_pairs


class CellListError(enum.IntFlag):
    """Bits of :attr:`CellListState.error` (like JAX-MD's ``PartitionErrorCode``).

    ``OVERFLOW``: a rebuild did not fit the buffers (a bin or a neighbour row ran
    out of slots, or bins became too narrow); the list is incomplete, reallocate.
    ``TOO_CLOSE``: two real atoms (or an atom and its periodic image) came closer
    than ``r_min``.  ``NON_FINITE``: a real atom's position, or the cell, had a NaN
    or infinite entry.  The last two are physical problems that reallocating does
    not cure.
    """

    NONE = 0
    OVERFLOW = 1
    TOO_CLOSE = 2
    NON_FINITE = 4


class CellListOverflowError(RuntimeError):
    """The cell list's buffers overflowed: reallocate (:meth:`CellList.allocate`)
    and redo the steps.  Deliberately not a ``ValueError``: the atoms are fine."""


@dataclass(frozen=True)
class CellListSpec:
    """Static sizes of a cell list (hashable: part of the jit cache key).

    Attributes:
        cutoff: list radius (interaction cutoff + skin), Å.
        pbc: periodicity along the three cell vectors.
        grid: number of bins along each binning-frame vector.
        reach: how many bins away a neighbour can be along each vector.
        bin_capacity: atom slots per bin.
        neighbor_capacity: neighbour slots per atom (``M``).
        open_frame: binning-frame rows for open directions (rows of periodic
            directions are taken from the current cell), Å.
        origin: origin of the binning frame, Å.
        r_min: pairs closer than this raise ``TOO_CLOSE``, Å (0: no check).
    """

    cutoff: float
    pbc: tuple[bool, bool, bool]
    grid: tuple[int, int, int]
    reach: tuple[int, int, int]
    bin_capacity: int
    neighbor_capacity: int
    open_frame: tuple[tuple[float, float, float], ...]
    origin: tuple[float, float, float]
    r_min: float = 0.0

    @property
    def n_bins(self) -> int:
        return int(np.prod(self.grid))

    def bin_offsets(self) -> np.ndarray:
        """``[D, 3]`` integer bin offsets visited around each atom's bin."""
        ranges = [range(-k, k + 1) for k in self.reach]
        return np.array(list(itertools.product(*ranges)), dtype=np.int32).reshape(-1, 3)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class CellListState:
    """A neighbour list plus what the Verlet criterion needs (a JAX pytree).

    Attributes:
        nl: the dense neighbour list, pairs out to ``spec.cutoff``.
        reference_positions: positions at the last rebuild, Å.
        reference_cell: cell at the last rebuild, Å.
        atom_mask: ``[N]`` True for real atoms, False for padding rows.
        error: ``int32`` bitmask of :class:`CellListError`; every bit stays set once
            raised, until the host allocates a new state.
        n_rebuilds: rebuilds since allocation.
        reference_min_distance: shortest listed pair distance at the last rebuild, Å
            (``inf`` when ``spec.r_min`` is 0 or nothing is listed); bounds the
            distances between rebuilds.
        spec: static sizes (pytree metadata, not traced).
    """

    nl: NeighborList
    reference_positions: jax.Array
    reference_cell: jax.Array
    atom_mask: jax.Array
    error: jax.Array
    n_rebuilds: jax.Array
    reference_min_distance: jax.Array
    spec: CellListSpec = field(metadata=dict(static=True))

    @property
    def overflow(self) -> jax.Array:
        """True once any rebuild since allocation did not fit the buffers (the list
        is then incomplete: reallocate and redo the steps); jit-able."""
        return (self.error & int(CellListError.OVERFLOW)) != 0

    @property
    def did_overflow(self) -> bool:
        """Host-side check of the overflow flag (forces a device sync)."""
        return bool(self.overflow)

    @property
    def errors(self) -> CellListError:
        """Host-side :class:`CellListError` flags (forces a device sync)."""
        return CellListError(int(self.error))

    def check(self, positions, cell=None) -> None:
        """Raise if a flag is set (host side, after a compiled block of steps).

        Physical problems come first, as a ``ValueError`` that names the atoms,
        found on the host from ``positions`` (the flags are sticky, so these should
        be the positions the flagged steps produced): the rows whose position is NaN
        or infinite, the closest pairs nearer than ``spec.r_min`` with their
        distances.  Otherwise an overflow raises :class:`CellListOverflowError`:
        reallocate with :meth:`CellList.allocate` and redo the steps.

        Args:
            positions: ``[N, 3]`` positions, Å, rows as given to ``update``.
            cell: ``[3, 3]`` cell, Å; default: the last cell given to ``update``.
        """
        errors = self.errors
        if not errors:
            return
        problems = []
        if errors & (CellListError.NON_FINITE | CellListError.TOO_CLOSE):
            problems = _describe_problems(self, errors, positions, cell)
        if problems:
            if errors & CellListError.OVERFLOW:
                problems.append("the neighbour list also overflowed its buffers")
            raise ValueError("; ".join(problems))
        if errors & CellListError.OVERFLOW:
            raise CellListOverflowError(
                "the cell list overflowed its buffers (an atom gained neighbours, a bin filled up, or the "
                "cell shrank): some pairs are missing, so reallocate with CellList.allocate(positions, cell) "
                "and redo the steps since the last check"
            )


def _describe_problems(state: CellListState, errors: CellListError, positions, cell) -> list[str]:
    """Host-side messages for the ``NON_FINITE`` and ``TOO_CLOSE`` bits."""
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(state.reference_cell if cell is None else cell, dtype=np.float64)
    mask = np.asarray(state.atom_mask, dtype=bool)
    finite = np.all(np.isfinite(positions), axis=1)
    cell_finite = bool(np.all(np.isfinite(cell)))
    problems = []
    if errors & CellListError.NON_FINITE:
        bad = np.flatnonzero(mask & ~finite)
        if len(bad):
            more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
            problems.append(f"positions of atoms {bad[:10].tolist()}{more} are NaN or infinite")
        if not cell_finite:
            problems.append("the cell contains NaN or infinite entries")
        if len(bad) == 0 and cell_finite:
            problems.append("a NaN or infinite position or cell was seen during the compiled steps "
                            "(the positions given to check are all finite)")
    if errors & CellListError.TOO_CLOSE:
        r_min = state.spec.r_min
        pairs = _closest_pairs(positions, cell, np.array(state.spec.pbc), mask & finite, r_min) if cell_finite else []
        if pairs:
            described = ", ".join(f"atoms {i} and {j} are {d:.4f} Å apart" if i != j else
                                  f"atom {i} and its periodic image are {d:.4f} Å apart" for i, j, d in pairs[:5])
            more = f" (and {len(pairs) - 5} more pairs)" if len(pairs) > 5 else ""
            problems.append(f"{described}{more}, closer than r_min = {r_min} Å")
        else:
            problems.append(f"two atoms came closer than r_min = {r_min} Å during the compiled steps "
                            "(no pair is that close at the positions given to check)")
    return problems


def _closest_pairs(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, use: np.ndarray,
                   r_min: float) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, distance)`` (row indices, ``i <= j``) closer than ``r_min``
    among the rows in ``use``, closest first (host side)."""
    rows = np.flatnonzero(use)
    if len(rows) == 0 or r_min <= 0:
        return []
    i, j, shifts = host_pairs(positions[rows], cell, pbc, r_min)
    if not pbc.all():
        cell = complete_open_directions(cell, pbc)
    distances = np.linalg.norm(positions[rows[j]] + shifts @ cell - positions[rows[i]], axis=1)
    pairs: dict[tuple[int, int], float] = {}
    for a, b, d in zip(i, j, distances):
        if a <= b:  # each pair once; an atom's own images as (i, i)
            key = (int(rows[a]), int(rows[b]))
            pairs[key] = min(pairs.get(key, np.inf), float(d))
    return sorted(((a, b, d) for (a, b), d in pairs.items() if d < r_min), key=lambda p: p[2])
