"""Small random models and structures shared by the model tests."""

from __future__ import annotations

import numpy as np
import torch

from mlff_core.export import model_metadata, save_model_file
from mlff_core.models import build_potential, hyperparameters


def random_potential(architecture: str, species=(1, 6, 8), dtype=torch.float64, seed: int = 0,
                     **overrides):
    """An untrained potential with weights perturbed away from their initialisation, so that
    every layer (including PaiNN's zero-initialised vector features) contributes."""
    torch.manual_seed(seed)
    potential = build_potential(architecture, list(species), **overrides).to(dtype)
    with torch.no_grad():
        for parameter in potential.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        potential.atomic_reference.copy_(torch.linspace(-10.0, -3.0, len(species)))
    return potential.eval()


def save_random_model(path, architecture: str = "painn", species=(1, 6, 8),
                      dtype=torch.float64, **overrides):
    potential = random_potential(architecture, species, dtype, **overrides)
    params = hyperparameters(architecture, **overrides)
    return save_model_file(potential, path, model_metadata(potential, architecture, params))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q
