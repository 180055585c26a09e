"""mlip's float64 is scoped: importing and using mlip leaves JAX's global
``jax_enable_x64`` as the host set it, and mlip's entry points still compute in
float64 (checked against finite differences, which float32 could not meet)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import json, sys
    import jax
    import jax.numpy as jnp
    before = bool(jax.config.jax_enable_x64)
    import numpy as np
    from ase.build import bulk
    from ase.calculators.fd import calculate_numerical_forces
    import mlip, mlip.calculator, mlip.io, mlip.training.trainer
    from mlip import Model
    from mlip.calculator import MLIPCalculator
    from mlip.io import load_model, save_model
    after_import = bool(jax.config.jax_enable_x64)

    model = Model.create(elements=["Si"], r_cut=4.0, n_radial=3, n_angular=1, hidden_layers=(4,), seed=1)
    path = sys.argv[1] + "/m.mlip"
    save_model(model, path)
    model = load_model(path)
    atoms = bulk("Si", "diamond", 5.43, cubic=True)
    atoms.rattle(0.1, seed=2)
    errors = {}
    for dtype in ("float64", "float32"):
        atoms.calc = MLIPCalculator(model, dtype=dtype)
        forces = atoms.get_forces()
        numerical = calculate_numerical_forces(atoms, eps=1e-4)
        errors[dtype] = float(np.abs(forces - numerical).max())
    print(json.dumps({
        "before": before, "after_import": after_import, "after_use": bool(jax.config.jax_enable_x64),
        "param_dtype": str(np.asarray(model.params["feature_scale"]["Si"]).dtype),
        "default_dtype_after": str(jnp.ones(1).dtype), "errors": errors,
    }))
""")


def test_import_and_use_leave_jax_config_unchanged_and_compute_in_float64(tmp_path):
    env_free = {k: v for k, v in __import__("os").environ.items() if k != "JAX_ENABLE_X64"}
    result = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True,
                            env=env_free, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["before"] is False
    assert report["after_import"] is False, "importing mlip changed jax_enable_x64"
    assert report["after_use"] is False, "using mlip changed jax_enable_x64"
    assert report["default_dtype_after"] == "float32", "mlip's float64 scope leaked into the caller"
    assert report["param_dtype"] == "float64"
    # central differences with eps 1e-4 Å are exact to ~1e-8 eV/Å in float64; float32
    # rounding of the energy (~1e-5 eV) makes them wrong by ~0.1 eV/Å
    assert report["errors"]["float64"] < 1e-6
    assert report["errors"]["float32"] > 100 * report["errors"]["float64"]
