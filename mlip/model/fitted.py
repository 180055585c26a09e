"""A fitted model (:class:`Model`: configuration, parameters, training range) and
ensembles made of several (:func:`stack_models`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import numpy as np

from mlip.kernels.symmetry_functions import (
    SymmetryFunctionSet,
    default_symmetry_functions,
)
from mlip.model.config import ModelConfig, Params, init_params, stack_params
from mlip.model.results import FeatureRange
from mlip.precision import with_float64


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
        calibration: for an ensemble, the factors ``{"energy": s_E, "forces":
            s_F}`` (dimensionless) by which the members' spread is multiplied to
            give calibrated uncertainties (:func:`mlip.training.calibration.fit_calibration`);
            None (or a missing quantity) means 1.
    """

    config: ModelConfig
    params: Params
    feature_range: FeatureRange | None = None
    calibration: dict[str, float] | None = None

    def with_params(self, params: Params) -> "Model":
        """The same model (configuration, feature range, calibration) with other parameters."""
        return Model(self.config, params, self.feature_range, self.calibration)

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
        return Model(config, params, feature_range, self.calibration)

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
