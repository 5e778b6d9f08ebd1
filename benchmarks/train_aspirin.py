"""Accuracy of an equivariant model (PaiNN or MACE) trained on 1,000 GFN2-xTB aspirin frames.

Data: 1,200 frames of a 500 K GFN2-xTB Langevin trajectory (stride 10 steps = 5 fs), split at
random into 1,000 train / 100 validation / 100 test; plus 200 frames of an independent
trajectory (another seed) as a second, harder test set. Reports test force MAE in kcal/mol/Å
and meV/Å and energy MAE.

    python benchmarks/train_aspirin.py [--arch painn|mace] [--max-minutes 75] [--threads N]
                                       [--json out.json]

Architectures are compared with the same split, the same training settings (Adam 1e-3, batch
16, plateau schedule, EMA, float32) and the same wall-clock budget; run them side by side with
`--threads 1` each so that each has one core.

An interrupted run in --run-dir is continued (for up to --max-minutes more, to --epochs) only when
it was started with the same settings (settings.json: configuration, data); a run made with
others is redone, with a note of what changed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mlff_core import units
from mlff_core.data.formats import read_frames, write_frames
from mlff_core.data.generate import LangevinSampling, generate_frames
from mlff_core.data.molecules import named_molecule
from mlff_core.data.splits import split_indices
from mlff_core.export import export_run, load_model
from mlff_core.labels import get_level
from mlff_core.progress import progress_bar
from mlff_core.stage_cache import claim_stage, config_settings, content_digest
from mlff_core.training import Trainer, TrainingConfig

CACHE = Path(__file__).parent / ".cache"


def dataset(n_frames: int, seed: int):
    path = CACHE / f"aspirin_gfn2_{n_frames}_seed{seed}.npz"
    if not path.exists():
        sampling = LangevinSampling(temperature=500.0, stride=10, equilibration=200, seed=seed)
        with progress_bar(f"GFN2-xTB data (seed {seed})", sampling.total_steps(n_frames)) as adv:
            frames = generate_frames(named_molecule("aspirin"), get_level("gfn2"), n_frames,
                                     sampling, advance=adv)
        CACHE.mkdir(exist_ok=True)
        write_frames(frames, path)
    return read_frames(path)


def test_errors(model_path: Path, frames) -> dict:
    loaded = load_model(model_path)
    numbers = torch.tensor(frames.atomic_numbers)
    force_errors, energy_errors = [], []
    for f in range(frames.n_frames):
        pos = torch.tensor(frames.positions[f], dtype=loaded.dtype, requires_grad=True)
        energy = loaded.module(pos, numbers, torch.zeros(3, 3, dtype=loaded.dtype),
                               torch.zeros(3, dtype=torch.bool))
        (gradient,) = torch.autograd.grad(energy, pos)
        force_errors.append(np.abs(-gradient.numpy() - frames.forces[f]))
        energy_errors.append(abs(float(energy.detach()) - frames.energies[f]))
    f_mae = float(np.mean(force_errors))
    return {"frames": frames.n_frames,
            "F_mae_kcal_mol_A": f_mae / units.KCAL_PER_MOL,
            "F_mae_meV_A": f_mae * 1000.0,
            "E_mae_kcal_mol": float(np.mean(energy_errors)) / units.KCAL_PER_MOL,
            "E_mae_meV": float(np.mean(energy_errors)) * 1000.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-minutes", type=float, default=75.0)
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--arch", choices=["painn", "mace"], default="painn")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--run-dir", help="default: .cache/runs/aspirin_ARCH_1000")
    parser.add_argument("--json")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="export and test the run in --run-dir as it is (no training)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.run_dir = args.run_dir or str(CACHE / "runs" / f"aspirin_{args.arch}_1000")

    frames = dataset(1200, seed=0)
    independent = dataset(200, seed=1)
    split = split_indices(frames.n_frames, train=1000, val=100, test=100, seed=0)
    config = TrainingConfig(architecture=args.arch, epochs=args.epochs, batch_size=16,
                            learning_rate=1e-3, lr_patience=15, early_stopping_patience=60,
                            max_minutes=args.max_minutes, seed=0)
    run_dir = Path(args.run_dir)
    # the epoch limit and the time budget may grow when a run is continued; the rest may not
    record = {"config": {k: v for k, v in config_settings(config).items()
                         if k not in ("epochs", "max_minutes")},
              "data": {"train": content_digest(frames[split.train]),
                       "val": content_digest(frames[split.val])}}
    claim_stage(run_dir, record, redo=True)
    trainer = Trainer(config, [frames[split.train]], [frames[split.val]], run_dir,
                      provenance={"level_of_theory": "GFN2-xTB", "dataset_hash":
                                  frames.content_hash()[:16], "split_seed": 0})
    if trainer.checkpoint_path.exists():
        trainer.resume()
    started = time.perf_counter()
    if not args.evaluate_only:
        with progress_bar(f"training {args.arch}", config.epochs) as advance:
            advance(trainer.epoch)
            trainer.fit(lambda record: advance(1))
    minutes = (time.perf_counter() - started) / 60
    # the trainer was given frames, not files: the clusters are fitted on its training frames
    model = export_run(run_dir, run_dir / f"aspirin_{args.arch}.pt",
                       cluster_data=[frames[split.train]])
    result = {
        "stop": trainer.stop_reason, "epochs": trainer.epoch, "best_epoch": trainer.best_epoch,
        "architecture": args.arch, "threads": torch.get_num_threads(),
        "minutes_this_session": minutes, "hyperparameters": config.hyperparameters,
        "parameters": sum(p.numel() for p in trainer.potential.parameters()),
        "final_lr": trainer.optimizer.param_groups[0]["lr"],
        "test_random_split": test_errors(model, frames[split.test]),
        "test_independent_trajectory": test_errors(model, independent),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
