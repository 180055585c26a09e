"""Training configuration: TOML file -> frozen dataclasses, every key documented here.

Sections and keys (defaults in the dataclasses below; units in the field comments).
Unknown sections or keys are errors that name the key.  Relative paths are taken
relative to the config file's folder.  ``mlip template train`` prints a commented
default config.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A training configuration is invalid; the message names the key."""


@dataclass(frozen=True)
class DataConfig:
    train: str = ""  # training data file (extxyz, .traj, .db, input.data, ...)
    generate: str = ""  # "si-stillinger-weber": make `train` with mlip.training.generate if it is missing
    validation: str = ""  # separate validation file; empty: split off validation_fraction of `train`
    validation_fraction: float = 0.1  # fraction of `train` held out for validation and model selection
    test: str = ""  # test file, evaluated once at the end, never used for selection
    format: str = ""  # ASE format name; empty: guessed from the file name
    energy_key: str = ""  # info key of the total energy (eV); empty: the file's calculator results
    forces_key: str = ""  # arrays key of the forces (eV/Å)
    stress_key: str = ""  # info key of the stress (eV/Å^3, ASE sign)
    config_type_key: str = "config_type"  # info key of the group name
    seed: int = 0  # seed of the train/validation split


@dataclass(frozen=True)
class ModelSection:
    elements: tuple[str, ...] = ()  # empty: the elements present in the training data
    r_cut: float = 6.0  # cutoff radius, Å
    n_radial: int = 8  # radial (type 2) functions per element pair
    n_angular: int = 4  # angular widths per element triple
    zetas: tuple[float, ...] = (1.0, 4.0)  # angular exponents
    angular_type: int = 9  # 9 (wide) or 3 (narrow)
    r_lower: float = 1.0  # smallest distance the grids resolve, Å
    grid: str = "shifted"  # radial grid: "shifted" or "centered"
    cutoff_type: str = "tanh"  # n2p2 cutoff function name
    hidden_layers: tuple[int, ...] = (25, 25)  # hidden widths of every element network
    activation: str = "tanh"  # tanh, softplus or silu
    r_min: float = 0.0  # shortest accepted distance, Å; 0: 0.85 x the shortest distance in the training data
    scaling: str = "standard"  # feature scaling fitted on the training set: standard or minmax
    seed: int = 0  # weight initialisation (ensemble member k: seed + k)
    ensemble: int = 1  # members trained together in one process (> 1: an ensemble model with uncertainties)
    bootstrap: bool = False  # ensemble: each member fits its own bootstrap resample of the training structures


@dataclass(frozen=True)
class LossConfig:
    kind: str = "mse"  # mse or huber
    huber_delta: float = 0.01  # Huber threshold (eV/atom, eV/Å)
    # weights: a number, or [start, end] varied linearly over the epochs
    energy_weight: float | tuple[float, float] = 1.0  # per-atom energy term
    forces_weight: float | tuple[float, float] = 1.0  # force-component term
    stress_weight: float | tuple[float, float] = 0.1  # virial-per-atom term (0 ignores stress)
    config_type_weights: dict = field(default_factory=dict)  # {config_type: multiplier}


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"  # adam or adamw
    learning_rate: float = 3e-3  # peak learning rate
    schedule: str = "cosine"  # cosine (warm-up, then cosine decay), plateau (reduce on plateau) or constant
    warmup_epochs: int = 5  # linear warm-up
    final_lr_fraction: float = 0.01  # cosine: final / peak learning rate
    plateau_patience: int = 20  # plateau: epochs without improvement before reducing
    plateau_factor: float = 0.5  # plateau: reduction factor
    weight_decay: float = 0.0  # adamw decoupled weight decay
    clip_norm: float = 10.0  # global gradient-norm clipping (0: off)
    ema_decay: float = 0.0  # exponential moving average of weights (0: off; e.g. 0.99)


@dataclass(frozen=True)
class TrainingSection:
    epochs: int = 300
    batch_atoms: int = 512  # atoms per batch (structures are padded to shape buckets)
    dtype: str = "float32"  # float32 or float64
    seed: int = 0  # data order
    patience: int = 0  # early stopping: epochs without validation improvement (0: off)
    refit_offsets: bool = True  # least-squares refit of per-element energy offsets after training
    keep: str = "best"  # model written as output: "best" (lowest validation loss) or "last" epoch


@dataclass(frozen=True)
class TransferConfig:
    init_model: str = ""  # start from this model file (its descriptors and scaling are kept)
    freeze: tuple[str, ...] = ()  # groups kept bit-identical: hidden, output, networks, reference_energies
    offsets_only: bool = False  # closed-form least-squares refit of the energy offsets, no gradient training
    element_map: dict = field(default_factory=dict)  # rename the start model's elements, e.g. {Si = "Ge"}


@dataclass(frozen=True)
class EOSConfig:
    """Equation-of-state penalty for one reference crystal: ``w_P (P(V0) V0/N)^2 +
    w_B ((B(V0) - B0) V0/N)^2`` (both in (eV/atom)^2), P and B by autodiff through
    the model along isotropic strain."""

    element: str = ""  # e.g. "Si"
    crystal: str = "diamond"  # ase.build.bulk crystal structure
    v0: float = 0.0  # target volume per atom, Å^3 (0: derived from the data, see from_config_type)
    b0: float = 0.0  # target bulk modulus, GPa (0: derived from the data)
    from_config_type: str = ""  # derive V0, B0 from P(V) of these structures' stresses
    max_volume_strain: float = 0.05  # only structures with |ln(V/V_median)| below this enter the fit
    pressure_weight: float = 1.0
    bulk_modulus_weight: float = 0.1


@dataclass(frozen=True)
class OutputConfig:
    directory: str = "run"  # model, checkpoints, metrics, plots, log
    model_name: str = "model.mlip"
    plots: bool = True
    progress: bool = True  # progress bar


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = DataConfig()
    model: ModelSection = ModelSection()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    training: TrainingSection = TrainingSection()
    transfer: TransferConfig = TransferConfig()
    eos: tuple[EOSConfig, ...] = ()
    output: OutputConfig = OutputConfig()
    base_dir: str = "."  # folder relative paths refer to (the config file's)

    def path(self, value: str) -> Path:
        """``value`` resolved against :attr:`base_dir` (empty stays empty)."""
        if not value:
            return Path("")
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else Path(self.base_dir) / p


_SECTIONS = {"data": DataConfig, "model": ModelSection, "loss": LossConfig, "optimizer": OptimizerConfig,
             "training": TrainingSection, "transfer": TransferConfig, "output": OutputConfig}


def _coerce(name: str, value: Any, default: Any):
    if isinstance(default, dict) and not isinstance(value, dict):
        raise ConfigError(f"{name} must be a table, got {value!r}")
    if isinstance(value, bool) and not isinstance(default, bool):
        raise ConfigError(f"{name} must be of type {type(default).__name__}, got {value!r}")
    if isinstance(default, tuple) or isinstance(value, list):
        if not isinstance(value, (list, tuple)):
            if isinstance(default, tuple):
                raise ConfigError(f"{name} must be a list, got {value!r}")
            return value
        return tuple(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if default is not None and not isinstance(value, type(default)) and not isinstance(default, dict):
        raise ConfigError(f"{name} must be of type {type(default).__name__}, got {value!r}")
    return value


def section_from_table(cls, values: dict, name: str):
    """The frozen dataclass ``cls`` from the TOML table ``values`` of section ``name``:
    unknown keys and values of the wrong type are errors naming the key."""
    if not isinstance(values, dict):
        raise ConfigError(f"[{name}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in [{name}]; known keys: {sorted(fields)}")
    defaults = cls()
    kwargs = {key: _coerce(f"{name}.{key}", value, getattr(defaults, key)) for key, value in values.items()}
    return cls(**kwargs)


def config_from_dict(data: dict, base_dir: str | os.PathLike = ".") -> TrainConfig:
    """Build a :class:`TrainConfig` from a parsed TOML dict; unknown keys are errors."""
    unknown = sorted(set(data) - set(_SECTIONS) - {"eos"})
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; known: {sorted(set(_SECTIONS) | {'eos'})}")
    sections = {name: section_from_table(cls, data.get(name, {}), name) for name, cls in _SECTIONS.items()}
    eos = data.get("eos", [])
    if isinstance(eos, dict):
        eos = [eos]
    sections["eos"] = tuple(section_from_table(EOSConfig, entry, f"eos[{n}]") for n, entry in enumerate(eos))
    config = TrainConfig(**sections, base_dir=str(base_dir))
    check_config(config)
    return config


def read_toml(path: str | os.PathLike) -> dict:
    """The parsed TOML file ``path``; ``ConfigError`` naming the file if it cannot be
    read or parsed."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from error


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a TOML training configuration."""
    return config_from_dict(read_toml(path), base_dir=Path(path).parent)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}, got {value!r}")


def check_config(config: TrainConfig) -> None:
    """Range and choice checks that need no data."""
    if not config.data.train:
        raise ConfigError("data.train is required (a training data file)")
    _choice("data.generate", config.data.generate, ("", "si-stillinger-weber"))
    _choice("loss.kind", config.loss.kind, ("mse", "huber"))
    _choice("optimizer.name", config.optimizer.name, ("adam", "adamw"))
    _choice("optimizer.schedule", config.optimizer.schedule, ("cosine", "plateau", "constant"))
    _choice("training.dtype", config.training.dtype, ("float32", "float64"))
    _choice("model.scaling", config.model.scaling, ("standard", "minmax"))
    _choice("training.keep", config.training.keep, ("best", "last"))
    if config.model.ensemble < 1:
        raise ConfigError(f"model.ensemble must be >= 1 (the number of members), got {config.model.ensemble}")
    if config.model.bootstrap and config.model.ensemble == 1:
        raise ConfigError("model.bootstrap needs model.ensemble >= 2 (it resamples the data per member)")
    for group in config.transfer.freeze:
        _choice("transfer.freeze entry", group, FREEZE_GROUPS)
    if config.training.epochs < 0 or config.training.batch_atoms < 1:
        raise ConfigError("training.epochs must be >= 0 and training.batch_atoms >= 1")
    if config.optimizer.learning_rate <= 0:
        raise ConfigError("optimizer.learning_rate must be positive")
    if not 0.0 <= config.optimizer.ema_decay < 1.0:
        raise ConfigError("optimizer.ema_decay must be in [0, 1)")
    for name in ("energy_weight", "forces_weight", "stress_weight"):
        value = getattr(config.loss, name)
        values = value if isinstance(value, tuple) else (value,)
        if len(values) not in (1, 2) or any(not isinstance(v, (int, float)) or v < 0 for v in values):
            raise ConfigError(f"loss.{name} must be a number >= 0 or [start, end], got {value!r}")
    for n, eos in enumerate(config.eos):
        if not eos.element:
            raise ConfigError(f"eos[{n}].element is required")
        if (eos.v0 <= 0 or eos.b0 <= 0) and not eos.from_config_type:
            raise ConfigError(f"eos[{n}]: give v0 and b0, or from_config_type to derive them from the data")
    _check_numbers(config)


def _number(name: str, value, low: float | None = None, high: float | None = None, *, integer: bool = False,
            low_open: bool = False, high_open: bool = False) -> None:
    """``ConfigError`` naming ``name`` unless ``value`` is a finite number (an integer
    with ``integer``) in the range ``low .. high`` (``*_open``: the end excluded)."""
    import math

    kind = "an integer" if integer else "a finite number"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (not integer or float(value).is_integer())
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        bounds = [f"{'>' if low_open else '>='} {low:g}" if low is not None else "",
                  f"{'<' if high_open else '<='} {high:g}" if high is not None else ""]
        where = " and ".join(b for b in bounds if b)
        raise ConfigError(f"{name} must be {kind}{' ' + where if where else ''}, got {value!r}")


def _check_numbers(config: TrainConfig) -> None:
    """Every numeric option finite and in range, named (issue 20: nan and inf
    learning rates, negative warm-ups)."""
    d, m, loss, o, t = config.data, config.model, config.loss, config.optimizer, config.training
    _number("data.validation_fraction", d.validation_fraction, 0.0, 1.0, high_open=True)
    _number("data.seed", d.seed, 0, integer=True)
    _number("model.r_cut", m.r_cut, 0.0, low_open=True)
    _number("model.n_radial", m.n_radial, 1, integer=True)
    _number("model.n_angular", m.n_angular, 0, integer=True)
    for zeta in m.zetas:
        _number("model.zetas entry", zeta, 0.0, low_open=True)
    if m.angular_type not in (3, 9):
        raise ConfigError(f"model.angular_type must be 9 (wide) or 3 (narrow), got {m.angular_type!r}")
    _number("model.r_lower", m.r_lower, 0.0, m.r_cut, low_open=True, high_open=True)
    _choice("model.grid", m.grid, ("shifted", "centered"))
    for width in m.hidden_layers:
        _number("model.hidden_layers entry", width, 1, integer=True)
    _number("model.r_min", m.r_min, 0.0, m.r_cut, high_open=True)
    _number("model.seed", m.seed, 0, integer=True)
    _number("loss.huber_delta", loss.huber_delta, 0.0, low_open=True)
    for name in ("energy_weight", "forces_weight", "stress_weight"):
        value = getattr(loss, name)
        for v in value if isinstance(value, tuple) else (value,):
            _number(f"loss.{name}", v, 0.0)
    for group, weight in loss.config_type_weights.items():
        _number(f"loss.config_type_weights.{group}", weight, 0.0)
    _number("optimizer.learning_rate", o.learning_rate, 0.0, low_open=True)
    _number("optimizer.warmup_epochs", o.warmup_epochs, 0, integer=True)
    _number("optimizer.final_lr_fraction", o.final_lr_fraction, 0.0, 1.0)
    _number("optimizer.plateau_patience", o.plateau_patience, 1, integer=True)
    _number("optimizer.plateau_factor", o.plateau_factor, 0.0, 1.0, low_open=True, high_open=True)
    _number("optimizer.weight_decay", o.weight_decay, 0.0)
    _number("optimizer.clip_norm", o.clip_norm, 0.0)
    _number("optimizer.ema_decay", o.ema_decay, 0.0, 1.0, high_open=True)
    _number("training.epochs", t.epochs, 0, integer=True)
    _number("training.batch_atoms", t.batch_atoms, 1, integer=True)
    _number("training.seed", t.seed, 0, integer=True)
    _number("training.patience", t.patience, 0, integer=True)
    for n, eos in enumerate(config.eos):
        for key in ("v0", "b0", "pressure_weight", "bulk_modulus_weight"):
            _number(f"eos[{n}].{key}", getattr(eos, key), 0.0)
        _number(f"eos[{n}].max_volume_strain", eos.max_volume_strain, 0.0, low_open=True)


FREEZE_GROUPS = ("hidden", "output", "networks", "reference_energies")


def weight_at(value: float | tuple[float, float], epoch: int, epochs: int) -> float:
    """A loss weight at ``epoch`` (0-based): constant, or linear from start to end."""
    if isinstance(value, tuple):
        start, end = value
        fraction = epoch / max(epochs - 1, 1)
        return float(start + (end - start) * fraction)
    return float(value)


def template() -> str:
    """A commented TOML config with every key at its default."""
    lines = ["# mlip training configuration; every key shown at its default.", ""]
    for section, cls in list(_SECTIONS.items()):
        lines += _describe(section, cls, "[{}]")
    lines += ["# any number of equation-of-state penalties:"]
    lines += ["# " + line if line else "" for line in _describe("eos", EOSConfig, "[[{}]]")]
    return "\n".join(lines)


def _describe(section: str, cls, header: str) -> list[str]:
    import inspect
    import re

    source = inspect.getsource(cls)
    comments = dict(re.findall(r"^\s+(\w+):[^=\n]*=[^#\n]*#\s*(.*)$", source, flags=re.M))
    lines = [header.format(section)]
    defaults = cls()
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        comment = f"  # {comments[f.name]}" if f.name in comments else ""
        lines.append(f"{f.name} = {_toml_value(value)}{comment}")
    return lines + [""]


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}"
    return repr(value)
