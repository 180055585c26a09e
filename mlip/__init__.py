"""mlip: Behler-Parrinello neural-network interatomic potentials in JAX.

Importing mlip turns on JAX's 64-bit mode (``jax_enable_x64``): energies and
forces are computed in float64 by default, float32 is available per calculator.
"""

import jax

jax.config.update("jax_enable_x64", True)

from mlip.model import Model, ModelConfig  # noqa: E402

__all__ = ["Model", "ModelConfig"]
__version__ = "0.1.0"
