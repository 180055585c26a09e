"""The Behler-Parrinello model: configuration, parameters and pure energy functions.

Total energy (eV)::

    E = sum_i [ NN_{e_i}( (G_i - shift_{e_i}) * scale_{e_i} ) + E_ref[e_i] ]

with ``G_i`` the symmetry functions of atom ``i`` (:mod:`mlip.kernels.symmetry_functions`).
Forces are ``-dE/dR`` (eV/Å) and the stress is ``(1/V) dE/d(strain)`` (eV/Å^3, ASE sign
convention), both from one ``jax.grad`` of the total energy, so the forces sum to zero
by construction.

The pure functions here take the padded arrays produced by the calculator or the MD
driver: ``species`` holds element indices with ``-1`` for padding rows, and the
neighbour list is a :class:`~mlip.kernels.neighbor_list.NeighborList`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mlip.kernels.network import AtomicNetwork, layer_activations
from mlip.kernels.neighbor_list import NeighborList
from mlip.kernels.symmetry_functions import (
    SymmetryFunctionSet,
    chunked,
    default_symmetry_functions,
    make_descriptor_kernel,
    map_in_chunks,
    select_columns,
)
from mlip.precision import with_float64

Params = dict[str, Any]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a model (everything except the fitted numbers).

    Attributes:
        symmetry_functions: descriptor definition, which also fixes the elements.
        hidden_layers: hidden-layer widths of every element's network.
        activation: hidden activation (``tanh``, ``softplus``, ``silu`` or another
            name of :data:`mlip.kernels.network.ACTIVATIONS`), or a tuple with one
            name per hidden layer (as n2p2 allows); a tuple of equal names is
            stored as that one name, so such configs serialise as before.
        r_min: shortest interatomic distance the model accepts, Å; closer atoms
            are rejected as outside the trained range.
        ensemble: number of members of an ensemble model (1: a single model).
            Members share the descriptors and the architecture; every parameter
            array has a leading member axis, and the model's energy is the
            members' mean (:func:`make_model_functions`).
    """

    symmetry_functions: SymmetryFunctionSet
    hidden_layers: tuple[int, ...] = (25, 25)
    activation: str | tuple[str, ...] = "tanh"
    r_min: float = 0.5
    ensemble: int = 1

    def __post_init__(self):
        object.__setattr__(self, "hidden_layers", tuple(int(w) for w in self.hidden_layers))
        if any(w < 1 for w in self.hidden_layers):
            raise ValueError(f"hidden layer widths must be positive, got {self.hidden_layers}")
        if int(self.ensemble) != self.ensemble or self.ensemble < 1:
            raise ValueError(f"ensemble must be a positive number of members, got {self.ensemble}")
        object.__setattr__(self, "ensemble", int(self.ensemble))
        names = layer_activations(self.activation, len(self.hidden_layers))  # validates the names
        if not isinstance(self.activation, str):
            object.__setattr__(self, "activation", names[0] if len(set(names)) == 1 else names)

    @property
    def activations(self) -> tuple[str, ...]:
        """The activation of every hidden layer."""
        return layer_activations(self.activation, len(self.hidden_layers))

    @property
    def elements(self) -> tuple[str, ...]:
        return self.symmetry_functions.elements

    @property
    def cutoff(self) -> float:
        """Interaction range of the model, Å."""
        return self.symmetry_functions.max_cutoff

    @property
    def member(self) -> "ModelConfig":
        """The configuration of one member (``ensemble = 1``)."""
        return dataclasses.replace(self, ensemble=1)

    def to_dict(self) -> dict:
        data = {
            "symmetry_functions": self.symmetry_functions.to_dict(),
            "hidden_layers": list(self.hidden_layers),
            "activation": self.activation if isinstance(self.activation, str) else list(self.activation),
            "r_min": self.r_min,
        }
        if self.ensemble > 1:  # single models keep the layout of files written before ensembles
            data["ensemble"] = self.ensemble
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        return cls(
            symmetry_functions=SymmetryFunctionSet.from_dict(data["symmetry_functions"]),
            hidden_layers=tuple(data["hidden_layers"]),
            activation=data["activation"] if isinstance(data["activation"], str) else tuple(data["activation"]),
            r_min=float(data["r_min"]),
            ensemble=int(data.get("ensemble", 1)),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@with_float64
def init_params(config: ModelConfig, seed: int = 0, dtype=jnp.float64) -> Params:
    """Random network weights, identity feature scaling and zero reference energies;
    for an ensemble, members initialised with seeds ``seed, seed + 1, ...`` stacked
    on a leading axis."""
    if config.ensemble > 1:
        return stack_params([init_params(config.member, seed + k, dtype) for k in range(config.ensemble)])
    network = AtomicNetwork(config.hidden_layers, config.activation)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(config.elements))
    params: Params = {"networks": {}, "feature_shift": {}, "feature_scale": {}, "reference_energies": {}}
    for key, element in zip(keys, config.elements):
        n_features = config.symmetry_functions.n_features(element)
        params["networks"][element] = network.init(key, jnp.zeros((1, n_features), dtype=dtype))
        params["feature_shift"][element] = jnp.zeros(n_features, dtype=dtype)
        params["feature_scale"][element] = jnp.ones(n_features, dtype=dtype)
        params["reference_energies"][element] = jnp.zeros((), dtype=dtype)
    return params


def stack_params(members: list[Params]) -> Params:
    """Member parameters stacked on a new leading axis (the ensemble layout)."""
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *members)


def cast_params(params: Params, dtype) -> Params:
    """``params`` with every floating-point array cast to ``dtype`` (e.g. for float32)."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)


def virial_to_stress(virial, cell) -> np.ndarray:
    """Stress in ASE's Voigt order (xx yy zz yz xz xy), eV/Å^3, from the virial
    ``dE/d(strain)`` (eV, 3x3) of a periodic cell (rows are lattice vectors, Å)."""
    virial = np.asarray(virial, dtype=np.float64)
    return virial.reshape(virial.shape[:-2] + (9,))[..., [0, 4, 8, 5, 2, 1]] / abs(np.linalg.det(cell))


class Extrapolation(NamedTuple):
    """How far each atom's symmetry functions lie outside the training range
    ``[G_min, G_max]`` (n2p2's extrapolation warnings, per atom).

    ``count``: how many of the atom's functions are outside; ``excursion``: the
    largest distance outside, in units of that function's range
    ``G_max - G_min`` (0 inside).  Padding rows have 0 and 0.  Values within
    rounding of a bound (``8 eps (|G_min| + |G_max|)`` of the working precision)
    count as inside, so the training structures themselves never extrapolate.
    """

    count: jax.Array  # [N] int32
    excursion: jax.Array  # [N], dimensionless


class EnergyResults(NamedTuple):
    """Output of :func:`make_model_functions`'s ``energy_forces_virial``."""

    energy: jax.Array  # eV
    energies: jax.Array  # [N] eV, zero on padding rows
    forces: jax.Array  # [N, 3] eV/Å
    virial: jax.Array  # [3, 3] eV: dE/d(strain); stress = virial / volume


class AnnotatedResults(NamedTuple):
    """Output of :func:`make_model_functions`'s ``annotated``: the results and what
    the same evaluation tells about them."""

    results: EnergyResults
    extrapolation: Extrapolation | None  # when feature bounds are given
    member_energies: jax.Array  # [K] eV, every ensemble member's energy (K = 1 for a single model)


class MemberResults(NamedTuple):
    """Output of :func:`make_model_functions`'s ``member_results``: per member ``k``."""

    energy: jax.Array  # [K] eV
    energies: jax.Array  # [K, N] eV
    forces: jax.Array  # [K, N, 3] eV/Å
    virial: jax.Array  # [K, 3, 3] eV
    extrapolation: Extrapolation | None = None


FeatureRange = dict[str, np.ndarray]  # per element [n_features(element), 2]: (G_min, G_max), raw descriptor units
FeatureBounds = tuple[tuple[jax.Array, jax.Array], ...]  # per element (G_min [F_e], G_max [F_e])


def feature_bounds(config: ModelConfig, feature_range: FeatureRange | None, dtype=jnp.float64) -> FeatureBounds:
    """``feature_range`` as the ``bounds`` argument of ``energy_forces_virial``:
    per element of ``config`` (in order) ``(G_min, G_max)`` arrays; an element
    without a range gets ``(-inf, inf)`` (never extrapolates)."""
    bounds = []
    for element in config.elements:
        n_features = config.symmetry_functions.n_features(element)
        if feature_range is not None and element in feature_range:
            low, high = np.asarray(feature_range[element], dtype=np.float64).T
        else:
            low, high = np.full(n_features, -np.inf), np.full(n_features, np.inf)
        bounds.append((jnp.asarray(low, dtype), jnp.asarray(high, dtype)))
    return tuple(bounds)


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


@dataclass
class Model:
    """A model: configuration plus fitted parameters.

    Create one with :meth:`Model.create` (random weights) or load a file with
    :func:`mlip.io.load_model`.

    Attributes:
        config: the architecture.
        params: fitted numbers (networks, feature scaling, reference energies).
        feature_range: per element ``[n_features, 2]`` (G_min, G_max) of the raw
            symmetry functions over the training set (or an n2p2 potential's
            scaling.data), the range outside which the model extrapolates; None
            when unknown.
    """

    config: ModelConfig
    params: Params
    feature_range: FeatureRange | None = None

    def with_params(self, params: Params) -> "Model":
        """The same model (configuration, feature range) with other parameters."""
        return Model(self.config, params, self.feature_range)

    def member(self, index: int) -> "Model":
        """Member ``index`` of an ensemble as a single model (a single model is its own member 0)."""
        if not -self.config.ensemble <= index < self.config.ensemble:
            raise IndexError(f"member {index} of an ensemble of {self.config.ensemble}")
        if self.config.ensemble == 1:
            return self
        params = jax.tree_util.tree_map(lambda leaf: leaf[index], self.params)
        return Model(self.config.member, params, self.feature_range)

    @classmethod
    @with_float64
    def create(
        cls,
        elements: tuple[str, ...] | list[str] | None = None,
        symmetry_functions: SymmetryFunctionSet | None = None,
        hidden_layers: tuple[int, ...] = (25, 25),
        activation: str | tuple[str, ...] = "tanh",
        r_min: float = 0.5,
        seed: int = 0,
        ensemble: int = 1,
        **grid_options,
    ) -> "Model":
        """New model with random weights (``ensemble`` members, seeds ``seed, seed + 1, ...``).

        Give either ``symmetry_functions`` or ``elements`` (then the default grid of
        :func:`~mlip.kernels.symmetry_functions.default_symmetry_functions` is used,
        with ``grid_options`` such as ``r_cut`` in Å passed through).
        """
        if symmetry_functions is None:
            if elements is None:
                raise ValueError("give elements or symmetry_functions")
            symmetry_functions = default_symmetry_functions(tuple(elements), **grid_options)
        elif grid_options:
            raise ValueError("grid options only apply when symmetry_functions is not given")
        config = ModelConfig(symmetry_functions, tuple(hidden_layers), activation, r_min, ensemble)
        return cls(config, init_params(config, seed))

    @property
    def elements(self) -> tuple[str, ...]:
        return self.config.elements

    @property
    def cutoff(self) -> float:
        return self.config.cutoff

    def rename_elements(self, mapping: dict[str, str]) -> "Model":
        """The same descriptors, scaling and weights for other elements (transfer
        learning, e.g. ``{"Si": "Ge"}``); symbols not in ``mapping`` stay."""
        import dataclasses

        def rename(symbol: str) -> str:
            return mapping.get(symbol, symbol)

        sf = self.config.symmetry_functions
        elements = tuple(rename(e) for e in sf.elements)
        if len(set(elements)) != len(elements):
            raise ValueError(f"renaming {mapping} merges elements: {list(elements)}")
        functions = tuple(
            dataclasses.replace(f, element=rename(f.element), neighbors=tuple(sorted(rename(n) for n in f.neighbors)))
            for f in sf.functions
        )
        renamed_sf = SymmetryFunctionSet(elements, functions, sf.cutoff_type, sf.cutoff_alpha)
        config = dataclasses.replace(self.config, symmetry_functions=renamed_sf)
        params = {group: {rename(e): value for e, value in values.items()} for group, values in self.params.items()}
        feature_range = None if self.feature_range is None else {rename(e): r for e, r in self.feature_range.items()}
        return Model(config, params, feature_range)

    def species_indices(self, symbols) -> np.ndarray:
        """Element indices of ``symbols``; ``ValueError`` naming any unknown element."""
        index = {e: n for n, e in enumerate(self.elements)}
        unknown = sorted(set(symbols) - set(index))
        if unknown:
            raise ValueError(
                f"unknown element(s) {unknown}: this model knows only {list(self.elements)}"
            )
        return np.array([index[s] for s in symbols], dtype=np.int32)


def stack_models(models) -> Model:
    """An ensemble of single ``models`` (members in the given order): one model whose
    energy is their mean and whose spread is their uncertainty.  The feature range
    is the union of the members' ranges.

    Raises:
        ValueError: fewer than two models, an ensemble among them, or members that
            differ in anything but their fitted numbers (descriptor set, elements,
            layers, activation, r_min): the message names what differs.
    """
    models = list(models)
    if len(models) < 2:
        raise ValueError(f"an ensemble needs at least two members, got {len(models)}")
    first = models[0].config
    for number, model in enumerate(models):
        config = model.config
        if config.ensemble != 1:
            raise ValueError(f"member {number} is itself an ensemble of {config.ensemble}; stack single models")
        for name in ("symmetry_functions", "hidden_layers", "activation", "r_min"):
            if getattr(config, name) != getattr(first, name):
                what = "descriptor sets" if name == "symmetry_functions" else name.replace("_", " ")
                raise ValueError(f"ensemble members must share their architecture: member {number} differs from "
                                 f"member 0 in its {what}")
    ranges = [m.feature_range for m in models if m.feature_range is not None]
    feature_range = None
    if ranges:
        feature_range = {}
        for element in first.elements:
            known = [np.asarray(r[element]) for r in ranges if element in r]
            if known:
                feature_range[element] = np.stack([np.min([k[:, 0] for k in known], axis=0),
                                                   np.max([k[:, 1] for k in known], axis=0)], axis=1)
    config = dataclasses.replace(first, ensemble=len(models))
    return Model(config, stack_params([m.params for m in models]), feature_range or None)
