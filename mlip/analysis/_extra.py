"""Check that the ``analysis`` extra is installed, with an error that says how to get it."""

from __future__ import annotations

import importlib

INSTALL_HINT = "pip install -e '.[analysis]'"


def require(*modules: str) -> None:
    """Import ``modules``; ``ImportError`` naming the install command if any is missing."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(
            f"mlip.analysis needs {', '.join(missing)}, which is not installed: run {INSTALL_HINT}"
        )
