"""Precomputed descriptors and their derivatives for fixed training geometries.

Training geometries never move, so, as n2p2 does, the symmetry functions ``G_i`` of
every atom and their derivatives ``dG_i/dr_ij`` with respect to each neighbour vector
are computed once (by the model's own descriptor kernel and reverse-mode autodiff)
and reused in every epoch.  A training step then only evaluates the networks:

* energy ``E = sum_i NN(G_i)``,
* ``dE/dr_ij = (dE/dG_i) . dG_i/dr_ij``,
* forces ``F_k = sum_j dE/dr_kj - sum_{(i, j=k)} dE/dr_ij`` (eV/Å),
* virial ``W = sum_ij r_ij (x) dE/dr_ij`` (eV), stress ``W / V``,

which equals ``jax.grad`` of :func:`mlip.model.make_model_functions`'s energy to
rounding (tested), at a fraction of the cost.

Structures are grouped into buckets of equal padded shape (atoms ``n``, neighbour
slots ``M``); a batch takes structures from one bucket, as many as fit an atom
budget, so an epoch compiles once per bucket.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from mlip.batch import bucket_structures
from mlip.kernels.neighbor_list import round_up
from mlip.model import Model, make_model_functions, neighbor_species, pair_vectors
from mlip.precision import with_float64
from mlip.training.data import Sample


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class StructureArrays:
    """Padded arrays of structures of one shape; leading axis = structure.

    Units: descriptors as the kernel gives them, jacobian per Å, ``r_ij`` Å,
    energy eV, forces eV/Å, stress eV/Å^3 (Voigt, ASE sign), volume Å^3.
    """

    descriptors: jax.Array  # [S, n, F] raw union descriptors
    jacobian: jax.Array  # [S, n, M, 3, F] dG_i/dr_ij
    r_ij: jax.Array  # [S, n, M, 3]
    idx: jax.Array  # [S, n, M] neighbour row, n for empty slots
    species: jax.Array  # [S, n] element index, -1 on padding rows
    n_atoms: jax.Array  # [S]
    volume: jax.Array  # [S], 0 for non-periodic cells
    energy: jax.Array  # [S]
    forces: jax.Array  # [S, n, 3]
    stress: jax.Array  # [S, 6]
    has_stress: jax.Array  # [S] bool
    group: jax.Array  # [S] config_type index
    sample: jax.Array  # [S] index of the sample in the data set
    element_rows: tuple[jax.Array, ...] | None = None  # per element [S, L_e], see mlip.batch.element_rows

    def cast(self, dtype) -> "StructureArrays":
        """Floating-point arrays in ``dtype`` (integers and flags untouched)."""
        return jax.tree_util.tree_map(
            lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(x.dtype, jnp.floating) else jnp.asarray(x), self
        )

    def take(self, index) -> "StructureArrays":
        """Structures ``index`` (any integer array; works under jit)."""
        return jax.tree_util.tree_map(lambda x: x[index], self)


@dataclass
class FeatureDataset:
    """A featurised data set: one :class:`StructureArrays` per shape bucket.

    Attributes:
        buckets: arrays per bucket (host numpy, float64 until :meth:`to_device`).
        samples: the samples, in data-set order (``StructureArrays.sample`` indexes it).
        groups: config_type names (``StructureArrays.group`` indexes it).
    """

    buckets: list[StructureArrays]
    samples: list[Sample]
    groups: tuple[str, ...]

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """``(n_atoms_padded, neighbour_capacity)`` of every bucket."""
        return [tuple(b.idx.shape[1:3]) for b in self.buckets]

    def to_device(self, dtype) -> "FeatureDataset":
        return FeatureDataset([b.cast(dtype) for b in self.buckets], self.samples, self.groups)

    def nbytes(self) -> int:
        return sum(x.nbytes for b in self.buckets for x in jax.tree_util.tree_leaves(b))

    def batch_sizes(self, batch_atoms: int) -> list[int]:
        """Structures per batch in each bucket: as many padded structures as fit
        ``batch_atoms`` atoms (at least one), never more than the bucket holds."""
        return [max(1, min(batch_atoms // n, len(b.sample))) for b, (n, _) in zip(self.buckets, self.shapes)]

    def batches(self, batch_atoms: int, seed: int | None = None, epoch: int = 0,
                multiple: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(bucket, positions)`` batches covering every structure once.

        ``positions`` index the bucket's structures; the last batch of a bucket is
        padded with ``-1`` (masked out) so every batch of a bucket has one shape.
        With ``seed``, structures are shuffled within buckets and batches across
        buckets by a generator seeded with ``(seed, epoch)``: the order depends only
        on the epoch, so a resumed run sees the same batches.  ``multiple`` rounds
        batch sizes up (to split batches evenly across devices).
        """
        rng = None if seed is None else np.random.default_rng([seed, epoch])
        batches = []
        for bucket, (arrays, size) in enumerate(zip(self.buckets, self.batch_sizes(batch_atoms))):
            size = round_up(size, multiple) if multiple > 1 else size
            count = len(arrays.sample)
            order = np.arange(count) if rng is None else rng.permutation(count)
            for start in range(0, count, size):
                chunk = order[start : start + size]
                batches.append((bucket, np.concatenate([chunk, np.full(size - len(chunk), -1)]).astype(np.int32)))
        if rng is not None:
            batches = [batches[n] for n in rng.permutation(len(batches))]
        yield from batches


def _descriptor_jacobian_function(model: Model):
    """Jitted ``(positions, cell, species, nl) -> (G [n, F], dG/dr_ij [n, M, 3, F], r_ij)``."""
    functions = make_model_functions(model.config)
    n_union = model.config.symmetry_functions.n_union

    def compute(positions, cell, species, nl):
        r_ij, mask = pair_vectors(positions, cell, nl)
        species_j = neighbor_species(species, nl)

        def descriptors_of(r):
            # descriptors of atom i depend on row i of r only, so one cotangent per
            # feature column recovers every atom's Jacobian at once
            return functions.descriptors_from_pairs(r, mask, species_j)

        values, vjp = jax.vjp(descriptors_of, r_ij)
        basis = jnp.eye(n_union, dtype=values.dtype)
        rows = jax.vmap(lambda c: vjp(jnp.broadcast_to(c, values.shape))[0])(basis)  # [F, n, M, 3]
        return values, jnp.moveaxis(rows, 0, -1), r_ij

    return jax.jit(compute)


@with_float64
def featurize(model: Model, samples: Sequence[Sample], groups: Sequence[str] | None = None,
              progress: bool = False) -> FeatureDataset:
    """Descriptors, their derivatives, neighbour lists and labels of ``samples``,
    bucketed by padded shape (float64, host memory).

    ``groups`` fixes the config_type order (default: sorted names present).
    Samples must have been checked by :func:`mlip.training.data.validate_samples`.
    """
    groups = tuple(groups) if groups is not None else tuple(sorted({s.config_type for s in samples}))
    group_index = {g: n for n, g in enumerate(groups)}
    compute = _descriptor_jacobian_function(model)
    iterator = bucket_structures(model, [s.atoms for s in samples])
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="descriptors", unit="bucket")
    buckets = []
    for bucket in iterator:
        n_padded = bucket.n_padded
        columns: dict[str, list] = {name: [] for name in StructureArrays.__dataclass_fields__
                                    if name != "element_rows"}
        for n, padded in zip(bucket.members, bucket.structures):
            sample = samples[n]
            values, jacobian, r_ij = compute(*padded.as_jax(jnp.float64))
            forces = np.zeros((n_padded, 3))
            forces[: sample.n_atoms] = sample.forces
            periodic = bool(sample.atoms.pbc.all())
            columns["descriptors"].append(np.asarray(values))
            columns["jacobian"].append(np.asarray(jacobian))
            columns["r_ij"].append(np.asarray(r_ij))
            columns["idx"].append(padded.nl.idx)
            columns["species"].append(padded.species)
            columns["n_atoms"].append(sample.n_atoms)
            columns["volume"].append(abs(sample.atoms.get_volume()) if periodic else 0.0)
            columns["energy"].append(sample.energy)
            columns["forces"].append(forces)
            columns["stress"].append(sample.stress if sample.stress is not None else np.zeros(6))
            columns["has_stress"].append(sample.stress is not None and periodic)
            columns["group"].append(group_index[sample.config_type])
            columns["sample"].append(n)
        stacked = {name: np.stack(values) for name, values in columns.items()}
        buckets.append(StructureArrays(**stacked, element_rows=bucket.stacked_element_rows()))
    return FeatureDataset(buckets, list(samples), groups)
