"""Jit-compilable O(N) cell list producing the dense :class:`NeighborList`.

For compiled MD loops the neighbour list has to be rebuilt inside ``jax.jit``, where
every array shape is fixed.  This module follows JAX-MD's pattern:

* :meth:`CellList.allocate` (host, not jit-able) measures the system and fixes the
  static sizes -- the bin grid, the atoms per bin and the neighbours per atom, with
  headroom -- in a hashable :class:`CellListSpec`, and packs the first list from
  the host pairs it measured (nothing is compiled);
* :meth:`CellList.update` (pure, jit-able) rebuilds the list from new positions and
  cell when the Verlet skin has been used up, and raises the state's ``overflow``
  flag when anything no longer fits: a bin or a neighbour row ran out of slots, or
  the cell shrank so that bins became narrower than the list radius;
* the host checks ``state.overflow`` after a compiled block of steps and, if set,
  calls :meth:`CellList.allocate` again (larger buffers) and redoes the block.  No
  neighbour is ever dropped silently.

The state also carries the physical checks the calculator path makes on the host
(:func:`mlip.padding.check_positions`, :func:`mlip.padding.check_distances`), so a
compiled loop (MD, training, LAMMPS coupling) cannot turn coincident or non-finite
atoms into a silent NaN: ``state.error`` is an ``int32`` bitmask of
:class:`CellListError` (``OVERFLOW``, ``TOO_CLOSE``, ``NON_FINITE``), computed
inside ``update`` on the new positions and sticky like overflow.  After a block of
steps :meth:`CellListState.check` (host) raises a ``ValueError`` naming the atoms,
or :class:`CellListOverflowError` when only the buffers are too small.

Cost of the checks: non-finite positions are found on every ``update`` by the
displacement reduction the Verlet test makes anyway.  Pairs closer than
``r_min`` are found at each rebuild from the squared distances the build computes
anyway (one extra ``min`` per atom); between rebuilds the shortest distance can
only have shrunk by the two largest displacements and the cell's compression (see
:meth:`CellList._skin_check`), so nothing is computed unless that bound falls below
``r_min``, and then the distances of the listed pairs are checked exactly.

Binning works in fractional coordinates of a *binning frame*: the cell vectors
along periodic directions, and along open directions a vector sized to the extent
of the atoms at allocation (atoms that later leave it are clipped into the edge
bins, which stays correct and at worst overflows a bin).  Bins are at least
``cutoff / reach`` wide, so every neighbour lies within ``reach`` bins; along a
periodic direction thinner than the cutoff, the grid has a single bin and
``reach > 1`` enumerates the periodic images one by one.  Each (bin, image)
combination is visited once, so no pair is counted twice.

Distances in Å.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from mlip.kernels.neighbor_list import (
    NeighborList,
    check_cell,
    complete_open_directions,
    dense_from_pairs,
    host_pairs,
    round_up,
    shortest_pair,
)

# Relative widening of the bins: keeps the "neighbours within reach bins" guarantee
# robust to rounding of fractional coordinates (float32 included).
_BIN_MARGIN = 1e-5


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


class CellList:
    """Builder of jit-able neighbour lists with a Verlet skin.

    >>> cell_list = CellList(cutoff=6.0, skin=0.5, pbc=(True, True, True))
    >>> state = cell_list.allocate(positions, cell)          # host: fixes the sizes
    >>> state = jax.jit(cell_list.update)(state, positions, cell)   # inside MD steps
    >>> if state.did_overflow: state = cell_list.allocate(positions, cell)
    >>> state.check(positions)   # ValueError naming atoms closer than r_min or NaN

    With ``r_min`` (e.g. the model's ``config.r_min``) the state also flags pairs
    closer than ``r_min`` and non-finite positions (see :class:`CellListError`).

    Args:
        cutoff: interaction cutoff, Å.
        skin: Verlet skin, Å; pairs are listed out to ``cutoff + skin`` and the list
            is rebuilt once the two largest atom displacements (affine cell
            deformation removed) plus the cell's compression have used it up.
        pbc: periodicity along the three cell vectors.
        capacity_multiplier: headroom factor applied to the measured bin and
            neighbour counts at allocation.
        batch_size: atoms searched at once (bounds memory); ``None`` picks 256 on
            CPU (fastest there: cache-sized blocks) and 4096 on accelerators.
        bins_per_cutoff: bins are about ``(cutoff + skin) / bins_per_cutoff`` wide.
            Finer bins search a smaller volume around each atom (27 r^3 for 1,
            15.6 r^3 for 2, 12.7 r^3 for 3) at the price of more bins to visit;
            on CPU 1 was fastest (Si, 1728 atoms: 28 ms for 1, 46 ms for 2).
        r_min: shortest allowed distance between atoms, Å (at most ``cutoff``);
            closer pairs raise the ``TOO_CLOSE`` flag.  0 (default): no check.
    """

    def __init__(self, cutoff: float, skin: float = 0.3, pbc=(True, True, True),
                 capacity_multiplier: float = 1.25, batch_size: int | None = None, bins_per_cutoff: int = 1,
                 r_min: float = 0.0):
        if cutoff <= 0 or skin < 0:
            raise ValueError(f"need cutoff > 0 and skin >= 0, got {cutoff}, {skin}")
        if not 0.0 <= r_min <= cutoff:
            raise ValueError(f"need 0 <= r_min <= cutoff, got r_min = {r_min}, cutoff = {cutoff}")
        self.r_min = float(r_min)
        if capacity_multiplier < 1.0:
            raise ValueError(f"capacity_multiplier must be >= 1, got {capacity_multiplier}")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.pbc = tuple(bool(p) for p in np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)))
        self.capacity_multiplier = float(capacity_multiplier)
        if batch_size is None:
            batch_size = 256 if jax.default_backend() == "cpu" else 4096
        self.batch_size = int(batch_size)
        if int(bins_per_cutoff) < 1:
            raise ValueError(f"bins_per_cutoff must be a positive integer, got {bins_per_cutoff}")
        self.bins_per_cutoff = int(bins_per_cutoff)

    @property
    def list_cutoff(self) -> float:
        """Radius out to which pairs are listed (cutoff + skin), Å."""
        return self.cutoff + self.skin

    # ----------------------------------------------------------------- host side

    def allocate(self, positions, cell, atom_mask=None, min_capacity: tuple[int, int] = (0, 0)) -> CellListState:
        """Measure the system on the host, fix the static sizes and build the list.

        Args:
            positions: ``[N, 3]`` positions, Å (may include padding rows).
            cell: ``[3, 3]`` cell vectors as rows, Å (ignored along open directions).
            atom_mask: ``[N]`` True for real atoms; padding rows get no neighbours
                and are nobody's neighbour.  Default: all atoms are real.
            min_capacity: ``(bin, neighbour)`` capacities to allocate at least (to
                grow past a list that overflowed somewhere else along a trajectory).

        Raises:
            ValueError: a real atom's position is NaN or infinite, or two atoms are
                closer than ``r_min`` (the message names them).
        """
        dtype = jnp.asarray(positions).dtype
        positions_np = np.asarray(positions, dtype=np.float64)
        cell_np = np.asarray(cell, dtype=np.float64)
        mask_np = np.ones(len(positions_np), bool) if atom_mask is None else np.asarray(atom_mask, bool)
        bad = np.flatnonzero(mask_np & ~np.all(np.isfinite(positions_np), axis=1))
        if len(bad):
            raise ValueError(f"positions of atoms {bad[:10].tolist()} are NaN or infinite")
        pbc = np.array(self.pbc)
        check_cell(cell_np, pbc)
        real = positions_np[mask_np]

        frame, origin = self._binning_frame(real, cell_np, pbc)
        grid, reach = self._grid(frame, pbc, n_atoms=len(real))
        _, bins = _assign_bins((real - origin) @ np.linalg.inv(frame), pbc, np.array(grid, dtype=np.int32), xp=np)
        flat = _flat_index(bins, grid)
        max_per_bin = int(np.bincount(flat, minlength=1).max(initial=0))

        i, j, shifts = host_pairs(real, cell_np, pbc, self.list_cutoff)
        max_neighbors = int(np.bincount(i, minlength=1).max(initial=0))

        spec = CellListSpec(
            cutoff=self.list_cutoff,
            pbc=self.pbc,
            grid=grid,
            reach=reach,
            bin_capacity=max(self._with_headroom(max_per_bin, 4), round_up(int(min_capacity[0]), 4)),
            neighbor_capacity=max(self._with_headroom(max_neighbors, 8), round_up(int(min_capacity[1]), 8)),
            open_frame=tuple(tuple(float(x) for x in row) for row in np.where(pbc[:, None], 0.0, frame)),
            origin=tuple(float(x) for x in origin),
            r_min=self.r_min,
        )
        # the first list comes from the host pairs just measured (nothing to compile here);
        # rows of real atoms keep their indices among the padded rows
        rows = np.flatnonzero(mask_np).astype(np.int32)
        nl = dense_from_pairs(rows[i], rows[j], shifts, len(positions_np), capacity=spec.neighbor_capacity,
                              shift_dtype=np.int32)
        min_distance = shortest_pair(real, cell_np, (i, j, shifts))[1] if self.r_min > 0.0 else np.inf
        error = CellListError.TOO_CLOSE if min_distance < self.r_min else CellListError.NONE
        # numpy arrays of the final dtypes, then put on the device: no conversion to compile
        arrays = (nl.idx, nl.shifts, np.asarray(positions, dtype), np.asarray(cell, dtype), mask_np,
                  np.int32(error), np.int32(0), np.asarray(min_distance, dtype))
        idx, shifts, positions, cell, mask, error, n_rebuilds, min_distance = jax.device_put(arrays)
        state = CellListState(NeighborList(idx, shifts), positions, cell, mask, error, n_rebuilds, min_distance, spec)
        state.check(positions_np, cell_np)
        return state

    def _with_headroom(self, count: int, multiple: int) -> int:
        return round_up(math.ceil(max(count, 1) * self.capacity_multiplier), multiple)

    def _binning_frame(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray):
        """Frame rows (cell vectors; open ones sized to the atoms' extent) and origin."""
        frame = complete_open_directions(cell, pbc) if not pbc.all() else cell.copy()
        origin = np.zeros(3)
        if pbc.all() or len(positions) == 0:
            return frame, origin
        inverse = np.linalg.inv(frame)
        fractional = positions @ inverse
        for axis in np.flatnonzero(~pbc):
            per_angstrom = np.linalg.norm(inverse[:, axis])  # fractional units per Å across the planes
            low, high = fractional[:, axis].min(), fractional[:, axis].max()
            margin = per_angstrom * self.list_cutoff + 0.1 * (high - low)
            low, high = low - margin, high + margin
            origin = origin + low * frame[axis]
            frame[axis] = frame[axis] * (high - low)
        return frame, origin

    def _grid(self, frame: np.ndarray, pbc: np.ndarray, n_atoms: int):
        """Bins per direction (about ``cutoff / bins_per_cutoff`` wide, at most ~4 per
        atom in all) and the reach that finds every neighbour."""
        widths = 1.0 / np.linalg.norm(np.linalg.inv(frame), axis=0)  # distances between opposite faces
        radius = self.list_cutoff * (1.0 + _BIN_MARGIN)
        grid = np.maximum(1, np.floor(widths * self.bins_per_cutoff / radius)).astype(np.int64)
        max_bins = max(64, 4 * n_atoms)
        while grid.prod() > max_bins:
            grid[np.argmax(grid)] = max(1, grid.max() // 2)
        reach = np.ceil(radius * grid / widths).astype(np.int64)
        reach = np.where(pbc, reach, np.minimum(reach, grid - 1))
        return tuple(int(g) for g in grid), tuple(int(k) for k in reach)

    # ------------------------------------------------------------------ jit side

    def needs_rebuild(self, state: CellListState, positions, cell) -> jax.Array:
        """True unless the list provably still holds every pair within ``cutoff``
        (jit-able; see :meth:`_skin_check`)."""
        return self._skin_check(state, positions, cell)[0]

    def _skin_check(self, state: CellListState, positions, cell):
        """``(rebuild_needed, stretch, movement, max_moved)`` of the Verlet criterion.

        As for the host list (:class:`~mlip.kernels.neighbor_list.VerletNeighborList`),
        positions are compared in fractional coordinates of the binning frame ``h``
        (the cell along periodic directions, the fixed frame of the allocation along
        open ones): with ``u = (r h^-1 - r0 h0^-1) h0`` an atom's displacement with the
        affine cell deformation removed, a pair now closer than ``cutoff`` was closer
        than ``stretch * cutoff + u_(1) + u_(2)`` at the rebuild, where
        ``stretch = ||h^-1 h0||_2`` and ``u_(1), u_(2)`` are the two largest ``|u|``.
        The list is kept while that stays within ``cutoff + skin`` (less a rounding
        margin): a fixed cell never rebuilds before two atoms together moved ``skin``,
        isotropic expansion costs nothing, compression by ``1 - e`` uses about
        ``e * cutoff`` of the skin (NPT runs do not rebuild every step).  Positions
        must not be wrapped between rebuilds (a wrapped atom counts as a long move
        and forces a rebuild).  ``max_moved`` (largest ``|u|``, Å) is NaN or infinite
        when a real atom's position is.
        """
        spec = state.spec
        dtype = positions.dtype
        pbc = np.array(spec.pbc)
        open_frame = jnp.asarray(spec.open_frame, dtype)
        frame = jnp.where(pbc[:, None], cell, open_frame)
        reference_frame = jnp.where(pbc[:, None], state.reference_cell, open_frame)
        inverse = jnp.linalg.inv(frame)
        u = (positions @ inverse - state.reference_positions @ jnp.linalg.inv(reference_frame)) @ reference_frame
        moved = jnp.where(state.atom_mask, jnp.sqrt(jnp.sum(u * u, axis=-1)), 0.0)
        max_moved = jnp.max(moved, initial=0.0)
        # one atom: only pairs with its own images, whose vectors u_i - u_j vanish
        movement = jnp.sum(jax.lax.top_k(moved, 2)[0]) if moved.shape[0] > 1 else jnp.zeros((), dtype)
        stretch = jnp.linalg.norm(inverse @ reference_frame, ord=2)
        # rounding of the fractional coordinates: a few ulps of the largest coordinate
        scale = jnp.max(jnp.where(state.atom_mask[:, None], jnp.abs(positions), 0.0), initial=0.0)
        margin = 64 * jnp.finfo(dtype).eps * (scale + spec.cutoff)
        keep = stretch * self.cutoff + movement + margin <= spec.cutoff  # False for NaN too
        return ~keep | (self.skin == 0.0), stretch, movement, max_moved

    def update(self, state: CellListState, positions, cell) -> CellListState:
        """Rebuild the list if the skin is used up, and check the new positions
        (pure, jit-able).

        Bits of ``state.error`` become (and stay) set: ``OVERFLOW`` if the rebuilt
        list did not fit, ``NON_FINITE`` if a real atom's position or the cell is NaN
        or infinite, ``TOO_CLOSE`` if two atoms are closer than ``spec.r_min``.  Read
        them on the host with :meth:`CellListState.check`.
        """
        spec = state.spec
        rebuild_needed, stretch, movement, max_moved = self._skin_check(state, positions, cell)
        # a NaN or infinite position of a real atom makes its displacement NaN or infinite, so the
        # reduction the Verlet test needs anyway also finds it
        non_finite = ~jnp.isfinite(max_moved) | ~jnp.all(jnp.isfinite(cell))
        error = state.error | jnp.where(non_finite, jnp.int32(CellListError.NON_FINITE), jnp.int32(0))

        def rebuild(error):
            nl, build_error, min_distance = _build_compiled(spec, positions, cell, state.atom_mask, self.batch_size)
            return dataclasses.replace(
                state, nl=nl, reference_positions=positions, reference_cell=cell, error=error | build_error,
                n_rebuilds=state.n_rebuilds + 1, reference_min_distance=min_distance,
            )

        def keep(error):
            return dataclasses.replace(state, error=error)

        if spec.r_min == 0.0:
            return jax.lax.cond(rebuild_needed, rebuild, keep, error)

        def keep_and_check(error):
            return keep(error | _listed_too_close_error(spec, positions, cell, state.nl))

        # Between rebuilds every pair closer than r_min <= cutoff is listed, and a listed distance
        # d0 at the rebuild is now at least (d0 - u_(1) - u_(2)) / stretch: the listed pairs are
        # measured only when that bound no longer keeps them beyond r_min.  One three-way switch,
        # not nested conds: on a GPU each conditional waits for its predicate.
        bound = (state.reference_min_distance - movement) / stretch
        branch = jnp.where(rebuild_needed, 2, jnp.where(bound < spec.r_min, 1, 0))
        return jax.lax.switch(branch, (keep, keep_and_check, rebuild), error)


def _non_finite_error(positions, cell, atom_mask) -> jax.Array:
    """``NON_FINITE`` (int32) if a real atom's position or the cell is NaN/infinite."""
    bad = ~jnp.all(jnp.isfinite(positions) | ~atom_mask[:, None]) | ~jnp.all(jnp.isfinite(cell))
    return jnp.where(bad, jnp.int32(CellListError.NON_FINITE), jnp.int32(0))


def _listed_too_close_error(spec: CellListSpec, positions, cell, nl: NeighborList) -> jax.Array:
    """``TOO_CLOSE`` (int32) if a pair of ``nl`` is now closer than ``spec.r_min``."""
    n_atoms = positions.shape[0]
    listed = nl.idx < n_atoms
    j = jnp.where(listed, nl.idx, 0)
    vectors = positions[j] + nl.shifts.astype(positions.dtype) @ cell - positions[:, None, :]
    close = jnp.any(listed & (jnp.sum(vectors * vectors, axis=-1) < spec.r_min**2))
    return jnp.where(close, jnp.int32(CellListError.TOO_CLOSE), jnp.int32(0))


def _assign_bins(fractional, pbc: np.ndarray, grid: np.ndarray, xp=jnp):
    """Periodic image (``floor`` of the fractional coordinate, 0 along open
    directions) and 3-d bin of every atom; atoms outside the grid are clipped
    into the edge bins.  Shared by the host allocation (``xp=numpy``: nothing to
    compile) and the jit build."""
    image = xp.where(pbc, xp.floor(fractional), 0.0)
    bins = xp.clip(xp.floor((fractional - image) * grid).astype(xp.int32), 0, grid - 1)
    return image, bins


def _flat_index(bins, grid):
    """Row-major flat index of 3-d bin indices ``[..., 3]``."""
    return (bins[..., 0] * grid[1] + bins[..., 1]) * grid[2] + bins[..., 2]


def build_cell_list(spec: CellListSpec, positions, cell, atom_mask, batch_size: int = 256):
    """All pairs closer than ``spec.cutoff`` in the dense layout (pure, jit-able).

    Args:
        spec: static sizes from :meth:`CellList.allocate`.
        positions: ``[N, 3]`` positions, Å.
        cell: ``[3, 3]`` cell vectors as rows, Å.
        atom_mask: ``[N]`` True for real atoms.
        batch_size: atoms searched at once.

    Returns:
        ``(NeighborList, error)`` where ``error`` is an ``int32`` bitmask of
        :class:`CellListError`: ``OVERFLOW`` if a bin or a neighbour row was too
        small, or bins became narrower than allowed by ``spec.reach`` (the list is
        then incomplete and must be reallocated); ``TOO_CLOSE`` if a pair is closer
        than ``spec.r_min``; ``NON_FINITE`` if a real atom's position or the cell is
        NaN or infinite.  Zero (falsy) when all is well.
    """
    nl, error, _ = _build(spec, positions, cell, atom_mask, batch_size)
    return nl, error | _non_finite_error(positions, cell, atom_mask)


def _compact(hits, capacity: int):
    """Where the first ``capacity`` hits of ``hits`` (``[D, cap]`` bool) lie.

    Returns ``(bin, slot, filled, total)``: ``[capacity]`` indices into ``hits`` (0
    past the last hit), True for real entries, and the number of hits.  Entry ``k``
    is hit number ``k`` in row-major order.  The hits of each bin are packed into
    32-bit words; the word holding hit ``k`` comes from the words' popcounts, its bit
    from a 5-step binary search on popcounts of the word's low bits.  No scatter
    (serial on CPU) and no long scan (Si, 32768 atoms, 648 candidates per atom: the
    rebuild went from 21 to 8 µs/atom against running counts along each bin).
    """
    n_bins, width = hits.shape
    words_per_bin = -(-width // 32)
    if words_per_bin > 1:
        hits = jnp.pad(hits, ((0, 0), (0, 32 * words_per_bin - width)))
        width = 32
    hits = hits.reshape(n_bins * words_per_bin, width)
    bits = jnp.left_shift(jnp.uint32(1), jnp.arange(width, dtype=jnp.uint32))
    words = jnp.sum(jnp.where(hits, bits, jnp.uint32(0)), axis=1, dtype=jnp.uint32)  # distinct bits: sum = or
    counts = jax.lax.population_count(words).astype(jnp.int32)
    starts = jnp.cumsum(counts) - counts  # hits before each word
    total = starts[-1] + counts[-1]
    k = jnp.arange(capacity, dtype=jnp.int32)
    word_of = jnp.sum(starts[None, :] <= k[:, None], axis=1, dtype=jnp.int32) - 1
    rank = (k - starts[word_of]).astype(jnp.uint32)  # hit number within its word
    word = words[word_of]
    position = jnp.zeros(capacity, jnp.uint32)  # largest p with fewer than rank + 1 hits below bit p
    for step in (16, 8, 4, 2, 1):
        trial = position + jnp.uint32(step)
        below = jax.lax.population_count(word & ((jnp.uint32(1) << trial) - jnp.uint32(1)))
        position = jnp.where(below <= rank, trial, position)
    filled = k < total
    bin_of = word_of // words_per_bin
    slot = (word_of % words_per_bin) * 32 + position.astype(jnp.int32)
    return jnp.where(filled, bin_of, 0), jnp.where(filled, slot, 0), filled, total


def _build(spec: CellListSpec, positions, cell, atom_mask, batch_size: int):
    """:func:`build_cell_list` without the non-finite test, plus the shortest listed
    pair distance (Å; ``inf`` when ``spec.r_min`` is 0 or nothing is listed)."""
    n_atoms = positions.shape[0]
    dtype = positions.dtype
    pbc = np.array(spec.pbc)
    grid = np.array(spec.grid, dtype=np.int32)
    n_bins = spec.n_bins
    offsets = jnp.asarray(spec.bin_offsets())

    frame = jnp.where(pbc[:, None], cell, jnp.asarray(spec.open_frame, dtype))
    inverse = jnp.linalg.inv(frame)
    # Bins must stay at least cutoff / reach wide (the cell may have shrunk since
    # allocation); an open direction whose reach spans the whole grid has no limit.
    reach = np.array(spec.reach)
    limited = pbc | (reach < grid - 1)
    bins_needed = spec.cutoff * (1.0 + 0.5 * _BIN_MARGIN) * grid * jnp.linalg.norm(inverse, axis=0)
    bins_too_narrow = jnp.any(limited & (bins_needed > reach))
    fractional = (positions - jnp.asarray(spec.origin, dtype)) @ inverse
    image, bins = _assign_bins(fractional, pbc, grid)
    wrapped = positions - image @ cell  # Cartesian positions wrapped into the cell
    # padding atoms go to an extra bin that is never visited
    flat = jnp.where(atom_mask, _flat_index(bins, grid), n_bins)

    # bin table [n_bins + 1, bin_capacity] of atom indices, n_atoms marks empty slots
    order = jnp.argsort(flat)
    sorted_flat = flat[order]
    counts = jnp.zeros(n_bins + 1, jnp.int32).at[flat].add(1)
    starts = jnp.cumsum(counts) - counts
    slot = jnp.arange(n_atoms, dtype=jnp.int32) - starts[sorted_flat]
    table = jnp.full((n_bins + 1, spec.bin_capacity), n_atoms, jnp.int32)
    table = table.at[sorted_flat, slot].set(order.astype(jnp.int32), mode="drop")
    table = table.at[n_bins].set(n_atoms)
    bin_overflow = jnp.max(counts[:n_bins]) > spec.bin_capacity

    # per-bin blocks of wrapped positions and image offsets: one contiguous gather per visited bin
    position_table = jnp.concatenate([wrapped, jnp.zeros((1, 3), dtype)])[table]  # [bins + 1, cap, 3]
    coordinate_tables = tuple(position_table[..., axis] for axis in range(3))  # x, y, z: [bins + 1, cap] each
    image_int = image.astype(jnp.int32)
    image_table = jnp.concatenate([image_int, jnp.zeros((1, 3), jnp.int32)])[table]
    capacity = spec.neighbor_capacity
    cutoff_squared = spec.cutoff**2
    open_axes = np.flatnonzero(~pbc)
    check_distances = spec.r_min > 0.0

    def neighbors_of(args):
        i, bin_i, real_i, position_i, image_i = args
        target = bin_i[None, :] + offsets  # [D, 3]
        wraps = jnp.floor_divide(target, grid)  # lattice translation when a periodic edge is crossed
        inside = jnp.all((target[:, open_axes] >= 0) & (target[:, open_axes] < grid[open_axes]), axis=-1)
        target = jnp.where(pbc, target - wraps * grid, target)
        wraps = jnp.where(pbc, wraps, 0)
        target_flat = jnp.where(inside & real_i, _flat_index(target, grid), n_bins)  # row n_bins is empty
        j = table[target_flat]  # [D, cap]
        offset = wraps.astype(dtype) @ cell - position_i  # [D, 3]
        squared = 0.0
        for axis in range(3):  # coordinate by coordinate: [D, cap] arrays that vectorise
            component = coordinate_tables[axis][target_flat] + offset[:, axis, None]
            squared = squared + component * component
        is_self = (j == i) & jnp.all(wraps == 0, axis=-1)[:, None]
        within = (j < n_atoms) & (squared < cutoff_squared) & ~is_self  # [D, cap]
        bin_of, slot, filled, total = _compact(within, capacity)
        idx = jnp.where(filled, j[bin_of, slot], n_atoms)
        shift = wraps[bin_of] + image_i - image_table[target_flat[bin_of], slot]
        shift = jnp.where(filled[:, None], shift, 0)
        found = idx, shift, total
        if check_distances:  # squared distance to the nearest listed neighbour, from the distances above
            found += (jnp.min(jnp.where(within, squared, jnp.inf)),)
        return found

    atom_ids = jnp.arange(n_atoms, dtype=jnp.int32)
    idx, shifts, n_neighbors, *nearest = jax.lax.map(
        neighbors_of, (atom_ids, bins, atom_mask, wrapped, image_int), batch_size=min(batch_size, max(n_atoms, 1))
    )
    neighbor_overflow = jnp.max(n_neighbors, initial=0) > capacity
    overflow = bin_overflow | neighbor_overflow | bins_too_narrow
    if check_distances:
        min_distance = jnp.sqrt(jnp.min(nearest[0], initial=jnp.inf))
        too_close = min_distance < spec.r_min
    else:
        min_distance, too_close = jnp.asarray(jnp.inf, dtype), False
    error = (jnp.where(overflow, jnp.int32(CellListError.OVERFLOW), jnp.int32(0))
             | jnp.where(too_close, jnp.int32(CellListError.TOO_CLOSE), jnp.int32(0)))
    return NeighborList(idx=idx, shifts=shifts), error, min_distance


_build_compiled = jax.jit(_build, static_argnums=(0, 4))
