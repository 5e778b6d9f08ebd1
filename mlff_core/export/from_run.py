"""`export_run`: turn a training run directory into a model file."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from mlff_core.data.frames import Frames
from mlff_core.errors import ModelFileError
from mlff_core.export.exploration import ExplorationModel
from mlff_core.export.model_file import model_metadata, save_model_file
from mlff_core.fileio import load_weights, read_json_file
from mlff_core.metrics.clusters import ConformationClusters
from mlff_core.models import build_potential
from mlff_core.models.potential import Potential

CLUSTER_METHOD = ("PCA + K-means on inverse pairwise distances (molecules) or element-pair RDF "
                  "histograms (periodic); radius = largest member distance")


def fit_exploration(frames: Sequence[Frames], n_clusters: int | None = None,
                    method: str = CLUSTER_METHOD) -> tuple[dict, ExplorationModel]:
    """Conformation clusters of each system of `frames` (the exploration monitor's reference):
    the model file's `exploration` metadata and its scripted classifier."""
    states = [ConformationClusters(n_clusters=n_clusters).fit(part).to_dict() for part in frames]
    return {"method": method, "systems": states}, ExplorationModel(states)


def best_potential(run_dir: str | os.PathLike) -> tuple[Potential, dict]:
    """The best (EMA) weights of a training run as a `Potential` at the training precision
    (loading into a float32 model would round float64 weights), and the best.pt state."""
    run_dir = Path(run_dir)
    run = read_json_file(run_dir / "run.json", "the run's record")
    config = run["config"]
    state = load_weights(run_dir / "best.pt")
    potential = build_potential(config["architecture"], run["species"],
                                **config["hyperparameters"]).to(getattr(torch, config["dtype"]))
    potential.load_state_dict(state["model"])
    return potential, state


def export_run(run_dir: str | os.PathLike, output: str | os.PathLike,
               dtype: str | None = None, clusters: bool = True, n_clusters: int | None = None,
               cluster_data: Sequence[Frames] | None = None,
               training_extra: dict | None = None) -> Path:
    """Write the best (EMA) weights of a run as a model file.

    Args:
        run_dir: a directory written by the trainer (run.json, best.pt).
        output: the model file to write (atomically).
        dtype: 'float32' or 'float64'; default: the training dtype.
        clusters: fit conformation clusters (one set per training system) and store them, so
            engines can flag unexplored frames with the file alone.
        n_clusters: clusters per system; None chooses by silhouette score.
        cluster_data: frames to cluster instead of the run's training frames (rebuilt from
            the recorded files and split indices by default). A run trained with a cluster
            loss stored its clusters (clusters.json); they are used when neither this nor
            `n_clusters` is given, so the model file flags against the clusters it was
            trained on.
        training_extra: entries added to the model file's `training` metadata (e.g. the
            stages of an ASTEROID run).
    """
    run_dir = Path(run_dir)
    run_json, best = run_dir / "run.json", run_dir / "best.pt"
    for needed in (run_json, best):
        if not needed.exists():
            raise ModelFileError(f"{run_dir}: not a finished training run ({needed.name} missing)")
    run = read_json_file(run_json, "the run's record")
    config = run["config"]
    dtype = dtype or config["dtype"]
    if dtype not in ("float32", "float64"):
        raise ModelFileError(f"dtype must be float32 or float64, got {dtype!r}")
    potential, state = best_potential(run_dir)
    potential = potential.to(getattr(torch, dtype))
    training = {
        **run.get("data", {}),
        "sizes": run.get("sizes", {}),
        "best_epoch": state.get("epoch"),
        "val_metrics": state.get("val_metrics"),
        "config": {k: v for k, v in config.items() if k != "hyperparameters"},
        "run_dir": str(run_dir.resolve()),
        **(training_extra or {}),
    }
    exploration_state, exploration = None, None
    stored_clusters = run_dir / "clusters.json"
    if clusters and cluster_data is None and n_clusters is None and stored_clusters.exists():
        states = json.loads(stored_clusters.read_text())
        exploration_state = {"method": CLUSTER_METHOD, "systems": states}
        exploration = ExplorationModel(states)
    elif clusters:
        if cluster_data is None:
            from mlff_core.training.run import training_frames

            cluster_data = training_frames(run["data"])
        exploration_state, exploration = fit_exploration(cluster_data, n_clusters)
    systems = run.get("data", {}).get("systems", [])
    periodic = any(s.get("periodic", False) for s in systems) if systems else None
    metadata = model_metadata(potential, config["architecture"], config["hyperparameters"],
                              training=training, exploration=exploration_state,
                              periodic=periodic)
    return save_model_file(potential, output, metadata, exploration)
