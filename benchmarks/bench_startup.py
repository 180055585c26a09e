"""First-call time of a fresh process, with a cold and a warm persistent compilation
cache (:mod:`mlip.compilation_cache`), for the calculator and for ``mlip md``.

Each case runs in new Python processes: once with an empty cache folder (cold:
everything compiles) and then twice more with the same folder (warm: compiled code
is read from disk), and once with the cache off.  Prints a table and optionally
writes JSON::

    python3 benchmarks/bench_startup.py [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CALCULATOR = """
import time
start = time.perf_counter()
from ase.build import bulk
from mlip.calculator import MLIPCalculator
from mlip.io import load_model
atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat({repeat})
atoms.rattle(0.02, seed=0)
atoms.calc = MLIPCalculator(load_model("{model}"))
atoms.get_forces()
print(time.perf_counter() - start)
"""


def _timed(command: list[str], cache: str, workdir: str) -> float:
    environment = dict(os.environ, MLIP_COMPILATION_CACHE=cache)
    start = time.perf_counter()
    subprocess.run(command, env=environment, cwd=workdir, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="cubic repeats of the 8-atom Si cell")
    parser.add_argument("--md-steps", type=int, default=200)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        from ase.build import bulk
        from ase.io import write

        from mlip.io import save_model
        from mlip.training.linear import random_feature_si

        model = Path(workdir) / "si.mlip"
        save_model(random_feature_si(), model)
        structure = Path(workdir) / "si.extxyz"
        write(structure, bulk("Si", "diamond", a=5.431, cubic=True).repeat(args.repeat))
        cases = {
            "calculator energy+forces": [sys.executable, "-c", CALCULATOR.format(repeat=args.repeat, model=model)],
            f"mlip md nvt {args.md_steps} steps": [sys.executable, "-m", "mlip.cli", "md", str(model), str(structure),
                                                   "--ensemble", "nvt", "--steps", str(args.md_steps),
                                                   "--no-progress", "--thermo", str(Path(workdir) / "t.csv")],
        }
        rows = []
        print(f"{'case':<28} {'cache off s':>12} {'cold s':>8} {'warm s':>8} {'warm/cold':>10}")
        for name, command in cases.items():
            cache = str(Path(workdir) / f"cache-{len(rows)}")
            off = _timed(command, "off", workdir)
            cold = _timed(command, cache, workdir)
            warm = min(_timed(command, cache, workdir) for _ in range(2))
            rows.append({"case": name, "off_s": off, "cold_s": cold, "warm_s": warm})
            print(f"{name:<28} {off:>12.2f} {cold:>8.2f} {warm:>8.2f} {warm / cold:>10.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"atoms": 8 * args.repeat**3, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
