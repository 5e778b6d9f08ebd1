"""Metric-guided training, RBP fine-tuning and continued learning on generated aspirin data: the
qualitative findings of JCP 159, 035101 (section III) reproduced with this package.

Data: the 1,200-frame 500 K GFN2-xTB aspirin trajectory of `train_aspirin.py`, cut into K
conformation clusters (PCA + K-means). A quarter of every cluster is held out for testing; the
training set takes `--train` frames of the rest but only `--minority` frames of the smallest
cluster, so that cluster is under-represented.

(a) PaiNN trained with the global loss (F_mae) and with the cluster loss (mean over clusters of
    F_mae), same budget: per-cluster test F_mae, worst cluster.
(b) The global model fine-tuned with RBP reweighting and, as the control, with uniform weights
    (same epochs): RBP per cluster on the training frames, its spread (max − min, std).
(c) Continued learning from the global model: `--md-runs` ASE runs per pass at `--temperature`,
    unexplored + pre-collapse frames labelled with GFN2-xTB, `--rounds` rounds; frames before
    collapse per model (violin plot in benchmarks/figures/).

    python benchmarks/metric_guided.py [--minutes 6] [--md-runs 10] [--rounds 2] [--json out]

Part (a) variants: `--val-per-cluster 8` (validation set stratified by cluster), `--seeds 0,1`,
`--losses global,cluster,global+cluster`, `--cluster-sampling balanced`, `--hidden/--interactions`
(model size), `--train/--minority` (imbalance). Train the models of one comparison side by side
(one process per loss, OMP_NUM_THREADS=1 each) so they share the machine evenly.

Models and runs are kept in `--cache`, each directory with the settings that made it
(settings.json, `mlff_core.stage_cache`): the training configuration (time budget, model size,
seed, loss), content digests of its frames and of the model it starts from, the clusters'
settings. One made with other settings is redone, with a note of what changed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from train_aspirin import dataset  # noqa: E402

from mlff_core import units  # noqa: E402
from mlff_core.data.formats import write_frames  # noqa: E402
from mlff_core.export import export_run, load_model  # noqa: E402
from mlff_core.metrics.clusters import ConformationClusters  # noqa: E402
from mlff_core.metrics.force import force_metrics  # noqa: E402
from mlff_core.metrics.predict import predict_with_model  # noqa: E402
from mlff_core.progress import progress_bar  # noqa: E402
from mlff_core.report.plots import plt, stability_violins  # noqa: E402
from mlff_core.stage_cache import (  # noqa: E402
    claim_stage,
    config_settings,
    content_digest,
    model_digest,
)
from mlff_core.training import Trainer, TrainingConfig  # noqa: E402
from mlff_core.training.active import ActiveLearningSettings, active_learn  # noqa: E402
from mlff_core.training.finetune import finetune  # noqa: E402
from mlff_core.training.run import fit_with_progress  # noqa: E402

CACHE = Path(__file__).parent / ".cache" / "metric_guided"
FIGURES = Path(__file__).parent / "figures"
KCAL = 1.0 / units.KCAL_PER_MOL  # eV/Å → kcal/mol/Å
HYPER = {"hidden": 64, "num_interactions": 3}


def build_sets(args) -> dict:
    frames = dataset(1200, 0)
    clusters = ConformationClusters(n_clusters=args.clusters, random_state=0).fit(frames)
    labels = clusters.labels_
    rng = np.random.default_rng(0)
    sizes = np.bincount(labels, minlength=args.clusters)
    minority = int(np.argmin(sizes))
    test, pool = [], []
    for k in range(args.clusters):
        members = rng.permutation(np.flatnonzero(labels == k))
        cut = len(members) // 4
        test += members[:cut].tolist()
        pool += members[cut:].tolist() if k != minority else \
            members[cut:cut + args.minority].tolist()
    pool = rng.permutation(np.array(pool))
    majority = [i for i in pool if labels[i] != minority]
    rare = [i for i in pool if labels[i] == minority]
    if args.val_per_cluster:
        # Stratified validation: `val_per_cluster` frames of every cluster, the minority's taken
        # from its held-back frames (not from the training frames), so checkpoint selection and
        # the learning-rate schedule see every cluster.
        val = [i for k in range(args.clusters) if k != minority
               for i in [j for j in majority if labels[j] == k][:args.val_per_cluster]]
        used = set(test) | set(rare)
        val += [int(i) for i in rng.permutation(np.flatnonzero(labels == minority))
                if i not in used][:args.val_per_cluster]
        in_val = set(val)
        majority = [i for i in majority if i not in in_val]
        train = np.array(majority[:args.train - len(rare)] + rare)
    else:
        n_val = 30
        val = majority[:n_val]
        train = np.array(majority[n_val:n_val + args.train - len(rare)] + rare)
    return {"frames": frames, "clusters": clusters, "labels": labels, "minority": minority,
            "sizes": sizes.tolist(), "train": train, "val": np.array(val),
            "test": np.array(sorted(test)),
            "hyper": {"hidden": args.hidden, "num_interactions": args.interactions},
            "cluster_settings": {"n_clusters": args.clusters, "random_state": 0,
                                 "frames": content_digest(frames)}}


def data_settings(sets: dict) -> dict:
    """The training and validation frames (content digests) and the clusters' settings."""
    frames = sets["frames"]
    return {"train": content_digest(frames[sets["train"]]),
            "val": content_digest(frames[sets["val"]]), "clusters": sets["cluster_settings"]}


def per_cluster(model_path: Path, frames, labels) -> dict:
    model = load_model(model_path)
    energies, forces = predict_with_model(model, frames)
    metrics = force_metrics(frames, forces, energies, cluster_labels=labels, unit="kcal/mol/A")
    return {"global_F_mae": metrics["global"]["F_mae"],
            "clusters": {int(k): {"F_mae": v["F_mae"], "RBP": v["RBP"], "frames": v["n_frames"]}
                         for k, v in metrics["per_cluster"].items()}}


def test_table(model_path: Path, sets: dict) -> dict:
    """`per_cluster` on the test frames, with the worst and the minority cluster's F_mae."""
    test = sets["test"]
    table = per_cluster(model_path, sets["frames"][test], sets["labels"][test])
    worst = max(table["clusters"], key=lambda k: table["clusters"][k]["F_mae"])
    return {**table, "worst_cluster": worst, "worst_F_mae": table["clusters"][worst]["F_mae"],
            "minority_F_mae": table["clusters"][sets["minority"]]["F_mae"]}


def train_model(name: str, loss: dict, sets: dict, minutes: float, seed: int = 0,
                sampling: str = "weights") -> Path:
    out = CACHE / name
    model_path = out / "model.pt"
    frames = sets["frames"]
    config = TrainingConfig(architecture="painn", hyperparameters=sets["hyper"], epochs=10_000,
                            batch_size=16, learning_rate=1e-3, lr_patience=10,
                            early_stopping_patience=10_000, loss=loss, max_minutes=minutes,
                            seed=seed, cluster_sampling=sampling)
    record = {"config": config_settings(config), "data": data_settings(sets)}
    if claim_stage(out, record, redo=True) and model_path.exists():
        return model_path
    trainer = Trainer(config, [frames[sets["train"]]], [frames[sets["val"]]], out / "run",
                      clusters=[sets["clusters"]])
    if trainer.checkpoint_path.exists():  # interrupted with the same settings
        trainer.resume()
    fit_with_progress(trainer, f"training ({name})")
    return export_run(out / "run", model_path)


def part_a(sets: dict, minutes: float, losses: list[str], seeds: list[int],
           sampling: str) -> dict:
    """Per-cluster test tables of one model per loss and seed; a loss `a+b` is the mix with
    weights 1/2 each. Keys: the loss name, `_balanced` when a cluster loss is estimated by
    balanced sampling, `@seed` for seeds other than 0."""
    result = {}
    for name in losses:
        loss = {term: 1.0 / len(name.split("+")) for term in name.split("+")}
        key = name + ("_balanced" if sampling == "balanced" and "cluster" in name else "")
        for seed in seeds:
            key_seed = key if seed == 0 else f"{key}@{seed}"
            model = train_model(key_seed, loss, sets, minutes, seed, sampling)
            result[key_seed] = test_table(model, sets)
    return result


def part_a_finetune(sets: dict, epochs: int) -> dict:
    """(a') The losses compared as fine-tuning losses: the global model trained on for `epochs`
    more epochs (lr 2e-4) with the global loss and with the cluster loss (the benchmark's
    clusters), same start, same epochs; per-cluster test F_mae."""
    frames = sets["frames"]
    result = {}
    for name in ("global", "cluster"):
        out = CACHE / f"finetune_loss_{name}"
        config = TrainingConfig(architecture="painn", hyperparameters=sets["hyper"],
                                epochs=epochs, batch_size=16, learning_rate=2e-4,
                                early_stopping_patience=10_000, loss={name: 1.0})
        base = CACHE / "global" / "model.pt"
        record = {"config": config_settings(config), "data": data_settings(sets),
                  "start": model_digest(base)}
        if not claim_stage(out, record, redo=True) or not (out / "model.pt").exists():
            start = load_model(base).to_potential()
            trainer = Trainer(config, [frames[sets["train"]]], [frames[sets["val"]]],
                              out / "run", init_potential=start, clusters=[sets["clusters"]])
            if trainer.checkpoint_path.exists():  # interrupted with the same settings
                trainer.resume()
            fit_with_progress(trainer, f"fine-tuning with the {name} loss")
            export_run(out / "run", out / "model.pt", clusters=False)
        result[name] = test_table(out / "model.pt", sets)
    return result


def part_b(sets: dict, epochs: int) -> dict:
    frames, labels = sets["frames"], sets["labels"]
    train_file = write_frames(frames[sets["train"]], CACHE / "train.npz")
    val_file = write_frames(frames[sets["val"]], CACHE / "val.npz")
    base = CACHE / "global" / "model.pt"
    result = {"before": per_cluster(base, frames[sets["train"]], labels[sets["train"]])}
    for reweight in ("rbp", "none"):
        out = CACHE / f"finetune_{reweight}"
        run = out / "run"  # finetune's run directory; the settings record beside it
        config = TrainingConfig(epochs=epochs, batch_size=16, learning_rate=2e-4,
                                early_stopping_patience=10_000, loss={"global": 1.0})
        record = {"config": config_settings(config), "data": data_settings(sets),
                  "start": model_digest(base), "reweight": reweight}
        if not claim_stage(out, record, redo=True) or not (run / "model.pt").exists():
            with progress_bar(f"fine-tuning ({reweight})", epochs) as advance:
                finetune(base, [train_file], run, config, val_data=[val_file],
                         reweight=reweight, on_epoch=lambda _r: advance(1),
                         resume=(run / "checkpoint.pt").exists())
        result[reweight] = per_cluster(run / "model.pt", frames[sets["train"]],
                                       labels[sets["train"]])
        result[f"{reweight}_test"] = per_cluster(run / "model.pt", frames[sets["test"]],
                                                 labels[sets["test"]])
    for key in ("before", "rbp", "none"):
        rbp = [c["RBP"] for c in result[key]["clusters"].values()]
        result[key]["RBP_spread"] = float(np.ptp(rbp))
        result[key]["RBP_std"] = float(np.std(rbp))
    return result


def part_c(sets: dict, args) -> dict:
    frames = sets["frames"]
    stage = CACHE / f"active_{args.temperature:g}K"
    out = stage / "run"  # active_learn's output; the settings record beside it
    rng = np.random.default_rng(1)
    starts = frames[rng.choice(sets["test"], args.md_runs, replace=False)]
    data = frames[np.concatenate([sets["train"], sets["val"]])]
    settings = ActiveLearningSettings(
        engine="ase", level="gfn2", rounds=args.rounds, runs_per_structure=1,
        temperature=args.temperature, steps=args.steps, report_interval=20,
        max_new_frames=args.new_frames, epochs=args.al_epochs, learning_rate=2e-4,
        n_val=len(sets["val"]), seed=0)
    base = CACHE / "global" / "model.pt"
    record = {"settings": asdict(settings), "start_model": model_digest(base),
              "starts": content_digest(starts), "data": content_digest(data)}
    if not claim_stage(stage, record, redo=True) or not (out / "summary.json").exists():
        shutil.rmtree(out, ignore_errors=True)  # an interrupted run cannot continue
        start_file = write_frames(starts, CACHE / "starts.xyz")
        data_file = write_frames(data, CACHE / "train_val.npz")
        active_learn(base, start_file, out, settings, data=[data_file], progress=progress_bar)
    summary = json.loads((out / "summary.json").read_text())
    passes = {f"M{r['round'] - 1}": r["frames_before_collapse"] for r in summary["rounds"]}
    passes[f"M{len(summary['rounds'])}"] = summary["final"]["frames_before_collapse"]
    figure = stability_violins(passes)
    figure.axes[0].set_title(f"Continued learning: aspirin, {args.temperature:g} K, ASE")
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.figure, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return {"frames_before_collapse": passes,
            "median": {k: float(np.median(v)) for k, v in passes.items()},
            "unexplored_ratio": [r["unexplored_ratio"] for r in summary["rounds"]] +
                                [summary["final"]["unexplored_ratio"]],
            "new_frames": [r["new_frames"] for r in summary["rounds"]],
            "val_F_mae": [r["val_F_mae"] * KCAL for r in summary["rounds"]],
            "frames_per_run": args.steps // 20 + 1}


def main() -> None:
    global CACHE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=4)
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--minority", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=6.0, help="training budget per model")
    parser.add_argument("--hidden", type=int, default=HYPER["hidden"], help="PaiNN width")
    parser.add_argument("--interactions", type=int, default=HYPER["num_interactions"],
                        help="PaiNN interaction blocks")
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--md-runs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--temperature", type=float, default=1200.0,
                        help="K; hot enough that the 6-minute global model collapses in most runs")
    parser.add_argument("--new-frames", type=int, default=100)
    parser.add_argument("--al-epochs", type=int, default=40)
    parser.add_argument("--parts", default="abc",
                        help="a, b, c; A = the losses compared as fine-tuning losses")
    parser.add_argument("--losses", default="global,cluster",
                        help="part (a)'s models (one per process trains them side by side); "
                             "'global+cluster' is their half-and-half mix")
    parser.add_argument("--seeds", default="0", help="part (a)'s training seeds, comma-separated")
    parser.add_argument("--cluster-sampling", choices=("weights", "balanced"), default="weights",
                        help="how part (a)'s cluster loss reaches the minority cluster")
    parser.add_argument("--val-per-cluster", type=int, default=0,
                        help="stratified validation set with this many frames of every cluster "
                             "(0: 30 frames of the majority clusters)")
    parser.add_argument("--cache", type=Path, default=CACHE,
                        help="where models and runs are kept (reused when present)")
    parser.add_argument("--json", type=Path, help="results file (default: in --cache)")
    parser.add_argument("--figure", type=Path, default=FIGURES / "metric_guided_stability.png",
                        help="violin plot of part (c)")
    args = parser.parse_args()
    CACHE = args.cache
    CACHE.mkdir(parents=True, exist_ok=True)
    args.json = args.json or CACHE / "results.json"
    sets = build_sets(args)
    results = {"clusters": args.clusters, "cluster_sizes": sets["sizes"],
               "minority": sets["minority"], "train": len(sets["train"]),
               "test": len(sets["test"])}
    print(f"clusters {sets['sizes']}, minority cluster {sets['minority']}; train "
          f"{len(sets['train'])} frames ({args.minority} of the minority), test "
          f"{len(sets['test'])}")
    if "a" in args.parts:
        results["a"] = part_a(sets, args.minutes, args.losses.split(","),
                              [int(seed) for seed in args.seeds.split(",")],
                              args.cluster_sampling)
        for name in results["a"]:
            r = results["a"][name]
            print(f"(a) {name:7s} test F_mae {r['global_F_mae']:.3f}; worst cluster "
                  f"{r['worst_cluster']} {r['worst_F_mae']:.3f}; minority "
                  f"{r['minority_F_mae']:.3f} kcal/mol/Å")
    if "A" in args.parts:
        results["A"] = part_a_finetune(sets, args.finetune_epochs)
        for name, r in results["A"].items():
            print(f"(a') fine-tuned with {name:7s}: test F_mae {r['global_F_mae']:.3f}; worst "
                  f"cluster {r['worst_cluster']} {r['worst_F_mae']:.3f}; minority "
                  f"{r['minority_F_mae']:.3f} kcal/mol/Å")
    if "b" in args.parts:
        results["b"] = part_b(sets, args.finetune_epochs)
        for key in ("before", "rbp", "none"):
            r = results["b"][key]
            rbp = {k: round(v["RBP"], 3) for k, v in r["clusters"].items()}
            print(f"(b) {key:6s} RBP {rbp} spread {r['RBP_spread']:.3f} std "
                  f"{r['RBP_std']:.3f}; train F_mae {r['global_F_mae']:.3f}")
    if "c" in args.parts:
        results["c"] = part_c(sets, args)
        print(f"(c) median frames before collapse {results['c']['median']} "
              f"(of {results['c']['frames_per_run']}); unexplored "
              f"{results['c']['unexplored_ratio']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
