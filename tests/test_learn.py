"""``mlip learn``: the active-learning loop on Stillinger-Weber Si, tiny and fast.

References: the oracle's own labels (recomputed), an uninterrupted loop (for the
resumed one after SIGKILL), the configuration rules of the issue."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write

from mlip.learn import learn, load_learn_config
from mlip.learn.config import learn_config_from_dict
from mlip.learn.selection import classify, farthest_points
from mlip.training.config import ConfigError
from mlip.training.generate import label, stillinger_weber_si

TESTS = Path(__file__).parent

CONFIG = """
[train]
data = {{validation_fraction = 0.25}}
model = {{r_cut = 4.0, n_radial = 4, n_angular = 2, hidden_layers = [8], ensemble = 2}}
training = {{epochs = 15, batch_atoms = 32, dtype = "float32"}}
output = {{progress = false}}
[learn]
initial = "seed.extxyz"
directory = "run"
iterations = 2
[oracle]
calculator = "{oracle}"
kwargs = {kwargs}
[explore]
structures = ["start.extxyz"]
temperatures = [600.0]
steps = 20
every = 5
[select]
trust_lo = 0.0
trust_hi = 100.0
max_per_iteration = 2
"""


def _setup(folder: Path, oracle: str = "mlip.training.generate:stillinger_weber_si", kwargs: str = "{}") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    seeds = []
    for _ in range(4):
        atoms = bulk("Si", "diamond", a=5.431, cubic=True)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))), scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        seeds.append(atoms)
    write(folder / "seed.extxyz", label(seeds, stillinger_weber_si()))
    write(folder / "start.extxyz", bulk("Si", "diamond", a=5.431, cubic=True))
    path = folder / "learn.toml"
    path.write_text(CONFIG.format(oracle=oracle, kwargs=kwargs))
    return path


def _run(config: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent), *sys.path]))
    return subprocess.run([sys.executable, "-m", "mlip.cli", "learn", str(config), *args], capture_output=True,
                          text=True, cwd=config.parent, env=env, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    config = _setup(tmp_path_factory.mktemp("learn"))
    records = learn(load_learn_config(config), log=lambda line: None)
    return config, records


def test_loop_grows_the_data_set_with_oracle_labels(uninterrupted):
    config, records = uninterrupted
    run = config.parent / "run"
    data = read(run / "data.extxyz", index=":")
    assert [r.labels for r in records] == [6, 8] and [r.new_labels for r in records] == [2, 2]
    # the test error of iteration k is that of a model trained before its labels: the report says on how many
    assert [r.trained_on for r in records] == [4, 6]
    report = (run / "report.csv").read_text().splitlines()
    assert [row.split(",")[report[0].split(",").index("trained_on")] for row in report[1:]] == ["4", "6"]
    ids = [a.info["learn_id"] for a in data]
    assert len(set(ids)) == len(ids) and sum(i.startswith("initial") for i in ids) == 4
    for atoms in data[4:]:  # the labels are the oracle's
        reference = atoms.copy()
        reference.calc = stillinger_weber_si()
        assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=1e-6)
    assert (run / "report.csv").read_text().count("\n") == 3 and (run / "learning.png").stat().st_size > 0
    assert all(r.explored == 4 and r.candidates == 1.0 for r in records)


def test_resume_after_sigkill_while_labelling_gives_the_same_data_set(uninterrupted, tmp_path):
    reference = read(uninterrupted[0].parent / "run" / "data.extxyz", index=":")
    counter = tmp_path / "labels.txt"
    config = _setup(tmp_path, "learn_oracles:killing_stillinger_weber", f'{{counter = "{counter}", kill_at = 3}}')
    killed = _run(config)
    assert killed.returncode == -9, killed.stderr[-2000:]  # killed at the third label (iteration 1)
    assert len(read(tmp_path / "run" / "data.extxyz", index=":")) == 6  # finished labels kept
    again = _run(config)
    assert again.returncode == 1 and "--resume" in again.stderr  # a plain re-run refuses to mix outputs
    resumed = _run(config, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    data = read(tmp_path / "run" / "data.extxyz", index=":")
    assert [a.info["learn_id"] for a in data] == [a.info["learn_id"] for a in reference]
    for a, b in zip(data, reference):
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.get_potential_energy() == b.get_potential_energy()
    assert int(counter.read_text()) == 4 + 1  # 4 labels in all, the killed one asked again once


@pytest.mark.parametrize("oracle", ["learn_oracles:nan_energies", "learn_oracles:raising"])
def test_failed_labels_are_marked_and_the_loop_goes_on(tmp_path, oracle):
    sys.path.insert(0, str(TESTS))
    config = load_learn_config(_setup(tmp_path, oracle))
    records = learn(config, log=lambda line: None)
    assert [r.failed_labels for r in records] == [2, 2] and [r.new_labels for r in records] == [0, 0]
    assert len(read(tmp_path / "run" / "data.extxyz", index=":")) == 4


def test_bad_options_name_the_option(tmp_path):
    import tomllib

    base = tomllib.loads(CONFIG.format(oracle="mlip.training.generate:stillinger_weber_si", kwargs="{}"))
    cases = [
        ("select", "trust_lo", 0.5, "select.trust_lo (0.5) must be >= 0 and below select.trust_hi"),
        ("select", "trust_lo", -0.1, "select.trust_lo (-0.1) must be >= 0"),
        ("explore", "structures", [], "explore.structures is empty"),
        ("explore", "every", 3, "must be a multiple of explore.every"),
        ("oracle", "calculator", "nonsense", "oracle.calculator must be 'module:callable'"),
        ("select", "bogus", 1, "unknown key(s) ['bogus'] in [select]"),
    ]
    for section, key, value, message in cases:
        data = {name: dict(table) for name, table in base.items()}
        data[section][key] = value
        if key == "trust_lo" and value == 0.5:
            data["select"]["trust_hi"] = 0.4
        with pytest.raises(ConfigError, match=re.escape(message)):
            learn_config_from_dict(data, base_dir=tmp_path)
    single = {name: dict(table) for name, table in base.items()}
    single["train"]["model"] = {**single["train"]["model"], "ensemble": 1}
    with pytest.raises(ConfigError, match="train.model.ensemble must be >= 2"):
        learn_config_from_dict(single, base_dir=tmp_path)


def test_selection_rules():
    np.testing.assert_array_equal(classify([0.01, 0.05, 0.2, 0.35, 1.0], 0.05, 0.35),
                                  ["accurate", "candidate", "candidate", "failed", "failed"])
    points = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    # farthest-point order from point 0: the opposite corner, then the two others
    assert farthest_points(points, 3, first=0) == [0, 4, 2]  # 2 and 3 tie: the first wins
    assert farthest_points(np.ones((4, 2)), 3) == [0]  # duplicates add nothing
