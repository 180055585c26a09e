"""Thermodynamic integration: the coupled potential against finite differences, and
the free-energy difference between two harmonic crystals against its exact value."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import units
from ase.build import bulk

from mlip import Model
from mlip.md import MDSettings
from mlip.md.driver import Simulation, maxwell_boltzmann_momenta
from mlip.md.system import MDSystem
from mlip.ti import (
    block_average,
    coupled,
    einstein_crystal,
    einstein_free_energy,
    harmonic_free_energy,
    integrate,
    switch,
    switching_schedule,
)


@pytest.fixture(scope="module")
def lattice():
    atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat(2)
    model = Model.create(elements=["Si"], r_cut=3.0, n_radial=2, n_angular=1, hidden_layers=(4,))
    return model, atoms, MDSystem.from_atoms(model, atoms)


@pytest.fixture(scope="module")
def harmonic_pair(lattice):
    """Langevin simulation (300 K) of the coupled pair of harmonic crystals with
    springs k_A = 1 and k_B = 4 eV/Å^2 to the same sites, initial momenta, and the
    exact classical ΔF = (3N/2) kT ln(k_B / k_A)."""
    model, atoms, system = lattice
    temperature, k_a, k_b = 300.0, 1.0, 4.0
    sites, mask = jnp.asarray(system.position), jnp.asarray(system.atom_mask)
    springs = jnp.ones(len(sites))
    field = coupled(einstein_crystal(sites, k_a * springs, atom_mask=mask),
                    einstein_crystal(sites, k_b * springs, atom_mask=mask))
    simulation = Simulation(system, MDSettings("langevin", temperature=temperature, timestep=4.0, tau=40.0, seed=3,
                                               block=500), field)
    momenta = maxwell_boltzmann_momenta(atoms.get_masses(), temperature, 3)
    return simulation, momenta, 1.5 * len(atoms) * units.kB * temperature * np.log(k_b / k_a)


def test_coupled_potential_interpolates_and_its_derivatives_match_finite_differences(lattice):
    model, atoms, system = lattice
    rng = np.random.default_rng(0)
    sites = jnp.asarray(system.position)
    mask = jnp.asarray(system.atom_mask)
    a = einstein_crystal(sites, jnp.full(len(sites), 1.5), atom_mask=mask)
    b = einstein_crystal(sites, jnp.full(len(sites), 0.7), mass=jnp.asarray(system.mass), atom_mask=mask)
    field = jax.jit(coupled(a, b))
    position = sites + jnp.where(mask[:, None], rng.normal(0.0, 0.1, sites.shape), 0.0)
    cell = jnp.asarray(system.cell)
    energy = lambda r, lam: field(r, cell, None, lam)[1]  # noqa: E731
    for lam in (0.0, 0.3, 1.0):
        _, e, force, _, dudl = field(position, cell, None, lam)
        e_a, e_b = a(position, cell, None)[1], b(position, cell, None)[1]
        assert float(e) == pytest.approx((1 - lam) * float(e_a) + lam * float(e_b), rel=1e-12)
        assert float(dudl) == pytest.approx(float(e_b - e_a), rel=1e-12)
        h = 1e-5
        assert float(dudl) == pytest.approx(float(energy(position, lam + h) - energy(position, lam - h)) / (2 * h),
                                            rel=1e-7)
        direction = jnp.where(mask[:, None], rng.normal(size=sites.shape), 0.0)
        fd = (energy(position + h * direction, lam) - energy(position - h * direction, lam)) / (2 * h)
        assert float(jnp.sum(-force * direction)) == pytest.approx(float(fd), rel=1e-7)
    # the centre-of-mass form is translation invariant, the plain one is not
    shifted = position + jnp.where(mask[:, None], jnp.array([0.3, -0.2, 0.1]), 0.0)
    assert float(b(shifted, cell, None)[1]) == pytest.approx(float(b(position, cell, None)[1]), rel=1e-12)
    assert float(a(shifted, cell, None)[1]) != pytest.approx(float(a(position, cell, None)[1]), rel=1e-3)


def test_block_average_error_of_independent_samples():
    samples = np.random.default_rng(1).normal(2.0, 3.0, 20000)
    mean, error = block_average(samples, 20)
    assert mean == pytest.approx(2.0, abs=5 * 3.0 / np.sqrt(20000))
    assert error == pytest.approx(3.0 / np.sqrt(20000), rel=0.4)


def test_einstein_free_energy_formula():
    kT, omega = units.kB * 300.0, 0.02 / units.fs
    assert einstein_free_energy(10, omega, kT, translation_invariant=False) == pytest.approx(
        harmonic_free_energy(np.full(30, omega), kT))
    assert einstein_free_energy(10, omega, kT) == pytest.approx(harmonic_free_energy(np.full(27, omega), kT))


def test_harmonic_crystal_to_stiffer_crystal_gives_the_exact_free_energy(harmonic_pair):
    """Classical oscillators: F_B - F_A = (3N/2) kT ln(k_B / k_A) exactly."""
    simulation, momenta, exact = harmonic_pair
    result = integrate(simulation, momenta, n_points=5, equilibration=250, production=2500)
    assert result.delta_f_error < 0.03 * exact
    assert abs(result.delta_f - exact) < 4 * result.delta_f_error + 0.005 * exact, (result.delta_f, exact)
    assert np.all(np.diff(result.mean_dudl) < 0)  # <dU/dλ> = (3N/2) kT (k_B - k_A) / k(λ) falls with λ


def test_ti_command_prints_the_free_energy(tmp_path, capsys):
    """Smoke test of ``mlip ti`` with a tiny run (the physics is checked above and in
    benchmarks/ti_frenkel_ladd_si.py)."""
    from ase.io import write

    from mlip.cli import main
    from mlip.io import save_model

    model = Model.create(elements=["Si"], r_cut=3.0, n_radial=2, n_angular=1, hidden_layers=(4,), seed=1)
    save_model(model, tmp_path / "tiny.mlip")
    write(tmp_path / "si.extxyz", bulk("Si", "diamond", a=5.431, cubic=True))
    status = main(["ti", str(tmp_path / "tiny.mlip"), str(tmp_path / "si.extxyz"), "--temperature", "20",
                   "--points", "2", "--equilibration", "40", "--production", "40", "--msd-steps", "400",
                   "--json", str(tmp_path / "ti.json"), "--no-progress"])
    assert status == 0
    assert "eV/atom at 20.0 K" in capsys.readouterr().out
    import json

    assert len(json.loads((tmp_path / "ti.json").read_text())["lambdas"]) == 2


def test_switching_schedule_runs_smoothly_from_zero_to_one():
    lam = switching_schedule(1000)
    assert lam[-1] == pytest.approx(1.0, abs=1e-12) and 0.0 < lam[0] < 1e-10
    assert np.all(np.diff(lam) >= 0)
    assert lam[499] == pytest.approx(0.5, abs=2e-3)


def test_forward_and_backward_switching_give_the_harmonic_free_energy(harmonic_pair):
    simulation, momenta, exact = harmonic_pair
    result = switch(simulation, momenta, equilibration=250, switch_steps=2500)
    assert result.delta_f == pytest.approx(exact, rel=0.03), (result.delta_f, exact, result.dissipation)
    assert abs(result.dissipation) < 0.05 * exact


def test_two_models_with_different_cutoffs_share_one_neighbour_list():
    """U(λ) between a 3 Å and a 4.2 Å two-element model on one list of the larger
    cutoff: energy, forces and dU/dλ equal those of each model's own calculator."""
    from mlip.calculator import MLIPCalculator

    short = Model.create(elements=["Si", "Ge"], r_cut=3.0, n_radial=2, n_angular=1, hidden_layers=(4,), seed=1)
    long = Model.create(elements=["Ge", "Si"], r_cut=4.2, n_radial=2, n_angular=1, hidden_layers=(5,), seed=2)
    atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat((2, 1, 1))
    atoms.symbols[[1, 4, 6, 11]] = "Ge"
    atoms.rattle(0.05, seed=3)
    with pytest.raises(ValueError, match="exceeds the neighbour list"):
        MDSystem.from_atoms(short, atoms).potential(long)
    with jax.enable_x64(True):
        system = MDSystem.from_atoms(short, atoms, cutoff=long.cutoff)
        field = jax.jit(coupled(system.potential(), system.potential(long)))
        position, cell = jnp.asarray(system.position), jnp.asarray(system.cell)
        neighbors = system.allocate_neighbors(position, cell)
        reference = {}
        for name, model in (("short", short), ("long", long)):
            calc = MLIPCalculator(model)
            reference[name] = (calc.get_potential_energy(atoms), calc.get_forces(atoms))
        for lam in (0.0, 0.3, 1.0):
            _, energy, force, _, dudl = field(position, cell, neighbors, lam)
            expected = (1 - lam) * reference["short"][0] + lam * reference["long"][0]
            assert float(energy) == pytest.approx(expected, abs=1e-10)
            np.testing.assert_allclose(np.asarray(force)[: len(atoms)],
                                       (1 - lam) * reference["short"][1] + lam * reference["long"][1], atol=1e-10)
            assert float(dudl) == pytest.approx(reference["long"][0] - reference["short"][0], abs=1e-10)


def test_ti_command_between_two_models_gives_an_exact_shift(tmp_path, capsys):
    """``mlip ti B STRUCTURE --from A`` with B = A plus 0.125 eV per atom: dU/dλ is
    that constant at every step, so ΔF is exact."""
    import json

    from ase.io import write

    from mlip.cli import main
    from mlip.io import save_model

    model = Model.create(elements=["Si"], r_cut=3.0, n_radial=2, n_angular=1, hidden_layers=(4,), seed=1)
    params = jax.tree_util.tree_map(lambda x: x, model.params)
    params["reference_energies"]["Si"] = params["reference_energies"]["Si"] + 0.125
    save_model(model, tmp_path / "a.mlip")
    save_model(Model(model.config, params), tmp_path / "b.mlip")
    write(tmp_path / "si.extxyz", bulk("Si", "diamond", a=5.431, cubic=True))
    status = main(["ti", str(tmp_path / "b.mlip"), str(tmp_path / "si.extxyz"), "--from", str(tmp_path / "a.mlip"),
                   "--temperature", "100", "--points", "2", "--equilibration", "20", "--production", "40",
                   "--json", str(tmp_path / "ti.json"), "--no-progress"])
    assert status == 0
    assert "eV/atom at 100.0 K" in capsys.readouterr().out
    result = json.loads((tmp_path / "ti.json").read_text())
    assert result["delta_f_per_atom_eV"] == pytest.approx(0.125, abs=1e-12)
    assert result["error_per_atom_eV"] < 1e-12
