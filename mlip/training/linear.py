"""Closed-form least-squares fit of the networks' output layers.

The atomic energy is linear in the last (output) layer of each element's network,
``NN_e(x) = h_e(x) . w_e + b_e`` with the hidden features ``h_e`` fixed, so the total
energy, the forces and the virial are all linear in ``theta = (w_e, b_e)_e`` and
their Jacobian with respect to ``theta`` (taken once by ``jax.jacfwd``) is the exact
design matrix.  Fitting ``theta`` to labelled data is then one weighted linear
least-squares solve: a random-feature model, useful as a quick potential with a
stable minimum (tests, benchmarks, MD examples) or as a starting point for training.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from mlip.batch import prepare_structure
from mlip.model import Model, make_model_functions
from mlip.precision import with_float64
from mlip.training.data import Sample


def _output_layer_name(model: Model) -> str:
    return f"Dense_{len(model.config.hidden_layers)}"


@with_float64
def fit_output_layers(model: Model, samples: Sequence[Sample], energy_weight: float = 10.0,
                      forces_weight: float = 1.0, virial_weight: float = 3.0) -> Model:
    """A copy of ``model`` whose output layers minimise the weighted squared errors
    of the per-atom energy (eV/atom), the force components (eV/Å) and the per-atom
    virial ``stress * V / n`` (eV/atom) over ``samples``.

    Hidden layers, feature scaling and reference energies are kept.  Labels that a
    sample lacks (forces, or stress of a non-periodic cell) contribute no rows.

    Args:
        model: model whose hidden layers (e.g. random, or trained) give the features.
        samples: labelled structures (:class:`~mlip.training.data.Sample`).
        energy_weight, forces_weight, virial_weight: weights of the three kinds of rows.
    """
    layer = _output_layer_name(model)
    output = {e: model.params["networks"][e]["params"][layer] for e in model.elements}
    theta0, unravel = ravel_pytree(output)
    energy_forces_virial = make_model_functions(model.config).energy_forces_virial

    def with_output(theta):
        params = jax.tree_util.tree_map(lambda x: x, model.params)
        for element, values in unravel(theta).items():
            network = dict(params["networks"][element]["params"])
            network[layer] = values
            params["networks"][element] = {"params": network}
        return params

    def outputs(theta, positions, cell, species, nl, element_rows):
        result = energy_forces_virial(with_output(theta), positions, cell, species, nl, element_rows)
        return jnp.concatenate([result.energy[None], result.forces.ravel(), result.virial.ravel()])

    value_and_jacobian = jax.jit(lambda theta, *inputs: (outputs(theta, *inputs), jax.jacfwd(outputs)(theta, *inputs)))
    zero = jnp.zeros_like(theta0)
    rows, targets, weights = [], [], []
    for sample in samples:
        atoms = sample.atoms
        padded = prepare_structure(model, atoms)
        value, design = (np.asarray(x) for x in value_and_jacobian(zero, *padded.as_jax(with_element_rows=True)))
        n, n_padded = len(atoms), padded.positions.shape[0]
        forces = slice(1, 1 + 3 * n)
        virial = slice(1 + 3 * n_padded, None)
        # residual of the labels w.r.t. theta = 0 (reference energies only)
        rows.append(design[:1] / n)
        targets.append([(sample.energy - value[0]) / n])
        weights.append([energy_weight])
        if sample.forces is not None:
            rows.append(design[forces])
            targets.append(sample.forces.ravel() - value[forces])
            weights.append(np.full(3 * n, forces_weight))
        if sample.stress is not None and atoms.pbc.all():
            stress = sample.stress[[0, 5, 4, 5, 1, 3, 4, 3, 2]]  # Voigt -> 3x3, row-major
            rows.append(design[virial] / n)
            targets.append((stress * atoms.get_volume() - value[virial]) / n)
            weights.append(np.full(9, virial_weight))
    design, target, weight = np.vstack(rows), np.concatenate(targets), np.concatenate(weights)
    theta = np.linalg.lstsq(design * weight[:, None], target * weight, rcond=None)[0]
    return model.with_params(with_output(jnp.asarray(theta)))


@with_float64
def random_feature_model(structures: Sequence, elements: Sequence[str], r_cut: float = 4.0, hidden: int = 24,
                         n_radial: int = 4, n_angular: int = 2, seed: int = 0) -> Model:
    """A random-feature model fitted to labelled ``structures`` (``Atoms`` with energy,
    forces and, where periodic, stress results, e.g. from
    :func:`mlip.training.generate.label`): random hidden layer of ``hidden`` tanh units
    on the default symmetry-function grid (``r_cut`` Å), feature scaling fitted,
    output layer by :func:`fit_output_layers`.  Seconds to make; physical, not accurate."""
    from mlip.training.data import sample_from_atoms
    from mlip.training.scaling import fit_feature_scaling

    samples = [sample_from_atoms(atoms) for atoms in structures]
    model = Model.create(elements=list(elements), r_cut=r_cut, n_radial=n_radial, n_angular=n_angular,
                         hidden_layers=(hidden,), seed=seed)
    model = fit_feature_scaling(model, [s.atoms for s in samples])
    return fit_output_layers(model, samples)


def random_feature_si(r_cut: float = 4.0, hidden: int = 24, n_structures: int = 12, seed: int = 0) -> Model:
    """A quick Si potential with a stable diamond minimum (near a = 5.42 Å), made in
    seconds with nothing downloaded: :func:`random_feature_model` fitted to
    matscipy's Stillinger-Weber energies, forces and stresses of ``n_structures``
    strained (±4 %) and rattled (0.06 Å) 8-atom diamond cells.  For tests,
    benchmarks and examples that need a physical potential, not an accurate one.
    """
    from mlip.training.generate import label, stillinger_weber_si, strained_diamond_cells

    structures = strained_diamond_cells(n_structures, seed)
    return random_feature_model(label(structures, stillinger_weber_si()), ["Si"], r_cut, hidden, seed=seed)
