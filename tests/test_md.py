"""Compiled MD driver: NVE against ASE's VelocityVerlet, energy conservation (dt^2),
thermostat temperatures, NPT pressure, overflow replay, restart, bad input.

The potential is a random-feature fit to Stillinger-Weber Si (stable diamond
minimum); systems are 64-atom diamond cells so that each run takes seconds."""

from __future__ import annotations

import csv
import dataclasses

import jax
import numpy as np
import pytest
from scipy.stats import kstest
from ase import units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

from mlip.calculator import MLIPCalculator
from mlip.md import MDSettings, Outputs, run_md
from mlip.md.driver import Simulation, maxwell_boltzmann_momenta
from mlip.md.system import MDSystem


def diamond(rattle: float = 0.03, seed: int = 1, temperature: float = 300.0):
    atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat(2)
    atoms.rattle(rattle, seed=seed)
    atoms.set_momenta(maxwell_boltzmann_momenta(atoms.get_masses(), temperature, seed))
    return atoms


def test_maxwell_boltzmann_momenta_have_zero_total_and_exact_temperature():
    masses = np.random.default_rng(0).uniform(1.0, 60.0, 50)
    p = maxwell_boltzmann_momenta(masses, 500.0, 3)
    np.testing.assert_allclose(p.sum(axis=0), 0.0, atol=1e-10)
    kinetic = 0.5 * np.sum(p**2 / masses[:, None])
    assert kinetic == pytest.approx(0.5 * (3 * 50 - 3) * units.kB * 500.0, rel=1e-12)


def test_nve_equals_ase_velocity_verlet_over_100_steps(si_model):
    atoms = diamond()
    result = run_md(si_model, atoms, MDSettings("nve", timestep=1.0, steps=100, block=50))
    reference = atoms.copy()
    reference.calc = MLIPCalculator(si_model, skin=0.3)
    VelocityVerlet(reference, timestep=1.0 * units.fs).run(100)
    np.testing.assert_allclose(result.atoms.positions, reference.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.atoms.get_momenta(), reference.get_momenta(), rtol=0, atol=1e-9)
    assert result.atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-9)


def test_nve_energy_error_scales_as_timestep_squared(si_model):
    """Velocity Verlet's total-energy fluctuation is O(dt^2): halving dt quarters it."""
    atoms = diamond(temperature=600.0)
    spread = {}
    for dt in (2.0, 1.0):
        steps = int(400 / dt)
        result = run_md(si_model, atoms, MDSettings("nve", timestep=dt, steps=steps, block=50),  # block as above:
                        Outputs(thermo_every=1))  # 1 fs shares the compiled steps of the previous test
        time_ps, total = result.thermo[:, 1], result.thermo[:, 5]
        spread[dt] = np.std(total)
        drift = np.polyfit(time_ps, total, 1)[0] / len(atoms)
        assert abs(drift) < 2e-5, (dt, drift)  # eV/atom/ps; measured 1.8e-6 (2 fs), 6.6e-7 (1 fs)
    assert 3.5 < spread[2.0] / spread[1.0] < 4.5, spread  # measured 4.02


def test_langevin_and_nose_hoover_sample_the_target_temperature(si_model):
    """Mean temperature within 5 % (about 4 standard errors for 64 atoms over 3 ps),
    the kinetic-energy variance of the canonical ensemble, (3N/2) (kT)^2, within 30 %,
    and Maxwell-Boltzmann momentum components (Kolmogorov-Smirnov)."""
    target = 500.0
    for ensemble in ("langevin", "nose-hoover"):
        result = run_md(si_model, diamond(temperature=target),
                        MDSettings(ensemble, temperature=target, timestep=2.0, steps=1500, tau=50.0, block=500,
                                   seed=4), Outputs(thermo_every=1))
        temperature = result.thermo[250:, 2]
        kinetic = result.thermo[250:, 4]
        assert abs(temperature.mean() - target) < 0.05 * target, (ensemble, temperature.mean())
        expected_variance = 1.5 * 64 * (units.kB * target) ** 2
        assert kinetic.var() == pytest.approx(expected_variance, rel=0.3), ensemble
        conserved = result.thermo[:, 6]
        assert np.ptp(conserved) / 64 < 2e-3, (ensemble, np.ptp(conserved))  # eV/atom
        # the final momentum components, scaled by sqrt(m kT), are standard normal (Maxwell-Boltzmann)
        scaled = result.atoms.get_momenta() / np.sqrt(result.atoms.get_masses() * units.kB * target)[:, None]
        assert kstest(scaled.ravel(), "norm").pvalue > 1e-3, ensemble


def test_npt_mean_pressure_equals_target(si_model):
    target_gpa = 2.0
    result = run_md(si_model, diamond(temperature=300.0),
                    MDSettings("npt", temperature=300.0, pressure=target_gpa, timestep=2.0, steps=2000, tau=50.0,
                               tau_p=200.0, block=500, seed=2), Outputs(thermo_every=1))
    pressure, volume = result.thermo[500:, 7], result.thermo[500:, 8]
    assert abs(pressure.mean() - target_gpa) < 0.4, pressure.mean()
    assert volume.mean() < 0.99 * diamond().get_volume()  # compressed by 2 GPa
    conserved = result.thermo[:, 6]  # effective energy E_total + P0 V + heat
    assert np.ptp(conserved) / 64 < 2e-3, np.ptp(conserved)  # eV/atom


def _column(result, name):
    return result.thermo[:, result.columns.index(name)]


def test_triclinic_npt_relaxes_a_sheared_cell_to_zero_stress(si_model):
    """A cubic cell sheared by 5 % (tilt h_yx = 0.55 Å) starts with a shear pressure of
    several GPa; triclinic cell rescaling removes the tilt, every pressure-tensor
    component averages to the (zero) target and the effective energy is conserved."""
    atoms = diamond(temperature=300.0)
    cell = atoms.cell.array.copy()
    cell[1, 0] += 0.55
    atoms.set_cell(cell, scale_atoms=True)
    result = run_md(si_model, atoms, MDSettings("npt", temperature=300.0, pressure=0.0, timestep=2.0, steps=2000,
                                                tau=50.0, tau_p=200.0, block=500, seed=3, coupling="triclinic"),
                    Outputs(thermo_every=1))
    assert abs(_column(result, "pxy_GPa")[0]) > 4.0  # the starting shear stress (measured -5.7 GPa)
    # 2 ps of 64 atoms: each component's mean has a statistical error of about 0.3 GPa
    # (over 40 ps, benchmarks/validate_npt.py --coupling triclinic, |means| <= 0.26 GPa)
    assert abs(_column(result, "pressure_GPa")[1000:].mean()) < 0.5
    for name in ("pxx_GPa", "pyy_GPa", "pzz_GPa", "pyz_GPa", "pxz_GPa", "pxy_GPa"):
        assert abs(_column(result, name)[1000:].mean()) < 0.8, name
    final = result.atoms.cell.array
    assert abs(final[1, 0]) < 0.2 and np.all(final[[0, 0, 1], [1, 2, 2]] == 0.0)  # still ASE's standard form
    assert np.ptp(_column(result, "conserved_eV")) / 64 < 2e-3


def test_anisotropic_npt_equalises_box_lengths_and_keeps_right_angles(si_model):
    atoms = diamond(temperature=300.0)
    atoms.set_cell(atoms.cell.array * [1.04, 1.0, 1.0], scale_atoms=True)
    result = run_md(si_model, atoms, MDSettings("npt", temperature=300.0, pressure=0.0, timestep=2.0, steps=1000,
                                                tau=50.0, tau_p=200.0, block=500, seed=3, coupling="anisotropic"),
                    Outputs(thermo_every=1))
    lengths = result.atoms.cell.lengths()
    assert np.ptp(lengths) / lengths.mean() < 0.01, lengths  # started 4 % apart
    np.testing.assert_array_equal(result.atoms.cell.angles(), 90.0)


def test_triclinic_npt_needs_the_standard_cell_form(si_model):
    atoms = diamond()
    atoms.set_cell(atoms.cell.array[[1, 0, 2]], scale_atoms=False)  # a along y
    with pytest.raises(ValueError, match="standard form"):
        run_md(si_model, atoms, MDSettings("npt", steps=10, coupling="triclinic"))


def test_overflow_is_replayed_and_equals_a_run_with_roomy_buffers(si_model):
    """A cell expanded to a = 5.8 Å contracts under NPT at 0 GPa to a = 5.41 Å: the
    third neighbour shell (4.81 -> 4.49 Å) enters the 4.5 Å list, so exact-size
    buffers overflow; the replayed blocks give the same trajectory as buffers that
    never overflow."""
    atoms = bulk("Si", "diamond", a=5.8, cubic=True).repeat(2)
    atoms.rattle(0.03, seed=1)
    atoms.set_momenta(maxwell_boltzmann_momenta(atoms.get_masses(), 300.0, 1))
    settings = dict(ensemble="npt", temperature=300.0, pressure=0.0, timestep=2.0, steps=300, tau=50.0,
                    tau_p=100.0, compressibility=0.02, block=50, seed=1)
    tight = run_md(si_model, atoms, MDSettings(**settings, capacity_multiplier=1.0), Outputs(thermo_every=1))
    roomy = run_md(si_model, atoms, MDSettings(**settings, capacity_multiplier=3.0), Outputs(thermo_every=1))
    assert tight.replays >= 1 and roomy.replays == 0
    assert tight.atoms.get_volume() < 0.85 * atoms.get_volume()
    np.testing.assert_allclose(tight.thermo, roomy.thermo, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(tight.atoms.positions, roomy.atoms.positions, rtol=0, atol=1e-10)


def test_resumed_run_equals_uninterrupted_run_and_drops_later_output(si_model, tmp_path):
    settings = MDSettings("langevin", temperature=400.0, timestep=1.0, steps=200, tau=50.0, block=50, seed=5)
    whole = run_md(si_model, diamond(), settings, Outputs(thermo_every=10))
    outputs = Outputs(thermo=tmp_path / "thermo.csv", thermo_every=10, trajectory=tmp_path / "md.extxyz",
                      trajectory_every=50, restart=tmp_path / "md.restart", restart_every=100)
    def upto(steps):
        return MDSettings(**{**settings.__dict__, "steps": steps})

    run_md(si_model, diamond(), upto(100), outputs)
    at_100 = (tmp_path / "md.restart").read_bytes()
    run_md(si_model, diamond(), upto(150), outputs, resume=True)
    # killed after the step-150 output but before its restart file landed
    (tmp_path / "md.restart").write_bytes(at_100)
    resumed = run_md(si_model, diamond(), settings, outputs, resume=True)
    assert resumed.steps == 100
    np.testing.assert_allclose(resumed.atoms.positions, whole.atoms.positions, rtol=0, atol=1e-12)
    with open(tmp_path / "thermo.csv") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    assert steps == list(range(10, 201, 10))
    from ase.io import read

    frames = read(tmp_path / "md.extxyz", index=":")
    assert [f.info["step"] for f in frames] == [50, 100, 150, 200]
    np.testing.assert_allclose(frames[-1].positions, whole.atoms.positions, atol=1e-6)
    assert frames[-1].get_forces().shape == (64, 3) and frames[-1].get_stress().shape == (6,)


def test_atoms_driven_together_stop_the_run_naming_them(si_model):
    atoms = diamond(rattle=0.0, temperature=0.0)
    pairs = atoms.get_distances(0, range(1, len(atoms)), mic=True)
    partner = 1 + int(np.argmin(pairs))
    vector = atoms.get_distance(0, partner, mic=True, vector=True)
    momenta = np.zeros((len(atoms), 3))
    momenta[0] = 2.0 * vector / np.linalg.norm(vector) * atoms.get_masses()[0] / units.fs * 0.05  # 0.1 Å/fs
    atoms.set_momenta(momenta)
    with pytest.raises(ValueError, match=rf"step \d+: atoms 0 and {partner} are 0\.[0-4]\d* Å apart, closer than r_min"):
        run_md(si_model, atoms, MDSettings("nve", timestep=1.0, steps=200, block=50))


def test_runs_of_one_system_share_compiled_code_and_other_parameters_do_not(si_model):
    atoms = diamond()
    settings = MDSettings("langevin", temperature=400.0, timestep=1.0, steps=200, tau=50.0, block=50, seed=5)
    first = Simulation(MDSystem.from_atoms(si_model, atoms), settings)
    again = Simulation(MDSystem.from_atoms(si_model, diamond(seed=2)),
                       MDSettings(**{**settings.__dict__, "temperature": 500.0, "seed": 3, "steps": 20}))
    assert again._block is first._block
    stiffer = dataclasses.replace(si_model, params=jax.tree_util.tree_map(lambda x: 1.01 * x, si_model.params))
    other_model = Simulation(MDSystem.from_atoms(stiffer, atoms), settings)
    other_step = Simulation(MDSystem.from_atoms(si_model, atoms), MDSettings(**{**settings.__dict__, "timestep": 2.0}))
    assert other_model._block is not first._block and other_step._block is not first._block
    # the shared code with another system's positions gives that system's energy
    state, _ = again.initial_state(np.zeros((len(atoms), 3)), again.parameters())
    reference = diamond(seed=2)
    reference.calc = MLIPCalculator(si_model)
    assert float(state.energy) == pytest.approx(reference.get_potential_energy(), abs=1e-9)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="unknown ensemble"):
        MDSettings("npH")
    with pytest.raises(ValueError, match="steps"):
        MDSettings(steps=-1)


def test_md_command_runs_and_writes_its_outputs(si_model, tmp_path, capsys):
    from ase.io import write

    from mlip.cli import main
    from mlip.io import save_model

    save_model(si_model, tmp_path / "si.mlip")
    write(tmp_path / "start.extxyz", diamond())
    status = main(["md", str(tmp_path / "si.mlip"), str(tmp_path / "start.extxyz"), "--ensemble", "nvt",
                   "--temperature", "300", "--steps", "20", "--block", "10", "--thermo-every", "5",
                   "--thermo", str(tmp_path / "thermo.csv"), "--trajectory", str(tmp_path / "md.traj"),
                   "--trajectory-every", "10", "--no-progress"])
    assert status == 0
    assert "20 steps in" in capsys.readouterr().out
    with open(tmp_path / "thermo.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    from ase.io import read

    assert len(read(tmp_path / "md.traj", index=":")) == 2
    assert main(["md", str(tmp_path / "si.mlip"), str(tmp_path / "start.extxyz"), "--steps", "-3"]) == 1
