"""ASE calculator for mlip models.

>>> from mlip.calculator import MLIPCalculator
>>> atoms.calc = MLIPCalculator("model.mlip")
>>> atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()

Units are ASE's: eV, Å, eV/Å, eV/Å^3.  A model that knows its training range also
reports, per atom, ``extrapolation_count`` (symmetry functions outside the range)
and ``extrapolation_excursion`` (largest distance outside, in units of the range),
and warns (or raises) when a structure extrapolates (:mod:`mlip.extrapolation`).  Inputs are padded to fixed buckets of atom
count and neighbour capacity so that a compiled function is reused across calls
(MD steps, optimiser steps, structures of similar size) instead of recompiling.
"""

from __future__ import annotations

import functools
import os
import warnings

import jax
import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from mlip.compilation_cache import enable_compilation_cache
from mlip.extrapolation import ExtrapolationError, ExtrapolationWarning, resolve_policy, summary
from mlip.kernels.neighbor_list import VerletNeighborList
from mlip.model import Model, ModelConfig, cast_params, feature_bounds, make_model_functions, virial_to_stress
from mlip.batch import PaddedStructure, prepare_structure
from mlip.precision import DTYPES, with_float64


@functools.lru_cache(maxsize=16)
def compiled_energy_function(config: ModelConfig, chunk_size: int = 1024):
    """``jax.jit`` of the energy/forces/virial function of ``config``, shared by every
    calculator of that configuration (parameters are arguments), so each padded
    shape is compiled once per process however many calculators use it."""
    return jax.jit(make_model_functions(config, chunk_size).energy_forces_virial)


class MLIPCalculator(Calculator):
    """ASE calculator: energy, free_energy, forces, stress and per-atom energies.

    Args:
        model: a :class:`~mlip.model.Model` or the path of a model file.
        dtype: ``"float64"`` (default) or ``"float32"``.
        skin: Verlet skin of the neighbour list, Å; the list is rebuilt only when
            an atom moved more than half of it.
        chunk_size: atoms processed per chunk inside the kernel (memory bound).
        compilation_cache: turn on JAX's persistent compilation cache
            (:mod:`mlip.compilation_cache`; also off with ``MLIP_COMPILATION_CACHE=off``).
        extrapolation: ``"auto"`` (default: ``"warn"`` when the model knows its
            training range, else ``"off"``), ``"warn"`` (an
            :class:`~mlip.extrapolation.ExtrapolationWarning` for every structure
            with symmetry functions outside the range), ``"raise"``
            (:class:`~mlip.extrapolation.ExtrapolationError` instead) or ``"off"``.
            Except when off, the results hold ``extrapolation_count`` and
            ``extrapolation_excursion`` per atom.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies",
                              "extrapolation_count", "extrapolation_excursion"]

    @with_float64
    def __init__(self, model: Model | str | os.PathLike, dtype: str = "float64", skin: float = 0.3,
                 chunk_size: int = 1024, compilation_cache: bool = True, extrapolation: str = "auto",
                 **kwargs):
        super().__init__(**kwargs)
        if compilation_cache:
            enable_compilation_cache()
        if not isinstance(model, Model):
            from mlip.io import load_model

            model = load_model(model)
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.model = model
        self.dtype = DTYPES[dtype]
        self._params = cast_params(model.params, self.dtype)
        self.extrapolation = resolve_policy(model, extrapolation)
        self._bounds = None if self.extrapolation == "off" else feature_bounds(model.config, model.feature_range,
                                                                                 self.dtype)
        self._evaluate = compiled_energy_function(model.config, chunk_size)
        self.neighbors = VerletNeighborList(model.cutoff, skin)
        self._capacity: int | None = None

    @property
    def n_compilations(self) -> int:
        """How many input shapes the compiled energy function (shared by the
        calculators of one model configuration) has been compiled for."""
        return self._evaluate._cache_size()

    @property
    def neighbor_capacity(self) -> int | None:
        """Neighbour slots per atom of the padded list (None before the first call);
        grows, with one recompilation, when a structure needs more."""
        return self._capacity

    @with_float64
    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        pbc = np.asarray(atoms.pbc, dtype=bool)
        cell = np.asarray(atoms.cell.array, dtype=np.float64)
        padded: PaddedStructure = prepare_structure(self.model, atoms, neighbors=self.neighbors,
                                                    capacity=self._capacity)
        self._capacity = padded.nl.capacity
        n_atoms = len(atoms)
        result = self._evaluate(self._params, *padded.as_jax(self.dtype, with_element_rows=True), self._bounds)
        energy = float(result.energy)
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["energies"] = np.asarray(result.energies, dtype=np.float64)[:n_atoms]
        self.results["forces"] = np.asarray(result.forces, dtype=np.float64)[:n_atoms]
        if result.extrapolation is not None:
            self._report_extrapolation(np.asarray(result.extrapolation.count)[:n_atoms],
                                       np.asarray(result.extrapolation.excursion, dtype=np.float64)[:n_atoms])
        if pbc.all():
            self.results["stress"] = virial_to_stress(result.virial, cell)
        elif "stress" in properties:
            raise PropertyNotImplementedError("stress needs a cell that is periodic in all three directions")

    def _report_extrapolation(self, count: np.ndarray, excursion: np.ndarray) -> None:
        self.results["extrapolation_count"] = count
        self.results["extrapolation_excursion"] = excursion
        line = summary(count, excursion)
        if line is None:
            return
        if self.extrapolation == "raise":
            raise ExtrapolationError(line)
        warnings.warn(line, ExtrapolationWarning, stacklevel=2)
