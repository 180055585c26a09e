"""How ``model_v1.mlip`` was made (format version 1, written by mlip at FORMAT_VERSION 1).

Do not regenerate it to make a test pass: the file is a frozen sample of a released
format, and ``tests/test_io.py::test_format_version_1_fixture_loads_and_predicts``
checks that today's code still reads it and predicts the stored reference numbers.
When the format changes, keep this file and add ``model_v<N>.mlip`` beside it.

Run from the repository root: ``python3 tests/data/make_model_v1.py``.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)  # every parameter float64, as Model.create makes them
from mlip.io import save_model
from mlip.model import Model

model = Model.create(elements=["Si"], r_cut=3.0, n_radial=2, n_angular=1, hidden_layers=(2,))
# Non-trivial scaling and offset, so that the fixture also pins how they are stored.
n_features = model.params["feature_shift"]["Si"].shape[0]
model.params["feature_shift"]["Si"] = jnp.asarray(np.linspace(0.1, 0.6, n_features))
model.params["feature_scale"]["Si"] = jnp.asarray(np.linspace(0.5, 2.0, n_features))
model.params["reference_energies"]["Si"] = jnp.asarray(-4.25)
save_model(model, Path(__file__).with_name("model_v1.mlip"))
