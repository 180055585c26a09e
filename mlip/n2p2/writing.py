"""Writing a :class:`~mlip.model.Model` as an n2p2 potential directory."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from mlip.kernels.cutoff import CUTOFF_TYPES
from mlip.model import Model
from mlip.n2p2.common import CODE_OF, N2P2Error, format_number, n2p2_order, sorted_elements

_HUGE = 1.0e300  # Gmax written when the training range is unknown: no extrapolation warnings


def feature_range_from_structures(model: Model, structures: Iterable[Atoms]) -> dict[str, np.ndarray]:
    """Per element ``[n_features, 2]`` (min, max) of the model's raw symmetry functions
    over ``structures`` (e.g. the training set), for :func:`write_n2p2`'s
    ``feature_range``; elements absent from the structures get no entry."""
    from mlip.batch import compute_descriptors

    values = compute_descriptors(model, structures)
    return {e: np.stack([v.min(axis=0), v.max(axis=0)], axis=1) for e, v in values.items() if len(v)}


def _export_checks(model: Model, feature_range) -> None:
    """Everything n2p2 cannot represent, before anything is written."""
    from mlip.io import check_param_values

    config = model.config
    if config.ensemble > 1:
        raise N2P2Error(f"an n2p2 potential holds one network per element, this model is an ensemble of "
                        f"{config.ensemble}: export one member (model.member(k)) per directory")
    if not config.hidden_layers:
        raise N2P2Error("n2p2 networks need at least one hidden layer; this model has none")
    lacking = sorted(set(config.activations) - set(CODE_OF))
    if lacking:
        raise N2P2Error(f"activation(s) {lacking} have no n2p2 equivalent (n2p2 has {sorted(CODE_OF)})")
    check_param_values(model.params, N2P2Error, "cannot export to n2p2")
    for element in config.elements:
        scale = np.asarray(model.params["feature_scale"][element])
        if (scale == 0).any():
            raise N2P2Error(f"feature_scale of {element} is 0 for feature(s) {list(np.flatnonzero(scale == 0))}: "
                            "n2p2's sigma scaling (1/sigma) cannot express it")
        if feature_range is not None and element in feature_range:
            shape = np.shape(feature_range[element])
            if shape != (config.symmetry_functions.n_features(element), 2):
                raise N2P2Error(f"feature_range[{element!r}] has shape {shape}, expected "
                                f"({config.symmetry_functions.n_features(element)}, 2)")


def write_n2p2(model: Model, directory: str | os.PathLike,
               feature_range: Mapping[str, np.ndarray] | None = None) -> list[Path]:
    """Write ``model`` as an n2p2 potential (units Å and eV, no normalisation).

    ``input.nn`` gets the elements, ``atom_energy`` (the model's reference
    energies, eV), the cutoff, ``scale_symmetry_functions_sigma`` with
    Smin = 0 and Smax = 1 (so n2p2's x = (G - Gmean)/Gsigma is the model's
    ``(G - feature_shift) * feature_scale`` with Gmean = shift and
    Gsigma = 1/scale), the network and every symmetry function (Å, Å^-2);
    ``scaling.data`` and ``weights.ZZZ.data`` follow n2p2's element and
    symmetry-function order and column layout.  Numbers are written with 17
    significant digits.

    Args:
        model: the model.
        directory: output folder (created if missing; the three kinds of files
            in it are replaced).
        feature_range: per element ``[n_features, 2]`` (Gmin, Gmax) in the model's
            feature order, written to ``scaling.data`` where n2p2 and LAMMPS use
            it for extrapolation warnings (:func:`feature_range_from_structures`
            of the training set, or :func:`read_n2p2_feature_range`); default
            the model's own :attr:`~mlip.model.Model.feature_range`.  Without
            either, [0, 1e300] is written: no extrapolation warnings.

    Returns:
        The paths written.

    Raises:
        N2P2Error: the model uses something n2p2 cannot represent (an activation
            it lacks, no hidden layer, a zero feature scale, an unknown element)
            or ``feature_range`` has the wrong shape; nothing is written.
    """
    from mlip.files import write_bytes_atomic

    config, params = model.config, model.params
    feature_range = model.feature_range if feature_range is None else feature_range
    elements = sorted_elements(config.elements, "n2p2 names weight files by atomic number")
    _export_checks(model, feature_range)
    sf_set = config.symmetry_functions
    index = {e: n for n, e in enumerate(elements)}
    order = {}
    for element in elements:
        own = sf_set.functions_of(element)
        order[element] = sorted(range(len(own)), key=lambda n: n2p2_order(own[n], index))

    widths = config.hidden_layers
    lines = [
        "# n2p2 potential written by mlip (mlip.n2p2.write_n2p2). Units: Angstrom and eV",
        "# (LAMMPS pair_style hdnnp: cflength 1.0 cfenergy 1.0); no data-set normalisation.",
        f"number_of_elements {len(elements)}",
        "elements " + " ".join(elements),
    ]
    lines += [f"atom_energy {e} {format_number(float(params['reference_energies'][e])).strip()}" for e in elements]
    lines += [
        f"cutoff_type {CUTOFF_TYPES[sf_set.cutoff_type]} {sf_set.cutoff_alpha!r}",
        "scale_symmetry_functions_sigma",
        "scale_min_short 0.0",
        "scale_max_short 1.0",
        f"global_hidden_layers_short {len(widths)}",
        "global_nodes_short " + " ".join(map(str, widths)),
        "global_activation_short " + " ".join(CODE_OF[a] for a in config.activations) + " l",
    ]
    for element in elements:
        own = sf_set.functions_of(element)
        lines += [own[n].to_n2p2() for n in order[element]]
    files = {"input.nn": "\n".join(lines) + "\n"}

    rows = ["# Symmetry function scaling data written by mlip: Gmean = feature_shift, Gsigma = 1/feature_scale.",
            "# Gmin, Gmax: " + ("range given to write_n2p2 (extrapolation warnings)." if feature_range is not None
                                else "unknown, [0, 1e300] written (no extrapolation warnings)."),
            "#  e_index   sf_index                   sf_min                   sf_max"
            "                  sf_mean                 sf_sigma"]
    for e_index, element in enumerate(elements, start=1):
        shift = np.asarray(params["feature_shift"][element], dtype=np.float64)
        sigma = 1.0 / np.asarray(params["feature_scale"][element], dtype=np.float64)
        if feature_range is not None and element in feature_range:
            low, high = np.asarray(feature_range[element], dtype=np.float64).T
        else:
            low, high = np.zeros_like(shift), np.full_like(shift, _HUGE)
        for sf_index, n in enumerate(order[element], start=1):
            rows.append(f"{e_index:10d} {sf_index:10d} " + " ".join(
                format_number(v) for v in (low[n], high[n], shift[n], sigma[n])))
    files["scaling.data"] = "\n".join(rows) + "\n"

    for element in elements:
        dense = params["networks"][element]["params"]
        layers = [(np.asarray(dense[f"Dense_{n}"]["kernel"], dtype=np.float64),
                   np.asarray(dense[f"Dense_{n}"]["bias"], dtype=np.float64)) for n in range(len(widths) + 1)]
        layers[0] = (layers[0][0][order[element]], layers[0][1])
        out = ["# Neural network connection values written by mlip, in n2p2's order.",
               "#              connection t     index   l_s   n_s   l_e   n_e"]
        count = 0
        for layer, (kernel, bias) in enumerate(layers, start=1):
            for j in range(kernel.shape[0]):
                for k in range(kernel.shape[1]):
                    count += 1
                    out.append(f"{format_number(kernel[j, k])} a {count:9d} "
                               f"{layer - 1:5d} {j + 1:5d} {layer:5d} {k + 1:5d}")
            for k in range(len(bias)):
                count += 1
                out.append(f"{format_number(bias[k])} b {count:9d} {layer:5d} {k + 1:5d}")
        files[f"weights.{atomic_numbers[element]:03d}.data"] = "\n".join(out) + "\n"

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [write_bytes_atomic(directory / name, text.encode()) for name, text in files.items()]
