"""Persistent JAX compilation cache for mlip's entry points.

Compiling the energy function and the MD blocks takes seconds per shape; with
JAX's persistent cache a second process with the same model and shapes loads the
compiled code from disk instead.  JAX's cache folder is a process-wide setting,
so who turns it on differs:

* the ``mlip`` command owns its process and turns it on by default;
* :class:`~mlip.calculator.MLIPCalculator` lives inside someone else's program
  (an ASE script, a workflow engine) and, like other ASE calculators, leaves
  process-wide settings alone unless asked: it turns the cache on only with
  ``compilation_cache=True`` or when ``MLIP_COMPILATION_CACHE`` names a folder.

Either way nothing changes when the application already chose a cache
(``jax_compilation_cache_dir`` is set) or ``MLIP_COMPILATION_CACHE`` is ``0``,
``off``, ``no`` or ``false`` (opt out; any other value is the cache folder).  The
first time mlip sets the folder it says so in one line on the ``mlip`` logger
(``logging.INFO``) naming the folder.

The default folder is ``$XDG_CACHE_HOME/mlip/jax`` (``~/.cache/mlip/jax``).  JAX
keys entries by the program, its shapes, the JAX version and the device, so a
stale entry is never used.  Only compilations longer than JAX's
``jax_persistent_cache_min_compile_time_secs`` (1 s by default) are written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import jax

ENVIRONMENT_VARIABLE = "MLIP_COMPILATION_CACHE"
_OFF = {"0", "off", "no", "false"}


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mlip/jax`` or ``~/.cache/mlip/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlip" / "jax"


def requested_by_environment() -> bool:
    """Whether ``MLIP_COMPILATION_CACHE`` names a cache folder (an explicit opt-in)."""
    setting = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    return bool(setting) and setting.lower() not in _OFF


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Point JAX's persistent compilation cache at ``path`` (default: the environment
    variable, else :func:`default_cache_dir`) and return the folder; ``None`` when
    the user opted out or JAX already has a cache folder (left unchanged).  Setting
    the folder is logged once (``logging.getLogger("mlip")``, INFO)."""
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
    logging.getLogger("mlip").info("mlip: JAX's persistent compilation cache (process-wide) is now %s "
                                   "(opt out: %s=off)", folder, ENVIRONMENT_VARIABLE)
    return folder
