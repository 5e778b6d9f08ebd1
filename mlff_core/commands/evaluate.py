"""`mlff eval`: fine-grained force metrics of a model file or of a predictions file."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from mlff_core.data.formats import read_frames
from mlff_core.errors import DataError
from mlff_core.fileio import atomic_output
from mlff_core.metrics.force import force_metrics
from mlff_core.units import FORCE_UNITS


@click.command(name="eval")
@click.option("--data", required=True, type=click.Path(dir_okay=False),
              help="Reference frames with forces (and energies).")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), help="Model file.")
@click.option("--predictions", type=click.Path(dir_okay=False),
              help="npz with 'forces' [frames, atoms, 3] eV/Å (and optional 'energies' eV).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="metrics.json to write.")
@click.option("--clusters", "n_clusters", type=click.IntRange(min=1),
              help="Fit K conformation clusters on these frames (default: the model file's).")
@click.option("--cluster-labels", type=click.Path(dir_okay=False),
              help=".npy with one integer cluster per frame (negative: unexplored).")
@click.option("--unit", type=click.Choice(list(FORCE_UNITS)), default="kcal/mol/A",
              show_default=True, help="Force unit of the report.")
@click.option("--fnm-masses", type=click.Choice(["standard", "integer"]), default="standard",
              show_default=True,
              help="Masses of the FNM metrics: standard relative atomic masses, or integers "
                   "(H 1, C 12, N 14, O 16) as the JCP paper's Table II implies.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--save-predictions", type=click.Path(dir_okay=False),
              help="Also write the model's predictions (npz, eV and eV/Å).")
def evaluate(data, model_path, predictions, output, n_clusters, cluster_labels, unit,
             fnm_masses, batch_size, device, save_predictions) -> None:
    """Force metrics: global, per element, per conformation cluster, mass-normalised,
    max error, ratio of bad points (RBP), energy MAE/RMSE.

    \b
    Examples:
      mlff eval --model aspirin.pt --data test.npz -o metrics.json
      mlff eval --model aspirin.pt --data test.npz --clusters 5 --unit meV/A -o metrics.json
      mlff eval --data test.npz --predictions pred.npz --cluster-labels labels.npy -o m.json
    """
    if (model_path is None) == (predictions is None):
        raise click.UsageError("give exactly one of --model and --predictions")
    if n_clusters is not None and cluster_labels is not None:
        raise click.UsageError("give at most one of --clusters and --cluster-labels")
    frames = read_frames(data)
    model = None
    if model_path is not None:
        from mlff_core.export import load_model
        from mlff_core.metrics.predict import predict_with_model, write_predictions
        from mlff_core.progress import progress_bar

        model = load_model(model_path, device)
        with progress_bar("predicting", frames.n_frames) as advance:
            energies, forces = predict_with_model(model, frames, batch_size, advance)
        if save_predictions:
            write_predictions(save_predictions, energies, forces)
    else:
        from mlff_core.metrics.predict import read_predictions

        energies, forces = read_predictions(predictions)
        if forces.shape != frames.positions.shape:
            raise DataError(f"predicted forces have shape {forces.shape} but {data} holds "
                            f"{frames.positions.shape} (frames, atoms, 3)", predictions)
        if energies is not None and energies.shape != (frames.n_frames,):
            raise DataError(f"{energies.size} predicted energies for {frames.n_frames} frames",
                            predictions)

    labels, source, clusters = _cluster_labels(frames, model, n_clusters, cluster_labels)
    metrics = force_metrics(frames, forces, energies, labels, unit, fnm_masses)
    metrics["clusters_from"] = source
    if clusters is not None:
        metrics["exploration"] = exploration_summary(clusters, frames)
    metrics["data"] = str(data)
    metrics["model"] = None if model_path is None else str(model_path)
    with atomic_output(output, "w") as fh:
        json.dump(metrics, fh, indent=2)
    click.echo(format_metrics_table(metrics))
    if "exploration" in metrics:
        click.echo(format_exploration(metrics["exploration"]))
    click.echo(f"wrote {output}")


def exploration_summary(clusters, frames) -> dict:
    """The model file's radius rule and how it classifies `frames`: the fraction flagged
    unexplored and the distance/radius ratios (median, 95th percentile)."""
    ratios = clusters.classify(frames)[1]
    bond_scores = clusters.bond_scores(frames)
    local = bool(np.isfinite(bond_scores).all())
    return {"radius_rule": dict(clusters.radius_rule_),
            "flagged_fraction": float(np.mean(ratios > 1.0)),
            "ratio_median": float(np.median(ratios)),
            "ratio_p95": float(np.percentile(ratios, 95)),
            # the local half of the exploration monitor (molecules; None otherwise)
            "bond_flagged_fraction": float(np.mean(bond_scores > 1.0)) if local else None,
            "monitor_flagged_fraction": float(np.mean(np.fmax(ratios, bond_scores) > 1.0))}


def format_exploration(summary: dict) -> str:
    """The line `mlff eval` prints about the model file's exploration reference."""
    from mlff_core.commands.exploration_options import describe_radius_rule

    line = (f"unexplored by the model file's clusters: {summary['flagged_fraction']:.1%} of "
            f"these frames (distance/radius median {summary['ratio_median']:.2f}, 95th "
            f"percentile {summary['ratio_p95']:.2f}); "
            f"{describe_radius_rule(summary['radius_rule'])}")
    if summary.get("bond_flagged_fraction") is not None:
        line += (f"\nbond outside its training range: {summary['bond_flagged_fraction']:.1%}; "
                 f"unexplored by the monitors (either): "
                 f"{summary['monitor_flagged_fraction']:.1%}")
    return line


def _cluster_labels(frames, model, n_clusters, labels_path):
    """Cluster label per frame (−1 unexplored), where the labels came from, and the model
    file's clusters when they gave the labels."""
    if labels_path is not None:
        path = Path(labels_path)
        if not path.is_file():
            raise DataError("cluster labels file not found", path)
        try:
            labels = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"not a readable .npy file ({exc})", path) from None
        labels = np.asarray(labels).reshape(-1)
        if labels.shape != (frames.n_frames,):
            raise DataError(f"{labels.size} cluster labels for {frames.n_frames} frames", path)
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"cluster labels must be integers, got {labels.dtype}", path)
        return labels, f"file {path}", None
    if n_clusters is not None:
        from mlff_core.metrics.clusters import ConformationClusters

        fitted = ConformationClusters(n_clusters=n_clusters).fit(frames)
        return fitted.labels_, f"{n_clusters} clusters fitted on the evaluated frames", None
    clusters = None if model is None else \
        model.clusters_for(frames.atomic_numbers, frames.is_periodic)
    if clusters is not None:
        return clusters.predict(frames), "the model file's training clusters", clusters
    return None, "none", None


def format_metrics_table(metrics: dict) -> str:
    """A compact plain-text table of a metrics document (what `mlff eval` prints)."""
    unit = metrics["force_unit"]
    columns = ["F_mae", "F_max_err", "FNM_mae", "FNM_max_err", "E_mae", "RBP", "n_frames"]
    rows = [("global", metrics["global"])]
    rows += [(f"element {s}", v) for s, v in metrics["per_element"].items()]
    rows += [(f"cluster {k}", v) for k, v in metrics.get("per_cluster", {}).items()]
    if "unexplored" in metrics:
        rows.append(("unexplored", metrics["unexplored"]))

    def cell(values: dict, key: str) -> str:
        value = values.get(key)
        if value is None:
            return "-"
        return str(value) if isinstance(value, int) else f"{value:.3f}"

    header = f"{'':<14}" + "".join(f"{c:>12}" for c in columns)
    lines = [f"force metrics in {unit} (FNM: {unit}/amu, energies: {metrics['energy_unit']})",
             header]
    lines += [f"{name:<14}" + "".join(f"{cell(values, c):>12}" for c in columns)
              for name, values in rows]
    return "\n".join(lines)
