"""The jit-able rebuild of the cell list (:mod:`mlip.kernels.cell_list`): binning,
the per-bin atom table, the neighbour search and the compaction of each atom's
hits into its dense neighbour row, plus the error bits a rebuild can raise."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mlip.kernels.cell_list_state import CellListError, CellListSpec
from mlip.kernels.neighbor_list import NeighborList

#: Relative widening of the bins: keeps the "neighbours within reach bins" guarantee
#: robust to rounding of fractional coordinates (float32 included).
BIN_MARGIN = 1e-5


def _non_finite_error(positions, cell, atom_mask) -> jax.Array:
    """``NON_FINITE`` (int32) if a real atom's position or the cell is NaN/infinite."""
    bad = ~jnp.all(jnp.isfinite(positions) | ~atom_mask[:, None]) | ~jnp.all(jnp.isfinite(cell))
    return jnp.where(bad, jnp.int32(CellListError.NON_FINITE), jnp.int32(0))


def listed_too_close_error(spec: CellListSpec, positions, cell, nl: NeighborList) -> jax.Array:
    """``TOO_CLOSE`` (int32) if a pair of ``nl`` is now closer than ``spec.r_min``."""
    n_atoms = positions.shape[0]
    listed = nl.idx < n_atoms
    j = jnp.where(listed, nl.idx, 0)
    vectors = positions[j] + nl.shifts.astype(positions.dtype) @ cell - positions[:, None, :]
    close = jnp.any(listed & (jnp.sum(vectors * vectors, axis=-1) < spec.r_min**2))
    return jnp.where(close, jnp.int32(CellListError.TOO_CLOSE), jnp.int32(0))


def assign_bins(fractional, pbc: np.ndarray, grid: np.ndarray, xp=jnp):
    """Periodic image (``floor`` of the fractional coordinate, 0 along open
    directions) and 3-d bin of every atom; atoms outside the grid are clipped
    into the edge bins.  Shared by the host allocation (``xp=numpy``: nothing to
    compile) and the jit build."""
    image = xp.where(pbc, xp.floor(fractional), 0.0)
    bins = xp.clip(xp.floor((fractional - image) * grid).astype(xp.int32), 0, grid - 1)
    return image, bins


def flat_index(bins, grid):
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
    bins_needed = spec.cutoff * (1.0 + 0.5 * BIN_MARGIN) * grid * jnp.linalg.norm(inverse, axis=0)
    bins_too_narrow = jnp.any(limited & (bins_needed > reach))
    fractional = (positions - jnp.asarray(spec.origin, dtype)) @ inverse
    image, bins = assign_bins(fractional, pbc, grid)
    wrapped = positions - image @ cell  # Cartesian positions wrapped into the cell
    # padding atoms go to an extra bin that is never visited
    flat = jnp.where(atom_mask, flat_index(bins, grid), n_bins)

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
        target_flat = jnp.where(inside & real_i, flat_index(target, grid), n_bins)  # row n_bins is empty
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


#: :func:`_build` compiled once per spec and batch size (the rebuild inside
#: :meth:`~mlip.kernels.cell_list.CellList.update`).
build_with_min_distance = jax.jit(_build, static_argnums=(0, 4))
