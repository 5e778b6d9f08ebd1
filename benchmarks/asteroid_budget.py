"""One ASTEROID path against standard training on the same label budget with longer, equal
time budgets (a follow-up to `asteroid.py`, reusing its cached data).

ASTEROID: fixed γ, `--minutes` per stage (stages 1, 2, 3); standard: 3 × `--minutes` on
200 + round(1000 / r) accurate frames. Runs are kept in the cache (asteroid_long/,
standard_long/), each with the settings that made it (settings.json); a run with other settings
(--minutes, --gamma, the cost ratio's frame count, the data) is redone, with a note of what
changed. Run the two side by side, one thread each:

    OMP_NUM_THREADS=1 python benchmarks/asteroid_budget.py asteroid --molecule aspirin &
    OMP_NUM_THREADS=1 python benchmarks/asteroid_budget.py standard --molecule aspirin
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import numpy as np
from asteroid import CACHE, HYPER, TEST_TRAJECTORY, gfn2_trajectory, test_f_mae

from mlff_core.data.formats import read_frames
from mlff_core.export import export_run
from mlff_core.stage_cache import claim_stage, config_settings, content_digest
from mlff_core.training import Trainer, TrainingConfig
from mlff_core.training.asteroid import AsteroidSettings, asteroid, measure_cost_ratio
from mlff_core.training.run import fit_with_progress


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["asteroid", "standard"])
    parser.add_argument("--molecule", default="aspirin")
    parser.add_argument("--minutes", type=float, default=4.0, help="per ASTEROID stage")
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("--cost-ratio", type=float,
                        help="default: the ratio recorded by asteroid.py, else measured")
    args = parser.parse_args()
    root = CACHE / args.molecule
    pool = gfn2_trajectory(args.molecule, 1500, 0)
    test = gfn2_trajectory(args.molecule, TEST_TRAJECTORY, 1)
    accurate, cheap = root / "gfn2_accurate_200.npz", root / "mmff94_cheap_1000.npz"
    ratio = args.cost_ratio
    if ratio is None:
        recorded = root / "asteroid" / "asteroid.json"
        ratio = json.loads(recorded.read_text())["budget"]["cost_ratio"] if recorded.exists() \
            else measure_cost_ratio(read_frames(accurate), read_frames(cheap), 10)["cost_ratio"]
    config = TrainingConfig(architecture="painn", hyperparameters=HYPER, epochs=100_000,
                            batch_size=16, learning_rate=1e-3, lr_patience=10,
                            early_stopping_patience=40, seed=0, max_minutes=args.minutes)
    if args.which == "asteroid":
        settings = AsteroidSettings(config=config, finetune_epochs=100_000,
                                    finetune_learning_rate=3e-4, finetune_minutes=args.minutes,
                                    gammas=(args.gamma,), cost_ratio=ratio)
        summary = asteroid([accurate], root / "asteroid_long", settings,
                           cheap=[cheap], redo_changed=True)
        print(json.dumps({"asteroid_test_F_mae": test_f_mae(summary["model"], test),
                          "stages": {k: [v["epochs"], v["val_force_mae"]]
                                     for k, v in summary["stages"].items()}}))
        return
    n = 200 + round(1000 / ratio)
    n_val = round(0.1 * n)
    order = np.random.default_rng(0).permutation(n)
    frames = pool[:n]
    out = root / "standard_long"
    standard_config = TrainingConfig(**{**asdict(config), "max_minutes": 3 * args.minutes})
    train, val = frames[np.sort(order[n_val:])], frames[np.sort(order[:n_val])]
    record = {"config": config_settings(standard_config),
              "data": {"train": content_digest(train), "val": content_digest(val)}}
    model = out / "model.pt"
    reuse = claim_stage(out, record, redo=True) and model.exists()
    trainer = Trainer(standard_config, [train], [val], out)
    if trainer.checkpoint_path.exists():  # finished or interrupted with the same settings
        trainer.resume()
    if not reuse:
        fit_with_progress(trainer, f"{args.molecule} · standard training")
        export_run(out, model, clusters=False)
    print(json.dumps({"standard_test_F_mae": test_f_mae(model, test), "frames": n,
                      "epochs": trainer.epoch}))


if __name__ == "__main__":
    main()
