"""ASTEROID on generated data: the shape of the paper's Table 1 (test F_mae, standard training vs
ASTEROID on the same label budget, improvement in %), the ablations, γ sensitivity, the
score-matching variant and MD stability versus time step (Fig. 6b).

Per molecule: configurations from GFN2-xTB Langevin MD at 500 K (`--pool` frames, seed 0; the
test set is another trajectory, seed 1). Accurate labels: `--accurate-level` (default GFN2-xTB,
the MD's own labels; `dft` relabels with PBE/def2-SVP, resumable, hours); cheap labels:
`--cheap-level` (default MMFF94) on other configurations of the same trajectory. The cost ratio
r (accurate / cheap per label) is measured. ASTEROID gets `--accurate` accurate frames plus
`--cheap` cheap frames; standard training gets accurate + round(cheap / r) accurate frames (the
same label cost) and the wall time of one ASTEROID path (stage 1 + stage 2 + stage 3).

    ASTEROID           γ chosen on the grid by the accurate validation loss
    γ sensitivity      test F_mae of stage 3 for every γ of the grid
    without bias w     stage 2 with uniform weights, then stage 3
    without fine-tune  stage 2 (chosen γ) alone
    score matching     sliced score matching on the cheap frames' configurations (no labels),
                       then stage 3
    MD stability       ASE Langevin at 500 K, `--md-runs` runs per time step, frames before
                       collapse of the standard and the ASTEROID model (last molecule)

    python benchmarks/asteroid.py [--molecules ethanol,malonaldehyde,aspirin] [--minutes 2]
        [--cheap-level gfn2 --accurate-level dft --test 100]

Everything is cached under `--cache` and reused only with the settings that made it: labelled
files are checked against the configurations and level they should hold, every run directory
(ASTEROID stages, the standard model, MD runs) keeps a settings.json (`mlff_core.stage_cache`);
what was made with other settings is redone, with a note of what changed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mlff_core import units
from mlff_core.data.formats import read_frames, write_frames
from mlff_core.data.frames import Frames
from mlff_core.data.generate import LangevinSampling, generate_frames, relabel_frames
from mlff_core.data.molecules import named_molecule
from mlff_core.engines import get_engine
from mlff_core.errors import LevelOfTheoryError
from mlff_core.export import export_run, load_model
from mlff_core.labels.levels import get_level
from mlff_core.metrics.predict import predict_with_model
from mlff_core.progress import progress_bar
from mlff_core.report.plots import plt
from mlff_core.stage_cache import (
    claim_stage,
    config_settings,
    content_digest,
    describe_differences,
    model_digest,
    settings_differences,
)
from mlff_core.training import Trainer, TrainingConfig
from mlff_core.training.asteroid import AsteroidSettings, asteroid, measure_cost_ratio
from mlff_core.training.run import fit_with_progress

CACHE = Path(__file__).parent / ".cache" / "asteroid"
FIGURES = Path(__file__).parent / "figures"
KCAL = 1.0 / units.KCAL_PER_MOL


def gfn2_trajectory(molecule: str, n_frames: int, seed: int) -> Frames:
    path = CACHE / molecule / f"gfn2_{n_frames}_seed{seed}.npz"
    if not path.exists():
        sampling = LangevinSampling(temperature=500.0, stride=10, equilibration=200, seed=seed)
        with progress_bar(f"{molecule} · GFN2-xTB MD (seed {seed})",
                          sampling.total_steps(n_frames)) as advance:
            frames = generate_frames(named_molecule(molecule), get_level("gfn2"), n_frames,
                                     sampling, advance=advance)
        write_frames(frames, path)
    return read_frames(path)


def label_settings(frames: Frames, tag: str | None = None) -> dict:
    """What decides a labelled file: its configurations and the level that labelled them
    (`tag`; default: the levels the frames record)."""
    return {"level": tag or ", ".join(sorted(set(frames.levels.tolist()))),
            "configurations": content_digest(frames.atomic_numbers, frames.positions,
                                             frames.cell, frames.pbc)}


def cached_labels(path: Path, frames: Frames, tag: str, note: bool = True) -> Frames | None:
    """The labelled frames cached at `path` when they are `frames` labelled at level `tag`;
    None (with a note of what differs unless `note` is False) when they are other frames or
    another level."""
    if not path.exists():
        return None
    cached = read_frames(path)
    changes = settings_differences(label_settings(cached), label_settings(frames, tag))
    if not changes:
        return cached
    if note:
        print(f"{path}: made from other settings ({describe_differences(changes)}); "
              "relabelling")
    return None


def labelled(frames: Frames, level: str, path: Path, chunk: int = 10) -> Frames:
    """`frames` relabelled with `level`, cached at `path` (reused only when it holds these
    configurations at this level). Labels are written in chunks of `chunk` frames next to it,
    so an interrupted run (DFT: hours) resumes where it stopped."""
    tag = get_level(level).tag
    cached = cached_labels(path, frames, tag)
    if cached is not None:
        return cached
    parts_dir = path.with_suffix(".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    parts, stale = [], 0
    with progress_bar(f"{path.parent.name} · {level} labels", frames.n_frames) as advance:
        for start in range(0, frames.n_frames, chunk):
            part_path = parts_dir / f"{start:06d}.npz"
            part = cached_labels(part_path, frames[start: start + chunk], tag, note=False)
            if part is None:
                stale += part_path.exists()
                part = relabel_frames(frames[start: start + chunk], get_level(level), advance)
                write_frames(part, part_path)
            else:
                advance(min(chunk, frames.n_frames - start))
            parts.append(part)
    if stale:
        print(f"{parts_dir}: {stale} chunks held other configurations or another level; "
              "relabelled")
    labels = Frames.concatenate(parts)
    write_frames(labels, path)
    for part in parts_dir.iterdir():
        part.unlink()
    parts_dir.rmdir()
    return labels


def test_f_mae(model_path, test: Frames) -> float:
    """Force MAE on the test frames, kcal/mol/Å."""
    _, forces = predict_with_model(load_model(model_path), test)
    return float(np.abs(forces - test.forces).mean()) * KCAL


def model_of(run_dir: Path) -> Path:
    path = run_dir / "model.pt"
    return path if path.exists() else export_run(run_dir, path, clusters=False)


def slug(level: str) -> str:
    """A file-name form of a level name ('dft:PBE/def2-SVP' → 'dft_PBE_def2-SVP')."""
    return level.replace(":", "_").replace("/", "_")


def at_level(frames: Frames, level: str, path: Path) -> Path:
    """A file with `frames` labelled by `level`: the GFN2-xTB MD frames keep their own labels,
    other levels relabel them (cached, resumable)."""
    if level == "gfn2":
        return write_frames(frames, path)
    labelled(frames, level, path)
    return path


def runs_root(molecule: str, args) -> Path:
    """Where a level pair's runs live: the molecule's folder for the default pair (MMFF94 cheap,
    GFN2-xTB accurate), a `<cheap>-<accurate>` folder in it otherwise."""
    root = CACHE / molecule
    default = (args.cheap_level, args.accurate_level) == ("mmff94", "gfn2")
    return root if default else root / f"{slug(args.cheap_level)}-{slug(args.accurate_level)}"


def benchmark_data(molecule: str, args) -> tuple[Path, Path, Frames, Frames]:
    """(accurate file, cheap file, test frames, pool) of one molecule. Accurate: the pool's first
    `--accurate` frames; cheap: the next `--cheap`; test: `--test` frames evenly spaced along a
    second 200-frame trajectory; all labelled at their level."""
    root = CACHE / molecule
    pool = gfn2_trajectory(molecule, args.pool, 0)
    trajectory = gfn2_trajectory(molecule, TEST_TRAJECTORY, 1)
    picked = np.arange(args.test) * (TEST_TRAJECTORY // args.test)
    accurate, cheap = slug(args.accurate_level), slug(args.cheap_level)
    test = read_frames(at_level(trajectory[picked], args.accurate_level,
                                root / f"{accurate}_test_{args.test}.npz"))
    acc_path = at_level(pool[: args.accurate], args.accurate_level,
                        root / f"{accurate}_accurate_{args.accurate}.npz")
    cheap_path = at_level(pool[args.accurate: args.accurate + args.cheap], args.cheap_level,
                          root / f"{cheap}_cheap_{args.cheap}.npz")
    return acc_path, cheap_path, test, pool


def standard_frames(molecule: str, pool: Frames, accurate: Frames, n_standard: int,
                    args) -> Frames:
    """The standard model's `n_standard` accurate frames: the accurate set plus the next pool
    frames, labelled at the accurate level."""
    if n_standard == accurate.n_frames:
        return accurate
    extra = pool[accurate.n_frames: n_standard]
    path = CACHE / molecule / f"{slug(args.accurate_level)}_extra_{accurate.n_frames}_" \
        f"{n_standard}.npz"
    return Frames.concatenate([accurate, read_frames(at_level(extra, args.accurate_level,
                                                              path))])


def molecule_benchmark(molecule: str, args) -> dict:
    runs = runs_root(molecule, args)
    runs.mkdir(parents=True, exist_ok=True)
    acc_path, cheap_path, test, pool = benchmark_data(molecule, args)
    accurate, cheap = read_frames(acc_path), read_frames(cheap_path)
    cost = measure_cost_ratio(accurate, cheap, 10)
    n_standard = args.accurate + round(args.cheap / cost["cost_ratio"])
    if n_standard > args.pool:
        raise SystemExit(f"--pool {args.pool} is too small for {n_standard} standard frames")

    config = TrainingConfig(architecture="painn", hyperparameters=HYPER, epochs=100_000,
                            batch_size=16, learning_rate=1e-3, lr_patience=10,
                            early_stopping_patience=40, seed=0, max_minutes=args.minutes)
    settings = AsteroidSettings(config=config, finetune_epochs=100_000,
                                finetune_learning_rate=3e-4, finetune_minutes=args.minutes / 2,
                                gammas=args.gammas, cost_ratio=cost["cost_ratio"])
    run = runs / "asteroid"
    summary = asteroid([acc_path], run, settings, cheap=[cheap_path], progress=progress_bar,
                       redo_changed=True)
    chosen = summary["chosen"]
    result = {"molecule": molecule, "cost": cost, "budget": summary["budget"],
              "n_standard": n_standard, "gamma": summary["gamma"],
              "bias_median_per_component_kcal": summary["bias"]["median_per_component"] * KCAL,
              "asteroid": test_f_mae(summary["model"], test),
              "gamma_sensitivity": {}, "val_loss": summary["gamma_selection"]}
    for gamma in args.gammas:
        name = f"gamma{gamma:g}"
        result["gamma_sensitivity"][f"{gamma:g}"] = test_f_mae(model_of(run / f"stage3_{name}"),
                                                               test)
    result["no_finetune"] = test_f_mae(model_of(run / f"stage2_{chosen}"), test)

    # ablation: uniform weights (stage 1 shared through a link)
    uniform = runs / "asteroid_uniform"
    uniform.mkdir(exist_ok=True)
    if not (uniform / "stage1_bias").exists():
        (uniform / "stage1_bias").symlink_to(run / "stage1_bias", target_is_directory=True)
    ablation = asteroid([acc_path], uniform, AsteroidSettings(**{**asdict(settings),
                        "config": config, "bias_weights": False}), cheap=[cheap_path],
                        progress=progress_bar, redo_changed=True)
    result["no_bias_weights"] = test_f_mae(ablation["model"], test)

    # score matching on the cheap frames' configurations, labels dropped
    unlabeled = Frames(positions=cheap.positions, atomic_numbers=cheap.atomic_numbers)
    unl_path = write_frames(unlabeled, CACHE / molecule / f"unlabeled_{args.cheap}.npz")
    sm = asteroid([acc_path], runs / "asteroid_score", AsteroidSettings(
        **{**asdict(settings), "config": config, "temperature": 500.0}),
        unlabeled=[unl_path], progress=progress_bar, redo_changed=True)
    result["score_matching"] = test_f_mae(sm["model"], test)

    # standard training on the same label budget and the wall time of one ASTEROID path
    standard_dir = runs / "standard"
    standard_config = TrainingConfig(**{**asdict(config), "max_minutes": 2.5 * args.minutes})
    n_val = max(1, round(0.1 * n_standard))
    frames = standard_frames(molecule, pool, accurate, n_standard, args)
    order = np.random.default_rng(0).permutation(n_standard)
    train, val = frames[np.sort(order[n_val:])], frames[np.sort(order[:n_val])]
    standard = {"config": config_settings(standard_config),
                "data": {"train": content_digest(train), "val": content_digest(val)}}
    if not claim_stage(standard_dir, standard, redo=True) or \
            not (standard_dir / "model.pt").exists():
        trainer = Trainer(standard_config, [train], [val], standard_dir)
        if trainer.checkpoint_path.exists():  # interrupted with the same settings
            trainer.resume()
        fit_with_progress(trainer, f"{molecule} · standard training")
        export_run(standard_dir, standard_dir / "model.pt", clusters=False)
    result["standard"] = test_f_mae(standard_dir / "model.pt", test)
    result["improvement_percent"] = 100.0 * (result["standard"] - result["asteroid"]) / \
        result["standard"]
    result["models"] = {"standard": str(standard_dir / "model.pt"),
                        "asteroid": summary["model"]}
    return result


def md_stability(result: dict, args) -> dict:
    """Frames before collapse vs time step for the standard and the ASTEROID model."""
    molecule = result["molecule"]
    start_frames = gfn2_trajectory(molecule, TEST_TRAJECTORY, 1)[:1]
    start = write_frames(start_frames, CACHE / molecule / "start.xyz")
    root = runs_root(molecule, args) / f"md_{args.md_temperature:g}K"
    return {name: {f"{timestep:g}": fs_before_collapse(model, start, start_frames, timestep,
                                                       args, root, name)
                   for timestep in args.timesteps}
            for name, model in result["models"].items()}


def fs_before_collapse(model: Path, start: Path, start_frames: Frames, timestep: float, args,
                       root: Path, name: str) -> list[float]:
    """Simulated fs before the run stopped (`args.md_time` = none) of `args.md_runs` ASE
    Langevin runs (MD seeds 0, 1, …) at `args.md_temperature` from `start`, each cached in
    `root/{name}_{timestep}fs_{seed}` with its settings."""
    runner = get_engine("ase")
    steps = int(round(args.md_time / timestep))
    interval = max(1, int(round(5 / timestep)))
    settings = {"engine": "ase", "model_weights": model_digest(model),
                "start": content_digest(start_frames), "temperature": args.md_temperature,
                "timestep": timestep, "steps": steps, "report_interval": interval}
    times = []
    for seed in range(args.md_runs):
        stage = root / f"{name}_{timestep:g}fs_{seed}"
        out = stage / "run"  # the engine's output; the settings record beside it
        summary_file = out / "summary.json"
        md = {**settings, "seed": seed}
        if not claim_stage(stage, md, redo=True) or not summary_file.exists():
            shutil.rmtree(out, ignore_errors=True)  # an interrupted run starts anew
            with progress_bar(f"MD {name} {timestep:g} fs #{seed}", steps) as advance:
                runner(model, start, str(out), temperature=args.md_temperature,
                       timestep=timestep, steps=steps, seed=seed, advance=advance,
                       report_interval=interval)
        summary = json.loads(summary_file.read_text())
        times.append(summary["steps_run"] * timestep)
    return times


COMPARED = {"standard": "standard", "asteroid": "ASTEROID", "no_bias_weights": "no bias weights",
            "no_finetune": "no fine-tuning", "score_matching": "score matching"}


def comparison_figure(molecules: list[dict], path: Path) -> Path:
    """Grouped bars of test F_mae (kcal/mol/Å) per molecule: standard training, ASTEROID and its
    ablations (the shape of the paper's Table 1 and Fig. 3)."""
    figure, axis = plt.subplots(figsize=(1.9 + 1.9 * len(molecules), 3.4))
    width = 0.8 / len(COMPARED)
    for k, (key, label) in enumerate(COMPARED.items()):
        values = [m[key] for m in molecules]
        axis.bar(np.arange(len(molecules)) + (k - (len(COMPARED) - 1) / 2) * width, values,
                 width, label=label)
    axis.set_xticks(np.arange(len(molecules)), [m["molecule"] for m in molecules])
    axis.set_ylabel("test F_mae (kcal/mol/Å)")
    axis.set_yscale("log")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


HYPER = {"hidden": 64, "num_interactions": 3}
TEST_TRAJECTORY = 200  # frames of the test trajectory (seed 1)


def check_arguments(args) -> None:
    """One clear line, before any MD or labelling, for levels this machine cannot run and test
    sizes the test trajectory cannot give."""
    for level in (args.cheap_level, args.accurate_level):
        try:
            get_level(level).require()
        except LevelOfTheoryError as exc:
            raise SystemExit(f"error: {exc}") from None
    if not 1 <= args.test <= TEST_TRAJECTORY:
        raise SystemExit(f"error: --test must be 1 to {TEST_TRAJECTORY} frames, got {args.test}")


def main() -> None:
    global CACHE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", default="ethanol,malonaldehyde,aspirin")
    parser.add_argument("--pool", type=int, default=1500, help="GFN2-xTB frames per molecule")
    parser.add_argument("--test", type=int, default=200,
                        help="test frames, evenly spaced along a 200-frame trajectory")
    parser.add_argument("--cheap-level", default="mmff94")
    parser.add_argument("--accurate-level", default="gfn2",
                        help="gfn2 (the MD's own labels) or another level, e.g. dft")
    parser.add_argument("--accurate", type=int, default=200)
    parser.add_argument("--cheap", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=2.0,
                        help="time budget of stages 1 and 2 (stage 3: half)")
    parser.add_argument("--gammas", default="0.1,0.5,1,2")
    parser.add_argument("--timesteps", default="0.5,1,1.5,2", help="fs, MD stability")
    parser.add_argument("--md-runs", type=int, default=5)
    parser.add_argument("--md-time", type=float, default=2000.0, help="fs per MD run")
    parser.add_argument("--md-temperature", type=float, default=500.0, help="K")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--json", type=Path, help="results file (default: in --cache)")
    args = parser.parse_args()
    check_arguments(args)
    CACHE = args.cache
    args.gammas = tuple(float(g) for g in args.gammas.split(","))
    args.timesteps = [float(t) for t in args.timesteps.split(",")] if args.timesteps else []
    results = {"settings": {k: (str(v) if isinstance(v, Path) else v)
                            for k, v in vars(args).items()}, "molecules": []}
    started = time.monotonic()
    for molecule in args.molecules.split(","):
        result = molecule_benchmark(molecule, args)
        results["molecules"].append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "cost"}, indent=1))
    if args.timesteps:
        last = results["molecules"][-1]
        stability = md_stability(last, args)
        results["md_stability"] = {"molecule": last["molecule"], "fs_before_collapse": stability}
        figure, axis = plt.subplots(figsize=(5.0, 3.4))
        for name, per_step in stability.items():
            steps = [float(t) for t in per_step]
            axis.plot(steps, [np.median(v) for v in per_step.values()], "o-", label=name)
        axis.set_xlabel("time step (fs)")
        axis.set_ylabel("median fs before collapse")
        axis.set_title(f"MD stability, {last['molecule']}, {args.md_temperature:g} K")
        axis.legend()
        FIGURES.mkdir(exist_ok=True)
        pair = runs_root(last["molecule"], args).relative_to(CACHE / last["molecule"])
        name = "_".join(["asteroid_md_stability", last["molecule"], *pair.parts,
                         f"{args.md_temperature:g}K"])
        figure.savefig(FIGURES / f"{name}.png", dpi=110, bbox_inches="tight")
        plt.close(figure)
    results["seconds"] = time.monotonic() - started
    molecules = args.molecules.replace(",", "_")
    name = f"{slug(args.cheap_level)}-{slug(args.accurate_level)}_{molecules}"
    comparison_figure(results["molecules"], FIGURES / f"asteroid_{name}.png")
    out = args.json or CACHE / f"results_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {out}")


if __name__ == "__main__":
    sys.exit(main())
