"""Score matching recovers a known force constant from Boltzmann samples, without labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mlff_core.data.frames import Frames
from mlff_core.errors import MLFFError
from mlff_core.models.layers import scatter_sum
from mlff_core.training import Trainer, TrainingConfig
from mlff_core.training.graphs import batches, frame_graphs
from mlff_core.training.score_matching import ScoreMatching
from mlff_core.training.trainer import initial_potential
from mlff_core.units import BOLTZMANN_EV_PER_K

TEMPERATURE = 500.0
K_TRUE, R0_TRUE = 20.0, 1.0  # eV/Å², Å


class HarmonicBond(nn.Module):
    """E = ½ k (r − r0)² over bonded pairs (each pair appears as two directed edges)."""

    def __init__(self, k: float, r0: float):
        super().__init__()
        self.log_k = nn.Parameter(torch.tensor(float(np.log(k)), dtype=torch.float64))
        self.r0 = nn.Parameter(torch.tensor(r0, dtype=torch.float64))

    def batch_energies(self, atomic_numbers, edge_index, vectors, batch, num_graphs):
        r = vectors.norm(dim=-1)
        per_edge = 0.25 * self.log_k.exp() * (r - self.r0) ** 2
        return scatter_sum(per_edge, batch[edge_index[0]], num_graphs)


def boltzmann_dimers(n: int, seed: int) -> Frames:
    """n H₂ geometries from exp(−½k(r−r0)²/kT) in 3-D (radial density ∝ r² e^{…})."""
    rng = np.random.default_rng(seed)
    kT = BOLTZMANN_EV_PER_K * TEMPERATURE
    grid = np.linspace(0.5, 1.5, 200_001)
    density = grid**2 * np.exp(-0.5 * K_TRUE * (grid - R0_TRUE) ** 2 / kT)
    cdf = np.cumsum(density)
    r = np.interp(rng.random(n) * cdf[-1], cdf, grid)
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    half = 0.5 * r[:, None] * direction
    positions = np.stack([-half, half], axis=1)
    return Frames(atomic_numbers=np.array([1, 1]), positions=positions)


def fit_harmonic(objective: ScoreMatching, frames: Frames, steps: int) -> HarmonicBond:
    torch.manual_seed(0)
    model = HarmonicBond(k=5.0, r0=0.9)
    graphs = frame_graphs(frames, 2.0, torch.float64)
    (batch,) = batches(graphs, len(graphs), shuffle=False, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for step in range(steps):
        if step == steps // 2:
            optimizer.param_groups[0]["lr"] = 0.005
        optimizer.zero_grad()
        objective(model, batch).backward()
        optimizer.step()
    return model


def test_hand_computed_objective_of_a_harmonic_dimer():
    """Sliced objective of one dimer against ½‖F‖² + kT·vᵀ∇(v·F) computed by hand."""
    frames = boltzmann_dimers(1, 3)
    model = HarmonicBond(k=K_TRUE, r0=R0_TRUE)
    (batch,) = batches(frame_graphs(frames, 2.0, torch.float64), 1, shuffle=False, seed=0)
    objective = ScoreMatching(TEMPERATURE, n_projections=1, projection="gaussian")
    torch.manual_seed(7)
    value = float(objective(model, batch).detach())
    torch.manual_seed(7)
    v = torch.randn(2, 3, dtype=torch.float64).numpy()
    d = frames.positions[0, 1] - frames.positions[0, 0]
    r = np.linalg.norm(d)
    u = d / r
    force_on_1 = -K_TRUE * (r - R0_TRUE) * u
    # Hessian of E with respect to d, and the 6×6 block matrix [[H, −H], [−H, H]]
    h = K_TRUE * (np.outer(u, u) + (r - R0_TRUE) / r * (np.eye(3) - np.outer(u, u)))
    dv = v[1] - v[0]
    expected = (0.5 * 2 * force_on_1 @ force_on_1 -
                BOLTZMANN_EV_PER_K * TEMPERATURE * dv @ h @ dv) / 6.0
    assert value == pytest.approx(expected, rel=1e-10)


def test_sliced_score_matching_recovers_the_force_constant():
    frames = boltzmann_dimers(4000, 0)
    model = fit_harmonic(ScoreMatching(TEMPERATURE, "sliced"), frames, 600)
    k = float(model.log_k.detach().exp())
    # independent: the score-matching estimator in closed form on the same samples,
    # k* = kT E[1 + 2(r − r0)/r] / E[(r − r0)²] at the true r0
    r = np.linalg.norm(frames.positions[:, 1] - frames.positions[:, 0], axis=1)
    kT = BOLTZMANN_EV_PER_K * TEMPERATURE
    closed_form = kT * np.mean(1 + 2 * (r - R0_TRUE) / r) / np.mean((r - R0_TRUE) ** 2)
    assert closed_form == pytest.approx(K_TRUE, rel=0.05)
    assert k == pytest.approx(K_TRUE, rel=0.05)  # stated tolerance: 5 % with 4,000 samples
    assert float(model.r0.detach()) == pytest.approx(R0_TRUE, abs=0.005)


def test_denoising_score_matching_recovers_the_force_constant():
    frames = boltzmann_dimers(4000, 1)
    objective = ScoreMatching(TEMPERATURE, "denoising", noise=0.005)
    model = fit_harmonic(objective, frames, 600)
    # smoothing by σ lowers the apparent constant to kT / (kT/k + σ²): 1.2 % here
    assert float(model.log_k.detach().exp()) == pytest.approx(K_TRUE, rel=0.1)
    assert float(model.r0.detach()) == pytest.approx(R0_TRUE, abs=0.01)


def test_trainer_learns_from_unlabeled_frames_with_score_matching(tmp_path):
    rng = np.random.default_rng(4)
    water = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.24, 0.927, 0.0]])
    frames = Frames(atomic_numbers=np.array([8, 1, 1]),
                    positions=water + 0.05 * rng.standard_normal((24, 3, 3)),
                    energies=rng.normal(-2080.0, 0.1, 24), forces=rng.normal(size=(24, 3, 3)))
    config = TrainingConfig(architecture="schnet", epochs=3, batch_size=8, seed=0,
                            learning_rate=1e-3, dtype="float64",
                            hyperparameters={"hidden": 16, "num_interactions": 1})
    unlabeled = Frames(atomic_numbers=frames.atomic_numbers, positions=frames.positions)
    torch.manual_seed(0)
    start = initial_potential(config, frames.atomic_numbers.tolist(), [frames[:8]])
    objective = ScoreMatching(500.0)
    trainer = Trainer(config, [unlabeled[:16]], [unlabeled[16:24]], tmp_path,
                      init_potential=start, objective=objective)
    first = trainer.evaluate(trainer.val_graphs)
    assert np.isfinite(first["loss"]) and np.isnan(first["force_mae"])
    trainer.fit()
    assert trainer.best_val_loss < first["loss"]
    with pytest.raises(MLFFError, match="initial model"):
        Trainer(config, [unlabeled[:16]], [unlabeled[16:24]], tmp_path / "b",
                objective=objective)


def test_bad_settings():
    for kwargs in ({"temperature": 0.0}, {"temperature": 300.0, "method": "exact"},
                   {"temperature": 300.0, "n_projections": 0},
                   {"temperature": 300.0, "projection": "sphere"}):
        with pytest.raises(MLFFError):
            ScoreMatching(**kwargs)
