"""`mlff asteroid`: bias-aware training on cheap labels (or score matching on unlabeled
configurations) followed by fine-tuning on accurate labels."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from mlff_core.commands.cluster_options import worker_options
from mlff_core.commands.data import SubsetSize
from mlff_core.commands.train import LEARNING_RATE
from mlff_core.distributed import dask_client
from mlff_core.distributed.tasks import cluster_map
from mlff_core.models import ARCHITECTURES
from mlff_core.progress import progress_bar
from mlff_core.training import TrainingConfig
from mlff_core.training.asteroid import GAMMA_GRID, AsteroidSettings
from mlff_core.training.asteroid import asteroid as run_asteroid
from mlff_core.training.score_matching import SCORE_METHODS
from mlff_core.units import force_conversion


class GammaSpec(click.ParamType):
    """`auto` (the grid), `none` (uniform weights), a value or a comma-separated grid."""

    name = "GAMMA"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple) or value is None:
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return GAMMA_GRID
        if text == "none":
            return None
        try:
            values = tuple(float(part) for part in text.split(",") if part.strip())
        except ValueError:
            self.fail(f"{value!r}: use auto, none, a number or a comma-separated list", param,
                      ctx)
        if not values or any(not v > 0.0 for v in values):
            self.fail(f"{value!r}: γ values must be positive", param, ctx)
        return values


@click.command()
@click.option("--accurate", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Accurately labelled frames (repeatable).")
@click.option("--cheap", multiple=True, type=click.Path(dir_okay=False),
              help="Cheaply labelled frames of the same system (repeatable).")
@click.option("--unlabeled", multiple=True, type=click.Path(dir_okay=False),
              help="Unlabeled configurations (score matching instead of cheap labels).")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True),
              help="K at which the unlabeled configurations were sampled.")
@click.option("--gamma", type=GammaSpec(), default="auto", show_default=True,
              help="γ in units of the cheap set's median bias: auto = grid 0.1,0.5,1,2 chosen "
                   "by validation loss; a value; a list; none = uniform weights (ablation).")
@click.option("--cost-ratio", type=click.FloatRange(min=0, min_open=True),
              help="Cost of one accurate label in cheap labels (default: measured).")
@click.option("--score", "score_method", type=click.Choice(SCORE_METHODS), default="sliced",
              show_default=True, help="Score-matching objective for --unlabeled.")
@click.option("--projections", "n_projections", type=click.IntRange(min=1), default=1,
              show_default=True, help="Random projections per configuration (sliced).")
@click.option("--noise", type=click.FloatRange(min=0, min_open=True), default=0.05,
              show_default=True, help="σ of the denoising perturbation, Å.")
@click.option("--no-finetune", is_flag=True,
              help="Keep stage 2 as the final model (ablation; reference energies refitted).")
@click.option("--model", "architecture", type=click.Choice(sorted(ARCHITECTURES)),
              default="painn", show_default=True, help="Architecture.")
@click.option("--hidden", type=click.IntRange(min=1), help="Feature width (default 64).")
@click.option("--layers", "num_interactions", type=click.IntRange(min=1),
              help="Message-passing layers (default 3).")
@click.option("--cutoff", type=click.FloatRange(min=0, min_open=True), help="Cutoff in Å (5.0).")
@click.option("--epochs", type=click.IntRange(min=1), default=300, show_default=True,
              help="Epochs of stages 1 and 2.")
@click.option("--finetune-epochs", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--lr", "learning_rate", type=LEARNING_RATE, default=5e-4, show_default=True)
@click.option("--finetune-lr", "finetune_learning_rate", type=LEARNING_RATE, default=2e-4,
              show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--patience", "early_stopping_patience", type=int, default=40, show_default=True,
              help="Early stopping: epochs without validation improvement.")
@click.option("--max-minutes", type=float, help="Time budget of stages 1 and 2, each.")
@click.option("--finetune-minutes", type=float, help="Time budget of each stage 3.")
@click.option("--n-val", type=SubsetSize(), default=0.1, show_default=True,
              help="Validation frames split off each set.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory: one sub-directory per stage, asteroid.json, model.pt.")
@click.option("--resume", is_flag=True,
              help="Continue the run in -o (finished stages are kept).")
@worker_options
def asteroid(accurate, cheap, unlabeled, temperature, gamma, cost_ratio, score_method,
             n_projections, noise, no_finetune, architecture, hidden, num_interactions, cutoff,
             epochs, finetune_epochs, learning_rate, finetune_learning_rate, batch_size,
             early_stopping_patience, max_minutes, finetune_minutes, n_val, dtype, device, seed,
             run_dir, resume, scheduler, cluster, cluster_config, workers) -> None:
    """ASTEROID: learn from many cheap labels and few accurate ones (1. bias identification,
    2. bias-aware training with weights exp(−B/γ), 3. fine-tuning on the accurate labels), or
    from unlabeled configurations by score matching followed by fine-tuning.

    \b
    Examples:
      mlff data generate --molecule ethanol --level mmff94 --frames 2000 -o cheap.npz
      mlff data generate --molecule ethanol --level mmff94 --label-level gfn2 \\
          --frames 200 --seed 1 -o acc.npz
      mlff asteroid --accurate acc.npz --cheap cheap.npz --gamma auto -o runs/ast
      mlff asteroid --accurate acc.npz --unlabeled unl.npz --temperature 500 -o runs/ast-sm

    With a γ grid (--gamma auto or a list), stages 2 and 3 of each γ run as tasks on a Dask
    cluster: a local one of this machine's cores by default, a running scheduler
    (--scheduler), or batch jobs (--cluster slurm|pbs|lsf).
    """
    if not (cheap or unlabeled):
        raise click.UsageError("give --cheap (labelled) or --unlabeled frames")
    if cheap and unlabeled:
        raise click.UsageError("give --cheap or --unlabeled, not both")
    if unlabeled and temperature is None:
        raise click.UsageError("--unlabeled needs --temperature (the sampling temperature)")
    out = Path(run_dir)
    if out.exists() and any(out.iterdir()) and not resume:
        raise click.UsageError(f"{out} is not empty; pass --resume to continue the run there or "
                               "choose another output directory")
    overrides = {"hidden": hidden, "num_interactions": num_interactions, "cutoff": cutoff}
    config = TrainingConfig(
        architecture=architecture,
        hyperparameters={k: v for k, v in overrides.items() if v is not None},
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        early_stopping_patience=early_stopping_patience,
        lr_patience=max(2, early_stopping_patience // 4), seed=seed, dtype=dtype, device=device,
        max_minutes=max_minutes)
    settings = AsteroidSettings(
        config=config, finetune_epochs=finetune_epochs,
        finetune_learning_rate=finetune_learning_rate, finetune_minutes=finetune_minutes,
        gammas=gamma if gamma is not None else (1.0,), bias_weights=gamma is not None,
        finetune=not no_finetune, n_val=n_val, temperature=temperature,
        score_method=score_method, n_projections=n_projections, noise=noise,
        cost_ratio=cost_ratio)
    with contextlib.ExitStack() as stack:
        task_map = None
        if cheap and len(settings.candidate_gammas) > 1:
            client = stack.enter_context(dask_client(scheduler, cluster, cluster_config,
                                                     workers))
            task_map = cluster_map(client)
        summary = run_asteroid(accurate, out, settings, cheap=cheap, unlabeled=unlabeled,
                               progress=progress_bar, task_map=task_map)
    scale = force_conversion("kcal/mol/A")
    budget = summary["budget"]
    if "cost_ratio" in budget:
        click.echo(f"budget: {budget['accurate_labels']} accurate + {budget['cheap_labels']} "
                   f"cheap labels, cost ratio {budget['cost_ratio']:.1f} ({budget['source']}) "
                   f"= {budget['accurate_label_equivalents']:.0f} accurate-label equivalents")
    else:
        click.echo(f"budget: {budget['accurate_labels']} accurate labels + "
                   f"{budget['unlabeled_frames']} unlabeled configurations")
    if "bias" in summary:
        median = summary["bias"]["median_per_component"] * scale
        click.echo(f"bias of the cheap labels: median {median:.2f} kcal/mol/Å per component")
    click.echo("stage                 validated on   best epoch  F_mae (kcal/mol/Å)  loss")
    for name, stage in summary["stages"].items():
        validated_on = "accurate" if not name.startswith("stage2") else \
            ("cheap" if "bias" in summary else "unlabeled")
        click.echo(f"{name:<22}{validated_on:<15}{stage['best_epoch']:>10}"
                   f"  {stage['val_force_mae'] * scale:>18.3f}  {stage['val_loss']:.4g}")
    chosen = "uniform weights" if summary["gamma"] is None and "bias" in summary else \
        (f"γ = {summary['gamma']:g}" if summary["gamma"] is not None else "score matching")
    click.echo(f"chosen: {chosen}; model file: {summary['model']}")
