"""Check that the ``analysis`` extra is installed, with an error that says how to get it."""

from __future__ import annotations

import importlib.util

INSTALL_HINT = "pip install -e '.[analysis]'"


def require(*modules: str) -> None:
    """``ImportError`` naming the install command if any of ``modules`` is missing."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"mlip.analysis needs {', '.join(missing)}, which is not installed: run {INSTALL_HINT}"
        )
