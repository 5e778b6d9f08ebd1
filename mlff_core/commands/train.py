"""`mlff train` and `mlff export`."""

from __future__ import annotations

import time

import click

from mlff_core.commands.data import SubsetSize
from mlff_core.commands.exploration_options import (
    check_radius_options,
    echo_exploration,
    radius_options,
    read_calibration_data,
)
from mlff_core.errors import MLFFError
from mlff_core.export import export_run, load_model
from mlff_core.models import ARCHITECTURES
from mlff_core.outputs import claim_output_file
from mlff_core.progress import progress_bar, silent_progress
from mlff_core.training import TrainingConfig, make_trainer
from mlff_core.training.losses import FORCE_TERMS, parse_loss
from mlff_core.training.parallel import data_parallel
from mlff_core.training.trainer import CLUSTER_SAMPLING

_DEFAULTS = TrainingConfig()

#: A learning rate on the command line: a run at 0 would train nothing (the API allows 0).
LEARNING_RATE = click.FloatRange(min=0, min_open=True)


class LossSpec(click.ParamType):
    """`--loss cluster` or `--loss cluster=1,maxerr=0.1` (repeatable; weights add up)."""

    name = "LOSS"

    def convert(self, value, param, ctx):
        if isinstance(value, dict):
            return value
        try:
            return parse_loss(value)
        except MLFFError as exc:
            self.fail(str(exc), param, ctx)


def merge_losses(specs) -> dict[str, float]:
    """One loss mapping from repeated `--loss` values (default: the MSE loss)."""
    merged: dict[str, float] = {}
    for spec in specs:
        for name, weight in spec.items():
            merged[name] = merged.get(name, 0.0) + weight
    return merged or {"mse": 1.0}


loss_option = click.option(
    "--loss", "losses", multiple=True, type=LossSpec(),
    help=f"Force loss term(s): {', '.join(FORCE_TERMS)}; weights as cluster=1,maxerr=0.1 "
         "(default mse). Metric-guided terms are the force metrics themselves: cluster = mean "
         "over conformation clusters of their F_mae, element = mean over elements, fnm = "
         "mass-normalised, maxerr = mean per-frame max error.")
loss_clusters_option = click.option(
    "--loss-clusters", "n_clusters", type=click.IntRange(min=1),
    help="Conformation clusters per system for cluster losses (default: by silhouette).")
cluster_sampling_option = click.option(
    "--cluster-sampling", type=click.Choice(CLUSTER_SAMPLING),
    default=_DEFAULTS.cluster_sampling, show_default=True,
    help="How a cluster loss reaches rare clusters: 'weights' (each frame once per epoch with "
         "its balance weight N/(K n_k)) or 'balanced' (frames drawn ∝ N/(K n_k), every cluster "
         "about 1/K of each batch; smoother when a cluster is very rare).")


allow_mixed_levels_option = click.option(
    "--allow-mixed-levels", is_flag=True,
    help="Accept data of several levels of theory (or another level than the starting "
         "model's); refused by default, as one model cannot fit both.")

#: `mlff train` options that set a hyperparameter of the architecture.
_HYPERPARAMETER_OPTIONS = ("hidden", "num_interactions", "cutoff", "num_rbf", "radial",
                           "cutoff_fn", "max_L", "max_ell", "correlation")


def requested_settings(ctx: click.Context, config: TrainingConfig
                       ) -> dict[str, tuple[str, object]]:
    """The settings given on the command line: option name → (config key, value as the config
    holds it), for `make_trainer` to compare with a resumed run's own."""
    requested = {}
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name) != click.core.ParameterSource.COMMANDLINE:
            continue
        option = max(param.opts, key=len)
        if param.name in _HYPERPARAMETER_OPTIONS:
            key, value = f"hyperparameters.{param.name}", config.hyperparameters[param.name]
        elif param.name == "losses":
            key, value = "loss", config.loss
        elif hasattr(config, param.name):
            key, value = param.name, getattr(config, param.name)
        else:
            continue  # data, output, resume, ...: not settings of the run
        requested[option] = (key, value)
    return requested


@click.command()
@click.option("--data", "data", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Labelled frames (repeat for several files or systems).")
@click.option("--val-data", multiple=True, type=click.Path(dir_okay=False),
              help="Validation frames (default: split off --data).")
@click.option("--model", "architecture", type=click.Choice(sorted(ARCHITECTURES)),
              default=_DEFAULTS.architecture, show_default=True, help="Architecture.")
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory (checkpoints, best weights, log.csv).")
@click.option("--n-train", type=SubsetSize(),
              help="Training frames per system (default: the rest).")
@click.option("--n-val", type=SubsetSize(), default=0.1, show_default=True,
              help="Validation frames per system, split off --data.")
@click.option("--hidden", type=click.IntRange(min=1),
              help="Feature width (default 64; MACE: channels per irrep, 32).")
@click.option("--layers", "num_interactions", type=click.IntRange(min=1),
              help="Message-passing layers (default 3; MACE 2).")
@click.option("--cutoff", type=click.FloatRange(min=0, min_open=True), help="Cutoff in Å (5.0).")
@click.option("--num-rbf", type=click.IntRange(min=2),
              help="Radial basis functions (MACE: Bessel functions, 8).")
@click.option("--radial", type=click.Choice(["gaussian", "bessel"]),
              help="Radial basis (SchNet, PaiNN).")
@click.option("--cutoff-fn", type=click.Choice(["cosine", "polynomial"]),
              help="Cutoff function (SchNet, PaiNN).")
@click.option("--max-L", "max_L", type=click.IntRange(min=0),
              help="MACE: largest l of the hidden features (default 1: 32x0e+32x1o).")
@click.option("--max-ell", type=click.IntRange(min=1),
              help="MACE: largest l of the edge spherical harmonics (default 3).")
@click.option("--correlation", type=click.IntRange(min=1),
              help="MACE: body order of the product basis minus one (default 3).")
@click.option("--epochs", type=click.IntRange(min=1), default=_DEFAULTS.epochs, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=_DEFAULTS.batch_size,
              show_default=True)
@click.option("--lr", "learning_rate", type=LEARNING_RATE, default=_DEFAULTS.learning_rate,
              show_default=True, help="Adam learning rate.")
@click.option("--lr-factor", type=float, default=_DEFAULTS.lr_factor, show_default=True,
              help="LR multiplier when the validation loss plateaus.")
@click.option("--lr-patience", type=int, default=_DEFAULTS.lr_patience, show_default=True,
              help="Epochs without improvement before the LR drops.")
@click.option("--min-lr", "min_learning_rate", type=float, default=_DEFAULTS.min_learning_rate,
              show_default=True, help="Stop when the LR falls below this.")
@click.option("--patience", "early_stopping_patience", type=int,
              default=_DEFAULTS.early_stopping_patience, show_default=True,
              help="Early stopping: epochs without validation improvement.")
@click.option("--energy-weight", type=click.FloatRange(min=0), default=_DEFAULTS.energy_weight,
              show_default=True,
              help="ρ: weight of squared energy errors (eV²) against force errors (eV²/Å²); "
                   "of absolute energy errors with metric-guided losses only.")
@loss_option
@loss_clusters_option
@cluster_sampling_option
@click.option("--ema-decay", type=float, default=_DEFAULTS.ema_decay, show_default=True)
@click.option("--clip", "gradient_clip", type=float, default=_DEFAULTS.gradient_clip,
              show_default=True, help="Gradient-norm clipping (0: off).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default=_DEFAULTS.dtype,
              show_default=True)
@click.option("--device", default=_DEFAULTS.device, show_default=True, help="cpu, cuda, cuda:N.")
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True)
@click.option("--committee", "committee", type=click.IntRange(min=2),
              help="Train this many members (seeds SEED, SEED+1, ...) on one split; "
                   "`mlff export` writes them as one model file whose engines use their mean "
                   "and whose monitors can flag on their force deviation.")
@click.option("--max-minutes", type=float,
              help="Stop cleanly after this much wall time (per member of a committee).")
@click.option("--init-model", type=click.Path(dir_okay=False),
              help="Warm start (fine-tune) from this model file.")
@click.option("--resume", is_flag=True,
              help="Continue the run in -o from its last checkpoint, with its own settings "
                   "(only --epochs, --max-minutes and --device may change).")
@allow_mixed_levels_option
def train(data, val_data, architecture, run_dir, n_train, n_val, hidden, num_interactions,
          cutoff, num_rbf, radial, cutoff_fn, max_L, max_ell, correlation, epochs,  # noqa: N803
          batch_size, learning_rate, lr_factor, lr_patience, min_learning_rate,
          early_stopping_patience, energy_weight, ema_decay, losses, n_clusters,
          cluster_sampling, gradient_clip, dtype, device, seed, committee, max_minutes,
          init_model, resume, allow_mixed_levels) -> None:
    """Train a force field on labelled frames (energies and forces).

    \b
    Examples:
      mlff train --data aspirin.npz --model painn -o runs/aspirin
      mlff train --data aspirin.npz --model schnet --hidden 128 --epochs 500 -o runs/schnet
      mlff train --data aspirin.npz --model mace --max-ell 2 --correlation 2 -o runs/mace
      mlff train --data aspirin.npz -o runs/aspirin --resume        # after an interruption
      mlff train --data new.npz --init-model aspirin.pt -o runs/ft  # fine-tune
      mlff train --data aspirin.npz --loss cluster=1,maxerr=0.1 -o runs/cluster
      mlff train --data aspirin.npz --loss cluster --cluster-sampling balanced -o runs/bal
      mlff train --data aspirin.npz --committee 4 -o runs/committee
      torchrun --standalone --nproc-per-node 2 $(which mlff) train --data aspirin.npz \\
          -o runs/ddp

    Under torchrun the processes share each batch (data-parallel, DDP; gloo on CPU, nccl on
    CUDA): the same steps as one process with the same --batch-size, which stays the global
    batch. Rank 0 alone writes the run directory and prints.
    """
    overrides = {"hidden": hidden, "num_interactions": num_interactions, "cutoff": cutoff,
                 "num_rbf": num_rbf, "radial": radial, "cutoff_fn": cutoff_fn, "max_L": max_L,
                 "max_ell": max_ell, "correlation": correlation}
    config = TrainingConfig(
        architecture=architecture,
        hyperparameters={k: v for k, v in overrides.items() if v is not None},
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, lr_factor=lr_factor,
        lr_patience=lr_patience, min_learning_rate=min_learning_rate,
        early_stopping_patience=early_stopping_patience, energy_weight=energy_weight,
        ema_decay=ema_decay, gradient_clip=gradient_clip, seed=seed, dtype=dtype, device=device,
        max_minutes=max_minutes, loss=merge_losses(losses), n_clusters=n_clusters,
        cluster_sampling=cluster_sampling,
    )
    requested = requested_settings(click.get_current_context(), config)
    with data_parallel(device) as group:
        main = group is None or group.is_main
        _train(config, run_dir, committee, data, val_data, n_train, n_val, init_model, resume,
               epochs, allow_mixed_levels, requested, echo=click.echo if main else _quiet,
               progress=progress_bar if main else silent_progress,
               processes=1 if group is None else group.world_size)


def _quiet(*_args, **_kwargs) -> None:
    """`click.echo` for the processes that are not rank 0."""


def _train(config, run_dir, committee, data, val_data, n_train, n_val, init_model, resume,
           epochs, allow_mixed_levels, requested, echo, progress, processes) -> None:
    if committee is not None:
        _train_committee(config, run_dir, committee, data, val_data=val_data, n_train=n_train,
                         n_val=n_val, init_model=init_model, resume=resume,
                         epochs=epochs if "--epochs" in requested else None,
                         allow_mixed_levels=allow_mixed_levels, requested=requested, echo=echo,
                         progress=progress)
        return
    trainer = make_trainer(
        config, run_dir, data, val_data, n_train, n_val, init_model=init_model, resume=resume,
        epochs=epochs if "--epochs" in requested else None,
        allow_mixed_levels=allow_mixed_levels, requested=requested,
    )
    if trainer.epoch >= trainer.config.epochs:
        echo(f"{run_dir}: already trained for {trainer.epoch} epochs; pass a larger "
                   "--epochs to continue")
        return
    started = time.perf_counter()
    label = "training" if processes == 1 else f"training · {processes} processes"
    with progress(label, trainer.config.epochs) as advance:
        advance(trainer.epoch)

        def on_epoch(record) -> None:
            advance(1)

        record = trainer.fit(on_epoch)
    echo(f"{trainer.stop_reason} after epoch {trainer.epoch} "
         f"({time.perf_counter() - started:.0f} s)")
    if record is not None:
        echo(f"best epoch {trainer.best_epoch}: validation loss {trainer.best_val_loss:.5f}; "
             f"last epoch: energy MAE {record.val_energy_mae:.4f} eV, force MAE "
             f"{record.val_force_mae:.4f} eV/Å")
    echo(f"run directory: {run_dir}  (export: mlff export {run_dir} -o model.pt)")


def _train_committee(config, run_dir, size, data, echo=click.echo, progress=progress_bar,
                     **options) -> None:
    from mlff_core.training.committee import train_committee
    from mlff_core.training.run import fit_with_progress

    def fit(trainer, description: str) -> None:
        if trainer.epoch >= trainer.config.epochs:
            return
        started = time.perf_counter()
        fit_with_progress(trainer, f"training {description}", progress)
        echo(f"{description}: {trainer.stop_reason} after epoch {trainer.epoch} "
                   f"({time.perf_counter() - started:.0f} s); best epoch {trainer.best_epoch}, "
                   f"validation loss {trainer.best_val_loss:.5f}")

    train_committee(config, run_dir, size, data, fit=fit, **options)
    echo(f"run directory: {run_dir}, a committee of {size}  (export: mlff export "
               f"{run_dir} -o model.pt)")


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Model file to write (.pt).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]),
              help="Precision of the model file (default: the training precision).")
@click.option("--clusters", "n_clusters", type=click.IntRange(min=1),
              help="Conformation clusters per training system (default: chosen by silhouette).")
@click.option("--no-clusters", is_flag=True,
              help="Store no conformation clusters (engines then report no reference clusters).")
@radius_options(default_calibration="the run's validation split")
@click.option("--overwrite", is_flag=True, help="Replace an existing file at -o.")
def export(run_dir, output, dtype, n_clusters, no_clusters, radius, false_flag_rate,
           calibration_data, overwrite) -> None:
    """Write a training run's best weights as a model file (TorchScript + mlff.json).

    \b
    Examples:
      mlff export runs/aspirin -o aspirin.pt
      mlff export runs/aspirin -o aspirin64.pt --dtype float64 --clusters 5
      mlff export runs/aspirin -o aspirin.pt --radius calibrated --false-flag-rate 0.05
    """
    check_radius_options(radius, calibration_data)
    claim_output_file(output, overwrite)
    path = export_run(run_dir, output, dtype, clusters=not no_clusters, n_clusters=n_clusters,
                      radius=radius, false_flag_rate=false_flag_rate,
                      calibration_data=read_calibration_data(calibration_data))
    loaded = load_model(path)
    meta = loaded.metadata
    click.echo(f"wrote {path}: {meta['architecture']}, species "
               f"{', '.join(meta['species_symbols'])}, cutoff {meta['cutoff']} Å × "
               f"{meta['num_interactions']} layers, {meta['dtype']}")
    echo_exploration(meta)
