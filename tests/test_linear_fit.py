"""Closed-form output-layer fit: recovers the output layers of a model from that
model's own energies, forces and stresses (an exactly representable target)."""

from __future__ import annotations

import jax
import numpy as np

from mlip import Model
from mlip.training.data import sample_from_atoms
from mlip.training.generate import label
from mlip.training.linear import fit_output_layers

from conftest import random_structure


def test_fit_recovers_the_output_layers_that_made_the_labels(model, calc):
    structures = [random_structure(seed, n_atoms=8) for seed in range(20, 26)]
    structures.append(random_structure(30, n_atoms=8, pbc=(False, False, False)))  # no stress rows
    samples = [sample_from_atoms(atoms) for atoms in label(structures, calc)]
    layer = f"Dense_{len(model.config.hidden_layers)}"
    scrambled = jax.tree_util.tree_map(lambda x: x, model.params)
    for element in model.elements:
        network = dict(scrambled["networks"][element]["params"])
        network[layer] = jax.tree_util.tree_map(lambda x: 3.0 * x + 0.1, network[layer])
        scrambled["networks"][element] = {"params": network}
    fitted = fit_output_layers(Model(model.config, scrambled), samples)
    for element in model.elements:
        for name in ("kernel", "bias"):
            np.testing.assert_allclose(np.asarray(fitted.params["networks"][element]["params"][layer][name]),
                                       np.asarray(model.params["networks"][element]["params"][layer][name]),
                                       rtol=1e-7, atol=1e-9)
    hidden = "Dense_0"  # hidden layers untouched
    np.testing.assert_array_equal(np.asarray(fitted.params["networks"]["Si"]["params"][hidden]["kernel"]),
                                  np.asarray(model.params["networks"]["Si"]["params"][hidden]["kernel"]))
