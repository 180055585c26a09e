"""``benchmarks/bench_gpu.py --smoke``: the GPU benchmark's code paths, tiny, on the CPU.

One subprocess run (about 40 s on 2 cores) writes the JSON; the test checks every
section produced rows with finite, positive timings, that float32 and float64
energies of the same structure agree to 1e-4 relative, and that the float64 energy
equals an independent evaluation (``MLIPCalculator``) of the same model and
structure.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_gpu.py"


def positive(row: dict, key: str) -> float:
    value = row.get(key)
    assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value, row)
    return value


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench_gpu") / "tmp.json"
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--json", str(out)], capture_output=True,
                          text=True, env=env, cwd=out.parent, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "energy_forces" in done.stdout and "atom-steps/s" in done.stdout  # the printed table
    return json.loads(out.read_text())


def test_every_section_ran_with_positive_timings(report):
    rows = report["rows"]
    by_section = {name: [r for r in rows if r["section"] == name] for name in ("energy_forces", "md", "training")}
    assert all(by_section.values()), {k: len(v) for k, v in by_section.items()}
    not_ok = [(r["section"], r.get("atoms"), r["status"], r.get("error") or r.get("note")) for r in rows
              if r["status"] != "ok"]
    assert not not_ok, not_ok
    assert report["device"] and all(r["device"] == report["device"] for r in rows)
    ef = by_section["energy_forces"]
    assert {(r["atoms"], r["workload"], r["dtype"]) for r in ef} == {
        (n, w, d) for n in (216, 512) for w in ("type9", "type3") for d in ("float32", "float64")}
    for r in ef:
        for key in ("compile_s", "call_s", "us_per_atom", "atom_steps_per_s", "peak_memory_bytes"):
            positive(r, key)
        assert r["atom_steps_per_s"] == pytest.approx(r["atoms"] / r["call_s"])
        assert r["us_per_atom"] == pytest.approx(1e6 * r["call_s"] / r["atoms"])
        assert r["max_force_sum_eV_per_A"] < 1e-3  # Newton's third law of the computed forces
    (md,) = by_section["md"]
    for key in ("compile_s", "timed_s", "step_s", "atom_steps_per_s", "peak_memory_bytes"):
        positive(md, key)
    assert md["timed_steps"] == md["steps"] - md["block"] > 0  # the first (compiling) block is excluded
    assert md["atom_steps_per_s"] == pytest.approx(md["atoms"] * md["timed_steps"] / md["timed_s"])
    assert md["neighbor_rebuilds"] >= 1  # the smoke run's 0.1 Å skin forces rebuilds inside the loop
    assert abs(md["conserved_drift_eV_per_atom"]) < 1e-3  # NVE with a fitted, physical potential
    (training,) = by_section["training"]
    for key in ("featurize_s", "first_epoch_s", "s_per_epoch", "structures_per_s"):
        positive(training, key)
    assert training["epochs"] >= 2


def test_float32_and_float64_energies_agree(report):
    energies = {}
    for r in report["rows"]:
        if r["section"] == "energy_forces":
            energies.setdefault((r["atoms"], r["workload"]), {})[r["dtype"]] = r["energy_eV"]
    assert len(energies) == 4
    for key, pair in energies.items():
        e32, e64 = pair["float32"], pair["float64"]
        assert abs(e64) > 1.0, (key, e64)  # a sum over hundreds of atoms, not a vanishing number
        assert abs(e32 - e64) <= 1e-4 * abs(e64), (key, e32, e64)


def test_float64_energy_equals_the_calculator(report):
    """The benchmark's float64 energy of the 216-atom type-9 row from MLIPCalculator,
    on the same model (benchmarks/common.py) and structure."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_gpu import diamond
        from common import benchmark_model
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from mlip.calculator import MLIPCalculator

    (row,) = [r for r in report["rows"] if r["section"] == "energy_forces" and r["atoms"] == 216
              and r["workload"] == "type9" and r["dtype"] == "float64"]
    atoms = diamond(216, report["settings"]["rattle"], seed=0)
    atoms.calc = MLIPCalculator(benchmark_model("type9", ["Si"], report["settings"]["cutoff"]), dtype="float64",
                                compilation_cache=False)
    energy = atoms.get_potential_energy()
    assert np.isclose(row["energy_eV"], energy, rtol=1e-10, atol=0), (row["energy_eV"], energy)
