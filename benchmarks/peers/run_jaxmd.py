"""jax-md's side of bench_peers: ``jax_md.energy.behler_parrinello_neighbor_list``
(its Behler-Parrinello symmetry functions of ``jax_md.nn`` on a neighbour list in
jax-md's ``Dense`` format, ``[N, M]``, with its flax-nnx MLP), energy and forces by ``jax.value_and_grad``, jit-compiled.

The closest configuration to issue 11's type-3 set that jax-md allows: its radial
functions ``exp(-eta r^2) f_c(r)`` have no shift, so the 8 widths are mlip's
centred grid eta_n = 1 / (2 r_n^2), r_n = 1..6 Å; its angular functions are the
narrow (type 3) ones, ``2^(1-zeta) (1 + lambda cos)^zeta exp(-eta (r_ij^2 + r_ik^2
+ r_jk^2)) f_c f_c f_c``, given the same 16 (eta, lambda, zeta).  Cosine cutoff
6 Å, no neighbour-list skin, hidden layers 25-25 tanh, random weights.  (jax-md's
default ``Sparse`` format would form the angular terms of all pairs of *pairs*.)
The neighbour list is built once, outside the timed calls (as for mlip).
"""

from __future__ import annotations

import itertools
from importlib.metadata import version

import harness
import jax
import numpy as np

args = harness.parse_args(["type3"])
if args.dtype == "float64":
    jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from jax_md import energy, partition, space  # noqa: E402


def main() -> None:
    positions, cell, _ = harness.load_structure(args.structure)
    box = float(cell[0, 0])
    if not np.allclose(cell, box * np.eye(3)):
        raise ValueError("the jax-md runner takes a cubic cell")
    if box < 2 * harness.R_CUT:
        raise ValueError(f"box {box:.2f} Å is shorter than twice the cutoff: jax-md's minimum-image "
                         "displacements would miss periodic images (use 512 atoms or more)")
    dtype = jnp.dtype(args.dtype)
    displacement, _ = space.periodic(box)
    angular = list(itertools.product(harness.ANGULAR_ETAS, harness.ZETAS, harness.LAMBDAS))
    sym_kwargs = {
        "radial_etas": jnp.array(1.0 / (2.0 * harness.RADIAL_SHIFTS**2), dtype),
        "angular_etas": jnp.array([eta for eta, _, _ in angular], dtype),
        "zetas": jnp.array([zeta for _, zeta, _ in angular], dtype),
        "lambdas": jnp.array([lam for _, _, lam in angular], dtype),
        "cutoff_distance": harness.R_CUT,
    }
    neighbor_fn, energy_fn = energy.behler_parrinello_neighbor_list(
        displacement, box, key=jax.random.PRNGKey(0), mlp_sizes=harness.HIDDEN, sym_kwargs=sym_kwargs,
        dr_threshold=0.0, format=partition.Dense, activation=jnp.tanh)
    R = jnp.asarray(positions, dtype)
    neighbors = neighbor_fn.allocate(R)
    graph, state = nnx.split(energy_fn.model)  # weights as an explicit (cast) argument
    state = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), state)

    def total_energy(state, r, nbrs):
        return nnx.merge(graph, state)(r, nbrs)

    energy_forces = jax.jit(jax.value_and_grad(total_energy, argnums=1))
    def call():
        value, gradient = jax.block_until_ready(energy_forces(state, R, neighbors))
        return float(value), -np.asarray(gradient)

    timing = harness.time_calls(call, args.repeats)
    harness.emit({
        "code": "jax-md", "version": version("jax-md"), "jax": jax.__version__, "workload": args.workload,
        "dtype": args.dtype, "atoms": len(positions),
        "config": "behler_parrinello_neighbor_list: 8 radial exp(-eta r^2) (no shift, centred widths) + "
                  "16 narrow angular (type 3, r_s = 0), cos cutoff 6 Å, dr_threshold 0, "
                  f"neighbour capacity {neighbors.idx.shape[1]}, energy+forces (no virial)",
        **timing,
    })


if __name__ == "__main__":
    main()
