"""Write ``si.mlip`` beside this file: a quick, stable Si potential for the LAMMPS
example (:func:`mlip.training.linear.random_feature_si`: 4 Å cutoff, 24 random tanh
units, output layer fitted to Stillinger-Weber energies, forces and stresses; made
in seconds to a minute, nothing downloaded).  Use a trained model for real work.

    python3 examples/lammps/make_model.py
"""

from pathlib import Path

from mlip.io import save_model
from mlip.training.linear import random_feature_si

path = Path(__file__).with_name("si.mlip")
save_model(random_feature_si(), path)
print(f"wrote {path}")
