"""Training data are read as a stream (issue 20, item 4): an extxyz atom count is
checked against the rest of the file before the frame is parsed (a header that
claims 500 million atoms fails at once), every error names the file and the
structure, and big files show progress."""

from __future__ import annotations

import time

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from mlip.cli import main
from mlip.training.data import DataError, read_samples


def frames(count: int = 3):
    out = []
    for k in range(count):
        atoms = bulk("Si", "diamond", 5.431, cubic=True)
        atoms.rattle(0.05, seed=k)
        atoms.calc = SinglePointCalculator(atoms, energy=-34.0 - k, forces=np.full((8, 3), 0.01 * k),
                                           stress=np.full(6, 1e-3 * k))
        atoms.info["config_type"] = f"g{k % 2}"
        out.append(atoms)
    return out


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.xyz"
    write(path, frames(), format="extxyz")
    return path


def with_line(path, number, text, name="bad.xyz"):
    """A copy of ``path`` with line ``number`` (1-based) replaced by ``text``."""
    lines = path.read_text().splitlines(keepends=True)
    lines[number - 1] = text
    bad = path.parent / name
    bad.write_text("".join(lines))
    return bad


def test_streamed_reading_equals_ase(good):
    samples = read_samples(good)
    reference = read(good, index=":")
    assert [s.name for s in samples] == [f"{good}:{k}" for k in range(3)]
    for sample, atoms in zip(samples, reference):
        np.testing.assert_array_equal(sample.atoms.positions, atoms.positions)
        np.testing.assert_array_equal(sample.forces, atoms.get_forces())
        assert sample.energy == atoms.get_potential_energy()
        assert sample.config_type == atoms.info["config_type"]


def test_a_header_claiming_500_million_atoms_fails_at_once(good):
    bad = with_line(good, 11, "500000000\n")  # the second frame's atom count
    started = time.perf_counter()
    with pytest.raises(DataError, match=rf"cannot read {bad}:1 \(structure 1, counting from 0, line 11\): the "
                                        r"header claims 500000000 atoms, but only \d+ bytes follow"):
        read_samples(bad)
    assert time.perf_counter() - started < 2.0


def test_validate_refuses_the_500_million_atom_header_in_one_line(good, tmp_path, capsys):
    bad = with_line(good, 1, "500000000\n")
    config = tmp_path / "train.toml"
    config.write_text(f'[data]\ntrain = "{bad.name}"\n[output]\nprogress = false\n')
    started = time.perf_counter()
    assert main(["validate", str(config)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("mlip validate: error:") and "500000000 atoms" in error and str(bad) in error
    assert "\n" not in error
    assert time.perf_counter() - started < 30.0


@pytest.mark.parametrize("line, text, message", [
    (1, "three\n", r"bad\.xyz:0 \(structure 0, counting from 0, line 1\): the first line of a frame must be its "
                   "number of atoms, got 'three'"),
    (11, "-4\n", r"bad\.xyz:1 .*negative number of atoms -4"),
    (13, "Si 1.0 zwei 3.0\n", r"bad\.xyz:1 \(structure 1, counting from 0, line 11\): "),
])
def test_bad_frames_are_named(good, line, text, message):
    with pytest.raises(DataError, match=message):
        read_samples(with_line(good, line, text))


def test_a_truncated_file_names_its_last_frame(good):
    text = good.read_text()
    cut = good.parent / "cut.xyz"
    cut.write_text(text[: len(text) - 200])
    with pytest.raises(DataError, match=rf"cannot read {cut}:2 \(structure 2"):
        read_samples(cut)


def test_a_folder_is_not_a_data_file(tmp_path):
    with pytest.raises(DataError, match="is a folder, not a file"):
        read_samples(tmp_path)


def test_other_formats_name_the_structure(tmp_path):
    path = tmp_path / "data.traj"
    write(path, frames())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + b"\0" * 40)
    with pytest.raises(DataError, match=rf"cannot read {path}"):
        read_samples(path)


def test_progress_is_shown_for_big_files(good, capsys, monkeypatch):
    import mlip.training.data as data

    monkeypatch.setattr(data, "PROGRESS_BYTES", 100)
    read_samples(good)
    assert "reading good.xyz" in capsys.readouterr().err
    read_samples(good, progress=False)
    assert "reading" not in capsys.readouterr().err
