"""How ``si_random_feature.mlip`` was made: :func:`mlip.training.linear.random_feature_si`
with its defaults (4 Å cutoff, 24 random tanh units, output layer fitted to
Stillinger-Weber Si), saved so that the LAMMPS tests (``tests/test_lammps.py``) do
not spend the fit's compilations on every run.  Any stable Si model would do: the
tests compare mlip's LAMMPS coupling with mlip's own calculator on the same model.

Run from the repository root: ``python3 tests/data/make_si_random_feature.py``.
"""

from pathlib import Path

from mlip.io import save_model
from mlip.training.linear import random_feature_si

save_model(random_feature_si(), Path(__file__).with_name("si_random_feature.mlip"))
