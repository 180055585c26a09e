"""Training-data generation: labels, extxyz round trip, determinism, groups, cache."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, diamond100
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from ase.neighborlist import neighbor_list

from mlip.training import generate
from mlip.training.generate import GROUPS, default_si_dataset, generate_structures, label, stillinger_weber_si

# a few structures of every group, MD kept very short
SMALL = dict(n_rattled=4, n_strained=3, n_volume=3, n_vacancy=2, n_surface=3, n_md=3,
             md_equilibration=2, md_interval=3, md_repeat=(1, 1, 1))


@pytest.fixture(scope="module")
def sw():
    return stillinger_weber_si()


@pytest.fixture(scope="module")
def small_set(sw):
    return generate_structures(sw, seed=0, **SMALL)


def direct(atoms: Atoms, calculator):
    atoms = atoms.copy()
    atoms.calc = calculator
    stress = atoms.get_stress() if atoms.pbc.all() else None
    return atoms.get_potential_energy(), atoms.get_forces(), stress


def test_stillinger_weber_lattice_constant_and_derivatives(sw):
    ideal = bulk("Si", "diamond", 5.431, cubic=True)
    ideal.calc = sw
    assert ideal.get_potential_energy() / len(ideal) == pytest.approx(-4.3366, abs=1e-4)
    assert np.abs(ideal.get_stress()).max() < 1e-4  # eV/Å³: 5.431 Å is the SW minimum
    atoms = bulk("Si", "diamond", 5.431, cubic=True)
    atoms.rattle(0.1, seed=3)
    atoms.set_cell(atoms.cell.array @ np.array([[1.02, 0.01, 0], [0.01, 0.98, 0.02], [0, 0.02, 1.0]]),
                   scale_atoms=True)
    atoms.calc = sw
    np.testing.assert_allclose(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-5), atol=1e-6)
    np.testing.assert_allclose(atoms.get_stress(), calculate_numerical_stress(atoms, eps=1e-6), atol=1e-8)


def test_labels_equal_direct_calculation(small_set, sw):
    for atoms in small_set:
        energy, forces, stress = direct(atoms, sw)
        assert isinstance(atoms.calc, SinglePointCalculator)
        assert abs(atoms.get_potential_energy() - energy) <= 1e-10
        np.testing.assert_allclose(atoms.get_forces(), forces, rtol=0, atol=1e-10)
        np.testing.assert_allclose(atoms.get_stress(), stress, rtol=0, atol=1e-10)


def test_label_copies_and_config_type(sw):
    atoms = bulk("Si", "diamond", 5.431, cubic=True)
    atoms.rattle(0.05, seed=1)
    atoms.info["config_type"] = "mine"
    kept, = label([atoms], sw)
    renamed, = label([atoms], sw, config_type="other")
    assert kept.info["config_type"] == "mine" and renamed.info["config_type"] == "other"
    assert atoms.calc is None and atoms.info["config_type"] == "mine"  # input untouched
    assert kept is not atoms and np.array_equal(kept.positions, atoms.positions)


def test_stress_only_for_fully_periodic_cells(small_set, sw, tmp_path):
    assert all(a.pbc.all() and "stress" in a.calc.results for a in small_set)
    slab = diamond100("Si", (2, 2, 4), a=5.431, vacuum=5.0)  # pbc T T F
    del slab.info["adsorbate_info"]  # a dict, which extxyz cannot store
    cluster = bulk("Si", "diamond", 5.431, cubic=True)
    cluster.pbc = False
    labelled = label([slab, cluster], sw, "open")
    write(tmp_path / "open.xyz", labelled, format="extxyz")
    for atoms in labelled + read(tmp_path / "open.xyz", ":"):
        assert "stress" not in atoms.calc.results
        with pytest.raises(PropertyNotImplementedError):
            atoms.get_stress()
        assert np.isfinite(atoms.get_potential_energy()) and atoms.get_forces().shape == (len(atoms), 3)


def test_extxyz_round_trip(small_set, tmp_path):
    path = tmp_path / "set.xyz"
    write(path, small_set, format="extxyz")
    back = read(path, ":")
    assert len(back) == len(small_set)
    for a, b in zip(small_set, back):
        assert b.info["config_type"] == a.info["config_type"]
        assert b.get_chemical_symbols() == a.get_chemical_symbols()
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-8)
        np.testing.assert_allclose(b.cell.array, a.cell.array, atol=1e-8)
        assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-8)  # written with 8 decimals
        np.testing.assert_allclose(b.get_stress(), a.get_stress(), atol=1e-12)


def test_same_seed_same_structures_other_seed_differs(small_set, sw):
    again = generate_structures(sw, seed=0, **SMALL)
    other = generate_structures(sw, seed=1, **SMALL)
    assert len(again) == len(other) == len(small_set)
    for a, b in zip(small_set, again):
        assert np.array_equal(a.numbers, b.numbers) and np.array_equal(a.cell.array, b.cell.array)
        assert np.array_equal(a.positions, b.positions)
        assert a.get_potential_energy() == b.get_potential_energy()
    differs = {a.info["config_type"] for a, b in zip(small_set, other)
               if len(a) != len(b) or not np.allclose(a.positions, b.positions)}
    assert differs == set(GROUPS)


def test_groups_counts_and_sizes(small_set):
    counts = {g: sum(a.info["config_type"] == g for a in small_set) for g in GROUPS}
    assert counts == {"rattled": 4, "strained": 3 + 3, "vacancy": 2, "surface": 3, "md": 3}
    assert [a.info["config_type"] for a in small_set] == sorted(
        (a.info["config_type"] for a in small_set), key=GROUPS.index)  # grouped, in GROUPS order
    assert all(8 <= len(a) <= 64 for a in small_set)
    slabs = [a for a in small_set if a.info["config_type"] == "surface"]
    assert len({tuple(np.round(a.cell.lengths(), 6)) for a in slabs}) == 3  # (100), (110), (111)
    volumes = [a.get_volume() / len(a) for a in small_set if a.info["config_type"] == "strained" and len(a) == 8]
    ideal = 5.431**3 / 8
    assert min(volumes) == pytest.approx(0.92 * ideal, rel=1e-9) and max(volumes) == pytest.approx(1.08 * ideal)


def test_zero_counts_drop_groups(sw):
    only = generate_structures(sw, n_rattled=0, n_strained=0, n_volume=2, n_vacancy=0, n_surface=0, n_md=0)
    assert [a.info["config_type"] for a in only] == ["strained", "strained"]
    with pytest.raises(ValueError):
        generate_structures(sw, n_md=-1)


def test_no_close_contacts(small_set):
    for atoms in small_set:
        distances = neighbor_list("d", atoms, 1.8)
        assert len(distances) == 0, (atoms.info["config_type"], distances.min())


def test_default_si_dataset_writes_then_reads_cache(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "si.xyz"
    first = default_si_dataset(path, **SMALL)
    assert path.exists() and [p.name for p in path.parent.iterdir()] == ["si.xyz"]  # no temporary left
    assert len(first) == 4 + 6 + 2 + 3 + 3

    def fail(*args, **kwargs):
        raise AssertionError("the cached file should have been read")

    monkeypatch.setattr(generate, "generate_structures", fail)
    second = default_si_dataset(path, **SMALL)
    assert len(second) == len(first)
    for a, b in zip(first, second):
        assert a.info["config_type"] == b.info["config_type"]
        assert np.array_equal(a.positions, b.positions)
        assert a.get_potential_energy() == b.get_potential_energy()
        assert np.array_equal(a.get_forces(), b.get_forces()) and np.array_equal(a.get_stress(), b.get_stress())


def test_command_line_writes_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(generate, "generate_structures",
                        functools.partial(generate.generate_structures, **SMALL))
    path = tmp_path / "out.xyz"
    path.write_text("stale")
    generate.main([str(path), "--seed", "2"])  # always regenerates
    assert len(read(path, ":")) == 18
    assert "wrote 18 structures" in capsys.readouterr().out
