"""Continued learning with controls (JCP 159, 035101, section III; issue 12): does adding the
unexplored and pre-collapse frames make MD more stable than the same extra training without
them?

Per seed (`--seeds`, default 0,1,2), on aspirin, the starting model M0 is the guardrails
benchmark's single model of that seed: PaiNN (hidden 32) trained for 2 minutes on 330 GFN2-xTB
frames at 500 K (`benchmarks/guardrails.py`, its cache must exist). Two arms:

    continued   `mlff_core.training.active.active_learn`: `--rounds` rounds, each with MD from
                `--starts` new start structures drawn at random from a held-out 500 K
                trajectory (`starts_per_round`, so no round reuses a start), the unexplored and
                pre-collapse frames labelled with GFN2-xTB, then `--epochs` more epochs → M1, M2
    control     the same rounds of training (same configuration, epochs, learning rate and
                seed, `round_training_config`) on the original frames only → C1, C2

RBP fine-tuning judged as in the paper's Fig. 8: M0 fine-tuned with RBP reweighting (`finetune`,
`reweight="rbp"`) and, as its control, with uniform weights (`reweight="none"`), each with
round 1's configuration but `--finetune-epochs` epochs and no early stop, on all of the
original frames, keeping the epoch with the lowest training loss (a fixed-length fine-tuning)
→ RBP, uniform; judged like every model below (from `--finetune-eval-starts` start
structures), plus the test F_mae per conformation cluster (4 clusters fitted on the training
frames, each test frame in its nearest; the same for every model).

Every model is then judged on `--eval-starts` start structures drawn from another held-out
trajectory, used by no round: ASE Langevin at `--temperature`, `--steps` steps of 0.5 fs, a
frame every 20 steps, stopped at a 0.5 Å bond deviation. Frames before collapse are counted
with the 0.5 Å criterion and with the paper's 0.3 Å (from the same trajectories: a 0.3 Å
deviation comes first). The same start structures and MD seeds for every model of a seed.
JCP Fig. 7: M0's evaluation runs that collapsed get their last 10 frames before the collapse
labelled with GFN2-xTB (`mlff_core.report.build.pre_collapse_errors`, as `mlff report
--relabel`), and M0's F_mae along them is set beside its test F_mae. Each model's force error
is measured too, on the guardrails benchmark's two held-out 500 K runs
(200 GFN2-xTB frames), to set it beside the stability ("Forces are not enough").

    python benchmarks/continued_learning.py [--seeds 0,1,2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from mlff_core import units
from mlff_core.data.formats import read_frames, write_frames
from mlff_core.data.frames import Frames
from mlff_core.data.trajectories import read_trajectory
from mlff_core.engines import get_engine
from mlff_core.export import export_run, load_model
from mlff_core.labels import get_level
from mlff_core.metrics.clusters import ConformationClusters
from mlff_core.metrics.predict import predict_with_model
from mlff_core.progress import progress_bar
from mlff_core.report.build import pre_collapse_errors
from mlff_core.report.plots import plt, stability_violins
from mlff_core.stage_cache import claim_stage, config_settings, content_digest, model_digest
from mlff_core.training import Trainer
from mlff_core.training.active import (
    ActiveLearningSettings,
    active_learn,
    original_data,
    round_training_config,
    run_stability,
)
from mlff_core.training.finetune import finetune

GUARDRAILS = Path(__file__).parent / ".cache" / "guardrails"
CACHE = Path(__file__).parent / ".cache" / "continued_learning"
FIGURES = Path(__file__).parent / "figures"
DATA = GUARDRAILS / "data" / "aspirin_500K_330_seed0.npz"   # M0's training frames
ROUND_STARTS = GUARDRAILS / "data" / "aspirin_500K_100_seed2.npz"
EVAL_STARTS = GUARDRAILS / "data" / "aspirin_500K_100_seed3.npz"
TEST = [GUARDRAILS / "data" / "aspirin_500K_100_seed1.npz",
        GUARDRAILS / "data" / "aspirin_500K_100_seed510.npz"]
KCAL = 1.0 / units.KCAL_PER_MOL
PRE_COLLAPSE = 10  # frames before a collapse labelled for JCP Fig. 7
THRESHOLDS = (0.5, 0.3)
FINETUNED = ("RBP", "uniform")  # Fig. 8: M0 fine-tuned with RBP weights and with uniform ones


def settings_of(args, seed: int) -> ActiveLearningSettings:
    return ActiveLearningSettings(
        engine="ase", level="gfn2", rounds=args.rounds, runs_per_structure=1,
        starts_per_round=args.starts, temperature=args.temperature, steps=args.steps,
        report_interval=20, max_new_frames=args.new_frames, epochs=args.epochs,
        learning_rate=2e-4, final_md=False, seed=seed)


def continued_arm(m0: Path, seed: int, args) -> list[Path]:
    """M1..MR of `active_learn` (cached with its settings)."""
    stage = CACHE / f"seed{seed}" / "continued"
    out = stage / "run"
    settings = settings_of(args, seed)
    record = {"settings": asdict(settings), "model": model_digest(m0),
              "starts": content_digest(read_frames(ROUND_STARTS)),
              "data": content_digest(read_frames(DATA))}
    if not claim_stage(stage, record, redo=True) or not (out / "summary.json").exists():
        shutil.rmtree(out, ignore_errors=True)  # an interrupted run cannot continue
        active_learn(m0, ROUND_STARTS, out, settings, data=[DATA], progress=progress_bar)
    summary = json.loads((out / "summary.json").read_text())
    return [Path(r["model_after"]) for r in summary["rounds"]], summary


def control_arm(m0: Path, seed: int, args) -> list[Path]:
    """C1..CR: the rounds' training without new frames (cached per round)."""
    settings = settings_of(args, seed)
    m0_loaded = load_model(m0)
    train, val = original_data(m0_loaded, [DATA], settings.n_val, settings.seed)
    models, current = [], m0
    for r in range(1, settings.rounds + 1):
        stage = CACHE / f"seed{seed}" / f"control_round{r}"
        config = round_training_config(m0_loaded, settings, r)
        record = {"config": config_settings(config), "start": model_digest(current),
                  "train": content_digest(*train), "val": content_digest(*val)}
        path = stage / "model.pt"
        if not claim_stage(stage, record, redo=True) or not path.exists():
            shutil.rmtree(stage / "train", ignore_errors=True)
            trainer = Trainer(config, train, val, stage / "train",
                              init_potential=load_model(current).to_potential())
            with progress_bar(f"seed {seed} · control round {r}", config.epochs) as advance:
                trainer.fit(lambda _record: advance(1))
            export_run(stage / "train", path, cluster_data=train)
        models.append(path)
        current = path
    return models


def finetuned_arm(m0: Path, seed: int, args) -> dict[str, Path]:
    """M0 fine-tuned with RBP weights and with uniform weights: round 1's configuration, with
    `--finetune-epochs` epochs and no early stop, on all of M0's frames. Those frames are also
    the "validation" set, so the epoch kept is the one with the lowest (RBP-weighted for RBP)
    training loss: a fixed-length fine-tuning. (Kept on held-out frames, both arms kept epoch 1
    or 2, i.e. M0: any step away from M0 raised the held-out loss.)"""
    settings = settings_of(args, seed)
    config = replace(round_training_config(load_model(m0), settings, 1),
                     epochs=args.finetune_epochs,
                     early_stopping_patience=args.finetune_epochs)
    models = {}
    settings_record = {"config": config_settings(config), "start": model_digest(m0),
                       "data": content_digest(read_frames(DATA))}
    for name, reweight in zip(FINETUNED, ("rbp", "none"), strict=True):
        stage = CACHE / f"seed{seed}" / f"finetune_{reweight}"
        record = {**settings_record, "reweight": reweight, "kept_by": "training loss"}
        path = stage / "run" / "model.pt"
        if not claim_stage(stage, record, redo=True) or not path.exists():
            shutil.rmtree(stage / "run", ignore_errors=True)
            with progress_bar(f"seed {seed} · fine-tuning ({name})", config.epochs) as advance:
                finetune(m0, [DATA], stage / "run", config, val_data=[DATA],
                         reweight=reweight, on_epoch=lambda _record: advance(1))
        models[name] = path
    return models


def evaluate(name: str, model: Path, seed: int, args, starts: int) -> dict:
    """Frames before collapse (0.5 and 0.3 Å) of the evaluation runs of one model, from `starts`
    start structures; for M0, the force error along the last frames before each collapse
    ("pre_collapse")."""
    pool = read_frames(EVAL_STARTS)
    picked = np.sort(np.random.default_rng(10_000 + seed).choice(pool.n_frames, starts,
                                                                replace=False))
    runner = get_engine("ase")
    result: dict = {f"{t:g}": [] for t in THRESHOLDS}
    if name == "M0":
        result["pre_collapse"] = []
    for k, index in enumerate(picked):
        start = pool[[int(index)]]
        stage = CACHE / f"seed{seed}" / "eval" / f"{name}_{k}"
        out = stage / "run"
        md = {"model": model_digest(model), "start": content_digest(start), "seed": k,
              "temperature": args.temperature, "steps": args.steps}
        if not claim_stage(stage, md, redo=True) or not (out / "summary.json").exists():
            shutil.rmtree(out, ignore_errors=True)
            start_file = write_frames(start, stage / "start.xyz")
            with progress_bar(f"seed {seed} · {name} · eval run {k}", args.steps) as advance:
                runner(str(model), str(start_file), str(out), temperature=args.temperature,
                       timestep=0.5, steps=args.steps, report_interval=20, bond_threshold=0.5,
                       action="stop", seed=100 + k, advance=advance)
        summary = json.loads((out / "summary.json").read_text())
        trajectory = read_trajectory(summary["trajectory"])
        stables = {threshold: run_stability(summary, trajectory, start, threshold)
                   for threshold in THRESHOLDS}
        for threshold, stable in stables.items():
            result[f"{threshold:g}"].append(int(stable["frames_before_collapse"]))
        stable = stables[0.5]
        if name == "M0" and stable["collapsed"] and stable["frames_before_collapse"] > 0:
            curve = pre_collapse_errors(trajectory, stable["frames_before_collapse"], start,
                                        get_level("gfn2"), PRE_COLLAPSE, [load_model(model)],
                                        [name], KCAL)
            result["pre_collapse"].append({"frames_to_collapse": curve["frames_to_collapse"],
                                           "F_mae": curve["F_mae"][name]})
    return result


def finetune_summary(model: Path) -> dict:
    """Epochs run, the epoch kept, and the RBP per training cluster before and after (Fig. 8)."""
    summary = json.loads((model.parent / "finetune.json").read_text())
    (system,) = summary["systems"]
    rbp = {when: [row["RBP"] for _, row in sorted(system[when]["per_cluster"].items())]
           for when in ("before", "after")}
    return {"epochs": summary["epochs"], "best_epoch": summary["best_epoch"], "rbp": rbp}


def test_errors(model: Path, test: Frames, clusters: np.ndarray) -> dict:
    """Force MAE (kcal/mol/Å) on the held-out frames, overall and per cluster."""
    _, forces = predict_with_model(load_model(model), test)
    frame_mae = np.abs(forces - test.forces).mean(axis=(1, 2)) * KCAL
    return {"all": float(frame_mae.mean()),
            "clusters": [float(frame_mae[clusters == k].mean())
                         for k in range(int(clusters.max()) + 1)]}


def main() -> None:
    global CACHE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--starts", type=int, default=8, help="new start structures per round")
    parser.add_argument("--eval-starts", type=int, default=8)
    parser.add_argument("--finetune-epochs", type=int, default=60,
                        help="RBP and uniform fine-tuning (Fig. 8), no early stop")
    parser.add_argument("--finetune-eval-starts", type=int, default=16,
                        help="evaluation runs of each fine-tuned model (Fig. 8)")
    parser.add_argument("--temperature", type=float, default=1200.0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=30, help="training per round")
    parser.add_argument("--new-frames", type=int, default=50, help="at most, per round")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    CACHE = args.cache
    for path in (DATA, ROUND_STARTS, EVAL_STARTS, *TEST):
        if not path.exists():
            raise SystemExit(f"error: {path} is missing; run benchmarks/guardrails.py first")
    frames_per_run = args.steps // 20 + 1
    test = Frames.concatenate([read_frames(p) for p in TEST])
    test_clusters = ConformationClusters(n_clusters=4, random_state=0).fit(
        read_frames(DATA)).classify(test)[0]  # nearest cluster, explored or not
    results = {"settings": {k: str(v) if isinstance(v, Path) else v
                            for k, v in vars(args).items()},
               "frames_per_run": frames_per_run, "seeds": {},
               "test_cluster_sizes": np.bincount(test_clusters, minlength=4).tolist()}
    for seed in [int(s) for s in args.seeds.split(",")]:
        m0 = GUARDRAILS / "aspirin" / f"seed{seed}" / "single.pt"
        continued, summary = continued_arm(m0, seed, args)
        control = control_arm(m0, seed, args)
        models = {"M0": m0, **{f"M{r + 1}": p for r, p in enumerate(continued)},
                  **{f"C{r + 1}": p for r, p in enumerate(control)},
                  **finetuned_arm(m0, seed, args)}
        runs = {name: evaluate(name, path, seed, args, args.finetune_eval_starts
                               if name in FINETUNED else args.eval_starts)
                for name, path in models.items()}
        errors = {name: test_errors(path, test, test_clusters) for name, path in models.items()}
        results["seeds"][seed] = {
            "runs": runs,
            "test_f_mae": {name: e["all"] for name, e in errors.items()},
            "test_cluster_f_mae": {name: e["clusters"] for name, e in errors.items()},
            "finetune": {name: finetune_summary(models[name]) for name in FINETUNED},
            "new_frames": [r["new_frames"] for r in summary["rounds"]],
            "round_starts": [r["starts"] for r in summary["rounds"]],
            "round_frames_before_collapse": [r["frames_before_collapse"]
                                             for r in summary["rounds"]]}
        print(json.dumps({name: {t: float(np.median(r[t])) for t in ("0.5", "0.3")}
                          for name, r in runs.items()}, indent=1))
    names = list(next(iter(results["seeds"].values()))["runs"])
    table = ["| model | median frames before collapse, 0.5 Å (per seed) | mean ± std over "
             "seeds | 0.3 Å (per seed) | mean ± std | test F_mae (kcal/mol/Å) |",
             "|---|---|---|---|---|---|"]
    for name in names:
        cells = []
        for threshold in ("0.5", "0.3"):
            medians = [float(np.median(s["runs"][name][threshold]))
                       for s in results["seeds"].values()]
            cells.append(f"{', '.join(f'{m:g}' for m in medians)} | "
                         f"{np.mean(medians):.1f} ± {np.std(medians, ddof=1):.1f}")
        errors = [s["test_f_mae"][name] for s in results["seeds"].values()]
        cells.append(f"{np.mean(errors):.3f} ± {np.std(errors, ddof=1):.3f}")
        table.append(f"| {name} | {' | '.join(cells)} |")
    rows = ["| model | test F_mae per cluster 0 / 1 / 2 / 3 (mean over seeds) | worst cluster "
            "(mean ± std) |", "|---|---|---|"]
    for name in names:
        per = np.array([r["test_cluster_f_mae"][name] for r in results["seeds"].values()])
        worst = per.max(axis=1)
        rows.append(f"| {name} | {' / '.join(f'{v:.3f}' for v in per.mean(axis=0))} | "
                    f"{worst.mean():.3f} ± {worst.std(ddof=1):.3f} |")
    table += ["", *rows]
    rows = ["| fine-tuning | epochs run / kept (per seed) | training RBP spread, before → after "
            "(mean over seeds) |", "|---|---|---|"]
    for name in FINETUNED:
        tuned = [r["finetune"][name] for r in results["seeds"].values()]
        spread = {when: np.mean([np.ptp(t["rbp"][when]) for t in tuned])
                  for when in ("before", "after")}
        kept = ", ".join(f"{t['epochs']} / {t['best_epoch']}" for t in tuned)
        rows.append(f"| {name} | {kept} | {spread['before']:.3f} → {spread['after']:.3f} |")
    table += ["", *rows]
    # JCP Fig. 7: M0's error along the frames before its collapses, against its test error
    by_distance: dict[int, list[float]] = {}
    for r in results["seeds"].values():
        for curve in r["runs"]["M0"]["pre_collapse"]:
            for k, value in zip(curve["frames_to_collapse"], curve["F_mae"], strict=True):
                if value == value:  # NaN where GFN2-xTB could not label the frame
                    by_distance.setdefault(k, []).append(value)
    results["pre_collapse_M0"] = {k: {"mean": float(np.mean(v)), "n": len(v)}
                                  for k, v in sorted(by_distance.items(), reverse=True)}
    test_m0 = np.mean([r["test_f_mae"]["M0"] for r in results["seeds"].values()])
    table += ["", "| frames before the collapse | " + " | ".join(
        str(k) for k in results["pre_collapse_M0"]) + " | test |",
              "|---|" + "---|" * (len(results["pre_collapse_M0"]) + 1),
              "| M0 F_mae (kcal/mol/Å) | " + " | ".join(
                  f"{v['mean']:.2f}" for v in results["pre_collapse_M0"].values()) +
              f" | {test_m0:.2f} |",
              "| runs | " + " | ".join(str(v["n"]) for v in results["pre_collapse_M0"].values())
              + " | |"]
    # "Forces are not enough": does a lower force error go with a more stable model?
    errors = [r["test_f_mae"][name] for r in results["seeds"].values() for name in names]
    stable = [float(np.median(r["runs"][name]["0.5"])) for r in results["seeds"].values()
              for name in names]
    points = list(zip(errors, stable, strict=True))
    rho = spearmanr(errors, stable).statistic
    results["spearman_f_mae_vs_stability"] = {"rho": float(rho), "points": len(points)}
    table.append(f"\nSpearman ρ(test F_mae, median frames before collapse at 0.5 Å) over "
                 f"{len(points)} (model, seed) pairs: {rho:.2f}")
    print("\n".join(table))
    results["table"] = table
    pooled = {name: [v for s in results["seeds"].values() for v in s["runs"][name]["0.5"]]
              for name in names}
    figure = stability_violins(pooled)
    figure.axes[0].set_title(f"aspirin, {args.temperature:g} K: continued (M) vs control (C), "
                             "all seeds")
    FIGURES.mkdir(exist_ok=True)
    figure.savefig(FIGURES / "continued_learning_controls.png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    out = args.json or CACHE / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {out}")


if __name__ == "__main__":
    sys.exit(main())
