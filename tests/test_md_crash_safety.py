"""MD outputs survive a kill at any instant (issue 20, item 1): resuming drops a
partial last row or frame of the thermo log, an extxyz or ``.traj`` trajectory and
the monitors' files (saying so), checks every file before it cuts any, and never
fails on a partial last entry; a real SIGKILL of ``mlip md`` during a run that
writes a frame every step is resumed, again and again."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read

from mlip.md.outputs import OutputRepairWarning, append_frame, truncate_outputs
from mlip.md.settings import Outputs
from mlip.uncertainty import model_devi_header, model_devi_line

MODEL = Path(__file__).parent / "data" / "si_random_feature.mlip"
COLUMNS = ["step", "a", "b"]


def frame(step: int, n: int = 8):
    atoms = bulk("Si", "diamond", 5.431, cubic=True)[:n]
    atoms.set_momenta(np.full((n, 3), 0.1 * step))
    atoms.calc = SinglePointCalculator(atoms, energy=-float(step), forces=np.full((n, 3), 0.01 * step),
                                       stress=np.zeros(6))
    atoms.info["step"] = step
    return atoms


def write_thermo(path: Path, steps) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows([[s, 0.5 * s, 1e-3 * s] for s in steps])


def thermo_steps(path: Path) -> list[int]:
    with open(path, newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


def frame_steps(path: Path) -> list[int]:
    return [int(f.info["step"]) for f in read(path, index=":")] if path.exists() else []


def test_a_partial_last_thermo_row_is_dropped_even_when_its_step_reads_as_a_number(tmp_path):
    thermo = tmp_path / "md.csv"
    write_thermo(thermo, range(10, 160, 10))
    text = thermo.read_bytes()
    thermo.write_bytes(text + b"1")  # killed after the first digit of "160,..."
    with pytest.warns(OutputRepairWarning, match=rf"dropped a partial last row \(line 17\) of the thermo log {thermo}"):
        notes = truncate_outputs(Outputs(thermo=thermo), 150)
    assert len(notes) == 1
    assert thermo_steps(thermo) == list(range(10, 151, 10))
    thermo.write_bytes(text + b"1")  # resumed from an earlier restart file: dropped with the later rows
    truncate_outputs(Outputs(thermo=thermo), 100)
    assert thermo_steps(thermo) == list(range(10, 101, 10))


@pytest.mark.parametrize("suffix", [".extxyz", ".traj"])
def test_a_partial_last_frame_is_dropped_at_every_cut(tmp_path, suffix):
    """Frames 10..30 complete, frame 40 cut at a range of byte positions: resuming
    at step 30 keeps 10..30, at step 20 keeps 10..20, and the file reads."""
    whole = tmp_path / f"whole{suffix}"
    for step in (10, 20, 30):
        append_frame(whole, frame(step))
    complete = whole.read_bytes()
    append_frame(whole, frame(40))
    grown = whole.read_bytes()
    trajectory = tmp_path / f"md{suffix}"
    new = len(grown) - len(complete)
    cuts = sorted({1, 2, 3, new // 3, new // 2, new - 2, new - 1} | set(range(1, new, max(1, new // 25))))
    for cut in cuts:
        # extxyz: the first bytes of frame 40; .traj: its data, written before ASE
        # updates the frame count in the header (what a kill leaves)
        trajectory.write_bytes(complete + grown[len(complete):len(complete) + cut])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            truncate_outputs(Outputs(trajectory=trajectory), 30)
        # extxyz: the partial frame is named; .traj: ASE had not counted it, nothing to say
        assert [w.category for w in caught] == ([] if suffix == ".traj" else [OutputRepairWarning]), cut
        assert frame_steps(trajectory) == [10, 20, 30], cut
        append_frame(trajectory, frame(40))  # the resumed run appends after it
        assert frame_steps(trajectory) == [10, 20, 30, 40], cut
        trajectory.write_bytes(complete + grown[len(complete):len(complete) + cut])
        truncate_outputs(Outputs(trajectory=trajectory), 20)
        assert frame_steps(trajectory) == [10, 20], cut


def test_a_traj_file_cut_inside_its_first_frame_is_dropped(tmp_path):
    trajectory = tmp_path / "md.traj"
    append_frame(trajectory, frame(10))
    data = trajectory.read_bytes()
    for cut in (0, 5, 30, 55):
        trajectory.write_bytes(data[:cut])
        with pytest.warns(OutputRepairWarning, match="partial last frame"):
            truncate_outputs(Outputs(trajectory=trajectory), 30)
        assert not trajectory.exists()


def test_a_partial_first_extxyz_frame_removes_the_file(tmp_path):
    trajectory = tmp_path / "md.extxyz"
    append_frame(trajectory, frame(10))
    data = trajectory.read_bytes()
    trajectory.write_bytes(data[: len(data) // 2])
    with pytest.warns(OutputRepairWarning, match="frame 1, from byte 0"):
        truncate_outputs(Outputs(trajectory=trajectory), 30)
    assert not trajectory.exists()


def test_the_monitor_files_are_repaired_too(tmp_path):
    frames, devi = tmp_path / "extrapolating.extxyz", tmp_path / "model_devi.out"
    for step in (10, 20, 30):
        append_frame(frames, frame(step))
    data = frames.read_bytes()
    frames.write_bytes(data[: len(data) - 40])
    rows = "".join(model_devi_line(s, np.full(7, 0.1)) + "\n" for s in (10, 20, 30))
    devi.write_text(model_devi_header() + "\n" + rows[:-20])
    with pytest.warns(OutputRepairWarning) as caught:
        truncate_outputs(Outputs(), 30, frames=(frames, None), tables=(devi,))
    assert len(caught) == 2
    assert frame_steps(frames) == [10, 20]
    assert [int(line.split()[0]) for line in devi.read_text().splitlines()[1:]] == [10, 20]


def test_every_file_is_checked_before_any_is_cut(tmp_path):
    """A trajectory damaged in the middle (not a partial last frame) is refused,
    naming the file and the frame, and the thermo log is left as it was."""
    thermo, trajectory = tmp_path / "md.csv", tmp_path / "md.extxyz"
    write_thermo(thermo, range(10, 60, 10))
    for step in (10, 20, 30, 40):
        append_frame(trajectory, frame(step))
    lines = trajectory.read_text().splitlines(keepends=True)
    lines[12] = "Si 1.0 2.0\n"  # an atom line of frame 2 lost columns
    trajectory.write_text("".join(lines))
    before = thermo.read_bytes(), trajectory.read_bytes()
    with pytest.raises(ValueError, match=rf"the trajectory {trajectory} is damaged at frame 2 \(from byte \d+\).*"
                                         "no output file was changed"):
        truncate_outputs(Outputs(thermo=thermo, trajectory=trajectory), 30)
    assert (thermo.read_bytes(), trajectory.read_bytes()) == before
    rows = before[0].splitlines(keepends=True)
    thermo.write_bytes(b"".join(rows[:2] + [b"20,x\n"] + rows[3:]))
    with pytest.raises(ValueError, match=rf"the thermo log {thermo} is damaged at line 3"):
        truncate_outputs(Outputs(thermo=thermo), 30)


def test_an_unreadable_traj_file_is_named(tmp_path):
    trajectory = tmp_path / "md.traj"
    trajectory.write_bytes(b"not a trajectory at all, but long enough to be more than a header ....")
    with pytest.raises(ValueError, match=rf"the trajectory {trajectory} is not a readable ASE trajectory"):
        truncate_outputs(Outputs(trajectory=trajectory), 30)


def test_run_md_resumes_over_partial_last_entries(si_model, tmp_path):
    from mlip.md.driver import run_md
    from mlip.md.settings import MDSettings

    atoms = bulk("Si", "diamond", 5.431, cubic=True)
    outputs = Outputs(thermo=tmp_path / "md.csv", thermo_every=5, trajectory=tmp_path / "md.extxyz",
                      trajectory_every=5, restart=tmp_path / "md.restart", restart_every=10)
    settings = MDSettings(steps=15, block=5, temperature=300.0)
    run_md(si_model, atoms, settings, outputs)
    at_15 = outputs.restart.read_bytes()
    run_md(si_model, atoms, MDSettings(steps=20, block=5, temperature=300.0), outputs, resume=True)
    # killed while writing frame 20, before its restart file: cut the frame and the row
    outputs.restart.write_bytes(at_15)
    text = outputs.trajectory.read_bytes()
    outputs.trajectory.write_bytes(text[: len(text) - 300])
    thermo = outputs.thermo.read_bytes()
    outputs.thermo.write_bytes(thermo[:-7])
    with pytest.warns(OutputRepairWarning):
        run_md(si_model, atoms, MDSettings(steps=25, block=5, temperature=300.0), outputs, resume=True)
    assert thermo_steps(outputs.thermo) == [5, 10, 15, 20, 25]
    assert frame_steps(outputs.trajectory) == [5, 10, 15, 20, 25]


def _wait_for(condition, process, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"mlip md exited (status {process.returncode}) before {what}: {err[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"mlip md did not reach {what} in {seconds} s")
        time.sleep(0.02)


def _restart_step(path: Path) -> int:
    from mlip.files import read_container
    from mlip.md.outputs import RESTART_FILE

    import flax.serialization

    leaves = flax.serialization.msgpack_restore(read_container(path, RESTART_FILE).content["state"])
    return int(leaves[str(len(leaves) - 1)])  # MDState's last field is the step


@pytest.mark.parametrize("suffix", [".extxyz"])
def test_sigkill_during_a_run_writing_every_step_is_resumed_each_time(tmp_path, suffix):
    structure = tmp_path / "si64.extxyz"
    bulk("Si", "diamond", 5.431, cubic=True).repeat(2).write(structure)
    thermo, trajectory, restart = tmp_path / "md.csv", tmp_path / f"md{suffix}", tmp_path / "md.restart"
    steps = 400
    command = [sys.executable, "-m", "mlip.cli", "md", str(MODEL), str(structure), "--steps", str(steps),
               "--temperature", "500", "--thermo", str(thermo), "--thermo-every", "1", "--trajectory",
               str(trajectory), "--trajectory-every", "1", "--restart", str(restart), "--restart-every", "7",
               "--no-progress"]
    environment = {**os.environ, "MLIP_COMPILATION_CACHE": "off"}
    rng = np.random.default_rng(3)
    kills, resumed_at = 0, []
    for attempt in range(3):
        process = subprocess.Popen(command + (["--resume"] if attempt else []), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=environment, cwd=tmp_path)
        previous = len(thermo_steps(thermo)) if thermo.exists() else 0
        # a resumed run has started writing again (its resume worked): kill it a little later
        _wait_for(lambda: restart.exists() and thermo.exists() and thermo.stat().st_size > 0
                  and sum(1 for _ in open(thermo)) > previous + 20, process, 240, "20 more thermo rows")
        time.sleep(float(rng.uniform(0.0, 0.3)))
        if process.poll() is not None:
            break  # the run finished before the kill
        process.send_signal(signal.SIGKILL)
        process.communicate()
        kills += 1
        resumed_at.append(_restart_step(restart))
    assert kills >= 2
    done = subprocess.run(command + ["--resume"], capture_output=True, text=True, env=environment, cwd=tmp_path,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    logged = thermo_steps(thermo)
    assert logged == list(range(1, steps + 1))  # monotonic, no duplicate, no gap
    frames = frame_steps(trajectory)
    assert len(frames) == len(set(frames)) and frames == sorted(frames) and max(frames) <= steps
    assert frames == list(range(1, steps + 1))
    assert resumed_at == sorted(resumed_at)
