"""Score matching: learning forces from unlabeled configurations (ASTEROID, ICML 2023, eq. 3).

Configurations x sampled from the Boltzmann distribution p(x) ∝ exp(−E(x)/kT) have the score
∇ₓ log p(x) = F(x)/kT. A model's forces F_θ define a model score s_θ = F_θ/kT, and score
matching fits it without labels by minimising (Hyvärinen 2005)

    J(θ) = E_p[ ½‖s_θ(x)‖² + tr ∇ₓ s_θ(x) ],

whose minimiser is the true score. The trace of the Jacobian (minus the Hessian of E / kT) is too
expensive for every atom; **sliced** score matching (Song et al. 2019) replaces it by random
projections v with E[v vᵀ] = I:

    J_sliced(θ) = E_p E_v[ ½‖s_θ(x)‖² + vᵀ ∇ₓ(vᵀ s_θ(x)) ]     (variance-reduced form)

(`variance_reduced=False` uses ½(vᵀs)² instead of ½‖s‖²). One Hessian-vector product per
projection: forces by autograd with a graph, then the gradient of v·F.

**Denoising** score matching (Vincent 2011) perturbs x̃ = x + σε and regresses the score of the
perturbed distribution: J_dsm = E ½‖s_θ(x̃) + ε/σ‖²; no second derivatives, but it learns the
forces of a smoothed distribution (bias ∝ σ²).

Units: both objectives are multiplied by (kT)² and divided by the number of force components, so
they read as eV²/Å² per component like the force MSE, and their minimiser is unchanged:

    sliced:     [½‖F_θ‖² + kT vᵀ∇ₓ(vᵀF_θ)] / 3N
    denoising:  ½‖F_θ(x̃) + kT ε/σ‖² / 3N

Energies are only fixed up to a constant by score matching (and forces only as well as the
sampling temperature is known); fine-tuning on labelled frames sets both.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Batch

from mlff_core.errors import MLFFError
from mlff_core.models.layers import scatter_sum
from mlff_core.models.potential import Potential
from mlff_core.training.losses import BatchTotals
from mlff_core.units import BOLTZMANN_EV_PER_K

SCORE_METHODS = ("sliced", "denoising")


def _forces(potential: Potential, batch: Batch, positions: Tensor) -> Tensor:
    """[N, 3] −∂E/∂x at `positions` (a graph is kept for further derivatives)."""
    vectors = positions[batch.edge_index[1]] - positions[batch.edge_index[0]] + batch.shift
    energy = potential.batch_energies(batch.z, batch.edge_index, vectors, batch.batch,
                                      batch.num_graphs)
    (gradient,) = torch.autograd.grad(energy.sum(), positions, create_graph=True)
    return -gradient


def _per_component(per_atom: Tensor, batch: Batch) -> Tensor:
    """[G] sum over each frame's atoms of `per_atom` [N], divided by its 3N components."""
    atoms = torch.bincount(batch.batch, minlength=batch.num_graphs).to(per_atom.dtype)
    return scatter_sum(per_atom, batch.batch, batch.num_graphs) / (3.0 * atoms)


class ScoreMatching:
    """A training objective on unlabeled configurations sampled at `temperature` (K).

    Args:
        temperature: sampling temperature of the configurations, K.
        method: 'sliced' (default) or 'denoising'.
        n_projections: random projections per configuration (sliced).
        projection: 'rademacher' (±1 entries) or 'gaussian' (sliced).
        variance_reduced: ½‖s‖² in place of ½(vᵀs)² (sliced; exact expectation over v).
        noise: σ of the denoising perturbation, Å.

    Call as `objective(potential, batch)` → a scalar (mean over frames, weighted by
    `batch.weight`).
    """

    needs_labels = False

    def __init__(self, temperature: float, method: str = "sliced", n_projections: int = 1,
                 projection: str = "rademacher", variance_reduced: bool = True,
                 noise: float = 0.05):
        if method not in SCORE_METHODS:
            raise MLFFError(f"unknown score-matching method {method!r}; use one of "
                            f"{', '.join(SCORE_METHODS)}")
        if not temperature > 0.0:
            raise MLFFError(f"score matching needs the sampling temperature (K > 0), got "
                            f"{temperature}")
        if projection not in ("rademacher", "gaussian"):
            raise MLFFError(f"unknown projection {projection!r}; use rademacher or gaussian")
        if n_projections < 1 or not noise > 0.0:
            raise MLFFError("score matching needs n_projections >= 1 and noise > 0")
        self.temperature = float(temperature)
        self.kT = BOLTZMANN_EV_PER_K * self.temperature
        self.method = method
        self.n_projections = int(n_projections)
        self.projection = projection
        self.variance_reduced = variance_reduced
        self.noise = float(noise)
        self.name = f"{method} score matching"

    def describe(self) -> dict:
        return {"method": self.method, "temperature_K": self.temperature,
                "n_projections": self.n_projections, "projection": self.projection,
                "variance_reduced": self.variance_reduced, "noise_A": self.noise}

    def _directions(self, like: Tensor) -> Tensor:
        if self.projection == "gaussian":
            return torch.randn_like(like)
        return torch.randint(0, 2, like.shape, device=like.device).to(like.dtype) * 2.0 - 1.0

    def per_frame(self, potential: Potential, batch: Batch) -> Tensor:
        """[G] the objective of each configuration (eV²/Å² per component)."""
        if self.method == "denoising":
            epsilon = torch.randn_like(batch.pos)
            positions = (batch.pos.detach() + self.noise * epsilon).requires_grad_(True)
            forces = _forces(potential, batch, positions)
            residual = forces + (self.kT / self.noise) * epsilon
            return _per_component(0.5 * residual.pow(2).sum(-1), batch)
        positions = batch.pos.detach().requires_grad_(True)
        forces = _forces(potential, batch, positions)
        graphs, frame_of_atom = batch.num_graphs, batch.batch
        total = positions.new_zeros(graphs)
        for _ in range(self.n_projections):
            v = self._directions(forces)
            (hessian_v,) = torch.autograd.grad((v * forces).sum(), positions, create_graph=True)
            trace = scatter_sum((v * hessian_v).sum(-1), frame_of_atom, graphs)
            if self.variance_reduced:
                square = scatter_sum(forces.pow(2).sum(-1), frame_of_atom, graphs)
            else:
                square = scatter_sum((v * forces).sum(-1), frame_of_atom, graphs).pow(2)
            total = total + 0.5 * square + self.kT * trace
        atoms = torch.bincount(frame_of_atom, minlength=graphs).to(total.dtype)
        return total / (self.n_projections * 3.0 * atoms)

    def __call__(self, potential: Potential, batch: Batch,
                 totals: BatchTotals | None = None) -> Tensor:
        """Σ w ℓ / G (weights scaled to mean 1 over the dataset by the Trainer); with `totals`,
        the share of a shard of the whole batch (exact in expectation over the projections and
        the noise, which each process draws for its own frames)."""
        values = self.per_frame(potential, batch)
        frames = batch.num_graphs if totals is None else totals.frames
        return (batch.weight * values).sum() / frames
