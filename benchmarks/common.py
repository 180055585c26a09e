"""Helpers shared by the benchmark scripts (run as ``python3 benchmarks/NAME.py``,
which puts this folder on ``sys.path``)."""

from __future__ import annotations

from mlip import Model


def model_or_random_feature_si(path: str | None) -> Model:
    """The model file at ``path``, or, without one,
    :func:`mlip.training.linear.random_feature_si` (a stable Si potential made in
    seconds from Stillinger-Weber data, nothing downloaded)."""
    if path:
        from mlip.io import load_model

        return load_model(path)
    from mlip.training.linear import random_feature_si

    return random_feature_si()


WORKLOADS = ("type9", "type3", "mixed")


def mixed_symmetry_functions(elements, r_cut: float):
    """Types 2, 3 and 9 in one set (the ``mixed`` workload), cosine cutoff."""
    from mlip.kernels.symmetry_functions import SymmetryFunctionSet, default_symmetry_functions

    narrow = default_symmetry_functions(elements, r_cut=r_cut, angular_type=3, cutoff_type="cos")
    wide = default_symmetry_functions(elements, r_cut=r_cut, n_angular=6, angular_type=9, cutoff_type="cos")
    functions = narrow.functions + tuple(f for f in wide.functions if f.kind == 9)
    return SymmetryFunctionSet(narrow.elements, functions, "cos")


def benchmark_model(workload: str = "type9", elements=("Si",), r_cut: float = 6.0,
                    hidden_layers=(25, 25)) -> Model:
    """The random-weight model of the energy/forces benchmarks (``bench_energy_forces.py``,
    ``bench_gpu.py``): 8 type-2 + 16 angular functions of the default grid, ``type9``
    (wide, tanh cutoff: the default model), ``type3`` (narrow, cosine cutoff: issue
    11's type-3 set) or ``mixed`` (types 2, 3 and 9, cosine cutoff), network 25-25."""
    elements = list(elements)
    if workload == "type3":
        return Model.create(elements=elements, r_cut=r_cut, hidden_layers=hidden_layers,
                            angular_type=3, cutoff_type="cos")
    if workload == "mixed":
        return Model.create(symmetry_functions=mixed_symmetry_functions(elements, r_cut),
                            hidden_layers=hidden_layers)
    if workload != "type9":
        raise ValueError(f"unknown workload {workload!r}; choose one of {WORKLOADS}")
    return Model.create(elements=elements, r_cut=r_cut, hidden_layers=hidden_layers)
