"""Array helpers of the descriptor kernels and the model: a static column
selection without gathers, and row-wise functions over checkpointed chunks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def select_columns(x, index: np.ndarray):
    """``x[..., index]`` for a static index array, without a gather when avoidable.

    A gather's backward pass is a scatter-add, slow on CPU; a repeated single
    column is a broadcast, a contiguous run a slice, anything else a product with a
    0/1 selection matrix, whose backward pass is another product.
    """
    index = np.asarray(index)
    if len(index) and np.all(index == index[0]):
        return jnp.broadcast_to(x[..., index[0] : index[0] + 1], x.shape[:-1] + (len(index),))
    if len(index) and np.array_equal(index, np.arange(index[0], index[0] + len(index))):
        return x[..., index[0] : index[0] + len(index)]
    selection = np.zeros((x.shape[-1], len(index)))
    selection[index, np.arange(len(index))] = 1.0
    return x @ selection.astype(x.dtype)


def map_in_chunks(function, arrays: tuple, chunk_size: int, fills: tuple | None = None):
    """``function(*arrays)`` for a row-wise ``function``, over checkpointed chunks of at
    most ``chunk_size`` rows (equal chunks, fewer than one padding row per chunk).

    Padding rows hold ``fills`` (default 0, one per array) and their outputs are
    dropped.  Bounds the memory of the per-row intermediates (and of their
    gradients, recomputed per chunk) for large systems; results are identical to
    ``function`` on all rows at once.
    """
    n = arrays[0].shape[0]
    if n <= chunk_size:
        return function(*arrays)
    n_chunks = math.ceil(n / chunk_size)
    size = -(-n // n_chunks)
    padded = n_chunks * size
    fills = (0,) * len(arrays) if fills is None else fills

    def split(x, fill):
        if padded != n:
            x = jnp.pad(x, [(0, padded - n)] + [(0, 0)] * (x.ndim - 1), constant_values=fill)
        return x.reshape((n_chunks, size) + x.shape[1:])

    result = jax.lax.map(lambda xs: jax.checkpoint(function)(*xs), tuple(map(split, arrays, fills)))
    return result.reshape((padded,) + result.shape[2:])[:n]


def chunked(kernel, chunk_size: int):
    """``kernel(r_ij, mask, neighbor_species)`` over chunks of ``chunk_size`` atoms
    (:func:`map_in_chunks`)."""
    return lambda *arrays: map_in_chunks(kernel, arrays, chunk_size)
