"""mlip's side of bench_peers: energy, forces and virial of issue 11's model
(8 type 2 + 16 angular symmetry functions, cosine cutoff 6 Å, 24-25-25-1 tanh),
built as ``benchmarks/bench_energy_forces.py`` builds it: host neighbour list,
:func:`mlip.batch.pad_structure`, then the jit-compiled
``make_model_functions(...).energy_forces_virial``."""

from __future__ import annotations

from importlib.metadata import version

import jax
import numpy as np
from ase import Atoms

import harness
from mlip import Model
from mlip.kernels.neighbor_list import host_pairs
from mlip.model import make_model_functions
from mlip.batch import pad_structure

jax.config.update("jax_enable_x64", True)  # the host application: float64 unless cast


def main() -> None:
    args = harness.parse_args(["type9", "type3"])
    positions, cell, numbers = harness.load_structure(args.structure)
    atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
    model = Model.create(elements=["Si"], r_cut=harness.R_CUT, hidden_layers=harness.HIDDEN,
                         angular_type=int(args.workload[-1]), cutoff_type="cos")
    dtype = jax.numpy.dtype(args.dtype)
    params = jax.tree_util.tree_map(lambda x: x.astype(dtype), model.params)
    evaluate = jax.jit(make_model_functions(model.config).energy_forces_virial)
    padded = pad_structure(model, atoms, host_pairs(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff))
    inputs = padded.as_jax(dtype)
    n = len(atoms)

    def call():
        result = jax.block_until_ready(evaluate(params, *inputs))
        return float(result.energy), np.asarray(result.forces)[:n]

    timing = harness.time_calls(call, args.repeats)
    harness.emit({
        "code": "mlip", "version": version("mlip"), "jax": jax.__version__, "workload": args.workload, "dtype": args.dtype, "atoms": n,
        "config": f"{model.config.symmetry_functions.n_features('Si')} symmetry functions (8 type 2 shifted, "
                  f"16 type {args.workload[-1]}), cos cutoff 6 Å, energy+forces+virial, "
                  f"neighbour capacity {padded.nl.capacity}, {padded.positions.shape[0]} padded rows",
        **timing,
    })


if __name__ == "__main__":
    main()
