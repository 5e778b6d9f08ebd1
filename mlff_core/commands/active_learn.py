"""`mlff active-learn`: continued learning on unexplored and pre-collapse MD frames."""

from __future__ import annotations

import click

from mlff_core.commands.cluster_options import cluster_options
from mlff_core.commands.train import LEARNING_RATE, loss_option, merge_losses
from mlff_core.distributed import cluster_labeller, cluster_md_runner, dask_client
from mlff_core.engines import engine_names
from mlff_core.labels import list_levels
from mlff_core.progress import progress_bar
from mlff_core.training.active import ActiveLearningSettings
from mlff_core.training.active import active_learn as run_active_learning
from mlff_core.units import force_conversion

_DEFAULTS = ActiveLearningSettings()


@click.command("active-learn")
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False),
              help="Model file to improve (its exploration clusters flag unexplored frames).")
@click.option("--structures", required=True, type=click.Path(dir_okay=False),
              help="Starting structures: every frame of an xyz/extxyz, npz or traj file.")
@click.option("--engine", type=click.Choice(engine_names()), default=_DEFAULTS.engine,
              show_default=True)
@click.option("--level", default=_DEFAULTS.level, show_default=True,
              help=f"Level of theory for the new labels, that of the training data "
                   f"({', '.join(list_levels())}).")
@click.option("--rounds", type=click.IntRange(min=1), default=_DEFAULTS.rounds, show_default=True)
@click.option("--data", multiple=True, type=click.Path(dir_okay=False),
              help="The model's labelled training frames (default: the files its provenance "
                   "records).")
@click.option("--runs", "runs_per_structure", type=click.IntRange(min=1),
              default=_DEFAULTS.runs_per_structure, show_default=True,
              help="MD runs per starting structure and round (different seeds).")
@click.option("--starts-per-round", type=click.IntRange(min=1), default=None,
              help="Each MD pass (every round, then the final one) starts from this many "
                   "structures of --structures not used before (seeded random draw), so no "
                   "model is measured on the starts it was trained from. Default: all, every "
                   "pass.")
@click.option("--steps", type=click.IntRange(min=1), default=_DEFAULTS.steps, show_default=True,
              help="Steps per MD run.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True),
              default=_DEFAULTS.temperature, show_default=True, help="K.")
@click.option("--timestep", type=click.FloatRange(min=0, min_open=True),
              default=_DEFAULTS.timestep, show_default=True, help="fs.")
@click.option("--report-interval", type=click.IntRange(min=1),
              default=_DEFAULTS.report_interval, show_default=True,
              help="Steps between analysed frames.")
@click.option("--bond-threshold", type=click.FloatRange(min=0, min_open=True),
              default=_DEFAULTS.bond_threshold, show_default=True, help="Collapse threshold, Å.")
@click.option("--pre-collapse", "pre_collapse_frames", type=click.IntRange(min=0),
              default=_DEFAULTS.pre_collapse_frames, show_default=True,
              help="Frames just before a collapse to label.")
@click.option("--max-new-frames", type=click.IntRange(min=1), default=_DEFAULTS.max_new_frames,
              show_default=True, help="Frames labelled per round at most.")
@click.option("--epochs", type=click.IntRange(min=1), default=_DEFAULTS.epochs,
              show_default=True, help="Training epochs per round.")
@click.option("--lr", "learning_rate", type=LEARNING_RATE, default=_DEFAULTS.learning_rate,
              show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=_DEFAULTS.batch_size,
              show_default=True)
@loss_option
@click.option("--max-minutes", type=float, help="Training time budget per round.")
@click.option("--platform", help="OpenMM platform.")
@click.option("--no-final-md", is_flag=True, help="Skip the MD pass with the last model.")
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True)
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False))
@cluster_options
def active_learn(model_path, structures, engine, level, rounds, data, runs_per_structure,
                 starts_per_round, steps,
                 temperature, timestep, report_interval, bond_threshold, pre_collapse_frames,
                 max_new_frames, epochs, learning_rate, batch_size, losses, max_minutes,
                 platform, no_final_md, seed, output_dir, scheduler, cluster, cluster_config,
                 workers, chunk_size) -> None:
    """Continued learning: MD with the model, label the unexplored and pre-collapse frames,
    add them to the training set, continue training; repeat.

    The MD runs of each pass and the new frames' labels run on a Dask cluster: a local one of
    this machine's cores by default, a running scheduler (--scheduler), or batch jobs
    (--cluster slurm|pbs|lsf); the workers must share this machine's filesystem.

    \b
    Examples:
      mlff active-learn --model aspirin.pt --structures starts.xyz --engine openmm \\
          --level gfn2 --rounds 3 -o runs/al
      mlff active-learn --model aspirin.pt --structures starts.xyz --engine lammps \\
          --runs 5 --steps 4000 --temperature 600 -o runs/al600
    """
    settings = ActiveLearningSettings(
        engine=engine, level=level, rounds=rounds, runs_per_structure=runs_per_structure,
        starts_per_round=starts_per_round,
        temperature=temperature, timestep=timestep, steps=steps,
        report_interval=report_interval, bond_threshold=bond_threshold,
        pre_collapse_frames=pre_collapse_frames, max_new_frames=max_new_frames, epochs=epochs,
        learning_rate=learning_rate, batch_size=batch_size, loss=merge_losses(losses),
        max_minutes=max_minutes, final_md=not no_final_md, seed=seed,
        engine_options={"platform": platform} if platform else {})
    with dask_client(scheduler, cluster, cluster_config, workers) as client:
        summary = run_active_learning(model_path, structures, output_dir, settings, data=data,
                                      progress=progress_bar,
                                      labeller=cluster_labeller(client, chunk_size),
                                      md_runner=cluster_md_runner(client))
    click.echo(format_rounds(summary))
    click.echo(f"final model: {summary['final_model']}")
    click.echo(f"report: {output_dir}/report.html")


def format_rounds(summary: dict) -> str:
    """The per-round table of a continued-learning summary, as text."""
    scale = force_conversion("kcal/mol/A")
    lines = ["model  median frames before collapse  collapsed  unexplored  added  "
             "val F_mae after (kcal/mol/Å)"]
    for r in summary["rounds"]:
        lines.append(f"M{r['round'] - 1:<5} {r['median_frames_before_collapse']:>29.1f}  "
                     f"{r['collapsed_runs']:>4}/{len(r['runs']):<4} "
                     f"{r['unexplored_ratio']:>10.3f}  {r['new_frames']:>5}  "
                     f"{r['val_F_mae'] * scale:.3f}")
    final = summary.get("final")
    if final:
        lines.append(f"M{len(summary['rounds']):<5} "
                     f"{final['median_frames_before_collapse']:>29.1f}  "
                     f"{final['collapsed_runs']:>4}/{len(final['runs']):<4} "
                     f"{final['unexplored_ratio']:>10.3f}")
    return "\n".join(lines)
