"""The MD driver: compiled blocks of steps, overflow replay, thermo log, trajectory, restart.

A run is a sequence of blocks of ``block`` steps, each one ``lax.scan`` of the
ensemble's step compiled once (per neighbour-list size).  The jit cell list is
updated inside every step.  After a block the host reads the list's error bits:

* overflow (a bin or a neighbour row ran full, the cell shrank): the list is
  reallocated, larger, at the block's end positions, and the block is replayed from
  its saved start state, so no step is ever computed with missing neighbours and no
  step is lost (replays use the same random numbers);
* atoms closer than the model's ``r_min`` or non-finite positions: ``ValueError``
  naming the atoms; a non-finite energy stops the run the same way.

Output, all optional (the files: :mod:`mlip.md.outputs`): a CSV thermo log every
``thermo_every`` steps, trajectory frames (extxyz or ASE ``.traj``, with energy,
forces and, for periodic cells, stress) every ``trajectory_every`` steps, and a
restart file (atomic, checksummed) every ``restart_every`` steps and at the end;
``resume=True`` continues a killed run from it, dropping log rows and frames
written after it.  Frame checks run between blocks: extrapolation
(:mod:`mlip.md.extrapolation`) compares every ``every``-th frame with the model's
training range, warns, writes the frame and stops past ``max_warnings``; model
deviation (:mod:`mlip.md.deviation`, ensembles) writes DeePMD's model_devi.out rows,
dumps candidate frames and stops above a force deviation.  Units: temperature K,
pressure GPa, time step and coupling times fs, thermo columns as named.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms, units

from mlip.kernels.cell_list import CellListError, CellListState
from mlip.md.barostat import is_upper_triangular_cell
from mlip.md.ensembles import ENSEMBLES, Ensemble, ForceField, StepParameters, init_state, uncoupled
from mlip.md.outputs import (
    append_frame, append_thermo, load_restart, save_restart, start_thermo, trajectory_frame, truncate_outputs,
)
from mlip.extrapolation import ExtrapolationWarning
from mlip.md.deviation import ModelDeviationMonitor
from mlip.md.extrapolation import ExtrapolationMonitor, ExtrapolationRecord
from mlip.md.settings import ExtrapolationChecks, MDSettings, ModelDeviationChecks, Outputs
from mlip.md.state import MDState, kinetic_energy, pressure_tensor, volume
from mlip.md.system import MDSystem
from mlip.model import Model
from mlip.precision import DTYPES, with_float64

SUMMARY_COLUMNS = ("step", "time_ps", "temperature_K", "potential_eV", "kinetic_eV", "total_eV", "conserved_eV",
                   "pressure_GPa", "volume_A3", "dudl_eV")
# pressure tensor in Voigt order (xx yy zz yz xz xy), LAMMPS' sign (positive pushes outwards)
PRESSURE_TENSOR_COLUMNS = ("pxx_GPa", "pyy_GPa", "pzz_GPa", "pyz_GPa", "pxz_GPa", "pxy_GPa")
THERMO_COLUMNS = SUMMARY_COLUMNS + PRESSURE_TENSOR_COLUMNS
_VOIGT = ([0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1])


class MDError(ValueError):
    """The run cannot go on (non-finite energy); the message says where."""


def make_ensemble(settings: MDSettings, force_field) -> Ensemble:
    """The integrator ``settings`` name, with its time step and coupling times."""
    name = settings.ensemble
    if name == "nve":
        return ENSEMBLES[name](force_field, settings.timestep)
    if name in ("langevin", "nvt"):
        return ENSEMBLES[name](force_field, settings.timestep, settings.tau)
    if name == "nose-hoover":
        return ENSEMBLES[name](force_field, settings.timestep, settings.tau, settings.chain_length)
    return ENSEMBLES[name](force_field, settings.timestep, settings.tau, settings.tau_p, settings.compressibility,
                           settings.coupling)


@dataclass
class MDResult:
    """What a run produced.

    Attributes:
        atoms: final structure with momenta and a calculator holding energy, forces
            (and stress for periodic cells).
        thermo: ``[rows, len(THERMO_COLUMNS)]`` the logged thermo rows of this call.
        steps: steps taken in this call.
        seconds: wall time of the integration (compilation included).
        compile_seconds: wall time of the first block (compilation and one block).
        replays: blocks redone after a neighbour-list overflow.
        neighbor_rebuilds: list rebuilds inside the compiled steps.
        timestep_fs: the time step, fs.
        extrapolation: the extrapolation checks of this call that found atoms
            outside the training range (empty without checks).
        model_devi: ``[rows, 8]`` model-deviation rows of this call (DeePMD's
            columns, :data:`mlip.uncertainty.MODEL_DEVI_COLUMNS`).
    """

    atoms: Atoms
    thermo: np.ndarray
    steps: int
    seconds: float
    compile_seconds: float
    replays: int
    neighbor_rebuilds: int
    timestep_fs: float
    columns: tuple[str, ...] = field(default=THERMO_COLUMNS)
    extrapolation: list[ExtrapolationRecord] = field(default_factory=list)
    model_devi: np.ndarray = field(default_factory=lambda: np.zeros((0, 8)))

    @property
    def ns_per_day(self) -> float:
        """Simulated ns per day of wall time (compilation included)."""
        return ns_per_day(self.steps, self.timestep_fs, self.seconds)


def ns_per_day(steps: int, timestep_fs: float, seconds: float) -> float:
    """Simulated nanoseconds per day of wall time (0 when no time has passed)."""
    return 0.0 if seconds <= 0 else steps * timestep_fs * 1e-6 * 86400.0 / seconds


def maxwell_boltzmann_momenta(masses: np.ndarray, temperature: float, seed: int) -> np.ndarray:
    """Momenta (amu·Å/t) drawn at ``temperature`` (K) with zero total momentum,
    rescaled so that the temperature over ``3N - 3`` degrees of freedom is exact."""
    rng = np.random.default_rng(seed)
    n = len(masses)
    momenta = rng.normal(size=(n, 3)) * np.sqrt(masses * units.kB * temperature)[:, None]
    momenta -= masses[:, None] * momenta.sum(axis=0) / masses.sum()
    if n < 2 or temperature == 0:
        return np.zeros((n, 3)) if temperature == 0 else momenta
    kinetic = 0.5 * np.sum(momenta**2 / masses[:, None])
    return momenta * np.sqrt(0.5 * (3 * n - 3) * units.kB * temperature / kinetic)


class _Block:
    """``lax.scan`` of ``n`` steps, jit-compiled once per ``n`` and neighbour spec;
    returns the final state and neighbours and per-step observables.  ``parameters.lam``
    is a scalar or one value per step (a λ schedule, for switching)."""

    def __init__(self, ensemble: Ensemble):
        self.ensemble = ensemble
        self._compiled: dict[int, object] = {}

    def __call__(self, state, neighbors, parameters, n: int):
        if n not in self._compiled:
            ensemble = self.ensemble

            def block(state, neighbors, parameters, lams):
                def body(carry, lam):
                    step_parameters = dataclasses.replace(parameters, lam=lam)
                    state, neighbors = ensemble.step(*carry, step_parameters)
                    tensor = pressure_tensor(state)
                    observed = jnp.concatenate([
                        jnp.stack([state.energy, kinetic_energy(state), jnp.trace(tensor) / 3.0, volume(state.cell),
                                   ensemble.conserved(state, step_parameters), state.dudl]),
                        tensor[_VOIGT]])
                    return (state, neighbors), observed

                return jax.lax.scan(body, (state, neighbors), lams)

            self._compiled[n] = jax.jit(block)
        lams = jnp.broadcast_to(jnp.asarray(parameters.lam, state.energy.dtype), (n,))
        (state, neighbors), observed = self._compiled[n](state, neighbors, parameters, lams)
        return state, neighbors, observed


def _steps_of(parameters: StepParameters, start: int, n: int) -> StepParameters:
    """``parameters`` for steps ``start .. start + n`` of a λ schedule (unchanged for a scalar λ)."""
    if jnp.ndim(parameters.lam) == 0:
        return parameters
    return dataclasses.replace(parameters, lam=parameters.lam[start:start + n])


def _grow(system: MDSystem, state: MDState, previous: CellListState) -> CellListState:
    """A larger list at ``state``'s positions: measured there with headroom, and at
    least 1.5x the previous capacities (so repeated overflows always make progress)."""
    spec = previous.spec
    return system.cell_list.allocate(state.position, state.cell, atom_mask=system.atom_mask,
                                     min_capacity=(math.ceil(1.5 * spec.bin_capacity),
                                                   math.ceil(1.5 * spec.neighbor_capacity)))


def _run_growing(run_block: _Block, system: MDSystem, state: MDState, neighbors: CellListState, parameters,
                 n: int) -> tuple[MDState, CellListState, jax.Array, int]:
    """``n`` steps from ``state``; on a neighbour-list overflow the list grows and
    the steps are redone from ``state``.  Returns the new state and list, the
    observables and the number of replays; bad positions are left in the list's
    error bits."""
    replays = 0
    while True:
        new_state, new_neighbors, observed = run_block(state, neighbors, parameters, n)
        if new_neighbors.errors != CellListError.OVERFLOW:
            return new_state, new_neighbors, observed, replays
        neighbors = _grow(system, new_state, new_neighbors)
        replays += 1


def _raise_physical_problem(run_block: _Block, system: MDSystem, state: MDState, neighbors: CellListState,
                            parameters, n: int) -> None:
    """Replay a flagged block one step at a time from its start and raise the
    ``ValueError`` of the first step whose positions are bad (atoms closer than
    ``r_min`` or non-finite), naming the step and the atoms."""
    for k in range(n):
        state, neighbors, _, _ = _run_growing(run_block, system, state, neighbors, _steps_of(parameters, k, 1), 1)
        if neighbors.errors:
            try:
                neighbors.check(state.position, state.cell)
            except ValueError as error:
                raise ValueError(f"step {int(state.step)}: {error}") from None
    raise RuntimeError("a block flagged bad positions, but replaying it step by step did not; this is a bug")


@dataclass
class Segment:
    """What :meth:`Simulation.run` produced (host side).

    Attributes:
        state, neighbors: where the run ended.
        thermo: ``[rows, len(THERMO_COLUMNS)]`` rows logged every ``thermo_every`` steps.
        seconds, compile_seconds: wall time in all and of the first block.
        replays, neighbor_rebuilds: blocks redone after an overflow; list rebuilds.
        extrapolation: checks that found atoms outside the training range.
        model_devi: ``[rows, 8]`` model-deviation rows.
    """

    state: MDState
    neighbors: CellListState
    thermo: np.ndarray
    seconds: float
    compile_seconds: float
    replays: int
    neighbor_rebuilds: int
    extrapolation: list[ExtrapolationRecord] = field(default_factory=list)
    model_devi: np.ndarray = field(default_factory=lambda: np.zeros((0, 8)))


# Compiled force fields, ensembles and blocks of recent simulations with the default
# potential, so that runs of one system (another temperature, pressure, seed, length,
# or a resumed run) do not compile again.
_COMPILED: OrderedDict = OrderedDict()
_COMPILED_MAX = 8


def _compiled_key(system: MDSystem, settings: MDSettings) -> tuple:
    """Everything the compiled code of :class:`Simulation` depends on: the model (its
    configuration and a digest of its parameters), the padded species and element
    rows, the neighbour-list builder, the dtype, and the settings other than the
    traced or host-side ones (temperature, pressure, seed, steps, initial velocities)."""
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(system.model.params):
        leaf = np.asarray(leaf)
        digest.update(str(leaf.dtype).encode() + str(leaf.shape).encode() + leaf.tobytes())
    rows = () if system.element_rows is None else tuple(np.asarray(r).tobytes() for r in system.element_rows)
    neutral = dataclasses.replace(settings, steps=0, temperature=0.0, pressure=0.0, seed=0, initial_velocities=True)
    return (system.model.config, digest.hexdigest(), np.asarray(system.species).tobytes(), rows, system.pbc,
            str(np.dtype(system.dtype)), tuple(sorted(vars(system.cell_list).items())), neutral)


class Simulation:
    """A system, a force field and an ensemble, compiled once: segments with other
    temperatures, pressures or coupling parameters ``lam`` (all traced) reuse the
    compiled blocks, and so do later simulations of the same system and settings
    (other temperature, pressure, seed or length) with the default force field.

    Args:
        system: the padded system (:class:`~mlip.md.system.MDSystem`).
        settings: ensemble, time step, coupling times, seed, dtype, block length.
        force_field: ``(position, cell, neighbors, lam) -> (neighbors, E, F, W, dU/dλ)``;
            default: the system's model.
    """

    def __init__(self, system: MDSystem, settings: MDSettings, force_field: ForceField | None = None):
        if settings.ensemble == "npt" and settings.coupling == "triclinic" and not is_upper_triangular_cell(system.cell):
            raise ValueError("triclinic NPT needs the cell in ASE's standard form (a along x, b in the xy-plane); "
                             "rotate the structure first, e.g. atoms.set_cell(atoms.cell.standard_form()[0], "
                             "scale_atoms=True)")
        self.system = system
        self.settings = settings
        key = None if force_field is not None else _compiled_key(system, settings)
        if key in _COMPILED:  # same model, elements, padding, list and ensemble: reuse the compiled code
            _COMPILED.move_to_end(key)
            self.force_field, self.ensemble, self._block, self._init = _COMPILED[key]
        else:
            self.force_field = uncoupled(system.potential()) if force_field is None else force_field
            self.ensemble = make_ensemble(settings, self.force_field)
            self._block = _Block(self.ensemble)
            force_field_, chain_length = self.force_field, self.ensemble.chain_length
            self._init = jax.jit(lambda *args: init_state(force_field_, *args, chain_length=chain_length))
            if key is not None:
                _COMPILED[key] = (self.force_field, self.ensemble, self._block, self._init)
                while len(_COMPILED) > _COMPILED_MAX:
                    _COMPILED.popitem(last=False)
        self.dof = self.ensemble.degrees_of_freedom(system.n_atoms)

    def parameters(self, temperature: float | None = None, pressure: float | None = None,
                   lam: float = 0.0) -> StepParameters:
        """Traced step parameters: temperature K and pressure GPa (default: the
        settings'), coupling parameter ``lam``."""
        dtype = self.system.dtype
        temperature = self.settings.temperature if temperature is None else temperature
        pressure = self.settings.pressure if pressure is None else pressure
        return StepParameters(jnp.asarray(units.kB * temperature, dtype), jnp.asarray(pressure * units.GPa, dtype),
                              jnp.asarray(lam, dtype))

    def initial_state(self, momenta: np.ndarray, parameters: StepParameters, position=None,
                      cell=None) -> tuple[MDState, CellListState]:
        """State at the system's positions (or ``position``, ``cell``) with ``momenta``
        (``[n_atoms, 3]`` amu·Å/t) and forces evaluated, and a fresh neighbour list."""
        system, dtype = self.system, self.system.dtype
        momentum = np.zeros_like(system.position)
        momentum[: system.n_atoms] = momenta
        position = jnp.asarray(system.position if position is None else position, dtype)
        cell = jnp.asarray(system.cell if cell is None else cell, dtype)
        neighbors = system.allocate_neighbors(position, cell)
        state, neighbors = self._init(neighbors, position, jnp.asarray(momentum, dtype),
                                      jnp.asarray(system.mass, dtype), jnp.asarray(system.atom_mask), cell,
                                      jax.random.PRNGKey(self.settings.seed), parameters.lam)
        neighbors.check(state.position, state.cell)
        return state, neighbors

    def run(self, state: MDState, neighbors: CellListState, parameters: StepParameters, until: int,
            outputs: Outputs = Outputs(), progress: bool = False,
            extrapolation: ExtrapolationChecks = ExtrapolationChecks(),
            deviation: ModelDeviationChecks = ModelDeviationChecks()) -> Segment:
        """Integrate from ``state`` up to step ``until``, writing ``outputs``.  With
        ``parameters.lam`` an array of ``until - state.step`` values, step ``k`` of the
        segment runs at ``lam[k]`` (a switching schedule).  ``extrapolation`` checks
        frames against the model's training range (an
        :class:`~mlip.extrapolation.ExtrapolationWarning` per check that finds any);
        ``deviation`` writes an ensemble's model deviation.

        Raises:
            ValueError: atoms came closer than ``r_min`` or non-finite positions
                (the step and the atoms are named); extrapolation checks for a model
                without a stored feature range.
            MDError: a non-finite energy.
            ExtrapolationError: more extrapolation warnings than ``extrapolation.max_warnings``.
            ModelDeviationError: a force deviation above ``deviation.stop_above``.
        """
        system, settings = self.system, self.settings
        flags = ExtrapolationMonitor(system, extrapolation) if extrapolation.every else None
        devi = ModelDeviationMonitor(system, deviation) if deviation.every else None
        monitors = [m for m in (flags, devi) if m is not None]
        block_length = settings.block
        for path, every in ((outputs.trajectory, outputs.trajectory_every), (outputs.restart, outputs.restart_every)):
            if path:
                block_length = math.gcd(block_length, int(every))
        for monitor in monitors:
            block_length = math.gcd(block_length, monitor.every)
        thermo_every = int(outputs.thermo_every)
        if outputs.thermo:
            start_thermo(outputs.thermo, THERMO_COLUMNS)
        if outputs.trajectory:
            Path(outputs.trajectory).parent.mkdir(parents=True, exist_ok=True)
        start_step = step = int(state.step)
        rows, replays, rebuilds = [], 0, 0
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=until, initial=min(start_step, until), unit="step", desc=self.ensemble.name)
        started = time.perf_counter()
        compile_seconds = 0.0
        while step < until:
            n = min(block_length, until - step)
            block_parameters = _steps_of(parameters, step - start_step, n)
            new_state, new_neighbors, observed, replayed = _run_growing(self._block, system, state, neighbors,
                                                                        block_parameters, n)
            replays += replayed
            if new_neighbors.errors:
                _raise_physical_problem(self._block, system, state, neighbors, block_parameters, n)
            observed = np.asarray(observed, np.float64)
            if not np.all(np.isfinite(observed[:, 0])):
                bad = step + 1 + int(np.flatnonzero(~np.isfinite(observed[:, 0]))[0])
                raise MDError(f"the potential energy became non-finite at step {bad}; the last finite state is "
                              f"step {step}" + (f" (restart file {outputs.restart})" if outputs.restart else ""))
            rebuilds += int(new_neighbors.n_rebuilds) - (0 if replayed else int(neighbors.n_rebuilds))
            state, neighbors = new_state, new_neighbors
            if compile_seconds == 0.0:
                compile_seconds = time.perf_counter() - started
            steps = np.arange(step + 1, step + n + 1)
            logged = steps % thermo_every == 0
            for s, (potential, kinetic, p, v, conserved, dudl, *tensor) in zip(steps[logged], observed[logged]):
                if not all(system.pbc):  # no volume, no pressure: the cell is only a frame
                    p, v, tensor = np.nan, np.nan, [np.nan] * len(tensor)
                temperature = 2.0 * kinetic / (self.dof * units.kB) if self.dof > 0 else 0.0  # one atom: no dof
                rows.append([s, s * settings.timestep * 1e-3, temperature, potential,
                             kinetic, potential + kinetic, conserved, p / units.GPa, v, dudl]
                            + [x / units.GPa for x in tensor])
            if outputs.thermo and logged.any():
                append_thermo(outputs.thermo, rows[-int(logged.sum()):])
            step += n
            if outputs.trajectory and step % outputs.trajectory_every == 0:
                append_frame(outputs.trajectory, trajectory_frame(system, state, step))
            if outputs.restart and (step % outputs.restart_every == 0 or step == until):
                save_restart(outputs.restart, state, settings, system)
            for monitor in monitors:
                if step % monitor.every == 0:
                    line = monitor.check(state, neighbors, step)
                    if line is not None:
                        warnings.warn(line, ExtrapolationWarning, stacklevel=2)
            if bar is not None:
                elapsed = time.perf_counter() - started
                bar.update(n)
                bar.set_postfix_str(f"{ns_per_day(step - start_step, settings.timestep, elapsed):.3g} ns/day")
        if bar is not None:
            bar.close()
        return Segment(state, neighbors, np.array(rows, np.float64).reshape(-1, len(THERMO_COLUMNS)),
                       time.perf_counter() - started, compile_seconds, replays, rebuilds,
                       [] if flags is None else flags.records,
                       np.array(devi.rows if devi is not None else [], np.float64).reshape(-1, 8))


def initial_momenta(atoms: Atoms, settings: MDSettings) -> np.ndarray:
    """The atoms' own momenta if they have non-zero ones, else Maxwell-Boltzmann
    momenta at the settings' temperature (zeros with ``initial_velocities=False``)."""
    momenta = atoms.get_momenta() if atoms.has("momenta") else None
    if momenta is not None and np.any(momenta):
        return momenta
    if not settings.initial_velocities:
        return np.zeros((len(atoms), 3))
    return maxwell_boltzmann_momenta(atoms.get_masses(), settings.temperature, settings.seed)


@with_float64
def run_md(model: Model, atoms: Atoms, settings: MDSettings = MDSettings(), outputs: Outputs = Outputs(),
           resume: bool = False, progress: bool = False,
           extrapolation: ExtrapolationChecks = ExtrapolationChecks(),
           deviation: ModelDeviationChecks = ModelDeviationChecks()) -> MDResult:
    """Integrate ``atoms`` with ``model`` as ``settings`` say, writing ``outputs``,
    with ``extrapolation`` checks (:class:`~mlip.md.settings.ExtrapolationChecks`) and
    an ensemble's model ``deviation`` (:class:`~mlip.md.settings.ModelDeviationChecks`).

    Raises:
        ValueError: bad input (unknown element, atoms closer than ``r_min``, NaN),
            atoms that came closer than ``r_min`` or left the finite range during
            the run (named), a restart file of another system, output files left
            by an earlier run that this one would not continue (nothing is written).
        MDError: a non-finite energy.
    """
    continuing = resume and outputs.restart and Path(outputs.restart).exists()
    if not continuing:
        _refuse_leftover_outputs(outputs, resume)
    system = MDSystem.from_atoms(model, atoms, settings.skin, DTYPES[settings.dtype], settings.capacity_multiplier)
    simulation = Simulation(system, settings)
    parameters = simulation.parameters()
    state, neighbors = simulation.initial_state(initial_momenta(atoms, settings), parameters)
    if continuing:
        state = load_restart(outputs.restart, state, system)
        neighbors = system.allocate_neighbors(state.position, state.cell)
        truncate_outputs(outputs, int(state.step), frames=(extrapolation.frames, deviation.dump_file),
                         tables=(deviation.file,))
    start_step = int(state.step)
    segment = simulation.run(state, neighbors, parameters, settings.steps, outputs, progress, extrapolation,
                             deviation)
    end_step = int(segment.state.step)
    return MDResult(trajectory_frame(system, segment.state, end_step), segment.thermo, end_step - start_step,
                    segment.seconds, segment.compile_seconds, segment.replays, segment.neighbor_rebuilds,
                    settings.timestep, extrapolation=segment.extrapolation, model_devi=segment.model_devi)


def _refuse_leftover_outputs(outputs: Outputs, resume: bool) -> None:
    """``ValueError`` if a thermo log or trajectory of an earlier run is in the way of
    a run that starts at step 0 (it would append to it, mixing two runs)."""
    for name, path in (("thermo log", outputs.thermo), ("trajectory", outputs.trajectory)):
        if path and Path(path).exists():
            why = (f"--resume found no restart file {outputs.restart}" if resume and outputs.restart else
                   "--resume without a --restart file cannot continue it" if resume else
                   "a new run would append to it")
            raise ValueError(f"the {name} {path} is left from an earlier run and {why}: continue that run with "
                             "--resume and its --restart file, or remove the file or choose another name "
                             "(nothing was written)")


def thermo_table(result: MDResult, columns: Sequence[str] = SUMMARY_COLUMNS, last: int = 5) -> str:
    """The last ``last`` thermo rows as aligned text (the scalar columns by default)."""
    header = " ".join(f"{c:>14s}" for c in columns)
    index = [result.columns.index(c) for c in columns]
    lines = [header] + [" ".join(f"{x:14.6g}" for x in row[index]) for row in result.thermo[-last:]]
    return "\n".join(lines)
