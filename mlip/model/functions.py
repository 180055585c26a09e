"""The pure, jit-compatible energy functions of a configuration
(:func:`make_model_functions`): descriptors in checkpointed chunks, the network half,
one ``jax.grad`` for forces and virial, extrapolation flags, ensemble members."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp

from mlip.kernels.neighbor_list import NeighborList
from mlip.kernels.network import AtomicNetwork
from mlip.kernels.symmetry_functions import (
    chunked,
    make_descriptor_kernel,
    map_in_chunks,
    select_columns,
)
from mlip.model.config import ModelConfig
from mlip.model.results import AnnotatedResults, EnergyResults, Extrapolation, MemberResults


def pair_vectors(positions, cell, nl: NeighborList, centres=None):
    """``r_ij = R_j + S @ cell - R_i`` (Å) for every slot, and the validity mask.

    ``centres`` (default ``positions``) are the ``R_i`` of the list's rows, for a
    list covering a block of rows only (:func:`chunked_descriptors`)."""
    mask = nl.idx < positions.shape[0]
    j = jnp.where(mask, nl.idx, 0)
    offsets = jnp.einsum("nmk,kx->nmx", nl.shifts.astype(positions.dtype), cell)
    centres = positions if centres is None else centres
    return positions[j] + offsets - centres[:, None, :], mask


def chunked_descriptors(kernel, chunk_size: int):
    """``(positions, cell, nl, neighbor_species, deformation=None) -> [N, n_union]``:
    the per-atom descriptor ``kernel`` over checkpointed chunks of ``chunk_size``
    atoms, each chunk forming its own pair vectors (``r_ij @ deformation`` if one
    is given) from the positions.

    Nothing of size ``[N, M, 3]`` (pair vectors, their cotangents) exists at once:
    the memory of energy and forces grows with ``N * M`` only through the
    neighbour list itself (a million atoms fit a few GB).  The values equal
    ``kernel`` on :func:`pair_vectors` of all atoms at once.
    """

    def apply(positions, cell, nl: NeighborList, species_j, deformation=None):
        def rows(idx, shifts, centres, species):  # padding rows: no neighbours (idx = N), outputs dropped
            r_ij, mask = pair_vectors(positions, cell, NeighborList(idx, shifts), centres)
            return kernel(r_ij if deformation is None else r_ij @ deformation, mask, species)

        return map_in_chunks(rows, (nl.idx, nl.shifts, positions, species_j), chunk_size,
                             fills=(positions.shape[0], 0, 0, -1))

    return apply


def neighbor_species(species, nl: NeighborList):
    """Element index of every neighbour slot, ``-1`` for empty slots."""
    mask = nl.idx < species.shape[0]
    return jnp.where(mask, species[jnp.where(mask, nl.idx, 0)], -1)


@dataclass(frozen=True)
class ModelFunctions:
    """Pure, jit-compatible functions of one model configuration.

    Attributes:
        atomic_energies: ``(params, positions, cell, species, nl, element_rows=None) -> [N]`` eV.
        energy_forces_virial: ``(params, positions, cell, species, nl, element_rows=None)
            -> EnergyResults``.
        descriptors: ``(positions, cell, species, nl) -> [N, n_union]`` raw symmetry
            functions (before scaling) for all distinct environment functions.
        descriptors_from_pairs: ``(r_ij [N, M, 3], mask, neighbor_species) -> [N, n_union]``,
            the descriptor kernel on pair vectors (Å).
        energies_from_features: ``(params, descriptors [N, n_union], species,
            element_rows=None) -> [N]`` eV: the network half of the model (scaling,
            per-element networks, reference energies), for callers that hold
            precomputed descriptors (training).
        extrapolation: ``(descriptors [N, n_union], species, bounds) -> Extrapolation``
            with ``bounds`` from :func:`feature_bounds`.
        annotated: ``(params, positions, cell, species, nl, element_rows=None,
            bounds=None) -> AnnotatedResults``: ``energy_forces_virial``'s results
            with, from the same evaluation, the extrapolation flags (when
            ``bounds`` from :func:`feature_bounds` are given) and every ensemble
            member's energy.
        member_results: ``(params, positions, cell, species, nl, element_rows=None,
            bounds=None) -> MemberResults``: energy, forces and virial of every
            ensemble member (the descriptors computed once, one batched descriptor
            pullback for all members); a single model is a one-member ensemble.

    For an ensemble (``config.ensemble > 1``) ``energies_from_features``, and so
    every energy function, gives the members' mean, whose forces and virial are
    the members' mean forces and virial (one pullback); ``annotated`` also returns
    every member's total energy (at no extra cost) for the energy uncertainty.

    The extrapolation flags of ``annotated`` come from the descriptors the energy
    was computed from (no second descriptor pass).

    ``element_rows`` (from :func:`element_rows`, or
    :attr:`mlip.batch.PaddedStructure.element_rows`) is a tuple with, per element,
    the rows of that element's atoms padded with ``N`` to a static length: each
    element's network then runs on its own atoms only.  With ``None`` every
    network runs on every row and the result is selected by ``species`` (E times
    the network work for E elements; what a one-element model needs anyway).
    Both give the same energies.
    """

    config: ModelConfig
    atomic_energies: Any = field(repr=False)
    energy_forces_virial: Any = field(repr=False)
    descriptors: Any = field(repr=False)
    descriptors_from_pairs: Any = field(repr=False)
    energies_from_features: Any = field(repr=False)
    extrapolation: Any = field(repr=False)
    annotated: Any = field(repr=False)
    member_results: Any = field(repr=False)


def make_model_functions(config: ModelConfig, chunk_size: int = 1024, backend: str = "auto") -> ModelFunctions:
    """Build the pure energy functions of ``config`` (not yet jit-compiled).

    ``chunk_size`` atoms are processed at a time (with rematerialisation), pair
    vectors included (:func:`chunked_descriptors`), so the memory of the pair and
    triplet terms stays bounded for large systems.  ``backend`` picks the
    descriptor kernel (``auto``, ``native`` or ``jax``; see
    :func:`~mlip.kernels.symmetry_functions.make_descriptor_kernel`).
    """
    sf_set = config.symmetry_functions
    atom_kernel = make_descriptor_kernel(sf_set, backend)
    kernel = chunked(atom_kernel, chunk_size)
    descriptors_in_chunks = chunked_descriptors(atom_kernel, chunk_size)
    network = AtomicNetwork(config.hidden_layers, config.activation)
    columns = {element: sf_set.feature_columns(element) for element in config.elements}

    def member_energies_from_features(params, features, species, element_rows=None):
        energies = jnp.zeros(species.shape, dtype=features.dtype)
        for index, element in enumerate(config.elements):
            if element_rows is None:  # every network on every row, selected by species
                rows = features
            else:  # only this element's rows (padding entries point past the end)
                rows = features.at[element_rows[index]].get(mode="fill", fill_value=0)
            x = (select_columns(rows, columns[element]) - params["feature_shift"][element]) * params[
                "feature_scale"][element]
            atomic = network.apply(params["networks"][element], x) + params["reference_energies"][element]
            if element_rows is None:
                energies = jnp.where(species == index, atomic, energies)
            else:
                energies = energies.at[element_rows[index]].set(atomic, mode="drop")
        return energies

    if config.ensemble > 1:
        def ensemble_energies(params, features, species, element_rows=None):  # [K, N]
            return jax.vmap(member_energies_from_features, in_axes=(0, None, None, None))(
                params, features, species, element_rows)
    else:
        def ensemble_energies(params, features, species, element_rows=None):  # [1, N]
            return member_energies_from_features(params, features, species, element_rows)[None]

    def energies_from_features(params, features, species, element_rows=None):
        return jnp.mean(ensemble_energies(params, features, species, element_rows), axis=0)

    def extrapolation(features, species, bounds):
        count = jnp.zeros(species.shape, dtype=jnp.int32)
        excursion = jnp.zeros(species.shape, dtype=features.dtype)
        for index, element in enumerate(config.elements):
            low, high = (jnp.asarray(b, features.dtype) for b in bounds[index])
            g = select_columns(features, columns[element])
            span = jnp.where(high > low, high - low, 1.0)
            slack = 8.0 * jnp.finfo(features.dtype).eps * (jnp.abs(low) + jnp.abs(high))
            outside = jnp.maximum(low - g, g - high) - slack  # > 0 outside the range
            mine = species == index
            count = jnp.where(mine, jnp.sum(outside > 0, axis=-1, dtype=jnp.int32), count)
            excursion = jnp.where(mine, jnp.max(jnp.maximum(outside, 0.0) / span, axis=-1, initial=0.0), excursion)
        return Extrapolation(count, excursion)

    def atomic_energies(params, positions, cell, species, nl, element_rows=None):
        features = descriptors_in_chunks(positions, cell, nl, neighbor_species(species, nl))
        return energies_from_features(params, features, species, element_rows)

    def annotated(params, positions, cell, species, nl, element_rows=None, bounds=None):
        species_j = neighbor_species(species, nl)

        def total(positions, strain):
            deformation = jnp.eye(3, dtype=positions.dtype) + strain
            features = descriptors_in_chunks(positions, cell, nl, species_j, deformation)
            members = ensemble_energies(params, features, species, element_rows)
            energies = jnp.mean(members, axis=0)
            return jnp.sum(energies), (energies, jnp.sum(members, axis=1), None if bounds is None else features)

        strain = jnp.zeros((3, 3), dtype=positions.dtype)
        (energy, (energies, members, features)), (d_positions, d_strain) = jax.value_and_grad(
            total, argnums=(0, 1), has_aux=True)(positions, strain)
        flags = None if bounds is None else extrapolation(features, species, bounds)
        return AnnotatedResults(EnergyResults(energy, energies, -d_positions, 0.5 * (d_strain + d_strain.T)),
                                flags, members)

    def energy_forces_virial(params, positions, cell, species, nl, element_rows=None):
        return annotated(params, positions, cell, species, nl, element_rows).results

    def member_results(params, positions, cell, species, nl, element_rows=None, bounds=None):
        species_j = neighbor_species(species, nl)

        def features_of(positions, strain):
            deformation = jnp.eye(3, dtype=positions.dtype) + strain
            return descriptors_in_chunks(positions, cell, nl, species_j, deformation)

        strain = jnp.zeros((3, 3), dtype=positions.dtype)
        features, descriptor_pullback = jax.vjp(features_of, positions, strain)
        energies, network_pullback = jax.vjp(lambda g: ensemble_energies(params, g, species, element_rows), features)
        # dE_k/dG of every member k (one network pullback each), then one descriptor
        # pullback per member, batched into a single kernel call
        picks = jnp.eye(energies.shape[0], dtype=energies.dtype)[:, :, None] * jnp.ones_like(energies)[None]
        d_features = jax.vmap(lambda c: network_pullback(c)[0])(picks)
        d_positions, d_strain = jax.vmap(descriptor_pullback)(d_features)
        flags = None if bounds is None else extrapolation(features, species, bounds)
        return MemberResults(jnp.sum(energies, axis=1), energies, -d_positions,
                             0.5 * (d_strain + jnp.swapaxes(d_strain, 1, 2)), flags)

    def descriptors(positions, cell, species, nl):
        return descriptors_in_chunks(positions, cell, nl, neighbor_species(species, nl))

    return ModelFunctions(config, atomic_energies, energy_forces_virial, descriptors, kernel, energies_from_features,
                          extrapolation, annotated, member_results)
