"""Training losses. The base loss is energy + force (ASTEROID eq. 1, SchNet's weighting):

    L = Σ_f w_f [ ρ (E_f − Ê_f)² + (1 / 3N_f) Σ_{i,α} (F_iα − F̂_iα)² ]  /  Σ_f w_f

with per-frame sample weights w_f and ρ small (force-dominated; default 0.01, energies in eV,
forces in eV/Å). Extra terms (metric-guided losses, ...) are callables added with a weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor
from torch_geometric.data import Batch

from mlff_core.models.layers import scatter_sum


@dataclass
class Predictions:
    """Model outputs for a batch: energy [G] eV, forces [N, 3] eV/Å."""

    energy: Tensor
    forces: Tensor


class LossTerm(Protocol):
    """An extra loss term: a scalar from a batch (with labels) and the model's predictions."""

    name: str

    def __call__(self, batch: Batch, predictions: Predictions) -> Tensor: ...


def per_frame_errors(batch: Batch, predictions: Predictions) -> tuple[Tensor, Tensor]:
    """Squared energy error [G] (eV²) and mean squared force component error [G] (eV²/Å²)."""
    energy_se = (predictions.energy - batch.energy).pow(2)
    squared = (predictions.forces - batch.forces).pow(2).sum(dim=-1)
    per_graph = scatter_sum(squared, batch.batch, batch.num_graphs)
    atoms = torch.bincount(batch.batch, minlength=batch.num_graphs).to(squared.dtype)
    return energy_se, per_graph / (3.0 * atoms)


def energy_force_loss(batch: Batch, predictions: Predictions, energy_weight: float) -> Tensor:
    """The weighted energy + force loss above (a scalar)."""
    energy_se, force_mse = per_frame_errors(batch, predictions)
    per_frame = energy_weight * energy_se + force_mse
    weights = batch.weight
    return (weights * per_frame).sum() / weights.sum().clamp_min(1e-12)
