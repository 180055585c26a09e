"""Which explored frames to label: trust levels on the ensemble's largest force
deviation (DP-GEN's ``trust_lo <= max_devi_f < trust_hi``), then diversity by
farthest-point selection in descriptor space."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

from mlip.batch import compute_descriptors
from mlip.model import Model

ACCURATE, CANDIDATE, FAILED = "accurate", "candidate", "failed"


def classify(max_devi_f: np.ndarray, trust_lo: float, trust_hi: float) -> np.ndarray:
    """Per frame ``"accurate"`` (below ``trust_lo``), ``"candidate"`` or ``"failed"``
    (at or above ``trust_hi``); deviations in eV/Å."""
    max_devi_f = np.asarray(max_devi_f, dtype=np.float64)
    return np.where(max_devi_f < trust_lo, ACCURATE, np.where(max_devi_f < trust_hi, CANDIDATE, FAILED))


def frame_features(model: Model, frames: Sequence[Atoms]) -> np.ndarray:
    """One vector per frame: the mean raw symmetry functions of each element's atoms
    (zeros for an absent element), elements concatenated in the model's order."""
    rows = []
    sf_set = model.config.symmetry_functions
    for atoms in frames:
        per_element = compute_descriptors(model.member(0), [atoms])
        rows.append(np.concatenate([per_element[e].mean(axis=0) if len(per_element[e])
                                    else np.zeros(sf_set.n_features(e)) for e in model.elements]))
    return np.array(rows).reshape(len(frames), -1)


def farthest_points(features: np.ndarray, k: int, first: int = 0) -> list[int]:
    """Indices of ``k`` rows of ``features`` chosen greedily, each the farthest (in
    standardised coordinates) from those chosen before, starting at ``first``."""
    features = np.asarray(features, dtype=np.float64)
    n = len(features)
    if n == 0:
        return []
    spread = features.std(axis=0)
    scaled = (features - features.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    chosen = [int(first)]
    distance = np.linalg.norm(scaled - scaled[first], axis=1)
    while len(chosen) < min(k, n):
        nxt = int(np.argmax(distance))
        if distance[nxt] <= 0:  # only duplicates left
            break
        chosen.append(nxt)
        distance = np.minimum(distance, np.linalg.norm(scaled - scaled[nxt], axis=1))
    return chosen
