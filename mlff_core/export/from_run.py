"""`export_run`: turn a training run directory into a model file."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mlff_core.data.frames import Frames
from mlff_core.errors import DataError, ModelFileError
from mlff_core.export.exploration import ExplorationModel
from mlff_core.export.model_file import model_metadata, save_model_file
from mlff_core.fileio import load_weights, read_json_file
from mlff_core.metrics.clusters import ConformationClusters
from mlff_core.models import Committee, build_potential
from mlff_core.models.potential import Potential

CLUSTER_METHOD = ("PCA + K-means on inverse pairwise distances (molecules) or element-pair RDF "
                  "histograms (periodic); radius per system's radius_rule: 'max' = largest "
                  "member distance, 'calibrated' = max × the held-out frames' conformal quantile")
RADIUS_RULES = ("max", "calibrated")


def fit_exploration(frames: Sequence[Frames], n_clusters: int | None = None,
                    method: str = CLUSTER_METHOD, calibration: Sequence[Frames] | None = None,
                    false_flag_rate: float = 0.05) -> tuple[dict, ExplorationModel]:
    """Conformation clusters of each system of `frames` (the exploration monitor's reference):
    the model file's `exploration` metadata and its scripted classifier.

    With `calibration` (held-out frames of every system, e.g. the validation split) the radii
    are calibrated to flag `false_flag_rate` of them; otherwise each radius is the largest
    member distance (JCP 159, 035101)."""
    clusters = [ConformationClusters(n_clusters=n_clusters).fit(part) for part in frames]
    return exploration_from_clusters(clusters, method, calibration, false_flag_rate)


def exploration_from_clusters(clusters: Sequence[ConformationClusters],
                              method: str = CLUSTER_METHOD,
                              calibration: Sequence[Frames] | None = None,
                              false_flag_rate: float = 0.05) -> tuple[dict, ExplorationModel]:
    """Model-file metadata and scripted classifier of fitted clusters, calibrated on
    `calibration` when given (see `fit_exploration`).

    Raises:
        DataError: a system without held-out frames among `calibration`, or too few of them.
    """
    if calibration is not None:
        for fitted in clusters:
            held_out = [part for part in calibration
                        if np.array_equal(part.atomic_numbers, fitted.atomic_numbers_)
                        and (part.is_periodic == (fitted.descriptor_ == "pair_rdf"))]
            if not held_out:
                raise DataError(f"no held-out frames of {fitted.formula_} to calibrate its "
                                "cluster radii with (give them with --calibration-data)")
            fitted.calibrate(Frames.concatenate(held_out) if len(held_out) > 1 else held_out[0],
                             false_flag_rate)
    states = [fitted.to_dict() for fitted in clusters]
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


def _member_runs(run_dir: Path) -> tuple[list[Path], dict | None]:
    """The finished training run(s) of `run_dir`: itself, or a committee's members (with the
    committee's record).

    Raises:
        ModelFileError: an unfinished run or committee member.
    """
    from mlff_core.training.committee import committee_record, member_dirs

    record = committee_record(run_dir)
    runs = [run_dir] if record is None else member_dirs(run_dir, record)
    for k, member in enumerate(runs):
        for needed in ("run.json", "best.pt"):
            if not (member / needed).exists():
                raise ModelFileError(f"{member}: not a finished training run ({needed} missing)")
        if record is not None and not record["finished"][k]:
            raise ModelFileError(f"{member}: committee member {k} has not finished training "
                                 f"(resume it: mlff train ... -o {run_dir} --committee "
                                 f"{len(runs)} --resume)")
    return runs, record


def export_run(run_dir: str | os.PathLike, output: str | os.PathLike,
               dtype: str | None = None, clusters: bool = True, n_clusters: int | None = None,
               cluster_data: Sequence[Frames] | None = None,
               training_extra: dict | None = None, radius: str = "max",
               false_flag_rate: float = 0.05,
               calibration_data: Sequence[Frames] | None = None) -> Path:
    """Write the best (EMA) weights of a run as a model file.

    Args:
        run_dir: a directory written by the trainer (run.json, best.pt), or a committee's
            (committee.json and its members' runs): one model file holds every member.
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
        radius: 'max' (largest member distance, JCP 159, 035101) or 'calibrated' (radii set
            so that `false_flag_rate` of held-out frames are flagged).
        calibration_data: held-out frames to calibrate on; default: the run's validation split.
    """
    run_dir = Path(run_dir)
    runs, committee = _member_runs(run_dir)
    run = read_json_file(runs[0] / "run.json", "the run's record")
    config = run["config"]
    dtype = dtype or config["dtype"]
    if dtype not in ("float32", "float64"):
        raise ModelFileError(f"dtype must be float32 or float64, got {dtype!r}")
    best = [best_potential(member) for member in runs]
    state = best[0][1]
    potential = best[0][0] if committee is None else Committee([p for p, _ in best])
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
    if committee is not None:
        training["committee"] = {
            "seeds": committee["seeds"],
            "members": [{"run_dir": str(member.resolve()), "best_epoch": s.get("epoch"),
                         "val_metrics": s.get("val_metrics")}
                        for member, (_, s) in zip(runs, best, strict=True)]}
    if radius not in RADIUS_RULES:
        raise ModelFileError(f"unknown radius rule {radius!r}; use one of "
                             f"{', '.join(RADIUS_RULES)}")
    exploration_state, exploration = None, None
    if clusters:
        from mlff_core.training.run import training_frames

        if radius == "calibrated" and calibration_data is None:
            calibration_data = training_frames(run["data"], "val")
        calibration = calibration_data if radius == "calibrated" else None
        stored_clusters = runs[0] / "clusters.json"
        if cluster_data is None and n_clusters is None and stored_clusters.exists():
            fitted = [ConformationClusters.from_dict(state)
                      for state in json.loads(stored_clusters.read_text())]
        else:
            fitted = [ConformationClusters(n_clusters=n_clusters).fit(part) for part in
                      (cluster_data if cluster_data is not None
                       else training_frames(run["data"]))]
        exploration_state, exploration = exploration_from_clusters(
            fitted, CLUSTER_METHOD, calibration, false_flag_rate)
    systems = run.get("data", {}).get("systems", [])
    periodic = any(s.get("periodic", False) for s in systems) if systems else None
    metadata = model_metadata(potential, config["architecture"], config["hyperparameters"],
                              training=training, exploration=exploration_state,
                              periodic=periodic)
    return save_model_file(potential, output, metadata, exploration)
