"""``mlip learn`` configuration: a TOML file with the training configuration as its
``[train]`` table (every key of ``mlip train``'s config) and the loop's own sections.

Example (units: K, fs, eV/Å)::

    [train]                      # an mlip train config; data.train is set by the loop
    model = {r_cut = 4.0, ensemble = 4, hidden_layers = [16]}
    training = {epochs = 100}

    [learn]
    initial = "seed.extxyz"      # labelled starting structures
    directory = "learn"          # data set, models, state, table, plot
    iterations = 5
    test = ""                    # optional labelled test set (reported, never trained on)

    [oracle]
    calculator = "mlip.training.generate:stillinger_weber_si"   # module:callable -> ASE calculator
    kwargs = {}

    [explore]
    structures = ["start.extxyz"]  # every frame of every file is a starting point
    temperatures = [300.0, 900.0]
    steps = 500
    every = 25                     # frames checked (model deviation) every this many steps
    timestep = 1.0

    [select]
    trust_lo = 0.05                # max_devi_f below: accurate
    trust_hi = 0.35                # at or above: failed (too far off to label usefully)
    max_per_iteration = 10         # farthest-point selection in descriptor space

    [stop]
    accurate_fraction = 0.95       # stop once this fraction of explored frames is accurate
    max_labels = 200               # label budget
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from mlip.training.config import ConfigError, TrainConfig, config_from_dict, read_toml, section_from_table


@dataclass(frozen=True)
class LoopSection:
    initial: str = ""  # labelled starting structures (any file ASE reads)
    directory: str = "learn"  # where the data set, models, state and report go
    iterations: int = 5  # at most this many train -> explore -> select -> label rounds
    test: str = ""  # labelled test set, evaluated after every training, never trained on


@dataclass(frozen=True)
class OracleSection:
    calculator: str = ""  # "module:callable" returning an ASE calculator (the labels)
    kwargs: dict = field(default_factory=dict)  # keyword arguments of the callable


@dataclass(frozen=True)
class ExploreSection:
    structures: tuple[str, ...] = ()  # files of starting structures (every frame)
    temperatures: tuple[float, ...] = (300.0,)  # Langevin MD temperatures, K
    steps: int = 500  # MD steps per structure and temperature
    every: int = 25  # steps between checked frames
    timestep: float = 1.0  # fs


@dataclass(frozen=True)
class SelectSection:
    trust_lo: float = 0.05  # eV/Å: frames with max_devi_f below are accurate
    trust_hi: float = 0.35  # eV/Å: frames at or above are failed; between: candidates
    max_per_iteration: int = 10  # candidates labelled per iteration (farthest-point selection)


@dataclass(frozen=True)
class StopSection:
    accurate_fraction: float = 0.95  # stop when at least this fraction of explored frames is accurate
    max_labels: int = 200  # stop when this many structures were labelled by the oracle


@dataclass(frozen=True)
class LearnConfig:
    train: TrainConfig
    learn: LoopSection = LoopSection()
    oracle: OracleSection = OracleSection()
    explore: ExploreSection = ExploreSection()
    select: SelectSection = SelectSection()
    stop: StopSection = StopSection()
    base_dir: str = "."

    def path(self, value: str) -> Path:
        """``value`` resolved against the config file's folder."""
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else Path(self.base_dir) / p


_SECTIONS = {"learn": LoopSection, "oracle": OracleSection, "explore": ExploreSection, "select": SelectSection,
             "stop": StopSection}


def learn_config_from_dict(data: dict, base_dir: str | os.PathLike = ".") -> LearnConfig:
    """A :class:`LearnConfig` from a parsed TOML dict; unknown keys and bad values are
    errors naming the option."""
    unknown = sorted(set(data) - set(_SECTIONS) - {"train"})
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; known: {sorted(set(_SECTIONS) | {'train'})}")
    sections = {name: section_from_table(cls, data.get(name, {}), name) for name, cls in _SECTIONS.items()}
    table = dict(data.get("train", {}))
    if not isinstance(table.get("data", {}), dict):
        raise ConfigError("[train.data] must be a table")
    if table.get("data", {}).get("train"):
        raise ConfigError("train.data.train is set by the loop (learn.directory/data.extxyz): leave it out")
    # the loop trains on its own data set
    table["data"] = {**table.get("data", {}), "train": str(Path(sections["learn"].directory) / "data.extxyz")}
    train = config_from_dict(table, base_dir=base_dir)
    config = LearnConfig(train, **sections, base_dir=str(base_dir))
    check_learn_config(config)
    return config


def check_learn_config(config: LearnConfig) -> None:
    """``ConfigError`` naming the first invalid option."""
    s, e, o = config.select, config.explore, config.oracle
    if config.train.model.ensemble < 2:
        raise ConfigError("train.model.ensemble must be >= 2: active learning selects frames by the ensemble's "
                          "force deviation")
    if not config.learn.initial:
        raise ConfigError("learn.initial must name a file of labelled starting structures")
    if not o.calculator or ":" not in o.calculator:
        raise ConfigError(f"oracle.calculator must be 'module:callable' returning an ASE calculator, "
                          f"got {o.calculator!r}")
    if not e.structures:
        raise ConfigError("explore.structures is empty: give at least one file of starting structures")
    if not e.temperatures or any(not (math.isfinite(t) and t > 0) for t in e.temperatures):
        raise ConfigError(f"explore.temperatures must be positive (K), got {list(e.temperatures)}")
    for name in ("steps", "every"):
        if getattr(e, name) < 1:
            raise ConfigError(f"explore.{name} must be >= 1, got {getattr(e, name)}")
    if e.steps % e.every:
        raise ConfigError(f"explore.steps ({e.steps}) must be a multiple of explore.every ({e.every})")
    if not (math.isfinite(e.timestep) and e.timestep > 0):
        raise ConfigError(f"explore.timestep must be positive (fs), got {e.timestep}")
    if not (0 <= s.trust_lo < s.trust_hi) or not math.isfinite(s.trust_hi):
        raise ConfigError(f"select.trust_lo ({s.trust_lo}) must be >= 0 and below select.trust_hi ({s.trust_hi}), "
                          "both in eV/Å")
    if s.max_per_iteration < 1:
        raise ConfigError(f"select.max_per_iteration must be >= 1, got {s.max_per_iteration}")
    if config.learn.iterations < 1:
        raise ConfigError(f"learn.iterations must be >= 1, got {config.learn.iterations}")
    if not 0 < config.stop.accurate_fraction <= 1:
        raise ConfigError(f"stop.accurate_fraction must be in (0, 1], got {config.stop.accurate_fraction}")
    if config.stop.max_labels < 1:
        raise ConfigError(f"stop.max_labels must be >= 1, got {config.stop.max_labels}")


def load_learn_config(path: str | os.PathLike) -> LearnConfig:
    """Read an ``mlip learn`` TOML configuration."""
    return learn_config_from_dict(read_toml(path), base_dir=Path(path).parent)
