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
(:func:`mlip.batch.check_positions`, :func:`mlip.batch.check_distances`), so a
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
import math

import jax
import jax.numpy as jnp
import numpy as np

from mlip.kernels.cell_list_build import (
    BIN_MARGIN,
    assign_bins,
    build_cell_list,
    build_with_min_distance,
    flat_index,
    listed_too_close_error,
)
from mlip.kernels.cell_list_state import CellListError, CellListOverflowError, CellListSpec, CellListState
from mlip.kernels.neighbor_list import (
    NeighborList,
    check_cell,
    complete_open_directions,
    dense_from_pairs,
    host_pairs,
    round_up,
    shortest_pair,
)


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
        _, bins = assign_bins((real - origin) @ np.linalg.inv(frame), pbc, np.array(grid, dtype=np.int32), xp=np)
        flat = flat_index(bins, grid)
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
        radius = self.list_cutoff * (1.0 + BIN_MARGIN)
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
            nl, build_error, min_distance = build_with_min_distance(spec, positions, cell, state.atom_mask,
                                                                    self.batch_size)
            return dataclasses.replace(
                state, nl=nl, reference_positions=positions, reference_cell=cell, error=error | build_error,
                n_rebuilds=state.n_rebuilds + 1, reference_min_distance=min_distance,
            )

        def keep(error):
            return dataclasses.replace(state, error=error)

        if spec.r_min == 0.0:
            return jax.lax.cond(rebuild_needed, rebuild, keep, error)

        def keep_and_check(error):
            return keep(error | listed_too_close_error(spec, positions, cell, state.nl))

        # Between rebuilds every pair closer than r_min <= cutoff is listed, and a listed distance
        # d0 at the rebuild is now at least (d0 - u_(1) - u_(2)) / stretch: the listed pairs are
        # measured only when that bound no longer keeps them beyond r_min.  One three-way switch,
        # not nested conds: on a GPU each conditional waits for its predicate.
        bound = (state.reference_min_distance - movement) / stretch
        branch = jnp.where(rebuild_needed, 2, jnp.where(bound < spec.r_min, 1, 0))
        return jax.lax.switch(branch, (keep, keep_and_check, rebuild), error)


__all__ = ["CellList", "CellListError", "CellListOverflowError", "CellListSpec", "CellListState", "build_cell_list"]
