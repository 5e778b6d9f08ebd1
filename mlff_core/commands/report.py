"""`mlff report`: force and simulation metrics of one or more models as JSON + HTML."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mlff_core.fileio import atomic_output
from mlff_core.units import FORCE_UNITS


@click.command()
@click.option("--model", "models", multiple=True, type=click.Path(dir_okay=False),
              help="Model file (repeat to compare several side by side).")
@click.option("--data", required=True, type=click.Path(dir_okay=False),
              help="Labelled reference frames (test set).")
@click.option("--trajectory", "trajectories", multiple=True, metavar="[LABEL=]PATH",
              help="MD trajectory (DCD/XTC need --topology); repeat; runs sharing a LABEL "
                   "form one group in the stability plot.")
@click.option("--topology", type=click.Path(dir_okay=False),
              help="Structure (PDB) for DCD/XTC trajectories.")
@click.option("--type-map", help="Elements of LAMMPS atom types, e.g. 'C H O'.")
@click.option("--clusters", "n_clusters", type=click.IntRange(min=1),
              help="Fit K clusters on the data (default: the first model's training clusters).")
@click.option("--bond-threshold", type=click.FloatRange(min=0, min_open=True), default=0.5,
              show_default=True, help="Collapse threshold in Å (0.3 as in the JCP paper).")
@click.option("--unit", type=click.Choice(list(FORCE_UNITS)), default="kcal/mol/A",
              show_default=True)
@click.option("--fnm-masses", type=click.Choice(["standard", "integer"]), default="standard",
              show_default=True,
              help="Masses of the FNM metrics: standard relative atomic masses, or integers "
                   "(H 1, C 12, N 14, O 16) as the JCP paper's Table II implies.")
@click.option("--relabel", "relabel_level",
              help="Label the last frames before each collapse with this level of theory "
                   "(e.g. gfn2) and plot each model's force error along them (JCP Fig. 7).")
@click.option("--relabel-frames", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many frames before a collapse --relabel labels.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="HTML report to write.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the report as JSON (default: next to the HTML).")
def report(models, data, trajectories, topology, type_map, n_clusters, bond_threshold, unit,
           fnm_masses, relabel_level, relabel_frames, output, json_path) -> None:
    """A self-contained HTML report (and JSON) of force metrics and simulation metrics.

    \b
    Examples:
      mlff report --model aspirin.pt --data test.npz -o report.html
      mlff report --model painn.pt --model schnet.pt --data test.npz \\
          --trajectory painn=runs/md1/trajectory.dcd --topology runs/md1/start.pdb -o r.html
    """
    from mlff_core.progress import progress_bar
    from mlff_core.report.build import build_report
    from mlff_core.report.html import render_html

    if not models and not trajectories:
        raise click.UsageError("give at least one --model or --trajectory")
    with progress_bar("report", len(models) + len(trajectories)) as advance:
        result = build_report(models, data, trajectories, topology,
                              type_map.split() if type_map else None, unit, n_clusters,
                              bond_threshold, fnm_masses=fnm_masses,
                              relabel=(relabel_level, relabel_frames) if relabel_level else None,
                              advance=advance)
    json_path = Path(json_path) if json_path else Path(output).with_suffix(".json")
    with atomic_output(json_path, "w") as fh:
        json.dump(result.document, fh, indent=2)
    with atomic_output(output, "w") as fh:
        fh.write(render_html(result))
    click.echo(format_comparison(result.document))
    click.echo(f"wrote {output} and {json_path}")


def format_comparison(document: dict) -> str:
    """Global metrics of every model side by side, and trajectory stability (terminal)."""
    lines = []
    models = document["models"]
    if models:
        keys = ["F_mae", "F_max_err", "FNM_mae", "FNM_max_err", "E_mae"]
        lines.append(f"force metrics ({document['force_unit']})")
        lines.append(f"{'model':<24}" + "".join(f"{k:>12}" for k in keys))
        for m in models:
            values = m["metrics"]["global"]
            lines.append(f"{m['name'][:23]:<24}" + "".join(
                f"{values[k]:>12.3f}" if values.get(k) is not None else f"{'-':>12}"
                for k in keys))
    for t in document["trajectories"]:
        explored = t.get("explored_ratio")
        stable_ps = t.get("stability_ps")
        lines.append(f"trajectory {t['label']} ({t['path']}): {t['frames_before_collapse']}/"
                     f"{t['frames']} frames before collapse"
                     + ("" if stable_ps is None else f" ({stable_ps:.3g} ps)")
                     + ("" if explored is None else f", explored ratio {explored:.2f}"))
    return "\n".join(lines)
