"""Cutoff functions f_c(r) with n2p2's names, numbering and conventions.

All functions equal 1 at r <= r_ci (the inner cutoff, ``alpha * r_c``) where that
applies, fall smoothly to exactly 0 at r = r_c, and are exactly 0 beyond.  With
``x = (r - r_ci) / (r_c - r_ci)``:

=======  ====  ==========================================================
name     n2p2  f_c
=======  ====  ==========================================================
hard     0     1
cos      1     (cos(pi x) + 1) / 2
tanhu    2     tanh^3(1 - r / r_c)                       (no inner cutoff)
tanh     3     tanh^3(1 - r / r_c) / tanh^3(1)           (no inner cutoff)
exp      4     exp(1 - 1 / (1 - x^2))
poly1    5     (2x - 3) x^2 + 1
poly2    6     ((15 - 6x) x - 10) x^3 + 1
poly3    7     (x (x (20x - 70) + 84) - 35) x^4 + 1
poly4    8     (x (x ((315 - 70x) x - 540) + 420) - 126) x^5 + 1
=======  ====  ==========================================================

Distances are in Å.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

CUTOFF_TYPES: dict[str, int] = {
    "hard": 0,
    "cos": 1,
    "tanhu": 2,
    "tanh": 3,
    "exp": 4,
    "poly1": 5,
    "poly2": 6,
    "poly3": 7,
    "poly4": 8,
}
CUTOFF_NAMES: dict[int, str] = {number: name for name, number in CUTOFF_TYPES.items()}

_TANH_NORMALISATION = 1.0 / math.tanh(1.0) ** 3
_USES_INNER_CUTOFF = {"cos", "exp", "poly1", "poly2", "poly3", "poly4"}


def cutoff_name(kind: str | int) -> str:
    """Canonical name of a cutoff type given as name or n2p2 number."""
    if isinstance(kind, str) and kind.lower() in CUTOFF_TYPES:
        return kind.lower()
    if isinstance(kind, (int,)) and kind in CUTOFF_NAMES:
        return CUTOFF_NAMES[kind]
    raise ValueError(
        f"unknown cutoff function {kind!r}; choose one of {sorted(CUTOFF_TYPES)} "
        "or n2p2 numbers 0-8"
    )


def _core(name: str, x):
    """f_c on the scaled variable (x for inner-cutoff types, r / r_c for tanh)."""
    if name == "hard":
        return jnp.ones_like(x)
    if name == "cos":
        return 0.5 * (jnp.cos(jnp.pi * x) + 1.0)
    if name == "tanhu":
        return jnp.tanh(1.0 - x) ** 3
    if name == "tanh":
        return _TANH_NORMALISATION * jnp.tanh(1.0 - x) ** 3
    if name == "exp":
        # keep the argument finite where the branch is not taken
        x_safe = jnp.clip(x, 0.0, 1.0 - 1e-12)
        return jnp.exp(1.0 - 1.0 / (1.0 - x_safe * x_safe))
    if name == "poly1":
        return (2.0 * x - 3.0) * x * x + 1.0
    if name == "poly2":
        return ((15.0 - 6.0 * x) * x - 10.0) * x**3 + 1.0
    if name == "poly3":
        return (x * (x * (20.0 * x - 70.0) + 84.0) - 35.0) * x**4 + 1.0
    if name == "poly4":
        return (x * (x * ((315.0 - 70.0 * x) * x - 540.0) + 420.0) - 126.0) * x**5 + 1.0
    raise ValueError(f"unknown cutoff function {name!r}")


def cutoff_function(r, r_cut: float, kind: str | int = "tanh", alpha: float = 0.0):
    """Evaluate f_c(r) elementwise.

    Args:
        r: distances, Å (any shape).
        r_cut: outer cutoff r_c, Å.
        kind: cutoff name or n2p2 number (see module table).
        alpha: inner cutoff as a fraction of r_c (n2p2 ``cutoff_type <n> <alpha>``);
            ignored by ``hard``, ``tanh`` and ``tanhu``.

    Returns:
        f_c(r), same shape as ``r``; exactly zero for r >= r_c.
    """
    name = cutoff_name(kind)
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"inner cutoff fraction alpha must be in [0, 1), got {alpha}")
    if name in _USES_INNER_CUTOFF:
        r_inner = alpha * r_cut
        x = jnp.clip((r - r_inner) / (r_cut - r_inner), 0.0, 1.0)
        value = _core(name, x)
    else:
        value = _core(name, jnp.clip(r / r_cut, 0.0, 1.0))
    return jnp.where(r < r_cut, value, 0.0)
