"""mlip: Behler-Parrinello neural-network interatomic potentials in JAX.

Importing mlip leaves JAX's configuration alone: mlip's entry points compute in
float64 inside a scoped ``jax.enable_x64`` (see :mod:`mlip.precision`), float32
is available per calculator and per training run.
"""

from mlip.model import Model, ModelConfig

__all__ = ["Model", "ModelConfig"]
__version__ = "0.1.0"
