"""Fine-tuning a model file on labelled frames, optionally with RBP reweighting
(`mlff finetune`).

Steps: split the data (seeded), assign every training frame to a conformation cluster (the
model file's training clusters for that system, else clusters fitted on the frames), measure the
model's per-frame force error, weight the frames by their cluster's RBP
(`mlff_core.training.reweight`; validation frames get the weight of their nearest training
cluster, so the kept epoch is the best one for the reweighted loss), train from the model's
weights, export `model.pt` with the same clusters, and measure per-cluster F_mae and RBP again.
`finetune.json` holds both tables.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mlff_core.data.frames import Frames
from mlff_core.export.from_run import export_run
from mlff_core.export.loading import LoadedModel, load_model
from mlff_core.export.periodicity import model_periodicity
from mlff_core.fileio import atomic_output
from mlff_core.metrics.clusters import ConformationClusters
from mlff_core.metrics.force import force_metrics
from mlff_core.metrics.predict import predict_with_model
from mlff_core.training.reweight import rbp_weights
from mlff_core.training.run import model_levels, prepare_data
from mlff_core.training.trainer import EpochRecord, Trainer, TrainingConfig, TrainingError

REWEIGHTING = ("rbp", "none")


def system_clusters(model: LoadedModel, frames: Frames, n_clusters: int | None = None,
                    seed: int = 0) -> tuple[ConformationClusters, str]:
    """Clusters for `frames`: the model file's own (unless `n_clusters` asks for new ones), else
    fitted on the frames. Returns the clusters and where they came from."""
    stored = None if n_clusters is not None else \
        model.clusters_for(frames.atomic_numbers, frames.is_periodic)
    if stored is not None:
        return stored, "model file"
    fitted = ConformationClusters(n_clusters=n_clusters, random_state=seed).fit(frames)
    return fitted, "fitted on the training frames"


def validation_weights(clusters: ConformationClusters, frames: Frames,
                       table: list[dict]) -> np.ndarray:
    """[F] weights of validation frames: the RBP weight of each frame's nearest training cluster
    (`table`, the reweighting rows; 1 for a cluster with no row, or with no reweighting). The
    kept epoch is then the one with the lowest validation value of the loss being minimised;
    with plain validation weights it would be the epoch closest to the original model."""
    weight = {row["cluster"]: row["weight"] for row in table}
    if not weight or frames.n_frames == 0:
        return np.ones(frames.n_frames)
    nearest, _ = clusters.classify(frames)
    return np.array([weight.get(int(k), 1.0) for k in nearest])


def cluster_metrics(model: LoadedModel, frames: Frames, labels: np.ndarray
                    ) -> tuple[dict[str, Any], np.ndarray]:
    """Force metrics (eV/Å) of `model` on `frames` with the given cluster labels
    (`force_metrics`), and [F] the per-frame force MAE (eV/Å)."""
    energies, forces = predict_with_model(model, frames)
    metrics = force_metrics(frames, forces, energies, cluster_labels=labels, unit="eV/A")
    return metrics, np.abs(forces - frames.forces).mean(axis=(1, 2))


def finetune(model_path: str | os.PathLike, data: Sequence[str | os.PathLike],
             run_dir: str | os.PathLike, config: TrainingConfig, *,
             val_data: Sequence[str | os.PathLike] = (), n_val: int | float = 0.1,
             reweight: str = "rbp", strength: float = 1.0, n_clusters: int | None = None,
             resume: bool = False, allow_mixed_levels: bool = False,
             on_epoch: Callable[[EpochRecord], None] | None = None) -> dict[str, Any]:
    """Fine-tune the model file on `data`; returns the summary also written to finetune.json.

    `config` supplies the optimisation settings; architecture and hyperparameters come from the
    model file. The exported model is `run_dir/model.pt`. Data of another level of theory
    than the model's are refused unless `allow_mixed_levels`.
    """
    if reweight not in REWEIGHTING:
        raise TrainingError(f"unknown reweighting {reweight!r}; use one of "
                            f"{', '.join(REWEIGHTING)}")
    run_dir = Path(run_dir)
    if (run_dir / "checkpoint.pt").exists() and not resume:
        raise TrainingError(f"{run_dir}: already holds a training run; pass --resume to "
                            "continue it or choose another output directory")
    model = load_model(model_path)
    config = TrainingConfig(**{**asdict(config), "architecture": model.metadata["architecture"],
                               "hyperparameters": model.metadata["hyperparameters"]})
    train, val, provenance = prepare_data(data, val_data, None, n_val, config.seed,
                                          allow_mixed_levels, model_levels(model.metadata),
                                          Path(model_path).name)
    for part in (*train, *val):
        model.check_species(part.atomic_numbers)
    trained_periodic = model_periodicity(model.metadata)
    data_periodic = any(part.is_periodic for part in (*train, *val))
    if trained_periodic is not None and trained_periodic != data_periodic:
        kinds = ("periodic cells", "molecules")
        raise TrainingError(
            f"model {Path(model_path).name} was trained on {kinds[not trained_periodic]} but "
            f"the fine-tuning data are {kinds[not data_periodic]}; fine-tuning would silently "
            "make it another kind of model. Fine-tune on data of its own kind, or train anew")

    clusters, labels, weights, before, tables = [], [], [], [], []
    for part in train:
        fitted, source = system_clusters(model, part, n_clusters, config.seed)
        nearest, _ = fitted.classify(part)
        metrics, frame_mae = cluster_metrics(model, part, nearest)
        if reweight == "rbp":
            outcome = rbp_weights(frame_mae, nearest, strength)
            weights.append(outcome.weights)
            tables.append(outcome.table())
        else:
            weights.append(np.ones(part.n_frames))
            tables.append([])
        clusters.append(fitted)
        labels.append(nearest)
        before.append({"clusters_from": source, "metrics": metrics})

    val_weights = []
    for part in val:  # --val-data may hold its systems in another order, or other systems
        same = next((k for k, t in enumerate(train)
                     if np.array_equal(t.atomic_numbers, part.atomic_numbers)), None)
        val_weights.append(np.ones(part.n_frames) if same is None else
                           validation_weights(clusters[same], part, tables[same]))
    provenance["init_model"] = {"path": str(model_path),
                                "training": model.metadata.get("training", {})}
    provenance["reweighting"] = {"rule": reweight, "strength": strength, "clusters": tables}
    trainer = Trainer(config, train, val, run_dir, init_potential=model.to_potential(),
                      sample_weights=weights, val_sample_weights=val_weights,
                      clusters=clusters, provenance=provenance)
    if resume:
        trainer.resume()
    trainer.fit(on_epoch)
    output = export_run(run_dir, run_dir / "model.pt")
    tuned = load_model(output)
    systems = []
    for part, nearest, old, table in zip(train, labels, before, tables, strict=True):
        systems.append({
            "formula": part.formula, "frames": part.n_frames,
            "clusters_from": old["clusters_from"], "reweighting": table,
            "before": old["metrics"], "after": cluster_metrics(tuned, part, nearest)[0],
        })
    summary = {"model": str(model_path), "output": str(output), "reweight": reweight,
               "strength": strength, "epochs": trainer.epoch, "stop_reason": trainer.stop_reason,
               "best_epoch": trainer.best_epoch, "force_unit": "eV/A", "systems": systems}
    with atomic_output(run_dir / "finetune.json", "w") as fh:
        json.dump(summary, fh, indent=2)
    return summary
