"""Transfer learning Si -> Ge with few structures (mlearn Si and Ge sets).

Trains (or loads, with ``--si-model``) a Si potential on mlearn Si, then fits Ge
from ``--n-ge`` randomly chosen mlearn Ge training structures in four ways and
reports the Ge test-set MAEs:

* scratch: a new model of the same architecture trained on the few Ge structures;
* offsets only: the Si model renamed to Ge, energy offsets refitted in closed form;
* transfer, hidden frozen: Si model, hidden layers frozen, output layer and offsets trained;
* transfer, all trained: Si model fine-tuned entirely.

    python3 benchmarks/transfer_si_ge.py [--si-model si.mlip] [--n-ge 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--si-config", default=str(HERE / "mlearn_si" / "config.toml"))
    parser.add_argument("--si-model", default=None, help="a trained Si model (default: train one)")
    parser.add_argument("--n-ge", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=300, help="epochs of each Ge fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import numpy as np
    from ase.io import read, write

    from mlip.io import save_model
    from mlip.training.config import config_from_dict, load_config
    from mlip.training.trainer import train

    ge_train, ge_test = SHARED / "ge_mlearn" / "train.xyz", SHARED / "ge_mlearn" / "test.xyz"
    if not ge_train.exists():
        print(f"skipped: {ge_train} not found")
        return 0
    work = Path(tempfile.mkdtemp(prefix="mlip_transfer_"))
    si_model = args.si_model
    if si_model is None:
        si_config = load_config(args.si_config)
        si_config = dataclasses.replace(si_config, output=dataclasses.replace(
            si_config.output, directory=str(work / "si"), plots=False, progress=False))
        result = train(si_config, log=lambda line: None)
        si_model = str(work / "si" / si_config.output.model_name)
        print(f"Si model trained: test {result.metrics['test']['all']}")
    frames = read(ge_train, index=":")
    chosen = np.random.default_rng(args.seed).choice(len(frames), args.n_ge, replace=False)
    write(work / "ge_few.xyz", [frames[i] for i in sorted(chosen)], format="extxyz")

    from mlip.io import load_model

    si = load_model(si_model)
    base = {
        "data": {"train": str(work / "ge_few.xyz"), "test": str(ge_test), "validation_fraction": 0.15,
                 "seed": args.seed},
        "model": {"r_cut": si.cutoff, "hidden_layers": list(si.config.hidden_layers)},
        "loss": {"energy_weight": 10.0, "forces_weight": 1.0, "stress_weight": 1.0},
        "training": {"epochs": args.epochs, "batch_atoms": 256, "dtype": "float32"},
        "optimizer": {"learning_rate": 3e-3},
        "output": {"plots": False, "progress": False},
    }
    variants = {
        "scratch": {},
        "offsets only": {"transfer": {"init_model": si_model, "element_map": {"Si": "Ge"}, "offsets_only": True}},
        "transfer, hidden frozen": {"transfer": {"init_model": si_model, "element_map": {"Si": "Ge"},
                                                 "freeze": ["hidden"]}},
        "transfer, all trained": {"transfer": {"init_model": si_model, "element_map": {"Si": "Ge"}}},
    }
    rows = {}
    for name, extra in variants.items():
        settings = {**base, **extra, "output": {**base["output"], "directory": str(work / name.replace(" ", "_"))}}
        result = train(config_from_dict(settings), log=lambda line: None)
        rows[name] = result.metrics["test"]["all"]
    print(f"\nGe test set (25 structures), fitted on {args.n_ge} Ge structures:")
    print(f"{'variant':26s} {'E MAE meV/atom':>15s} {'F MAE meV/Å':>12s} {'S MAE GPa':>10s}")
    for name, r in rows.items():
        print(f"{name:26s} {r['E MAE meV/atom']:15.2f} {r['F MAE meV/Å']:12.1f} {r.get('S MAE GPa', float('nan')):10.3f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"n_ge": args.n_ge, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
