"""The element loss against the global loss (JCP 159, 035101, Table III; issue 12): the same
model, data, epochs and seed, trained on F_mae (global) or on the mean over elements of each
element's F_mae (element); test F_mae per element.

Aspirin (C9H8O4): the 330 GFN2-xTB frames at 500 K of the guardrails benchmark (its cache must
exist) for training (10 % validation), its two held-out 500 K runs (seeds 1 and 510, 100 frames
each) as the 200 test frames. PaiNN hidden 32, 3 interactions, float32, batch 16, `--epochs`
epochs from lr 1e-3 (plateau schedule), `--seeds` seeds (initial weights, split and batch
order). Each seed trains both losses one after the other on one thread.

    python benchmarks/element_loss.py [--seeds 0,1,2] [--epochs 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mlff_core import units
from mlff_core.data.formats import read_frames
from mlff_core.data.frames import Frames
from mlff_core.export import export_run, load_model
from mlff_core.metrics.predict import predict_with_model
from mlff_core.progress import progress_bar
from mlff_core.stage_cache import claim_stage, config_settings, content_digest
from mlff_core.training import Trainer, TrainingConfig

GUARDRAILS = Path(__file__).parent / ".cache" / "guardrails" / "data"
CACHE = Path(__file__).parent / ".cache" / "element_loss"
DATA = GUARDRAILS / "aspirin_500K_330_seed0.npz"
TEST = [GUARDRAILS / "aspirin_500K_100_seed1.npz", GUARDRAILS / "aspirin_500K_100_seed510.npz"]
LOSSES = {"global": {"global": 1.0}, "element": {"element": 1.0}}
SYMBOLS = {1: "H", 6: "C", 8: "O"}
KCAL = 1.0 / units.KCAL_PER_MOL


def per_element_f_mae(model: Path, test: Frames) -> dict[str, float]:
    """Test F_mae (kcal/mol/Å) over all atoms and over each element's atoms."""
    _, forces = predict_with_model(load_model(model), test)
    errors = np.abs(forces - test.forces) * KCAL  # [F, N, 3]
    result = {"all": float(errors.mean())}
    for z in np.unique(test.atomic_numbers):
        result[SYMBOLS[int(z)]] = float(errors[:, test.atomic_numbers == z].mean())
    return result


def train(loss: str, seed: int, train_frames: Frames, val: Frames, args) -> Path:
    config = TrainingConfig(architecture="painn",
                            hyperparameters={"hidden": 32, "num_interactions": 3},
                            dtype="float32", epochs=args.epochs, batch_size=16,
                            learning_rate=1e-3, lr_patience=10, early_stopping_patience=40,
                            loss=LOSSES[loss], seed=seed)
    stage = CACHE / f"{loss}_seed{seed}"
    record = {"config": config_settings(config), "train": content_digest(train_frames),
              "val": content_digest(val)}
    model = stage / "model.pt"
    if not claim_stage(stage, record, redo=True) or not model.exists():
        trainer = Trainer(config, [train_frames], [val], stage / "run")
        if trainer.checkpoint_path.exists():
            trainer.resume()
        with progress_bar(f"{loss} loss · seed {seed}", config.epochs - trainer.epoch) as adv:
            trainer.fit(lambda _record: adv(1))
        export_run(stage / "run", model, clusters=False)
    return model


def main() -> None:
    global CACHE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    CACHE = args.cache
    for path in (DATA, *TEST):
        if not path.exists():
            raise SystemExit(f"error: {path} is missing; run benchmarks/guardrails.py first")
    data = read_frames(DATA)
    test = Frames.concatenate([read_frames(p) for p in TEST])
    results: dict = {"settings": {"epochs": args.epochs, "test_frames": test.n_frames},
                     "seeds": {}}
    for seed in [int(s) for s in args.seeds.split(",")]:
        order = np.random.default_rng(seed).permutation(data.n_frames)
        n_val = round(0.1 * data.n_frames)
        train_frames = data[np.sort(order[n_val:])]
        val = data[np.sort(order[:n_val])]
        results["seeds"][seed] = {loss: per_element_f_mae(train(loss, seed, train_frames, val,
                                                                args), test)
                                  for loss in LOSSES}
        print(json.dumps(results["seeds"][seed], indent=1))
    seeds = results["seeds"].values()
    keys = list(next(iter(seeds))["global"])
    table = ["| loss | " + " | ".join(f"F_mae {k}" for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for loss in LOSSES:
        cells = []
        for key in keys:
            values = np.array([s[loss][key] for s in seeds])
            cells.append(f"{values.mean():.3f} ± {values.std(ddof=1):.3f}")
        table.append(f"| {loss} | " + " | ".join(cells) + " |")
    change = []
    for key in keys:
        ratios = np.array([s["element"][key] / s["global"][key] - 1.0 for s in seeds]) * 100
        change.append(f"{ratios.mean():+.1f} ± {ratios.std(ddof=1):.1f} %")
    table.append("| element vs global | " + " | ".join(change) + " |")
    print("\n".join(table))
    results["table"] = table
    out = args.json or CACHE / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    sys.exit(main())
