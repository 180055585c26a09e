"""Helper shared by the ``analysis_*`` benchmark scripts (run as ``python3 benchmarks/NAME.py``,
which puts this folder on ``sys.path``)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def finish(results: dict, json_path: str | os.PathLike | None, start: float) -> int:
    """Print the total time since ``start`` (``time.perf_counter()``), write ``results``
    (with the load average) to ``json_path`` if given, and return exit status 0."""
    results = {**results, "seconds": round(time.perf_counter() - start, 1), "loadavg": os.getloadavg()[0]}
    print(f"\ntotal {results['seconds']:.1f} s (load {results['loadavg']:.2f})")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(results, indent=2))
    return 0
