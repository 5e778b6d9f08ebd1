"""ASTEROID against standard training under one protocol for both (issue 12): accurate frames
drawn at random over the whole trajectory, several seeds, the same number of hyperparameter
trials and the same total training time, 200 test frames, and two cost regimes.

Molecule: ethanol. Configurations: the 1,500-frame GFN2-xTB Langevin trajectory at 500 K of
`benchmarks/asteroid.py` (seed 0); test: all 200 frames of its second trajectory (seed 1).
Accurate level: DFT PBE/def2-SVP. `--labelled-pool` frames drawn at random from the 1,500
get accurate labels. Each seed draws its 200 accurate frames from that pool, and its 1,000 cheap
frames at random from the other frames. Level pairs (cheap → accurate):

    gfn2-dft   GFN2-xTB → PBE/def2-SVP   cost ratio r ≈ 3,000 (the previous section's regime)
    hf-dft     HF/STO-3G → PBE/def2-SVP  r ≈ 20–30 (the paper's 20–80:1 regime, two ab initio
                                         levels)

Standard training gets the same label cost: 200 + round(1,000 / r) accurate frames (the extra
ones from the labelled pool).

Compute, counted in frame-gradients (training frames × epochs: one forward and backward pass
of one frame), so that it does not depend on the machine's load. ASTEROID runs stage 1
(`--bias-epochs` on the accurate training frames), then G values of γ, each with stage 2
(`--cheap-epochs` on the cheap training frames) and stage 3 (`--finetune-epochs` on the
accurate training frames), and chooses γ by the accurate validation loss; its total is the
budget. Standard training runs G learning rates with a third of the budget each and chooses by
its validation loss. Score matching runs one path: stage 2 on `--unlabeled-runs` independent
GFN2-xTB trajectories (1,000 configurations each, no labels) with the budget less stage 3,
then stage 3. Wall seconds are recorded beside.

    python benchmarks/asteroid_fair.py label test|pool|cheap     # labels (resumable); cheap:
                                                                 # HF labels and cost ratios
    python benchmarks/asteroid_fair.py run --pair hf-dft --method asteroid --seed 0
    python benchmarks/asteroid_fair.py report                    # table, JSON and figure

The paper's ablations and Fig. 6b on the same runs: `run --method uniform` (stage 2 with
uniform weights, one path, beside ASTEROID's own γ = 1 path), `ablations` (adds each chosen γ's
stage-2 model, i.e. no fine-tuning on the accurate labels), and `stability --pair P` (ASE
Langevin from the first test frame at `--md-temperature`, `--md-runs` runs per model and time
step: simulated fs before a collapse for each seed's chosen standard and ASTEROID model).

Runs are cached per (pair, method, seed) under `--cache`, with the settings that made them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from asteroid import (  # noqa: E402  (the benchmark's shared data and helpers)
    HYPER,
    KCAL,
    fs_before_collapse,
    gfn2_trajectory,
    labelled,
    model_of,
    test_f_mae,
)

from mlff_core.data.formats import write_frames  # noqa: E402
from mlff_core.data.frames import Frames  # noqa: E402
from mlff_core.export import export_run  # noqa: E402
from mlff_core.progress import progress_bar  # noqa: E402
from mlff_core.report.plots import plt  # noqa: E402
from mlff_core.stage_cache import claim_stage, config_settings, content_digest  # noqa: E402
from mlff_core.training import Trainer, TrainingConfig  # noqa: E402
from mlff_core.training.asteroid import (  # noqa: E402
    AsteroidSettings,
    asteroid,
    measure_cost_ratio,
)
from mlff_core.training.run import fit_with_progress  # noqa: E402

CACHE = Path(__file__).parent / ".cache" / "asteroid_fair"
FIGURES = Path(__file__).parent / "figures"
MOLECULE = "ethanol"
ACCURATE_LEVEL = "dft:PBE/def2-SVP"
PAIRS = {"gfn2-dft": "gfn2", "hf-dft": "dft:HF/STO-3G"}
POOL = 1500          # frames of the seed-0 trajectory
TEST = 200           # frames of the seed-1 trajectory, all used as test
N_ACCURATE = 200
N_CHEAP = 1000
GAMMAS = (0.5, 1.0, 2.0)
LEARNING_RATES = (3e-4, 1e-3, 3e-3)  # standard training's search, as many trials as γ values
BATCH = 16


# ---------------------------------------------------------------------------------- the data
def labelled_pool_indices(n: int) -> np.ndarray:
    """[n] indices (sorted) of the pool frames that get accurate labels: drawn at random over
    the whole trajectory, the same for every seed and pair."""
    return np.sort(np.random.default_rng(2023).choice(POOL, n, replace=False))


def accurate_pool(n: int) -> Frames:
    pool = gfn2_trajectory(MOLECULE, POOL, 0)
    return labelled(pool[labelled_pool_indices(n)], ACCURATE_LEVEL,
                    CACHE / f"dft_pool_{n}.npz")


def test_frames() -> Frames:
    return labelled(gfn2_trajectory(MOLECULE, TEST, 1), ACCURATE_LEVEL, CACHE / "dft_test.npz")


def cheap_pool(pair: str, n_labelled: int) -> Frames:
    """Every pool frame outside the accurate pool, labelled at the pair's cheap level (GFN2-xTB:
    the MD's own labels)."""
    pool = gfn2_trajectory(MOLECULE, POOL, 0)
    rest = np.setdiff1d(np.arange(POOL), labelled_pool_indices(n_labelled))
    level = PAIRS[pair]
    if level == "gfn2":
        return pool[rest]
    return labelled(pool[rest], level, CACHE / f"{pair}_cheap_pool_{n_labelled}.npz")


def seed_data(pair: str, seed: int, args) -> dict:
    """One seed's draw: accurate frames, the standard model's extra accurate frames, cheap
    frames, written to files in the seed's folder."""
    folder = CACHE / pair / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    acc_pool = accurate_pool(args.labelled_pool)
    cheap_all = cheap_pool(pair, args.labelled_pool)
    cost = cost_ratio(pair, acc_pool, cheap_all)
    n_extra = round(N_CHEAP / cost["cost_ratio"])
    if N_ACCURATE + n_extra > acc_pool.n_frames:
        raise SystemExit(f"--labelled-pool {acc_pool.n_frames} is too small for "
                         f"{N_ACCURATE + n_extra} standard frames")
    order = np.random.default_rng(1000 + seed).permutation(acc_pool.n_frames)
    cheap_pick = np.random.default_rng(2000 + seed).choice(cheap_all.n_frames, N_CHEAP,
                                                          replace=False)
    return {
        "accurate": write_frames(acc_pool[np.sort(order[:N_ACCURATE])], folder / "accurate.npz"),
        "standard": acc_pool[np.sort(order[:N_ACCURATE + n_extra])],
        "cheap": write_frames(cheap_all[np.sort(cheap_pick)], folder / "cheap.npz"),
        "cost": cost, "n_standard": N_ACCURATE + n_extra,
    }


def cost_ratio(pair: str, accurate: Frames, cheap: Frames) -> dict:
    """The accurate/cheap cost per label, measured once per pair on 10 frames of each (one
    thread when run as documented) and kept in the cache."""
    path = CACHE / f"{pair}_cost.json"
    if path.exists():
        return json.loads(path.read_text())
    cost = measure_cost_ratio(accurate, cheap, 10)
    path.write_text(json.dumps(cost, indent=2, default=float))
    return cost


def unlabeled_configurations(runs: int) -> Path:
    """`runs` independent GFN2-xTB trajectories (seeds 2, 3, …; 1,000 frames each, 500 K) as
    configurations without labels, for score matching."""
    path = CACHE / f"unlabeled_{runs}x1000.npz"
    if not path.exists():
        frames = Frames.concatenate([gfn2_trajectory(MOLECULE, 1000, 2 + k)
                                     for k in range(runs)])
        write_frames(Frames(positions=frames.positions, atomic_numbers=frames.atomic_numbers),
                     path)
    return path


# ------------------------------------------------------------------------------------ methods
def n_train(n_frames: int) -> int:
    """Training frames of a set of `n_frames` after its 10 % validation split."""
    return n_frames - max(1, round(0.1 * n_frames))


def budget(args) -> int:
    """ASTEROID's frame-gradients: stage 1, then stages 2 and 3 for every γ."""
    accurate, cheap = n_train(N_ACCURATE), n_train(N_CHEAP)
    return accurate * args.bias_epochs + len(GAMMAS) * (cheap * args.cheap_epochs +
                                                        accurate * args.finetune_epochs)


def base_config(seed: int, epochs: int, learning_rate: float = 1e-3) -> TrainingConfig:
    return TrainingConfig(architecture="painn", hyperparameters=HYPER, epochs=epochs,
                          batch_size=BATCH, learning_rate=learning_rate, lr_patience=10,
                          early_stopping_patience=40, seed=seed)


def stage_seconds(summary: dict) -> float:
    return float(sum(stage.get("seconds", 0.0) for stage in summary["stages"].values()
                     if isinstance(stage, dict)))


def stage_frame_gradients(summary: dict) -> int:
    """Frame-gradients an ASTEROID run spent: epochs run × training frames of every stage."""
    frames = summary["frames"]
    total = 0
    for name, stage in summary["stages"].items():
        on_extra = name.startswith("stage2")
        total += stage["epochs"] * frames["extra_train" if on_extra else "accurate_train"]
    return total


def run_asteroid(pair: str, seed: int, data: dict, args) -> dict:
    settings = AsteroidSettings(config=base_config(seed, args.cheap_epochs),
                                bias_epochs=args.bias_epochs,
                                finetune_epochs=args.finetune_epochs,
                                finetune_learning_rate=3e-4, gammas=GAMMAS,
                                cost_ratio=data["cost"]["cost_ratio"])
    summary = asteroid([data["accurate"]], CACHE / pair / f"seed{seed}" / "asteroid", settings,
                       cheap=[data["cheap"]], progress=progress_bar, redo_changed=True)
    test = test_frames()
    run = Path(summary["model"]).parent
    return {"test_f_mae": test_f_mae(summary["model"], test), "gamma": summary["gamma"],
            "validation": summary["gamma_selection"],
            "gamma_test_f_mae": {f"{g:g}": test_f_mae(model_of(run / f"stage3_gamma{g:g}"), test)
                                 for g in GAMMAS},
            "bias_median_per_component_kcal":
                summary["bias"]["median_per_component"] * KCAL,
            "training_seconds": stage_seconds(summary),
            "frame_gradients": stage_frame_gradients(summary)}


def run_uniform(pair: str, seed: int, data: dict, args) -> dict:
    """The bias-weights ablation: ASTEROID with uniform stage-2 weights, one path, to set
    beside ASTEROID's own γ = 1 path (the same stage-1 and path epochs)."""
    settings = AsteroidSettings(config=base_config(seed, args.cheap_epochs),
                                bias_epochs=args.bias_epochs,
                                finetune_epochs=args.finetune_epochs,
                                finetune_learning_rate=3e-4, gammas=(1.0,), bias_weights=False,
                                cost_ratio=data["cost"]["cost_ratio"])
    summary = asteroid([data["accurate"]], CACHE / pair / f"seed{seed}" / "asteroid_uniform",
                       settings, cheap=[data["cheap"]], progress=progress_bar,
                       redo_changed=True)
    return {"test_f_mae": test_f_mae(summary["model"], test_frames()),
            "training_seconds": stage_seconds(summary),
            "frame_gradients": stage_frame_gradients(summary)}


def run_score_matching(seed: int, data: dict, args) -> dict:
    unlabeled = unlabeled_configurations(args.unlabeled_runs)
    score_budget = budget(args) - n_train(N_ACCURATE) * args.finetune_epochs
    epochs = max(1, round(score_budget / n_train(1000 * args.unlabeled_runs)))
    settings = AsteroidSettings(config=base_config(seed, epochs),
                                finetune_epochs=args.finetune_epochs,
                                finetune_learning_rate=3e-4, temperature=500.0)
    summary = asteroid([data["accurate"]], CACHE / "score" / f"seed{seed}_"
                       f"{args.unlabeled_runs}runs", settings, unlabeled=[unlabeled],
                       progress=progress_bar, redo_changed=True)
    return {"test_f_mae": test_f_mae(summary["model"], test_frames()),
            "unlabeled_frames": 1000 * args.unlabeled_runs,
            "training_seconds": stage_seconds(summary),
            "frame_gradients": stage_frame_gradients(summary)}


def run_standard(pair: str, seed: int, data: dict, args) -> dict:
    """G learning rates, each with 1/G of the budget, on the standard label budget; the one with
    the lowest validation loss is tested."""
    frames: Frames = data["standard"]
    n_val = max(1, round(0.1 * frames.n_frames))
    order = np.random.default_rng(seed).permutation(frames.n_frames)
    train, val = frames[np.sort(order[n_val:])], frames[np.sort(order[:n_val])]
    epochs = max(1, round(budget(args) / len(LEARNING_RATES) / train.n_frames))
    trials, seconds, gradients = {}, 0.0, 0
    for lr in LEARNING_RATES:
        config = base_config(seed, epochs, lr)
        run_dir = CACHE / pair / f"seed{seed}" / f"standard_lr{lr:g}"
        record = {"config": config_settings(config),
                  "data": {"train": content_digest(train), "val": content_digest(val)}}
        done = run_dir / "trial.json"
        if not claim_stage(run_dir, record, redo=True) or not done.exists():
            started = time.monotonic()
            trainer = Trainer(config, [train], [val], run_dir)
            if trainer.checkpoint_path.exists():
                trainer.resume()
            fit_with_progress(trainer, f"{pair} seed {seed} · standard lr {lr:g}")
            export_run(run_dir, run_dir / "model.pt", clusters=False)
            done.write_text(json.dumps({"val_loss": trainer.best_val_loss,
                                        "epochs": trainer.epoch,
                                        "frame_gradients": trainer.epoch * train.n_frames,
                                        "seconds": time.monotonic() - started}))
        trial = json.loads(done.read_text())
        seconds += trial["seconds"]
        gradients += trial["frame_gradients"]
        trials[f"{lr:g}"] = {**trial, "model": str(run_dir / "model.pt")}
    best = min(trials, key=lambda k: trials[k]["val_loss"])
    test = test_frames()
    return {"test_f_mae": test_f_mae(trials[best]["model"], test), "learning_rate": float(best),
            "validation": {k: t["val_loss"] for k, t in trials.items()},
            "lr_test_f_mae": {k: test_f_mae(t["model"], test) for k, t in trials.items()},
            "n_standard": data["n_standard"], "training_seconds": seconds,
            "frame_gradients": gradients}


def run(args) -> None:
    data = seed_data(args.pair, args.seed, args)
    if args.method == "asteroid":
        result = run_asteroid(args.pair, args.seed, data, args)
    elif args.method == "standard":
        result = run_standard(args.pair, args.seed, data, args)
    elif args.method == "uniform":
        result = run_uniform(args.pair, args.seed, data, args)
    else:
        result = run_score_matching(args.seed, data, args)
    result.update(pair=args.pair, method=args.method, seed=args.seed, cost=data["cost"],
                  budget_frame_gradients=budget(args))
    name = f"{args.method}_{args.unlabeled_runs}runs" if args.method == "score" else args.method
    out = CACHE / args.pair / f"seed{args.seed}" / f"result_{name}.json"
    out.write_text(json.dumps(result, indent=2, default=float))
    print(json.dumps({k: v for k, v in result.items() if k != "cost"}, indent=1, default=float))


# --------------------------------------------------------------- ablations and MD (Fig. 6b)
def finished_seeds(pair: str) -> list[int]:
    """Seeds of `pair` with both an ASTEROID and a standard result."""
    return sorted(int(path.parent.name.removeprefix("seed"))
                  for path in CACHE.glob(f"{pair}/seed*/result_asteroid.json")
                  if (path.parent / "result_standard.json").exists())


def chosen_models(pair: str, seed: int) -> dict[str, Path]:
    """The model each method kept: standard's best learning rate, ASTEROID's best γ."""
    folder = CACHE / pair / f"seed{seed}"
    standard = json.loads((folder / "result_standard.json").read_text())
    lr = float(standard["learning_rate"])
    return {"standard": folder / f"standard_lr{lr:g}" / "model.pt",
            "ASTEROID": folder / "asteroid" / "model.pt"}


def ablations(args) -> None:
    """Per pair, mean ± std over seeds: ASTEROID, its chosen γ's stage-2 model (no fine-tuning
    on the accurate labels), its γ = 1 path and the uniform-weights run beside it."""
    test = test_frames()
    lines = ["| pair | seeds | ASTEROID | no fine-tuning (stage 2 of the chosen γ) | γ = 1 path | "
             "uniform weights (1 path) |", "|---|---|---|---|---|---|"]
    results = {}
    for pair in PAIRS:
        rows: dict[str, list[float]] = {"asteroid": [], "no_finetune": [], "gamma1": [],
                                        "uniform": []}
        for seed in finished_seeds(pair):
            folder = CACHE / pair / f"seed{seed}"
            result = json.loads((folder / "result_asteroid.json").read_text())
            rows["asteroid"].append(result["test_f_mae"])
            stage2 = model_of(folder / "asteroid" / f"stage2_gamma{result['gamma']:g}")
            rows["no_finetune"].append(test_f_mae(stage2, test))
            uniform = folder / "result_uniform.json"
            if uniform.exists():
                rows["gamma1"].append(result["gamma_test_f_mae"]["1"])
                rows["uniform"].append(json.loads(uniform.read_text())["test_f_mae"])
        if not rows["asteroid"]:
            continue
        results[pair] = rows
        cells = [f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.3f} "
                 f"({', '.join(f'{x:.3f}' for x in v)})" if v else "—" for v in rows.values()]
        lines.append(f"| {pair} | {len(rows['asteroid'])} | {' | '.join(cells)} |")
    print("\n".join(lines))
    (CACHE / "ablations.json").write_text(json.dumps(results, indent=2))


def stability(args) -> None:
    """Fig. 6b: simulated fs before a collapse against the time step, for each seed's standard
    and ASTEROID model, from the first test frame (ASE Langevin; medians per seed, then
    mean ± std over seeds)."""
    start_frames = gfn2_trajectory(MOLECULE, TEST, 1)[:1]
    start = write_frames(start_frames, CACHE / "md_start.xyz")
    runs: dict[str, dict[str, list[list[float]]]] = {}  # model → time step → per seed
    for seed in finished_seeds(args.pair):
        root = CACHE / args.pair / f"seed{seed}" / f"md_{args.md_temperature:g}K"
        for name, model in chosen_models(args.pair, seed).items():
            for timestep in args.timesteps:
                runs.setdefault(name, {}).setdefault(f"{timestep:g}", []).append(
                    fs_before_collapse(model, start, start_frames, timestep, args, root, name))
    medians = {name: {step: [float(np.median(times)) for times in per_seed]
                      for step, per_seed in by_step.items()} for name, by_step in runs.items()}
    lines = [f"| model | {' | '.join(f'{t:g} fs' for t in args.timesteps)} |",
             "|---|" + "---|" * len(args.timesteps)]
    for name, by_step in medians.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{np.mean(v):.0f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.0f} "
            f"({', '.join(f'{x:g}' for x in v)})" for v in by_step.values()) + " |")
    print(f"{args.pair}: fs before collapse (of {args.md_time:g}), {args.md_runs} runs per "
          f"model and step at {args.md_temperature:g} K, median per seed, mean ± std (seeds)")
    print("\n".join(lines))
    (CACHE / f"stability_{args.pair}.json").write_text(
        json.dumps({"runs": runs, "medians": medians}, indent=2))


# ------------------------------------------------------------------------------------- report
def report(args) -> None:
    """Mean ± std over seeds per pair and method, a figure, and the results JSON."""
    results: dict[str, dict[str, list[dict]]] = {}
    for path in sorted(CACHE.glob("*/seed*/result_*.json")):
        result = json.loads(path.read_text())
        method = path.stem.removeprefix("result_")
        results.setdefault(result["pair"], {}).setdefault(method, []).append(result)
    lines = ["| pair | r | method | seeds | test F_mae (kcal/mol/Å) | per seed | choice | "
             "frame-gradients (k) | training min |", "|---|---|---|---|---|---|---|---|---|"]
    for pair, methods in results.items():
        for method, runs in methods.items():
            runs.sort(key=lambda r: r["seed"])
            errors = np.array([r["test_f_mae"] for r in runs])
            choice = [r.get("gamma", r.get("learning_rate", r.get("unlabeled_frames")))
                      for r in runs]
            lines.append(
                f"| {pair} | {runs[0]['cost']['cost_ratio']:.0f} | {method} | {len(runs)} | "
                f"{errors.mean():.3f} ± {errors.std(ddof=1) if len(runs) > 1 else 0:.3f} | "
                f"{', '.join(f'{e:.3f}' for e in errors)} | {', '.join(map(str, choice))} | "
                f"{np.mean([r['frame_gradients'] for r in runs]) / 1000:.1f} | "
                f"{np.mean([r['training_seconds'] for r in runs]) / 60:.1f} |")
    table = "\n".join(lines)
    print(table)
    out = CACHE / "results.json"
    out.write_text(json.dumps(results, indent=2, default=float))
    figure, axis = plt.subplots(figsize=(5.4, 3.4))
    labels, means, stds = [], [], []
    for pair, methods in results.items():
        for method, runs in methods.items():
            errors = [r["test_f_mae"] for r in runs]
            labels.append(f"{pair}\n{method}")
            means.append(np.mean(errors))
            stds.append(np.std(errors, ddof=1) if len(errors) > 1 else 0.0)
    axis.bar(range(len(labels)), means, yerr=stds, capsize=3, color="tab:blue")
    axis.set_xticks(range(len(labels)), labels, fontsize=7)
    axis.set_ylabel("test F_mae (kcal/mol/Å)")
    axis.set_title("ethanol, 200 test frames, mean ± std over seeds")
    FIGURES.mkdir(exist_ok=True)
    path = FIGURES / f"{CACHE.name}_ethanol.png"  # one figure per cache (budget)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    print(f"results: {out}; figure: {path}")


def main() -> None:
    global CACHE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--labelled-pool", type=int, default=260,
                        help="pool frames with accurate labels (seeds draw from them)")
    sub = parser.add_subparsers(dest="command", required=True)
    label = sub.add_parser("label", help="make the labels (resumable)")
    label.add_argument("part", choices=["test", "pool", "cheap"])
    one = sub.add_parser("run", help="one method, pair and seed")
    one.add_argument("--pair", choices=sorted(PAIRS), required=True)
    one.add_argument("--method", choices=["asteroid", "standard", "score", "uniform"],
                     required=True)
    one.add_argument("--seed", type=int, required=True)
    one.add_argument("--bias-epochs", type=int, default=40, help="stage 1")
    one.add_argument("--cheap-epochs", type=int, default=10, help="stage 2, per γ")
    one.add_argument("--finetune-epochs", type=int, default=25, help="stage 3, per γ")
    one.add_argument("--unlabeled-runs", type=int, default=5,
                     help="independent 1,000-frame trajectories for score matching")
    sub.add_parser("report", help="the table, figure and JSON of every finished run")
    sub.add_parser("ablations", help="no fine-tuning and uniform weights, from the runs")
    md = sub.add_parser("stability", help="MD stability against the time step (Fig. 6b)")
    md.add_argument("--pair", choices=sorted(PAIRS), required=True)
    md.add_argument("--timesteps", type=lambda v: [float(t) for t in v.split(",")],
                    default=[0.5, 2.0], help="fs")
    md.add_argument("--md-runs", type=int, default=5, help="per model and time step")
    md.add_argument("--md-time", type=float, default=2000.0, help="fs per run")
    md.add_argument("--md-temperature", type=float, default=1000.0, help="K")
    args = parser.parse_args()
    CACHE = args.cache
    CACHE.mkdir(parents=True, exist_ok=True)
    if args.command == "label":
        if args.part == "test":
            test_frames()
        elif args.part == "pool":
            accurate_pool(args.labelled_pool)
        else:  # the HF labels, both pairs' cost ratios and score matching's configurations,
            # before the runs that read them start in parallel
            unlabeled_configurations(5)
            for pair in PAIRS:
                cost_ratio(pair, accurate_pool(args.labelled_pool),
                           cheap_pool(pair, args.labelled_pool))
    elif args.command == "run":
        run(args)
    elif args.command == "ablations":
        ablations(args)
    elif args.command == "stability":
        stability(args)
    else:
        report(args)


if __name__ == "__main__":
    sys.exit(main())
