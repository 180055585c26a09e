"""Options of MD and TI runs are checked before any step, outputs of different
runs never mix, and degenerate systems report defined numbers (issue 20, items 2,
7 and 8)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from mlip.md.driver import run_md
from mlip.md.settings import MDSettings, Outputs
from mlip.ti import frenkel_ladd, model_to_model

SETTINGS = MDSettings(steps=10, block=5, temperature=300.0)


@pytest.mark.parametrize("name", ["thermo_every", "trajectory_every", "restart_every"])
def test_output_intervals_must_be_positive(name):
    with pytest.raises(ValueError, match=f"{name.replace('_', '-')} must be a positive number of steps, got 0"):
        Outputs(**{name: 0})


def test_a_new_run_never_appends_to_an_old_log(si_model, tmp_path):
    atoms = bulk("Si", "diamond", 5.431, cubic=True)
    thermo = tmp_path / "md.csv"
    run_md(si_model, atoms, SETTINGS, Outputs(thermo=thermo, thermo_every=5))
    before = thermo.read_text()
    with pytest.raises(ValueError, match="left from an earlier run and a new run would append to it"):
        run_md(si_model, atoms, SETTINGS, Outputs(thermo=thermo, thermo_every=5))
    with pytest.raises(ValueError, match="--resume found no restart file"):
        run_md(si_model, atoms, SETTINGS, Outputs(thermo=thermo, thermo_every=5, restart=tmp_path / "none.rst"),
               resume=True)
    assert thermo.read_text() == before  # nothing written
    steps = [int(line.split(",")[0]) for line in before.splitlines()[1:]]
    assert steps == [5, 10]


def test_one_atom_and_open_boundaries_report_defined_numbers(si_model):
    lone = Atoms("Si", positions=[[5.0, 5.0, 5.0]], cell=[10.0, 10.0, 10.0], pbc=False)
    result = run_md(si_model, lone, SETTINGS, Outputs(thermo_every=5))
    columns = list(result.columns)
    thermo = result.thermo
    assert np.all(thermo[:, columns.index("temperature_K")] == 0.0)  # no degrees of freedom, not NaN
    assert np.all(np.isnan(thermo[:, columns.index("pressure_GPa")]))  # no periodic cell: no pressure
    assert np.all(np.isnan(thermo[:, columns.index("volume_A3")]))
    assert np.all(np.isfinite(thermo[:, columns.index("potential_eV")]))


@pytest.mark.parametrize("option, value, message", [
    ("temperature", 0.0, "temperature must be > 0 K"),
    ("production", 0, "production must be at least 20 steps"),
    ("n_points", 0, "points (Gauss-Legendre nodes in λ) must be a positive integer"),
    ("timestep", -1.0, "timestep must be > 0 fs"),
])
def test_ti_options_fail_before_any_md(si_model, option, value, message):
    atoms = bulk("Si", "diamond", 5.431, cubic=True)
    options = {"temperature": 300.0, option: value}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        frenkel_ladd(si_model, atoms, **options)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model_to_model(si_model, si_model, atoms, **options)
