"""ASE calculator for mlip models.

>>> from mlip.calculator import MLIPCalculator
>>> atoms.calc = MLIPCalculator("model.mlip")
>>> atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()

Units are ASE's: eV, Å, eV/Å, eV/Å^3.  A model that knows its training range also
reports, per atom, ``extrapolation_count`` (symmetry functions outside the range)
and ``extrapolation_excursion`` (largest distance outside, in units of the range),
and warns (or raises) when a structure extrapolates (:mod:`mlip.extrapolation`).

An ensemble model (``config.ensemble > 1``) gives the members' mean as ``energy``,
``forces`` and ``stress``, and their spread as ``energy_uncertainty`` (eV, standard
deviation of the members' energies), ``forces_uncertainty`` (per atom, eV/Å:
DeePMD's ``devi_f = sqrt(mean_k |F_ik - <F_i>|^2)``) and ``stress_uncertainty``
(eV/Å^3, per Voigt component), with the members' own values on request.  When the
model stores calibration factors (:attr:`~mlip.model.Model.calibration`, fitted by
:func:`mlip.training.calibration.fit_calibration`), ``energy_uncertainty`` and
``forces_uncertainty`` are calibrated (the spread times the factor) and the
uncalibrated spreads are ``energy_uncertainty_raw`` and ``forces_uncertainty_raw``
(equal to them without calibration); ``stress_uncertainty`` is never calibrated.

Inputs are padded to fixed buckets of atom count and neighbour capacity so that a
compiled function is reused across calls (MD steps, optimiser steps, structures of
similar size) instead of recompiling.
"""

from __future__ import annotations

import functools
import os
import warnings

import jax
import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from mlip.compilation_cache import enable_compilation_cache, requested_by_environment
from mlip.extrapolation import ExtrapolationError, ExtrapolationWarning, resolve_policy, summary
from mlip.kernels.neighbor_list import VerletNeighborList
from mlip.model import Model, ModelConfig, cast_params, feature_bounds, make_model_functions, virial_to_stress
from mlip.batch import PaddedStructure, prepare_structure
from mlip.precision import DTYPES, with_float64
from mlip.uncertainty import force_deviation, spread


#: What an ensemble calculator computes besides the mean (``uncertainty`` option).
UNCERTAINTIES = ("auto", "forces", "energy", "off")


@functools.lru_cache(maxsize=16)
def compiled_energy_function(config: ModelConfig, chunk_size: int = 1024, members: bool = False):
    """``jax.jit`` of the energy/forces/virial function of ``config`` (with
    ``members``: of every ensemble member), shared by every calculator of that
    configuration (parameters are arguments), so each padded shape is compiled once
    per process however many calculators use it."""
    functions = make_model_functions(config, chunk_size)
    return jax.jit(functions.member_results if members else functions.annotated)


class MLIPCalculator(Calculator):
    """ASE calculator: energy, free_energy, forces, stress and per-atom energies.

    Args:
        model: a :class:`~mlip.model.Model` or the path of a model file.
        dtype: ``"float64"`` (default) or ``"float32"``.
        skin: Verlet skin of the neighbour list, Å; the list is rebuilt only when
            an atom moved more than half of it.
        chunk_size: atoms processed per chunk inside the kernel (memory bound).
        compilation_cache: turn on JAX's persistent compilation cache, a process-wide
            JAX setting (:mod:`mlip.compilation_cache`).  Default ``None``: only when
            the environment variable ``MLIP_COMPILATION_CACHE`` names a folder (a
            calculator leaves the host program's JAX settings alone unless asked);
            ``True``: on (default folder ``~/.cache/mlip/jax``); ``False``: off.
        extrapolation: ``"auto"`` (default: ``"warn"`` when the model knows its
            training range, else ``"off"``), ``"warn"`` (an
            :class:`~mlip.extrapolation.ExtrapolationWarning` for every structure
            with symmetry functions outside the range), ``"raise"``
            (:class:`~mlip.extrapolation.ExtrapolationError` instead) or ``"off"``.
            Except when off, the results hold ``extrapolation_count`` and
            ``extrapolation_excursion`` per atom.
        uncertainty: for an ensemble model, ``"forces"`` (what ``"auto"`` means):
            energy, force and stress uncertainties (every member's forces: one
            batched descriptor pullback for all members); ``"energy"``: the energy
            uncertainty only, at the cost of the mean model; ``"off"``.
        members: also store every member's ``member_energy`` [K], and with force
            uncertainties ``member_forces`` [K, N, 3] and ``member_stress`` [K, 6].
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies",
                              "extrapolation_count", "extrapolation_excursion",
                              "energy_uncertainty", "forces_uncertainty", "stress_uncertainty",
                              "energy_uncertainty_raw", "forces_uncertainty_raw",
                              "member_energy", "member_forces", "member_stress"]

    @with_float64
    def __init__(self, model: Model | str | os.PathLike, dtype: str = "float64", skin: float = 0.3,
                 chunk_size: int = 1024, compilation_cache: bool | None = None, extrapolation: str = "auto",
                 uncertainty: str = "auto", members: bool = False, **kwargs):
        super().__init__(**kwargs)
        if compilation_cache or (compilation_cache is None and requested_by_environment()):
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
        if uncertainty not in UNCERTAINTIES:
            raise ValueError(f"uncertainty must be one of {list(UNCERTAINTIES)}, got {uncertainty!r}")
        if model.config.ensemble == 1 and uncertainty not in ("auto", "off"):
            raise ValueError(f"uncertainty={uncertainty!r} needs an ensemble model; this one is a single model "
                             "(train with [model] ensemble = N, or mlip.model.stack_models)")
        if model.config.ensemble == 1:
            uncertainty = "off"
        self.uncertainty = "forces" if uncertainty == "auto" else uncertainty
        self.members = bool(members)
        calibration = model.calibration or {}
        self.calibration = {key: float(calibration.get(key, 1.0)) for key in ("energy", "forces")}
        self._evaluate = compiled_energy_function(model.config, chunk_size, self.uncertainty == "forces")
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
        if self.uncertainty == "forces":
            self._store_members(result, n_atoms, cell if pbc.all() else None)
        else:
            self._store_mean(result.results, n_atoms, cell if pbc.all() else None, result.member_energies)
        if result.extrapolation is not None:
            self._report_extrapolation(np.asarray(result.extrapolation.count)[:n_atoms],
                                       np.asarray(result.extrapolation.excursion, dtype=np.float64)[:n_atoms])
        if not pbc.all() and "stress" in properties:
            raise PropertyNotImplementedError("stress needs a cell that is periodic in all three directions")

    def _store_mean(self, result, n_atoms: int, cell: np.ndarray | None, member_energies) -> None:
        """Results of the (mean) model's ``EnergyResults``; ``cell`` None: no stress."""
        energy = float(result.energy)
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["energies"] = np.asarray(result.energies, dtype=np.float64)[:n_atoms]
        self.results["forces"] = np.asarray(result.forces, dtype=np.float64)[:n_atoms]
        if cell is not None:
            self.results["stress"] = virial_to_stress(result.virial, cell)
        if self.uncertainty == "energy":
            member_energy = np.asarray(member_energies, dtype=np.float64)
            self._store_uncertainty("energy", float(spread(member_energy)))
            if self.members:
                self.results["member_energy"] = member_energy

    def _store_members(self, result, n_atoms: int, cell: np.ndarray | None) -> None:
        """Mean and spread of the members' ``MemberResults``; ``cell`` None: no stress."""
        member_energy = np.asarray(result.energy, dtype=np.float64)
        member_forces = np.asarray(result.forces, dtype=np.float64)[:, :n_atoms]
        energy = float(member_energy.mean())
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["energies"] = np.asarray(result.energies, dtype=np.float64)[:, :n_atoms].mean(axis=0)
        self.results["forces"] = member_forces.mean(axis=0)
        self._store_uncertainty("energy", float(spread(member_energy)))
        self._store_uncertainty("forces", force_deviation(member_forces))
        if self.members:
            self.results["member_energy"] = member_energy
            self.results["member_forces"] = member_forces
        if cell is not None:
            member_stress = virial_to_stress(result.virial, cell)
            self.results["stress"] = member_stress.mean(axis=0)
            self.results["stress_uncertainty"] = spread(member_stress)
            if self.members:
                self.results["member_stress"] = member_stress

    def _store_uncertainty(self, quantity: str, raw) -> None:
        """``{quantity}_uncertainty_raw`` = the members' spread ``raw`` and
        ``{quantity}_uncertainty`` = it times the model's calibration factor."""
        self.results[f"{quantity}_uncertainty_raw"] = raw
        self.results[f"{quantity}_uncertainty"] = raw * self.calibration[quantity]

    def _report_extrapolation(self, count: np.ndarray, excursion: np.ndarray) -> None:
        self.results["extrapolation_count"] = count
        self.results["extrapolation_excursion"] = excursion
        line = summary(count, excursion)
        if line is None:
            return
        if self.extrapolation == "raise":
            raise ExtrapolationError(line)
        warnings.warn(line, ExtrapolationWarning, stacklevel=2)
