"""Settings of an MD run and of its output (plain, validated dataclasses; the CLI
builds its parser from their defaults)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from mlip.md.barostat import COUPLINGS, check_coupling
from mlip.md.ensembles import ENSEMBLES
from mlip.precision import DTYPES

ENSEMBLE_NAMES = tuple(ENSEMBLES)
DTYPE_NAMES = tuple(DTYPES)
COUPLING_NAMES = COUPLINGS


@dataclass(frozen=True)
class MDSettings:
    """What to integrate and how (units in the names' docs).

    Attributes:
        ensemble: ``nve``, ``langevin`` (alias ``nvt``), ``nose-hoover`` or ``npt``.
        temperature: target (and initial Maxwell-Boltzmann) temperature, K.
        timestep: fs.
        steps: total steps of the run (a resumed run continues up to it).
        pressure: NPT target, GPa.
        tau: thermostat coupling (damping) time, fs.
        tau_p: barostat time, fs.
        compressibility: NPT's guessed compressibility, 1/GPa.
        coupling: NPT cell coupling: ``isotropic`` (shape fixed), ``anisotropic``
            (three box lengths) or ``triclinic`` (all six cell degrees of freedom;
            the cell must be in ASE's standard form, ``a`` along x and ``b`` in
            the xy-plane).
        chain_length: Nosé-Hoover chain length.
        seed: initial velocities and stochastic steps.
        initial_velocities: draw Maxwell-Boltzmann momenta at ``temperature`` (zero
            total momentum) unless the atoms already carry momenta.
        skin: neighbour-list skin, Å.
        capacity_multiplier: headroom of the neighbour-list buffers (>= 1); an
            overflow during the run grows them and replays the block.
        dtype: ``float64`` or ``float32``.
        block: steps per compiled block (between host checks).
    """

    ensemble: str = "nve"
    temperature: float = 300.0
    timestep: float = 1.0
    steps: int = 1000
    pressure: float = 0.0
    tau: float = 100.0
    tau_p: float = 1000.0
    compressibility: float = 0.01
    coupling: str = "isotropic"
    chain_length: int = 3
    seed: int = 0
    initial_velocities: bool = True
    skin: float = 0.5
    capacity_multiplier: float = 1.25
    dtype: str = "float64"
    block: int = 100

    def __post_init__(self):
        if self.ensemble not in ENSEMBLE_NAMES:
            raise ValueError(f"unknown ensemble {self.ensemble!r}; choose one of {sorted(ENSEMBLE_NAMES)}")
        check_coupling(self.coupling)
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {sorted(DTYPE_NAMES)}, got {self.dtype!r}")
        for name in ("steps", "block"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < (0 if name == "steps" else 1):
                raise ValueError(f"{name} must be a {'non-negative' if name == 'steps' else 'positive'} integer")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be >= 0 K, got {self.temperature}")
        if not math.isfinite(self.pressure):
            raise ValueError(f"pressure must be finite, got {self.pressure}")
        for name, unit in (("timestep", "fs"), ("tau", "fs"), ("tau_p", "fs"), ("compressibility", "1/GPa")):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name.replace('_', '-')} must be > 0 {unit}, got {value}")
        if not (math.isfinite(self.skin) and self.skin >= 0):
            raise ValueError(f"skin must be >= 0 Å, got {self.skin}")
        if not (math.isfinite(self.capacity_multiplier) and self.capacity_multiplier >= 1):
            raise ValueError(f"capacity multiplier must be >= 1, got {self.capacity_multiplier}")
        if int(self.chain_length) != self.chain_length or self.chain_length < 1:
            raise ValueError(f"chain length must be a positive integer, got {self.chain_length}")


@dataclass(frozen=True)
class Outputs:
    """Where and how often to write (``None`` paths: not written)."""

    thermo: str | os.PathLike | None = None
    thermo_every: int = 10
    trajectory: str | os.PathLike | None = None
    trajectory_every: int = 100
    restart: str | os.PathLike | None = None
    restart_every: int = 1000

    def __post_init__(self):
        for name in ("thermo_every", "trajectory_every", "restart_every"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name.replace('_', '-')} must be a positive number of steps, got {value}")


@dataclass(frozen=True)
class ExtrapolationChecks:
    """Extrapolation checks of an MD run (n2p2's ``showewsum``/``maxew`` at the
    granularity of ``every`` steps): at every ``every``-th step the symmetry
    functions of the current frame are compared with the model's training range
    (:attr:`mlip.model.Model.feature_range`).

    Attributes:
        every: steps between checks; 0 turns them off.  A check costs one descriptor
            evaluation (no derivatives), so with ``every`` of tens of steps it adds
            well under 1 % to a run.
        max_warnings: stop the run (``ExtrapolationError``, after writing the frame)
            once more than this many symmetry-function values, summed over the
            checked frames, were outside the range (n2p2's ``maxew``); None: never.
        frames: extxyz or ``.traj`` file the extrapolating frames are appended to
            (``info["step"]``, per-atom ``extrapolation_count`` and
            ``extrapolation_excursion`` arrays); None: not written.
    """

    every: int = 0
    max_warnings: int | None = None
    frames: str | os.PathLike | None = None

    def __post_init__(self):
        if int(self.every) != self.every or self.every < 0:
            raise ValueError(f"extrapolation check interval must be a non-negative integer, got {self.every}")
        if self.max_warnings is not None and (int(self.max_warnings) != self.max_warnings or self.max_warnings < 0):
            raise ValueError(f"max extrapolation warnings must be a non-negative integer, got {self.max_warnings}")
        if self.every == 0 and (self.max_warnings is not None or self.frames is not None):
            raise ValueError("max extrapolation warnings and extrapolation frames need checks: give a check "
                             "interval (every > 0)")


@dataclass(frozen=True)
class ModelDeviationChecks:
    """Model deviation of an ensemble model during MD, as DeePMD-kit writes it: every
    ``every`` steps the members' forces, virials and energies of the current frame
    give one row of ``model_devi.out`` (:mod:`mlip.uncertainty`).

    Attributes:
        every: steps between rows; 0 turns the checks off.
        file: the model_devi.out file (DeePMD's columns; appended to on resume); None: not written.
        stop_above: end the run (``ModelDeviationError``, after writing the frame to
            ``dump_file`` if given) once ``max_devi_f`` exceeds this, eV/Å; None: never.
        dump_above: append frames whose ``max_devi_f`` is at least this (eV/Å) to
            ``dump_file`` (candidates for labelling); None: none.
        dump_file: extxyz or ``.traj`` file of those frames (per-atom ``devi_f`` array).
    """

    every: int = 0
    file: str | os.PathLike | None = None
    stop_above: float | None = None
    dump_above: float | None = None
    dump_file: str | os.PathLike | None = None

    def __post_init__(self):
        if int(self.every) != self.every or self.every < 0:
            raise ValueError(f"model deviation interval must be a non-negative integer, got {self.every}")
        for name in ("stop_above", "dump_above"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name.replace('_', '-')} must be a non-negative force deviation in eV/Å, "
                                 f"got {value}")
        if self.every == 0 and (self.file or self.stop_above is not None or self.dump_above is not None):
            raise ValueError("model deviation output, --stop-above and --dump-above need a model deviation "
                             "interval (every > 0)")
        if self.dump_above is not None and self.dump_file is None:
            raise ValueError("dump-above needs a file to append the frames to")
