"""The spread of an ensemble's predictions, with DeePMD-kit's definitions.

For members ``k = 1..K`` (population statistics, as DeePMD-kit and apax use):

* energy: ``std_k E_k`` (eV); DeePMD's ``devi_e`` is that of ``E_k / N``;
* force on atom ``i`` (DeePMD's ``devi_f``): ``sqrt(mean_k |F_ik - <F_i>|^2)`` (eV/Å);
* virial: ``std_k W_k,ab / N`` per component (eV/atom); DeePMD's ``max_devi_v``,
  ``min_devi_v`` are its largest and smallest of the 9, ``avg_devi_v`` their norm / 3.

:func:`model_devi_row` gives the seven numbers of a row of DeePMD's
``model_devi.out`` (after the step), so DP-GEN-style tools read mlip's files as is.
"""

from __future__ import annotations

import numpy as np

#: Columns of DeePMD-kit's model_devi.out, in order.
MODEL_DEVI_COLUMNS = ("step", "max_devi_v", "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f",
                      "devi_e")


def spread(values: np.ndarray) -> np.ndarray:
    """Standard deviation over the member axis 0 (population)."""
    values = np.asarray(values, dtype=np.float64)
    return np.sqrt(np.mean((values - values.mean(axis=0)) ** 2, axis=0))


def force_deviation(member_forces: np.ndarray) -> np.ndarray:
    """Per atom ``sqrt(mean_k |F_ik - <F_i>|^2)`` (eV/Å) of ``member_forces [K, N, 3]``."""
    member_forces = np.asarray(member_forces, dtype=np.float64)
    deviation = member_forces - member_forces.mean(axis=0)
    return np.sqrt(np.mean(np.sum(deviation**2, axis=-1), axis=0))


def model_devi_row(member_energy: np.ndarray, member_forces: np.ndarray, member_virial: np.ndarray) -> np.ndarray:
    """``max_devi_v, min_devi_v, avg_devi_v, max_devi_f, min_devi_f, avg_devi_f,
    devi_e`` of one frame from every member's energy ``[K]`` (eV), forces
    ``[K, N, 3]`` (eV/Å) and virial ``[K, 3, 3]`` (eV)."""
    forces = force_deviation(member_forces)
    return model_devi_from_parts(member_energy, member_virial, forces.max(), forces.min(), forces.mean(),
                                 len(forces))


def model_devi_from_parts(member_energy: np.ndarray, member_virial: np.ndarray, max_devi_f: float,
                          min_devi_f: float, avg_devi_f: float, n_atoms: int) -> np.ndarray:
    """:func:`model_devi_row` from the members' total energies ``[K]`` and virials
    ``[K, 3, 3]`` and the force-deviation statistics over all ``n_atoms`` (for runs
    whose atoms are spread over MPI ranks)."""
    virial = spread(np.asarray(member_virial, dtype=np.float64).reshape(-1, 9) / n_atoms)
    energy = float(spread(np.asarray(member_energy, dtype=np.float64) / n_atoms))
    return np.array([virial.max(), virial.min(), np.linalg.norm(virial) / 3.0,
                     max_devi_f, min_devi_f, avg_devi_f, energy])


def model_devi_header() -> str:
    """The header line of a model_devi.out file (DeePMD-kit's widths)."""
    return "#" + f"{MODEL_DEVI_COLUMNS[0]:>11s}" + "".join(f"{c:>19s}" for c in MODEL_DEVI_COLUMNS[1:])


def model_devi_line(step: int, row: np.ndarray) -> str:
    """One row of a model_devi.out file (DeePMD-kit's format: ``%12d`` then ``%19.6e``)."""
    return f"{int(step):12d}" + "".join(f"{x:19.6e}" for x in row)
