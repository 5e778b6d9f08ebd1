"""Offline reports: force metrics of one or more model files on reference data, and simulation
metrics of their MD trajectories, as a JSON document plus figures (for the HTML page)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlff_core.data.formats import read_frames
from mlff_core.data.frames import Frames
from mlff_core.data.trajectories import read_trajectory
from mlff_core.errors import DataError
from mlff_core.labels import get_level
from mlff_core.metrics import simulation
from mlff_core.metrics.clusters import ConformationClusters
from mlff_core.metrics.force import force_metrics
from mlff_core.metrics.signals import (
    HIGH_ERROR_FACTOR,
    committee_deviations,
    frame_force_mae,
    signal_scores,
)
from mlff_core.progress import Advance, no_progress
from mlff_core.report import plots
from mlff_core.units import force_conversion


@dataclass
class Report:
    """The JSON-ready document and the figures (name → base64 PNG) of a report."""

    document: dict[str, Any]
    figures: dict[str, str] = field(default_factory=dict)


def _model_name(path: Path, taken: set[str]) -> str:
    name = path.stem
    while name in taken:
        name = f"{name}'"
    taken.add(name)
    return name


def _clusters_for(frames: Frames, loaded_models: list, n_clusters: int | None
                  ) -> tuple[ConformationClusters, str]:
    if n_clusters is None:
        for loaded in loaded_models:
            for state in (loaded.metadata.get("exploration") or {}).get("systems", []):
                if state["atomic_numbers"] == frames.atomic_numbers.tolist() and \
                        (state["descriptor"] == "pair_rdf") == frames.is_periodic:
                    return ConformationClusters.from_dict(state), \
                        f"training clusters of {loaded.path.name}"
    fitted = ConformationClusters(n_clusters=n_clusters).fit(frames)
    how = f"{n_clusters} clusters" if n_clusters else \
        f"{fitted.n_clusters_} clusters (chosen by silhouette score)"
    return fitted, f"{how} fitted on the reference data"


def parse_trajectory_argument(argument: str) -> tuple[str, Path]:
    """'run.dcd' or 'label=run.dcd' → (label, path); runs sharing a label form one group."""
    label, sep, path = argument.partition("=")
    if not sep:
        return Path(argument).stem, Path(argument)
    return label, Path(path)


def build_report(models: Sequence[str | os.PathLike], data: str | os.PathLike,
                 trajectories: Sequence[str] = (), topology: str | os.PathLike | None = None,
                 type_map: Sequence[str] | None = None, unit: str = "kcal/mol/A",
                 n_clusters: int | None = None, bond_threshold: float = 0.5,
                 batch_size: int = 64, fnm_masses: str = "standard",
                 relabel: tuple[str, int] | None = None,
                 advance: Advance = no_progress) -> Report:
    """Evaluate models and trajectories against reference data.

    Args:
        models: model files, compared side by side.
        data: labelled reference frames (test set) of one system.
        trajectories: MD trajectories, 'path' or 'label=path' (runs with one label are one
            violin in the stability plot).
        topology: structure for DCD/XTC trajectories; type_map: elements of LAMMPS types.
        unit: force unit of the report.
        n_clusters: fit this many clusters on the data (default: the first model file's
            training clusters, else chosen by silhouette score).
        bond_threshold: collapse threshold, Å.
        advance: progress callback (one unit per model and per trajectory).

    Raises:
        DataError: unreadable inputs, or trajectories whose atoms differ from the data's.
    """
    from mlff_core.export import load_model
    from mlff_core.metrics.predict import predict_with_model

    frames = read_frames(data)
    loaded_models = [load_model(m) for m in models]
    clusters, cluster_source = _clusters_for(frames, loaded_models, n_clusters)
    nearest, ratios = clusters.classify(frames)
    labels = np.where(ratios > 1.0, -1, nearest)
    projected = clusters.transform(frames)
    to_unit = force_conversion(unit)

    report = Report({
        "data": {"path": str(data), "formula": frames.formula, "frames": frames.n_frames,
                 "levels": sorted(set(frames.levels.tolist()))},
        "force_unit": unit,
        "clusters": {"source": cluster_source, "n_clusters": int(clusters.n_clusters_),
                     "descriptor": clusters.descriptor_,
                     "frames_per_cluster": np.bincount(labels[labels >= 0],
                                                       minlength=clusters.n_clusters_).tolist(),
                     "unexplored_frames": int((labels < 0).sum())},
        "models": [],
        "trajectories": [],
    })
    names: set[str] = set()
    errors, predicted_forces, frame_errors, deviations = {}, {}, {}, {}
    for loaded in loaded_models:
        energies, forces = predict_with_model(loaded, frames, batch_size)
        name = _model_name(loaded.path, names)
        metrics = force_metrics(frames, forces, energies, labels, unit, fnm_masses)
        report.document["models"].append({"name": name, "path": str(loaded.path),
                                          "architecture": loaded.metadata["architecture"],
                                          "metrics": metrics})
        errors[name] = (np.abs(forces - frames.forces) * to_unit).reshape(-1)
        predicted_forces[name] = forces
        frame_errors[name] = frame_force_mae(forces, frames.forces) * to_unit
        if loaded.committee_size > 1:
            deviations[name] = committee_deviations(loaded, frames) * to_unit
        advance(1)
    if loaded_models:
        _signal_section(report, ratios, clusters.bond_scores(frames), frame_errors,
                        predicted_forces, deviations, to_unit, unit)

    report.figures["pca_map"] = plots.png_base64(plots.pca_map(projected, nearest, labels < 0))
    if loaded_models:
        _model_figures(report, errors, unit)
    if trajectories:
        if relabel is not None and not loaded_models:
            raise DataError("--relabel compares models with reference labels: give --model")
        level = None if relabel is None else get_level(relabel[0])
        _trajectory_section(report, frames, trajectories, topology, type_map, clusters,
                            bond_threshold, loaded_models, advance,
                            None if level is None else (level, relabel[1]), unit)
    return report


def _signal_section(report: Report, ratios: np.ndarray, bond_scores: np.ndarray,
                    frame_errors: dict[str, np.ndarray],
                    predicted_forces: dict[str, np.ndarray], deviations: dict[str, np.ndarray],
                    to_unit: float, unit: str) -> None:
    """Each monitor signal [F] against each model's per-frame F_mae: the cluster
    distance/radius, the bond score (molecules; NaN otherwise) and the larger of the two (the
    exploration monitor's score), the committee's force deviation (committee model files) and
    the naive baseline max |F̂| (the model's largest predicted atomic force)."""
    local = bool(np.isfinite(bond_scores).any())
    scores = np.fmax(ratios, bond_scores)
    section: dict[str, Any] = {"high_error_definition":
                               f"frame F_mae above {HIGH_ERROR_FACTOR:g} × the median"}
    largest = {name: np.linalg.norm(f, axis=-1).max(axis=1) * to_unit
               for name, f in predicted_forces.items()}
    for name, errors in frame_errors.items():
        section[name] = {"exploration_ratio": signal_scores(ratios, errors),
                         "bond_score": signal_scores(bond_scores, errors) if local else None,
                         "exploration_score": signal_scores(scores, errors),
                         "max_force": signal_scores(largest[name], errors),
                         "committee_deviation": signal_scores(deviations[name], errors)
                         if name in deviations else None}
    report.document["signals"] = section
    report.figures["signals"] = plots.png_base64(
        plots.signals_vs_error(ratios, largest, frame_errors, unit, deviations,
                               bond_scores if local else None))


def _model_figures(report: Report, errors: dict[str, np.ndarray], unit: str) -> None:
    models = report.document["models"]
    clusters = sorted({k for m in models for k in m["metrics"].get("per_cluster", {})}, key=int)
    for key, title in (("F_mae", "F_mae per cluster"), ("F_max_err", "F_max-err per cluster")):
        values = {m["name"]: [m["metrics"]["per_cluster"].get(c, {}).get(key, np.nan)
                              for c in clusters] for m in models}
        if clusters:
            report.figures[f"clusters_{key}"] = plots.png_base64(
                plots.cluster_profile(values, clusters, title, unit))
    if clusters:
        rbp = {m["name"]: [m["metrics"]["per_cluster"].get(c, {}).get("RBP", np.nan)
                           for c in clusters] for m in models}
        report.figures["rbp"] = plots.png_base64(plots.grouped_bars(
            rbp, [f"cluster {c}" for c in clusters], "Ratio of bad points (RBP)", "fraction"))
    elements = list(models[0]["metrics"]["per_element"])
    for key, label, shown_unit in (("F_mae", "F_mae per element", unit),
                                   ("FNM_mae", "FNM_mae per element (mass-normalised)",
                                    f"{unit}/amu")):
        values = {m["name"]: [m["metrics"]["per_element"][s][key] for s in elements]
                  for m in models}
        report.figures[f"elements_{key}"] = plots.png_base64(
            plots.grouped_bars(values, elements, label, shown_unit))
    report.figures["error_histogram"] = plots.png_base64(plots.error_histograms(errors, unit))


def run_record(path: Path, run: Frames) -> dict[str, float | None]:
    """Time between frames (ps), time of the first frame (ps from the run's start) and speed
    (ns/day) of a trajectory: from the summary.json that `mlff md` writes beside it, else the
    frame times a DCD/XTC file stores; None if unknown (the first frame: 0, the start)."""
    interval, first, speed = None, None, None
    summary = path.parent / "summary.json"
    if summary.is_file():
        try:
            recorded = json.loads(summary.read_text())
        except (OSError, ValueError):
            recorded = {}
        if Path(str(recorded.get("trajectory", ""))).name == path.name:
            interval, speed = recorded.get("frame_interval_ps"), recorded.get("ns_per_day")
            first = recorded.get("first_frame_ps")
    times = np.asarray(run.provenance.get("time_ps") or [], dtype=float)
    if interval is None and len(times) > 1 and np.all(np.diff(times) > 0):
        interval = float(np.median(np.diff(times)))
        first = float(times[0])
    return {"frame_interval_ps": interval, "first_frame_ps": first or 0.0, "ns_per_day": speed}


def stability_time(stable: dict[str, Any], interval: float | None,
                   first_frame_ps: float) -> float | None:
    """Stability in ps (MDsim): the time of the first collapsed frame, or of the last frame when
    none collapsed, counted from the run's start (None without a frame interval)."""
    if not interval:
        return None
    frame = stable["first_collapse_frame"] if stable["collapsed"] else stable["n_frames"] - 1
    return first_frame_ps + frame * interval


def pre_collapse_errors(run: Frames, first_collapse: int, reference: Frames, level,
                        n_frames: int, loaded_models: list, names: list[str],
                        to_unit: float) -> dict[str, Any]:
    """JCP Fig. 7: the last `n_frames` frames before a collapse labelled by `level`, and each
    model's per-frame F_mae against those labels (in the report's unit; NaN where the level
    could not label a frame)."""
    from mlff_core.metrics.predict import predict_with_model

    start = max(0, first_collapse - n_frames)
    window = run[start:first_collapse]
    system = reference.provenance.get("system", {})  # the bond graph MMFF94 needs
    calculator = level.calculator(smiles=system.get("smiles"),
                                  charge=int(system.get("charge", 0)))
    forces = np.full_like(window.positions, np.nan)
    for f in range(window.n_frames):
        atoms = window.to_atoms(f)
        atoms.calc = calculator
        try:
            forces[f] = atoms.get_forces()
        except Exception:  # any failure of the level (an SCF near a collapse): left unlabelled
            pass
    labelled = np.isfinite(forces).all(axis=(1, 2))
    errors = {}
    for name, model in zip(names, loaded_models, strict=True):
        _, predicted = predict_with_model(model, window)
        per_frame = np.full(window.n_frames, np.nan)
        per_frame[labelled] = frame_force_mae(predicted[labelled], forces[labelled]) * to_unit
        errors[name] = per_frame.tolist()
    return {"level": level.tag, "frames": list(range(start, first_collapse)),
            "frames_to_collapse": list(range(first_collapse - start, 0, -1)),
            "labelled": int(labelled.sum()), "F_mae": errors}


def _trajectory_section(report: Report, reference: Frames, trajectories: Sequence[str],
                        topology, type_map, clusters: ConformationClusters,
                        bond_threshold: float, loaded_models: list, advance: Advance,
                        relabel: tuple | None = None, unit: str = "kcal/mol/A") -> None:
    from mlff_core.metrics.predict import predict_with_model

    names = [m["name"] for m in report.document["models"]]
    pre_collapse_curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    groups: dict[str, list[float]] = {}
    h_curves, rmsd_curves, rmsf_curves, rdf_curves, energy_curves = {}, {}, {}, {}, {}
    force_curves, contacts = {}, {}
    if not reference.is_periodic:
        contacts["reference data"] = simulation.distance_map(reference)
    centres, h_reference = (None, None) if reference.is_periodic else \
        simulation.distance_distribution(reference)
    reference_rdfs = simulation.radial_distribution(reference)[1] if reference.is_periodic \
        else None
    for argument in trajectories:
        label, path = parse_trajectory_argument(argument)
        run = read_trajectory(path, topology, type_map)
        if run.is_periodic and not reference.is_periodic:  # a molecule in an engine's box
            run = run.without_cell()
        if run.n_atoms != reference.n_atoms or not np.array_equal(run.atomic_numbers,
                                                                  reference.atomic_numbers):
            raise DataError(f"trajectory has {run.n_atoms} atoms ({run.formula}) but the "
                            f"reference data and models are for {reference.n_atoms} atoms "
                            f"({reference.formula}) in another order or composition", path)
        recorded = run_record(path, run)
        interval = recorded["frame_interval_ps"]
        rdf_reference = reference_rdfs if run.is_periodic else None
        if rdf_reference is not None:  # a liquid or material: bonds may break and form
            window = max(1, round(simulation.RDF_WINDOW_PS / interval)) if interval else \
                simulation.RDF_WINDOW_FRAMES
            stable = simulation.rdf_stability(run, rdf_reference, window)
            criterion = {"kind": "rdf", "window_frames": window,
                         "threshold": simulation.RDF_THRESHOLD,
                         "rule": "MDsim: the first window whose RDF MAE (r_max · mean |Δg|) "
                                 "exceeds the threshold for any element pair"}
        else:
            stable = simulation.stability(run, bond_threshold, reference=reference)
            criterion = {"kind": "bonds", "threshold": bond_threshold,
                         "rule": "a bond off its mean length in the reference data by more "
                                 "than the threshold (Å)"}
        entry: dict[str, Any] = {
            "label": label, "path": str(path), "frames": run.n_frames,
            "frames_before_collapse": stable["frames_before_collapse"],
            "collapsed": stable["collapsed"], "bond_threshold": bond_threshold,
            "stability_criterion": criterion,
            "frame_interval_ps": interval,
            "stability_ps": stability_time(stable, interval, recorded["first_frame_ps"]),
            "ns_per_day": recorded["ns_per_day"],
        }
        if relabel is not None and stable["collapsed"] and stable["first_collapse_frame"]:
            entry["pre_collapse_errors"] = pre_collapse_errors(
                run, stable["first_collapse_frame"], reference, relabel[0], relabel[1],
                loaded_models, names, force_conversion(unit))
            curve = entry["pre_collapse_errors"]
            for name, values in curve["F_mae"].items():
                pre_collapse_curves[f"{label}: {path.name} ({name})"] = (
                    -np.asarray(curve["frames_to_collapse"]), np.asarray(values))
        groups.setdefault(label, []).append(stable["frames_before_collapse"])
        key = f"{label}: {path.name}"
        usable = run[: max(1, stable["frames_before_collapse"])]  # structure metrics pre-collapse
        if run.is_periodic:
            r, curves = simulation.radial_distribution(usable)
            for pair, g in curves.items():
                rdf_curves[f"{key} {pair}"] = (r, g)
            if rdf_reference is not None:
                entry["rdf_mae"] = simulation.rdf_mae(curves, rdf_reference)
            if interval:
                try:
                    entry["diffusivity"] = simulation.diffusivity(usable, interval)
                except DataError:  # too short a stable part to fit
                    entry["diffusivity"] = None
        else:
            _, h = simulation.distance_distribution(usable)
            entry["hr_mae"] = simulation.hr_mae(h, h_reference)
            h_curves[key] = h
            rmsd, rmsf = simulation.rmsd_rmsf(usable)
            entry["rmsd_final_A"] = float(rmsd[-1])
            entry["rmsf_mean_A"] = float(rmsf.mean())
            rmsd_curves[key], rmsf_curves[key] = rmsd, rmsf
            distances = simulation.distance_map(usable)
            entry["distance_map_mae_A"] = simulation.distance_map_mae(
                distances, contacts["reference data"])
            if len(contacts) < 3:
                contacts[key] = distances
        forces, energies, source = run.forces, run.energies, "trajectory"
        if forces is None and loaded_models:
            energies, forces = predict_with_model(loaded_models[0], run)
            source = loaded_models[0].path.name
        # unexplored as the monitors decide it: the ratio or the bond score above 1
        entry.update(simulation.exploration_statistics(clusters.monitor_scores(run), forces))
        if forces is not None:
            max_force = simulation.force_statistics(forces)
            entry["forces_from"] = source
            entry["max_force_eV_per_A"] = float(max_force.max())
            entry["max_force_per_frame"] = max_force.tolist()
            force_curves[key] = max_force
        if energies is not None:
            energy_curves[key] = np.asarray(energies) - np.asarray(energies)[0]
        report.document["trajectories"].append(entry)
        advance(1)

    report.figures["stability"] = plots.png_base64(plots.stability_violins(groups))
    if pre_collapse_curves:
        report.figures["pre_collapse"] = plots.png_base64(plots.curves(
            {k: v[0] for k, v in pre_collapse_curves.items()},
            {k: v[1] for k, v in pre_collapse_curves.items()},
            f"Force error before collapse against {relabel[0].tag} (JCP Fig. 7)",
            "frames before the collapse", f"frame F_mae ({unit})"))
    if h_curves:
        report.figures["hr"] = plots.png_base64(plots.curves(
            centres, h_curves, "Interatomic distance distribution h(r)", "r (Å)", "h(r) (1/Å)",
            reference=h_reference, reference_label="reference data"))
        report.figures["rmsd"] = plots.png_base64(plots.curves(
            {k: np.arange(len(v)) for k, v in rmsd_curves.items()}, rmsd_curves,
            "RMSD to the first frame", "frame", "RMSD (Å)"))
        report.figures["rmsf"] = plots.png_base64(plots.curves(
            {k: np.arange(len(v)) for k, v in rmsf_curves.items()}, rmsf_curves,
            "RMSF per atom", "atom index", "RMSF (Å)"))
    if rdf_curves:
        report.figures["rdf"] = plots.png_base64(plots.curves(
            {k: v[0] for k, v in rdf_curves.items()}, {k: v[1] for k, v in rdf_curves.items()},
            "Radial distribution functions", "r (Å)", "g(r)"))
    if len(contacts) > 1:
        report.figures["contacts"] = plots.png_base64(plots.distance_maps(contacts))
    if force_curves:
        report.figures["max_force"] = plots.png_base64(plots.curves(
            {k: np.arange(len(v)) for k, v in force_curves.items()}, force_curves,
            "Largest atomic force per frame", "frame", "max |F| (eV/Å)"))
    if energy_curves:
        report.figures["energy"] = plots.png_base64(plots.curves(
            {k: np.arange(len(v)) for k, v in energy_curves.items()}, energy_curves,
            "Potential energy (relative to the first frame)", "frame", "ΔE (eV)"))
