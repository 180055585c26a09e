"""n2p2 potentials in and out, and n2p2/RuNNer ``input.data`` structure files.

An n2p2 potential is a directory with ``input.nn`` (settings), ``scaling.data``
(symmetry-function statistics) and one ``weights.ZZZ.data`` per element (ZZZ the
atomic number).  :func:`read_n2p2` turns it into an ordinary
:class:`~mlip.model.Model` (eV and Å) that predicts what n2p2 predicts;
:func:`write_n2p2` writes a model so that n2p2's ``nnp-predict`` and LAMMPS
``pair_style hdnnp`` (``cflength 1.0 cfenergy 1.0``) load it unchanged.

What n2p2 computes (n2p2 ``Mode``, ``Prediction``, ``NeuralNetwork``, ``SymFnc``),
and where it goes in the model:

* elements are sorted by atomic number, and each element's symmetry functions
  by n2p2's order (type, cutoff, eta, r_s, zeta, lambda, neighbour elements);
  ``scaling.data`` rows and the network inputs follow that order, and so do the
  model's features;
* symmetry-function parameters in ``input.nn`` are in the potential's length
  unit: converted to Å (eta to Å^-2).  ``conv_length`` cancels: n2p2 scales
  positions and parameters alike, so the values of types 2, 3 and 9 do not change;
* scaling, with S = (Smin, Smax) from ``scale_min_short`` / ``scale_max_short``:
  ``scale_symmetry_functions``: x = Smin + (Smax - Smin)(G - Gmin)/(Gmax - Gmin);
  with ``center_symmetry_functions`` as well, Gmean replaces Gmin;
  ``center_symmetry_functions`` alone: x = G - Gmean;
  ``scale_symmetry_functions_sigma``: x = Smin + (Smax - Smin)(G - Gmean)/Gsigma;
  none: x = G.  This is ``feature_shift`` (Gmin or Gmean) and ``feature_scale``,
  with Smin folded into the first layer's bias;
* ``normalize_nodes`` divides every neuron's input sum (weights and bias) by the
  number of neurons feeding it: folded into the weights;
* the output layer is linear (n2p2 ignores the last activation code); the
  physical atomic energy is ``E_i = NN_i / conv_energy + mean_energy +
  atom_energy[e_i]`` in the potential's energy unit: the output layer is scaled
  by ``energy_unit / conv_energy`` and ``reference_energies`` hold
  ``energy_unit * (mean_energy + atom_energy)``.

Forces and stress then follow from ``jax.grad`` as for every mlip model.  The
floating-point operations are n2p2's up to the order of summation, so energies
and forces agree to rounding (measured on n2p2's Cu2S example: see the tests).

Modules: :mod:`~mlip.n2p2.reading` (n2p2 files to a model), :mod:`~mlip.n2p2.writing`
(a model to n2p2 files), :mod:`~mlip.n2p2.structures` (``input.data`` files) and
:mod:`~mlip.n2p2.common` (what they share).
"""

from mlip.n2p2.common import (
    ACTIVATION_CODES,
    PREDICTION_KEYWORDS,
    TRAINING_KEYWORDS,
    N2P2Error,
    parse_units,
)
from mlip.n2p2.reading import read_n2p2, read_n2p2_feature_range
from mlip.n2p2.structures import read_input_data, write_input_data
from mlip.n2p2.writing import feature_range_from_structures, write_n2p2

__all__ = [
    "ACTIVATION_CODES", "N2P2Error", "PREDICTION_KEYWORDS", "TRAINING_KEYWORDS", "feature_range_from_structures",
    "parse_units", "read_input_data", "read_n2p2", "read_n2p2_feature_range", "write_input_data", "write_n2p2",
]
