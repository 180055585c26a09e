"""mlip against the Behler-Parrinello-style codes installable from PyPI (jax-md,
TorchANI) on issue 11's workload, one process per code, size and precision.

    python3 benchmarks/bench_peers.py --python-jaxmd /tmp/venv-jaxmd/bin/python \\
        --python-torchani /tmp/venv-torchani/bin/python --json benchmarks/results/peers.json

Every run gets the same structure (diamond Si, a = 5.43 Å, rattled 0.05 Å with
seed 0, wrapped into the cubic cell; written once to a ``.npz`` file) and times
energy+forces: the first call (compilation or warm-up) separately, then the
median of ``--repeats`` calls, in µs per atom.  Each peer has its own script in
``benchmarks/peers/`` that runs under that peer's interpreter (each peer in its own
virtual environment: jax-md wants an older JAX than mlip's) and prints one JSON line.
A peer that does not import is skipped with the reason; a run that passes
``--timeout`` or ``--memory-limit-gb`` is stopped and reported as ``timeout`` or
``out of memory`` (larger sizes of that code, workload and precision are then
skipped; after a float32 timeout, that size and larger ones in float64 too).

Workloads (24 functions, cosine cutoff 6 Å, network 24-25-25-1 tanh, random weights):

* mlip ``type9`` / ``type3``: 8 type 2 (shifted) + 16 type 9 or type 3 functions,
  eta ∈ {0.099, 0.041, 0.022, 0.014} Å^-2, zeta ∈ {1, 4}, lambda = ±1; the timed
  call also returns the virial.
* jax-md ``type3``: ``jax_md.nn`` Behler-Parrinello functions on a neighbour list,
  8 radial centred at r_s = 0 (jax-md has no shifts; widths of mlip's centred
  grid) + the same 16 narrow angular functions; compared with mlip ``type3``.
* TorchANI ``ani``: ANI AEV, the closest it allows: 8 radial Gaussians with mlip's
  shifts and width, 16 angular terms exp(-eta ((r_ij + r_ik)/2)^2) with the four
  etas, zeta ∈ {1, 4}, theta_s ∈ {0, pi} (i.e. lambda = ±1, on 0.95 cos theta);
  compared with mlip ``type9`` (the ANI angular term has no r_jk factor).
  The descriptors differ: the ratios compare codes on comparable work, not identical work.

n2p2 (C++) is not on PyPI: its row holds the figures of issue 11 (another run, on
a quiet machine), labelled as such, never measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PEER_DIR = HERE / "peers"

# code -> (script, module to import, packages whose versions are reported, workloads)
PEERS = {
    "mlip": ("run_mlip.py", "mlip", ("mlip", "jax", "jaxlib"), ("type9", "type3")),
    "jax-md": ("run_jaxmd.py", "jax_md", ("jax-md", "jax", "jaxlib", "dm-haiku"), ("type3",)),
    "torchani": ("run_torchani.py", "torchani", ("torchani", "torch"), ("ani",)),
}
# the mlip float64 workload each peer workload is compared with
COMPARED_WITH = {"type9": "type9", "type3": "type3", "ani": "type9"}
# issue 11, n2p2 2.3 float64, diamond Si 4096 atoms on a quiet 2-core machine (another run), µs/atom
N2P2_REFERENCE = {("type9", 1): 429.0, ("type9", 2): 225.0, ("type3", 1): 252.0, ("type3", 2): 143.0}


def write_structure(n_atoms: int, path: Path, rattle: float = 0.05) -> None:
    """Diamond Si with ``n_atoms = 8 n^3`` atoms, rattled by ``rattle`` Å (seed 0)."""
    from ase.build import bulk

    repeat = round((n_atoms / 8) ** (1 / 3))
    if 8 * repeat**3 != n_atoms:
        raise ValueError(f"--sizes must be 8 n^3 atoms (64, 512, 1728, 4096, ...), got {n_atoms}")
    atoms = bulk("Si", "diamond", 5.43, cubic=True).repeat(repeat)
    atoms.rattle(rattle, seed=0)
    atoms.wrap()
    np.savez(path, positions=atoms.positions, cell=atoms.cell.array, numbers=atoms.numbers)


def thread_environment(threads: int) -> dict[str, str]:
    """The environment of every run: ``threads`` for OpenMP/BLAS, XLA's CPU pool
    single-threaded when ``threads == 1`` (the CPU affinity set in
    :func:`run_process` bounds it otherwise), no persistent compilation cache."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    flags = env.get("XLA_FLAGS", "")
    if threads == 1:
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    env["XLA_FLAGS"] = flags.strip()
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["MLIP_COMPILATION_CACHE"] = "off"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PEER_DIR), env.get("PYTHONPATH", "")) if p)
    return env


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_process(command: list[str], env: dict[str, str], cpus: list[int], timeout_s: float,
                memory_limit_bytes: float) -> dict:
    """Run ``command`` pinned to ``cpus``; stop it past ``timeout_s`` seconds or
    ``memory_limit_bytes`` resident memory.  Returns ``status`` (``ok``, ``timeout``,
    ``out of memory``, ``failed``), the JSON record it printed (``result``), its
    peak RSS in GB and the tail of its error output."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.monotonic()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=PEER_DIR,
                                   preexec_fn=lambda: os.sched_setaffinity(0, cpus), start_new_session=True)
        status = None
        while True:
            pid, code, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout_s:
                status = f"timeout (> {timeout_s:.0f} s)"
            elif _rss_bytes(process.pid) > memory_limit_bytes:
                status = f"out of memory (RSS > {memory_limit_bytes / 1e9:g} GB)"
            if status:
                os.killpg(process.pid, signal.SIGKILL)
                pid, code, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.2)
        process.returncode = os.waitstatus_to_exitcode(code)  # reaped by wait4 (which gives its rusage)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    record = {"peak_rss_GB": usage.ru_maxrss * 1024 / 1e9, "wall_s": time.monotonic() - start}
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if status is None and process.returncode == 0 and lines:
        return {"status": "ok", "result": json.loads(lines[-1]), **record}
    tail = [line for line in stderr.strip().splitlines() if line.strip()][-3:]
    if status is None:
        text = stderr.lower()
        if "resource_exhausted" in text or "memoryerror" in text or "out of memory" in text:
            status = "out of memory"
        elif process.returncode == -signal.SIGKILL:
            status = "out of memory (killed by SIGKILL, likely the kernel's OOM killer)"
        else:
            status = f"failed (exit {process.returncode})"
    return {"status": status, "stderr_tail": tail, **record}


def probe(python: str, module: str, packages: tuple[str, ...], env: dict[str, str]) -> tuple[dict | None, str]:
    """Versions of ``packages`` under ``python`` if ``module`` imports there, else
    ``(None, reason)``."""
    code = ("import importlib, importlib.metadata as m, json, sys\n"
            f"importlib.import_module({module!r})\n"
            "v = {}\n"
            f"for p in {list(packages)!r}:\n"
            "    try: v[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(v))\n")
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"{python}: {error}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"{module} not importable with {python}: {last}"
    return json.loads(done.stdout.strip().splitlines()[-1]), ""


def ratio_to_mlip(rows: list[dict]) -> None:
    """Each measured row's time over mlip float64's on the compared workload, same size
    (none for the n2p2 reference rows: another run, another machine load)."""
    reference = {(r["workload"], r["atoms"]): r["us_per_atom"] for r in rows
                 if r["code"] == "mlip" and r["dtype"] == "float64" and r.get("us_per_atom")}
    for row in rows:
        if row.get("reference"):
            continue
        base = reference.get((COMPARED_WITH.get(row["workload"], row["workload"]), row["atoms"]))
        row["compared_with"] = f"mlip {COMPARED_WITH.get(row['workload'], row['workload'])} float64"
        row["ratio_to_mlip_float64"] = row["us_per_atom"] / base if base and row.get("us_per_atom") else None


def print_table(rows: list[dict]) -> None:
    header = (f"{'code':<24} {'workload':<9} {'dtype':<8} {'atoms':>6} {'first call s':>12} "
              f"{'µs/atom':>9} {'x mlip f64':>10} {'peak GB':>8}  note")
    print(header)
    print("-" * len(header))
    for row in rows:
        first = f"{row['first_call_s']:.2f}" if row.get("first_call_s") is not None else "-"
        speed = f"{row['us_per_atom']:.1f}" if row.get("us_per_atom") is not None else "-"
        ratio = f"{row['ratio_to_mlip_float64']:.2f}" if row.get("ratio_to_mlip_float64") else "-"
        memory = f"{row['peak_rss_GB']:.2f}" if row.get("peak_rss_GB") else "-"
        note = row.get("note", "") if row["status"] == "ok" else row["status"]
        print(f"{row['code']:<24} {row['workload']:<9} {row['dtype']:<8} {row['atoms']:>6} {first:>12} "
              f"{speed:>9} {ratio:>10} {memory:>8}  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 4096], help="atoms, 8 n^3 each")
    parser.add_argument("--threads", type=int, default=2, help="CPU cores (affinity) and threads per run")
    parser.add_argument("--dtypes", nargs="+", choices=["float64", "float32"], default=["float64", "float32"])
    parser.add_argument("--codes", nargs="+", choices=list(PEERS), default=list(PEERS))
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after the first (median)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run (one code, size, dtype)")
    parser.add_argument("--memory-limit-gb", type=float, default=8.0, help="resident memory per run, GB")
    parser.add_argument("--python-mlip", default=sys.executable, help="interpreter with mlip installed")
    parser.add_argument("--python-jaxmd", default=sys.executable, help="interpreter with jax-md installed")
    parser.add_argument("--python-torchani", default=sys.executable, help="interpreter with torchani installed")
    parser.add_argument("--json", help="write results to this JSON file")
    args = parser.parse_args()

    available = sorted(os.sched_getaffinity(0))
    if not 1 <= args.threads <= len(available):
        parser.error(f"--threads must be between 1 and the {len(available)} CPUs this process may use")
    cpus = available[:args.threads]
    env = thread_environment(args.threads)
    interpreters = {"mlip": args.python_mlip, "jax-md": args.python_jaxmd, "torchani": args.python_torchani}
    load_before = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None
    print(f"{platform.processor() or platform.machine()}, {len(available)} CPUs available, "
          f"{args.threads} used per run (cores {cpus}); load average {load_before}")

    rows, versions = [], {}
    with tempfile.TemporaryDirectory() as folder:
        structures = {}
        for n in args.sizes:
            structures[n] = Path(folder) / f"si_{n}.npz"
            write_structure(n, structures[n])
        for code in args.codes:
            script, module, packages, workloads = PEERS[code]
            found, reason = probe(interpreters[code], module, packages, env)
            versions[code] = found or {"skipped": reason}
            for workload in workloads:
                timed_out = {}  # atoms -> why: a float32 timeout skips that size and larger in float64
                for dtype in sorted(args.dtypes, key=lambda d: d != "float32"):
                    stopped = ""
                    for n in args.sizes:
                        row = {"code": code, "workload": workload, "dtype": dtype, "atoms": n}
                        stopped = stopped or next((why for m, why in timed_out.items() if m <= n), "")
                        if found is None or stopped:
                            rows.append({**row, "status": f"skipped: {reason or stopped}"})
                            print_row_progress(rows[-1])
                            continue
                        command = [interpreters[code], str(PEER_DIR / script), "--structure", str(structures[n]),
                                   "--workload", workload, "--dtype", dtype, "--threads", str(args.threads),
                                   "--repeats", str(args.repeats)]
                        outcome = run_process(command, env, cpus, args.timeout, args.memory_limit_gb * 1e9)
                        result = outcome.pop("result", {})
                        row.update(status=outcome["status"], peak_rss_GB=outcome["peak_rss_GB"],
                                   process_wall_s=outcome["wall_s"])
                        if outcome["status"] == "ok":
                            row.update(first_call_s=result["first_call_s"],
                                       us_per_atom=1e6 * result["median_s"] / n,
                                       config=result.get("config", ""), result=result)
                        else:
                            row["stderr_tail"] = outcome.get("stderr_tail", [])
                            if not outcome["status"].startswith("failed"):
                                stopped = f"{dtype} {outcome['status']} at {n} atoms"
                            if outcome["status"].startswith("timeout") and dtype == "float32":
                                timed_out[n] = stopped
                        rows.append(row)
                        print_row_progress(row)
    for workload in ("type9", "type3"):
        for threads in sorted({1, args.threads}):
            if (workload, threads) in N2P2_REFERENCE:
                rows.append({"code": f"n2p2 2.3 ({threads} thr, issue 11)", "workload": workload,
                             "dtype": "float64", "atoms": 4096, "status": "ok", "reference": True,
                             "us_per_atom": N2P2_REFERENCE[(workload, threads)],
                             "note": "reference from issue 11, other run (quiet machine), not measured"})
    ratio_to_mlip(rows)
    load_after = Path("/proc/loadavg").read_text().split()[:3] if load_before else None
    print()
    print_table(rows)
    print(f"load average before {load_before}, after {load_after}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "benchmark": "peers_si_diamond", "machine": platform.machine(), "processor": platform.processor(),
            "cpus_available": len(available), "threads": args.threads, "repeats": args.repeats,
            "timeout_s": args.timeout, "memory_limit_GB": args.memory_limit_gb,
            "load_average_before": load_before, "load_average_after": load_after,
            "mlip_source": source_state(), "versions": versions, "rows": rows,
        }, indent=2))
        print(f"wrote {path}")


def source_state() -> dict:
    """The repository's commit and the files under ``mlip/`` that differ from it
    (the measured code is the working tree)."""
    def git(*words: str) -> str:
        try:
            return subprocess.run(["git", *words], cwd=HERE, capture_output=True, text=True).stdout.rstrip()
        except OSError:
            return ""
    return {"commit": git("rev-parse", "HEAD"),
            "modified": [line[3:] for line in git("status", "--porcelain", "--", "../mlip").splitlines()]}


def print_row_progress(row: dict) -> None:
    speed = f"{row['us_per_atom']:.1f} µs/atom, first call {row['first_call_s']:.2f} s" \
        if row.get("us_per_atom") is not None else row["status"]
    print(f"  {row['code']} {row['workload']} {row['dtype']} {row['atoms']} atoms: {speed}", flush=True)


if __name__ == "__main__":
    main()
