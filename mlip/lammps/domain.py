"""Energies, forces and virial of one MPI rank's own atoms from its own and ghost atoms.

In a domain decomposition (LAMMPS) each rank owns the ``n_local`` atoms inside its
sub-domain and holds copies ("ghosts") of every atom image within the ghost cutoff
``r_g`` of it, as Cartesian positions with open boundaries: one atom may appear as
several ghosts (several periodic images).  With the model cutoff ``r_c``:

* the energy a rank reports is the sum of its **local** atoms' energies, so that
  summed over ranks every atom is counted once;
* the force on a local atom ``k`` is ``-sum_i dE_i/dx_k`` over every atom image
  ``i`` within ``r_c`` of ``k``.  Images of the rank's own atoms contribute through
  the gradient of the local energies with respect to the ghost rows that are
  images of ``k`` (by translation symmetry, ``dE_(b+T)/dx_k = dE_b/dx_(k-T)``), which
  is added to ``k`` on the rank itself.  Images of atoms owned by other ranks are
  evaluated here as extra "centres": the ghosts within ``r_c`` of a local atom whose
  owner is elsewhere, with their own neighbours out to ``2 r_c`` beyond the local
  atoms.  Only their gradient with respect to local rows is kept (their gradient on
  images of local atoms would count a centre twice).  So with ``r_g >= 2 r_c`` (plus
  LAMMPS's neighbour skin for the atoms' motion between re-neighbourings) every
  force on a local atom is exact and no forces on ghosts are sent back to their
  owners (no reverse communication).  On one rank every ghost is an image of a
  local atom and only the local atoms are centres, as in mlip's calculator;
* the virial ``dE/d(strain)`` (eV) is the sum over local atoms of the per-atom
  virials ``W_i = sum_j r_ij (x) dE_i/dr_ij``, the derivative of ``E_i`` with respect
  to a strain of ``i``'s own pair vectors; summed over ranks it is the whole
  system's virial, equal to mlip's calculator ``stress * volume`` (tested).

Speed: the centres, the neighbour pairs and the padded arrays come from mlip's own
path (an O(N) list with a Verlet skin, :func:`mlip.batch.prepare_structure`
with bucketed atom counts and neighbour capacities) and are rebuilt only when the
skin is used up or the caller says the rows changed (LAMMPS re-neighboured); a step
otherwise only gathers the positions into the padded buffer and calls the compiled
function, which sees few distinct shapes.

Units: Å, eV, eV/Å.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from mlip.batch import atom_bucket, check_distances, element_rows, prepare_structure
from mlip.extrapolation import resolve_policy
from mlip.kernels.neighbor_list import VerletNeighborList
from mlip.model import Model, ModelConfig, cast_params, feature_bounds, make_model_functions
from mlip.precision import DTYPES, with_float64

_OPEN = np.zeros(3, dtype=bool)
_NO_CELL = np.zeros((3, 3))  # the rank's rows are in an open box: pair vectors need no cell


class DomainResult(NamedTuple):
    """What one rank contributes (host numpy arrays, float64).

    Attributes:
        energy: sum of the local atoms' energies, eV.
        energies: ``[n_local]`` per-atom energies of the local atoms, eV.
        forces: ``[n_local, 3]`` forces on the local atoms, eV/Å (complete: they
            include the contributions of the ghost atoms' energies).
        virial: ``[3, 3]`` sum of the local atoms' virials ``dE/d(strain)``, eV
            (mlip's convention: ASE stress = virial / volume).
        virials: ``[n_local, 3, 3]`` per-atom virials of the local atoms, eV.
        extrapolation_count, extrapolation_excursion: ``[n_local]`` symmetry
            functions outside the training range and the largest excursion (units
            of the range) of the local atoms (:class:`mlip.model.Extrapolation`);
            None unless the evaluator computes them.
    """

    energy: float
    energies: np.ndarray
    forces: np.ndarray
    virial: np.ndarray
    virials: np.ndarray
    extrapolation_count: np.ndarray | None = None
    extrapolation_excursion: np.ndarray | None = None


def make_domain_function(config: ModelConfig, chunk_size: int = 1024):
    """Pure, jit-able ``(params, positions, species, centre_species, idx, owner,
    n_local, element_rows, bounds) -> (energy, energies, forces, virial, virials,
    extrapolation)`` for one rank.

    Rows of the padded arrays: the first ``C = idx.shape[0]`` rows are the centres
    (local atoms first, rows ``< n_local``; then ghosts owned by other ranks), the
    rest are ghosts that only serve as neighbours, and padding.

    Args of the returned function:
        params: model parameters.
        positions: ``[N, 3]`` Cartesian positions (open boundaries), Å.
        species: ``[N]`` element index of every row, ``-1`` on padding rows.
        centre_species: ``[C]`` element index of the centre rows, ``-1`` on rows
            that are not centres.
        idx: ``[C, M]`` neighbour rows of every centre, ``N`` in empty slots.
        owner: ``[N]`` the local row whose force collects each row's gradient: the
            row itself for local rows, the local atom a ghost is an image of, ``N``
            (dropped) for the rest.
        n_local: number of local atoms (traced).
        element_rows: per element, the centre rows of that element
            (:func:`mlip.batch.element_rows` of ``centre_species``), or None.
        bounds: the training range (:func:`mlip.model.feature_bounds`), or None.

    Returns ``energy`` (eV, sum over local rows), ``energies`` (``[C]`` eV),
    ``forces`` (``[N, 3]`` eV/Å, complete on the local rows), ``virial``
    (``[3, 3]`` eV, sum of the local rows' virials) and ``virials`` (``[C, 3, 3]``
    eV, per centre), and with ``bounds`` the centres' :class:`~mlip.model.Extrapolation`
    (None without).
    """
    functions = make_model_functions(config, chunk_size)

    def evaluate(params, positions, species, centre_species, idx, owner, n_local, element_rows=None, bounds=None):
        n_rows, n_centres = positions.shape[0], idx.shape[0]
        mask = idx < n_rows
        j = jnp.where(mask, idx, 0)
        species_j = jnp.where(mask, species[j], -1)
        local_row = jnp.arange(n_rows) < n_local
        local_centre = local_row[:n_centres]

        def total(positions, strains):
            # centres owned elsewhere see ghost positions as constants: only their
            # gradient on local rows counts (images of local atoms are folded below)
            frozen = jnp.where(local_row[:, None], positions, jax.lax.stop_gradient(positions))
            r_ij = jnp.where(local_centre[:, None, None], positions[j] - positions[:n_centres, None, :],
                             frozen[j] - frozen[:n_centres, None, :])
            # a strain per centre deforms only that centre's pair vectors, so its
            # gradient is the centre's own virial
            deformed = r_ij + jnp.einsum("cmx,cxy->cmy", r_ij, strains)
            features = functions.descriptors_from_pairs(deformed, mask, species_j)
            energies = functions.energies_from_features(params, features, centre_species, element_rows)
            return jnp.sum(energies), (energies, None if bounds is None else features)

        strains = jnp.zeros((n_centres, 3, 3), dtype=positions.dtype)
        (_, (energies, features)), (d_positions, d_strains) = jax.value_and_grad(
            total, argnums=(0, 1), has_aux=True)(positions, strains)
        flags = None if bounds is None else functions.extrapolation(features, centre_species, bounds)
        forces = -jnp.zeros_like(d_positions).at[owner].add(d_positions, mode="drop")
        virials = 0.5 * (d_strains + jnp.swapaxes(d_strains, 1, 2))
        energy = jnp.sum(jnp.where(local_centre, energies, 0.0))
        virial = jnp.sum(jnp.where(local_centre[:, None, None], virials, 0.0), axis=0)
        return energy, energies, forces, virial, virials, flags

    return evaluate


@functools.lru_cache(maxsize=8)
def compiled_domain_function(config: ModelConfig, chunk_size: int = 1024):
    """``jax.jit`` of :func:`make_domain_function`, one per configuration, shared by
    every :class:`DomainEvaluator` of it (e.g. one per ``fix`` of an input), so
    each padded shape is compiled once per process."""
    return jax.jit(make_domain_function(config, chunk_size))


@functools.lru_cache(maxsize=8)
def compiled_member_function(config: ModelConfig, chunk_size: int = 1024):
    """``jax.jit`` of every ensemble member's domain function: :func:`make_domain_function`
    of one member mapped over the member axis of the parameters (the descriptors do
    not depend on them and are computed once; the pullbacks are batched)."""
    member = make_domain_function(config.member, chunk_size)
    return jax.jit(jax.vmap(member, in_axes=(0,) + (None,) * 8))


class MemberDomainResult(NamedTuple):
    """Every ensemble member's contribution of one rank (host numpy, float64).

    Attributes:
        energy: ``[K]`` sums of the local atoms' energies, eV.
        forces: ``[K, n_local, 3]`` forces on the local atoms, eV/Å.
        virial: ``[K, 3, 3]`` sums of the local atoms' virials, eV.
    """

    energy: np.ndarray
    forces: np.ndarray
    virial: np.ndarray


@dataclass
class _Layout:
    """Row order, padded arrays and checks fixed between two neighbour-list builds."""

    n_rows: int
    n_local: int
    species: np.ndarray  # [n_rows] as given (for change detection)
    order: np.ndarray  # padded row r holds input row order[r] (first len(order) rows)
    n_centres: int
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray]  # (i, j, S = 0) centre pairs in padded rows
    reference: np.ndarray  # input positions at the build, Å
    min_distance: float  # shortest listed pair at the build, Å
    buffer: np.ndarray  # [N, 3] padded positions (rows past len(order) stay zero)
    arrays: tuple  # device arrays: species, centre_species, idx, owner, element_rows


class DomainEvaluator:
    """Per-rank energies and exact local forces from local + ghost atoms.

    Args:
        model: the mlip model.
        dtype: ``"float64"`` (default) or ``"float32"``.
        skin: Verlet skin of the rank's neighbour list, Å: pairs (and the ghost
            centres) are collected out to ``cutoff + skin`` and reused until the two
            largest displacements have used the skin up.
        chunk_size: atoms processed per chunk inside the kernel (memory bound).
        extrapolation: also compute the local atoms' extrapolation flags (the
            model must store its training range).
    """

    @with_float64
    def __init__(self, model: Model, dtype: str = "float64", skin: float = 0.3, chunk_size: int = 1024,
                 extrapolation: bool = False):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if skin < 0:
            raise ValueError(f"skin must be >= 0 Å, got {skin}")
        self.model = model
        self.dtype = DTYPES[dtype]
        self.skin = float(skin)
        self._params = cast_params(model.params, self.dtype)
        self._function = compiled_domain_function(model.config, int(chunk_size))
        self._chunk_size = int(chunk_size)
        self._empty = False  # the last evaluate() had no local atoms
        if extrapolation:
            resolve_policy(model, "warn", "extrapolation")  # the model must store its range
        self._bounds = feature_bounds(model.config, model.feature_range, self.dtype) if extrapolation else None
        self._numbers = np.array([atomic_numbers[e] for e in model.elements])
        self._neighbors: VerletNeighborList | None = None
        self._seen_builds = 0
        self._origin = np.zeros(3)
        self._box = np.eye(3)
        self._layout: _Layout | None = None
        self._capacity: int | None = None
        self.n_builds = 0  # neighbour-list (and layout) builds

    @property
    def extrapolation(self) -> bool:
        """Whether results carry the local atoms' extrapolation flags."""
        return self._bounds is not None

    @property
    def cutoff(self) -> float:
        """Model cutoff, Å."""
        return self.model.cutoff

    @property
    def n_compilations(self) -> int:
        """How many input shapes the compiled function (shared by the evaluators of
        one model configuration) has been compiled for."""
        return self._function._cache_size()

    @with_float64
    def evaluate(self, positions: np.ndarray, species: np.ndarray, n_local: int, rebuild: bool = False,
                 ids: np.ndarray | None = None) -> DomainResult:
        """Energy, forces and virial of the first ``n_local`` rows.

        Args:
            positions: ``[n, 3]`` Cartesian positions, Å: the local atoms (first
                ``n_local`` rows), then the ghosts, open boundaries.  Every atom
                (image) within ``2 * cutoff`` of a local atom must be present.
            species: ``[n]`` model element index of every row.
            n_local: number of local atoms.
            rebuild: the rows no longer hold the atoms they held at the last call
                (re-neighbouring, atoms exchanged or re-ordered): rebuild the list.
                Without it a list is still only reused while it provably holds.
            ids: ``[n]`` atom IDs (a ghost carries its atom's ID): ghosts that are
                images of local atoms then pass their forces to them instead of
                being evaluated as centres, and errors name atoms by ID.  Without
                IDs (or with repeated local IDs) every ghost near a local atom is a
                centre, which gives the same forces at more cost.

        Raises:
            ValueError: NaN or infinite positions, atoms closer than the model's
                ``r_min``, an element index outside the model.
        """
        positions = np.asarray(positions, dtype=np.float64)
        species = np.asarray(species)
        n_rows, n_local = len(positions), int(n_local)
        if positions.shape != (n_rows, 3) or species.shape != (n_rows,) or not 0 <= n_local <= n_rows:
            raise ValueError(f"need positions [n, 3], species [n] and 0 <= n_local <= n, got {positions.shape}, "
                             f"{species.shape}, {n_local}")
        names = np.arange(n_rows) if ids is None else np.asarray(ids)
        finite = np.all(np.isfinite(positions), axis=1)
        if not finite.all():
            raise ValueError(f"positions of atoms {names[~finite][:10].tolist()} are NaN or infinite")
        self._empty = n_local == 0
        if n_local == 0:
            none = None if self._bounds is None else np.zeros(0, dtype=np.int32)
            return DomainResult(0.0, np.zeros(0), np.zeros((0, 3)), np.zeros((3, 3)), np.zeros((0, 3, 3)), none,
                                None if none is None else np.zeros(0))
        if np.any((species < 0) | (species >= len(self.model.elements))):
            raise ValueError(f"element indices must lie in [0, {len(self.model.elements)}), got "
                             f"{sorted(set(species.tolist()))}")
        layout = self._layout
        if (rebuild or layout is None or self._neighbors is None or layout.n_rows != n_rows
                or layout.n_local != n_local or not np.array_equal(layout.species, species)):
            # a new frame around the atoms: matscipy's open-boundary list is fastest
            # with the atoms inside the box it is given
            self._origin = positions.min(axis=0) - 1.0
            self._box = np.diag(np.ptp(positions, axis=0) + 2.0)
            self._neighbors = VerletNeighborList(self.cutoff, self.skin)
            self._seen_builds = 0
        shifted = positions - self._origin
        i, j, _ = self._neighbors.pairs(shifted, self._box, _OPEN)
        if self._neighbors.n_builds != self._seen_builds:
            self._seen_builds = self._neighbors.n_builds
            layout = self._layout = self._build_layout(positions, shifted, species, n_local, i, j, names,
                                                       ids is not None)
        else:
            self._check_distances(layout, positions, names)
        layout.buffer[: len(layout.order)] = shifted[layout.order]
        energy, energies, forces, virial, virials, flags = self._function(
            self._params, jnp.asarray(layout.buffer, self.dtype), *layout.arrays[:4], n_local, layout.arrays[4],
            self._bounds)
        return DomainResult(
            float(energy),
            np.asarray(energies, dtype=np.float64)[:n_local],
            np.asarray(forces, dtype=np.float64)[:n_local],
            np.asarray(virial, dtype=np.float64),
            np.asarray(virials, dtype=np.float64)[:n_local],
            None if flags is None else np.asarray(flags.count)[:n_local],
            None if flags is None else np.asarray(flags.excursion, dtype=np.float64)[:n_local],
        )

    @with_float64
    def members(self) -> MemberDomainResult:
        """Every member's energy, local forces and virial at the frame of the last
        :meth:`evaluate` call (an ensemble model; the same rows and neighbour list).

        Raises:
            ValueError: a single model, or no frame evaluated yet.
        """
        if self.model.config.ensemble < 2:
            raise ValueError("model deviation needs an ensemble model; this model is a single network per element")
        n_members = self.model.config.ensemble
        if self._empty:
            return MemberDomainResult(np.zeros(n_members), np.zeros((n_members, 0, 3)), np.zeros((n_members, 3, 3)))
        layout = self._layout
        if layout is None:
            raise ValueError("no frame evaluated yet: call evaluate() first")
        function = compiled_member_function(self.model.config, self._chunk_size)
        energy, _, forces, virial, _, _ = function(
            self._params, jnp.asarray(layout.buffer, self.dtype), *layout.arrays[:4], layout.n_local,
            layout.arrays[4], None)
        return MemberDomainResult(np.asarray(energy, np.float64), np.asarray(forces, np.float64)[:, :layout.n_local],
                                  np.asarray(virial, np.float64))

    def _build_layout(self, positions: np.ndarray, shifted: np.ndarray, species: np.ndarray, n_local: int,
                      i: np.ndarray, j: np.ndarray, names: np.ndarray, fold: bool) -> _Layout:
        """Owners of the ghosts, centres (local atoms and the listed neighbours of
        local atoms owned elsewhere), row order (centres first, local atoms keep
        their rows) and the padded arrays."""
        self.n_builds += 1
        n_rows = len(positions)
        owner = np.full(n_rows, -1, dtype=np.int64)
        owner[:n_local] = np.arange(n_local)
        local_ids = names[:n_local]
        if fold and len(np.unique(local_ids)) == n_local:
            by_id = np.argsort(local_ids)
            at = np.minimum(np.searchsorted(local_ids[by_id], names[n_local:]), n_local - 1)
            found = local_ids[by_id][at] == names[n_local:]
            owner[n_local:][found] = by_id[at[found]]
        centre = np.zeros(n_rows, dtype=bool)
        centre[:n_local] = True
        centre[j[i < n_local]] = True
        centre[n_local:] &= owner[n_local:] < 0
        order = np.concatenate([np.flatnonzero(centre), np.flatnonzero(~centre)])
        n_centres = int(centre.sum())
        new_row = np.empty(n_rows, dtype=np.int64)
        new_row[order] = np.arange(n_rows)
        keep = centre[i]
        pairs = (new_row[i[keep]], new_row[j[keep]], np.zeros((int(keep.sum()), 3), dtype=np.int64))
        atoms = Atoms(numbers=self._numbers[species[order]], positions=shifted[order], pbc=False)
        n_centre_rows = atom_bucket(n_centres)
        padded = prepare_structure(self.model, atoms, pairs=pairs, capacity=self._capacity,
                                   n_padded=atom_bucket(n_rows), names=names[order])
        min_distance = padded.min_distance
        self._capacity = padded.nl.capacity
        n_padded = len(padded.species)
        centre_species = padded.species[:n_centre_rows].copy()
        centre_species[n_centres:] = -1
        rows_of_elements = element_rows(centre_species, len(self.model.elements))
        padded_owner = np.full(n_padded, n_padded, dtype=np.int32)  # N: dropped
        owned = owner[order] >= 0
        padded_owner[: n_rows][owned] = owner[order][owned]  # local rows keep their numbers
        arrays = (
            jnp.asarray(padded.species),
            jnp.asarray(centre_species),
            jnp.asarray(padded.nl.idx[:n_centre_rows]),
            jnp.asarray(padded_owner),
            None if rows_of_elements is None else tuple(jnp.asarray(r) for r in rows_of_elements),
        )
        return _Layout(n_rows, n_local, species.copy(), order, n_centres, pairs, positions.copy(), min_distance,
                       np.zeros_like(padded.positions), arrays)

    def _check_distances(self, layout: _Layout, positions: np.ndarray, names: np.ndarray) -> None:
        """Between builds: the shortest distance can only have shrunk by the two
        largest displacements; check the listed pairs exactly only when that bound
        falls below ``r_min``."""
        moved = np.linalg.norm(positions - layout.reference, axis=1)
        largest = np.partition(moved, len(moved) - 2)[-2:].sum() if len(moved) > 1 else 0.0
        if layout.min_distance - largest < self.model.config.r_min:
            check_distances(self.model, positions[layout.order], _NO_CELL, layout.pairs, names[layout.order])
