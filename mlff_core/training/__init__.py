"""Training: the trainer, losses, EMA, training graphs and runs from files."""

from mlff_core.training.losses import (
    CompositeLoss,
    ForceMetricLoss,
    LossTerm,
    Predictions,
    energy_force_loss,
    parse_loss,
)
from mlff_core.training.run import make_trainer, prepare_data, train_from_files
from mlff_core.training.trainer import EpochRecord, Trainer, TrainingConfig, TrainingError

__all__ = ["CompositeLoss", "EpochRecord", "ForceMetricLoss", "LossTerm", "Predictions", "Trainer",
           "TrainingConfig", "TrainingError", "energy_force_loss", "make_trainer", "parse_loss",
           "prepare_data", "train_from_files"]
