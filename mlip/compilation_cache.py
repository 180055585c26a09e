"""Persistent JAX compilation cache for mlip's entry points.

Compiling the energy function and the MD blocks takes seconds per shape; with
JAX's persistent cache a second process with the same model and shapes loads the
compiled code from disk instead.  The ``mlip`` command and
:class:`~mlip.calculator.MLIPCalculator` turn it on, unless

* the application already chose a cache (``jax_compilation_cache_dir`` is set), or
* the environment variable ``MLIP_COMPILATION_CACHE`` is ``0``, ``off``, ``no`` or
  ``false`` (opt out; any other value is the cache folder).

The default folder is ``$XDG_CACHE_HOME/mlip/jax`` (``~/.cache/mlip/jax``).  JAX
keys entries by the program, its shapes, the JAX version and the device, so a
stale entry is never used.  Only compilations longer than JAX's
``jax_persistent_cache_min_compile_time_secs`` (1 s by default) are written.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENVIRONMENT_VARIABLE = "MLIP_COMPILATION_CACHE"
_OFF = {"0", "off", "no", "false"}


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mlip/jax`` or ``~/.cache/mlip/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlip" / "jax"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Point JAX's persistent compilation cache at ``path`` (default: the environment
    variable, else :func:`default_cache_dir`) and return the folder; ``None`` when
    the user opted out or JAX already has a cache folder (left unchanged)."""
    if jax.config.jax_compilation_cache_dir:
        return None
    setting = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if path is None and setting.lower() in _OFF:
        return None
    folder = Path(path if path is not None else (setting or default_cache_dir())).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # read-only home or similar: run without the cache rather than fail
    jax.config.update("jax_compilation_cache_dir", str(folder))
    return folder
