"""`mlff finetune`: fine-tune a model file, reweighting training frames by their cluster's RBP."""

from __future__ import annotations

import click

from mlff_core.commands.data import SubsetSize
from mlff_core.commands.train import (
    LEARNING_RATE,
    allow_mixed_levels_option,
    loss_option,
    merge_losses,
)
from mlff_core.progress import progress_bar
from mlff_core.training import TrainingConfig
from mlff_core.training.finetune import REWEIGHTING
from mlff_core.training.finetune import finetune as run_finetune
from mlff_core.units import force_conversion


@click.command()
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False),
              help="Model file to start from.")
@click.option("--data", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Labelled training frames (repeatable).")
@click.option("--val-data", multiple=True, type=click.Path(dir_okay=False),
              help="Validation frames (default: split off --data).")
@click.option("--n-val", type=SubsetSize(), default=0.1, show_default=True,
              help="Validation frames per system, split off --data.")
@click.option("--reweight", type=click.Choice(REWEIGHTING), default="rbp", show_default=True,
              help="rbp: weight each frame by 1 + s·RBP(cluster)/mean RBP, normalised to mean 1.")
@click.option("--strength", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="s in the RBP rule (0: uniform weights).")
@click.option("--clusters", "n_clusters", type=click.IntRange(min=1),
              help="Fit this many clusters on the training frames instead of using the model "
                   "file's.")
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory; the fine-tuned model is written there as model.pt.")
@click.option("--epochs", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--lr", "learning_rate", type=LEARNING_RATE, default=1e-4, show_default=True,
              help="Adam learning rate (small: the weights are already trained).")
@click.option("--patience", "early_stopping_patience", type=int, default=20, show_default=True,
              help="Early stopping: epochs without validation improvement.")
@click.option("--energy-weight", type=click.FloatRange(min=0), default=0.01, show_default=True,
              help="ρ.")
@loss_option
@click.option("--device", default="cpu", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-minutes", type=float, help="Stop cleanly after this much wall time.")
@click.option("--resume", is_flag=True, help="Continue the run in -o from its last checkpoint.")
@allow_mixed_levels_option
def finetune(model_path, data, val_data, n_val, reweight, strength, n_clusters, run_dir, epochs,
             batch_size, learning_rate, early_stopping_patience, energy_weight, losses, device,
             seed, max_minutes, resume, allow_mixed_levels) -> None:
    """Fine-tune a model file; with --reweight rbp, frames of conformation clusters where the
    model is often worse than its average (high ratio of bad points) weigh more.

    \b
    Examples:
      mlff finetune --model aspirin.pt --data train.npz --reweight rbp -o runs/ft
      mlff finetune --model aspirin.pt --data train.npz --strength 2 --epochs 50 -o runs/ft2
    """
    config = TrainingConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                            early_stopping_patience=early_stopping_patience,
                            lr_patience=max(2, early_stopping_patience // 3),
                            energy_weight=energy_weight, loss=merge_losses(losses),
                            device=device, seed=seed, max_minutes=max_minutes)
    with progress_bar("fine-tuning", epochs) as advance:
        summary = run_finetune(model_path, data, run_dir, config, val_data=val_data, n_val=n_val,
                               reweight=reweight, strength=strength, n_clusters=n_clusters,
                               resume=resume, allow_mixed_levels=allow_mixed_levels,
                               on_epoch=lambda record: advance(1))
    scale = force_conversion("kcal/mol/A")
    for system in summary["systems"]:
        click.echo(f"{system['formula']}: {system['frames']} training frames, clusters from "
                   f"the {system['clusters_from']}")
        weights = {row["cluster"]: row["weight"] for row in system["reweighting"]}
        click.echo("  cluster  frames  weight   F_mae before → after (kcal/mol/Å)   "
                   "RBP before → after")
        before, after = system["before"]["per_cluster"], system["after"]["per_cluster"]
        for key in sorted(before, key=int):
            b, a = before[key], after[key]
            click.echo(f"  {key:>7}  {b['n_frames']:>6}  {weights.get(int(key), 1.0):6.2f}   "
                       f"{b['F_mae'] * scale:8.3f} → {a['F_mae'] * scale:8.3f}"
                       f"{'':18}{b['RBP']:.2f} → {a['RBP']:.2f}")
        click.echo(f"  global F_mae {system['before']['global']['F_mae'] * scale:.3f} → "
                   f"{system['after']['global']['F_mae'] * scale:.3f} kcal/mol/Å")
    click.echo(f"{summary['stop_reason']} after epoch {summary['epochs']}; "
               f"fine-tuned model: {summary['output']}")
