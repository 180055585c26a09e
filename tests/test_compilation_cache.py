"""The persistent compilation cache: written by a first process, read by a second
(no new entries), and off when the user opts out."""

from __future__ import annotations

import os
import subprocess
import sys

import jax

from mlip.compilation_cache import enable_compilation_cache

SCRIPT = """
from ase.build import bulk
from mlip import Model
from mlip.calculator import MLIPCalculator
model = Model.create(elements=["Si"], r_cut=3.0, n_radial=2, n_angular=1, hidden_layers=(4,))
atoms = bulk("Si", "diamond", a=5.431, cubic=True)
atoms.calc = MLIPCalculator(model)
print(atoms.get_potential_energy())
"""


def _run(cache, tmp_path):
    environment = dict(os.environ, MLIP_COMPILATION_CACHE=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return subprocess.run([sys.executable, "-c", SCRIPT], env=environment, cwd=tmp_path, capture_output=True,
                          text=True, check=True).stdout


def test_second_process_reads_the_first_ones_compiled_code(tmp_path):
    cache = tmp_path / "cache"
    first = _run(cache, tmp_path)
    entries = sorted((p.name, p.stat().st_mtime_ns) for p in cache.iterdir())
    assert entries, "the first process wrote no cache entry"
    second = _run(cache, tmp_path)
    # same keys, nothing rewritten: every compilation of the second process was a cache hit
    assert sorted((p.name, p.stat().st_mtime_ns) for p in cache.iterdir()) == entries
    assert first == second


def test_opting_out_leaves_jax_without_a_cache(monkeypatch):
    monkeypatch.setenv("MLIP_COMPILATION_CACHE", "off")
    assert jax.config.jax_compilation_cache_dir is None
    assert enable_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir is None
