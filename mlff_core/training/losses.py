"""Training losses: an energy term plus one or more weighted force terms.

The default is the energy + force loss of SchNet and ASTEROID (eq. 1):

    L = Σ_f w_f [ ρ (E_f − Ê_f)² + (1 / 3N_f) Σ_{i,α} (F_iα − F̂_iα)² ]  /  Σ_f w_f

with per-frame sample weights w_f and ρ small (force-dominated; default 0.01, energies in eV,
forces in eV/Å).

Metric-guided force terms (JCP 159, 035101, section III) are the force metrics themselves,
computed on the batch, so minimising one minimises that metric. With e_iα = F̂_iα − F_iα,
frame weights w_f (1 unless reweighted) and relative atomic masses u_i:

    global   F_mae   = Σ_f w_f mean_{i,α}|e_iα| / Σ_f w_f
    cluster  mean over the conformation clusters k of F_mae over k's frames, so a minority
             cluster weighs as much as the majority. The trainer gives every training frame the
             balance weight b_f = N / (K n_k) (N training frames, K clusters, n_k frames in the
             frame's cluster), and the batch term is Σ_f w_f b_f mean_{i,α}|e_iα| / Σ_f w_f: an
             unbiased estimate of the mean over the training set's clusters, exact on the whole
             set, so a rare cluster is up-weighted in every batch that holds one of its frames
             (not only relative to the clusters that happen to share its batch). Batches without
             balance weights (validation) take the mean over the clusters present in the batch.
             With cluster-balanced sampling (frames drawn ∝ b_f) the trainer sets b_f = 1 and
             gives every frame the importance correction 1 / b_f, which the other terms (not the
             cluster terms) multiply into w_f: each term keeps its expectation.
    element  mean over the elements S in the batch of F_mae^(S), the inner mean running over
             the atoms of element S only
    fnm      F_mae with |e_iα| / u_i (mass-normalised: a light atom's error counts more)
    maxerr   F_max_err = Σ_f w_f max_{i,α}|e_iα| / Σ_f w_f
    cluster-fnm, element-fnm   the cluster and element terms mass-normalised.

Terms combine with weights (`{"cluster": 1.0, "maxerr": 0.1}`). The energy term follows the force
terms' kind: ρ·(ΔE)² when the mix contains "mse", ρ·|ΔE| when every force term is an absolute
error (so ρ keeps roughly the same balance between energies and forces).
Extra terms (ASTEROID's score matching, ...) are callables added with a weight.

In data-parallel training each process holds one shard of a batch. Every term above is a sum
over frames divided by batch-wide totals (Σ c, G, per-cluster Σ c, the clusters and elements
present), so a shard's loss with the whole batch's totals (`BatchTotals`) is its exact share:
the shares add up to the loss of the whole batch, and so do their gradients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from ase.data import atomic_masses
from torch import Tensor
from torch_geometric.data import Batch

from mlff_core.errors import MLFFError
from mlff_core.models.layers import scatter_sum

FORCE_TERMS = ("mse", "global", "cluster", "element", "fnm", "maxerr", "cluster-fnm",
               "element-fnm")

#: Terms that need each frame's conformation cluster (graphs carry it as `cluster`).
CLUSTER_TERMS = ("cluster", "cluster-fnm")


@dataclass
class Predictions:
    """Model outputs for a batch: energy [G] eV, forces [N, 3] eV/Å."""

    energy: Tensor
    forces: Tensor


#: Atomic numbers index `BatchTotals.element_importance` (0 unused).
_ELEMENTS = 119


@dataclass(frozen=True)
class BatchTotals:
    """The batch-wide normalisers of a whole batch, for the loss of one shard of it.

    Attributes:
        frames: G, frames in the batch.
        importance: Σ_f c_f, the importance corrections (G when frames are drawn uniformly).
        cluster_importance: [C] Σ_f c_f per conformation cluster id (0 where absent), or None
            when the frames carry no clusters.
        clusters: K, distinct conformation clusters in the batch (0 without clusters).
        element_importance: [119] Σ_f c_f over the frames holding each atomic number.
        elements: distinct elements in the batch.
    """

    frames: int
    importance: float
    cluster_importance: Tensor | None
    clusters: int
    element_importance: Tensor
    elements: int

    @classmethod
    def of(cls, graphs: Sequence) -> BatchTotals:
        """The totals of a batch of training graphs (`mlff_core.training.graphs`)."""
        importance = [float(g.importance) if getattr(g, "importance", None) is not None
                      else 1.0 for g in graphs]
        element_importance = torch.zeros(_ELEMENTS, dtype=torch.float64)
        for graph, c in zip(graphs, importance, strict=True):
            element_importance[torch.unique(graph.z)] += c
        cluster_importance, n_clusters = None, 0
        if graphs and getattr(graphs[0], "cluster", None) is not None:
            ids = torch.cat([g.cluster for g in graphs])
            cluster_importance = torch.zeros(int(ids.max()) + 1, dtype=torch.float64)
            cluster_importance.index_add_(0, ids, torch.tensor(importance,
                                                               dtype=torch.float64))
            n_clusters = int(torch.unique(ids).numel())
        return cls(frames=len(graphs), importance=float(sum(importance)),
                   cluster_importance=cluster_importance, clusters=n_clusters,
                   element_importance=element_importance,
                   elements=int((element_importance > 0).sum()))


class LossTerm(Protocol):
    """An extra loss term: a scalar from a batch (with labels) and the model's predictions."""

    name: str

    def __call__(self, batch: Batch, predictions: Predictions) -> Tensor: ...


def parse_loss(spec: str | Mapping[str, float]) -> dict[str, float]:
    """Force terms and weights from `"cluster"`, `"cluster=1,maxerr=0.1"` or a mapping.

    Raises:
        MLFFError: an unknown term, a weight that is not a non-negative number, or all zero.
    """
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        items = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            name, _, weight = part.partition("=")
            items.append((name.strip(), weight.strip() or "1"))
    terms: dict[str, float] = {}
    for name, weight in items:
        if name not in FORCE_TERMS:
            raise MLFFError(f"unknown loss {name!r}; use one of {', '.join(FORCE_TERMS)} "
                            "(combine as e.g. cluster=1,maxerr=0.1)")
        try:
            value = float(weight)
        except (TypeError, ValueError):
            raise MLFFError(f"loss {name!r}: weight {weight!r} is not a number") from None
        if not value >= 0.0:
            raise MLFFError(f"loss {name!r}: weight must be >= 0, got {weight}")
        terms[name] = terms.get(name, 0.0) + value
    if not terms or sum(terms.values()) <= 0.0:
        raise MLFFError("the loss needs at least one force term with a positive weight")
    return terms


def per_frame_errors(batch: Batch, predictions: Predictions) -> tuple[Tensor, Tensor]:
    """Squared energy error [G] (eV²) and mean squared force component error [G] (eV²/Å²)."""
    energy_se = (predictions.energy - batch.energy).pow(2)
    squared = (predictions.forces - batch.forces).pow(2).sum(dim=-1)
    return energy_se, _frame_mean(squared, batch) / 3.0


def energy_force_loss(batch: Batch, predictions: Predictions, energy_weight: float) -> Tensor:
    """The weighted energy + force (MSE) loss above (a scalar)."""
    return CompositeLoss({"mse": 1.0}, energy_weight)(batch, predictions)


def frame_weights(batch: Batch) -> Tensor:
    """[G] each frame's sample weight times its importance correction (the inverse of how much
    more often than uniformly the frame is drawn; 1 when absent) — the weights of every term
    but the cluster terms."""
    importance = getattr(batch, "importance", None)
    return batch.weight if importance is None else batch.weight * importance


def _importance(batch: Batch) -> Tensor:
    """[G] each frame's importance correction (1 when frames are drawn uniformly)."""
    importance = getattr(batch, "importance", None)
    return torch.ones_like(batch.weight) if importance is None else importance


def _weighted_mean(values: Tensor, batch: Batch, totals: BatchTotals | None = None) -> Tensor:
    """Σ_f w_f c_f v_f / Σ_f c_f of per-frame values [G]: the sample weights w multiply each
    frame's value (the Trainer scales them to mean 1 over the training frames, one dataset
    constant), and the sum is divided by the batch's frame count, or by the sum of the
    importance corrections c when frames are drawn non-uniformly. Never by the batch's Σ w:
    that would give a batch of down-weighted frames its full weight back (ASTEROID's eq. 2 is
    Σ_i w_i ℓ_i). With `totals`, `batch` is a shard and Σ c is the whole batch's."""
    importance = _importance(batch)
    denominator = importance.sum().clamp_min(1e-12) if totals is None else \
        max(totals.importance, 1e-12)
    return (batch.weight * importance * values).sum() / denominator


def _frame_mean(per_atom: Tensor, batch: Batch) -> Tensor:
    """[G] mean over each frame's atoms of a per-atom value [N]."""
    atoms = torch.bincount(batch.batch, minlength=batch.num_graphs).to(per_atom.dtype)
    return scatter_sum(per_atom, batch.batch, batch.num_graphs) / atoms


def _frame_max(per_atom: Tensor, batch: Batch) -> Tensor:
    """[G] max over each frame's atoms of a per-atom value [N] (subgradient: the argmax)."""
    out = per_atom.new_full((batch.num_graphs,), float("-inf"))
    return out.scatter_reduce(0, batch.batch, per_atom, reduce="amax", include_self=True)


def cluster_balance(clusters: np.ndarray) -> np.ndarray:
    """[F] balance weights N / (K n_k) of frames with conformation clusters `clusters` [F]
    (mean 1; the weighted mean of a per-frame value is the mean over clusters of its means)."""
    _, inverse, counts = np.unique(clusters, return_inverse=True, return_counts=True)
    return len(clusters) / (len(counts) * counts[inverse])


def _group_mean(values: Tensor, groups: Tensor, batch: Batch,
                totals: BatchTotals | None = None) -> Tensor:
    """Mean over the distinct `groups` [G] of each group's weighted mean of `values` [G] (as
    `_weighted_mean` within the group); with `totals`, the share of a shard of the batch."""
    importance = _importance(batch)
    if totals is not None:
        assert totals.cluster_importance is not None
        group_totals = totals.cluster_importance.to(values)[groups].clamp_min(1e-12)
        return (batch.weight * importance * values / group_totals).sum() / totals.clusters
    _, inverse = torch.unique(groups, return_inverse=True)
    count = int(inverse.max()) + 1
    sums = scatter_sum(batch.weight * importance * values, inverse, count)
    totals = scatter_sum(importance, inverse, count).clamp_min(1e-12)
    return (sums / totals).mean()


class ForceMetricLoss:
    """One of the metric-guided force terms above, as a differentiable function of a batch.

    Args:
        kind: 'global', 'cluster', 'element', 'fnm', 'maxerr', 'cluster-fnm', 'element-fnm'.
    """

    def __init__(self, kind: str):
        if kind not in FORCE_TERMS or kind == "mse":
            raise MLFFError(f"unknown metric-guided loss {kind!r}")
        self.name = kind
        base, _, suffix = kind.partition("-")
        self.base = base
        self.mass_normalised = kind == "fnm" or suffix == "fnm"
        self._masses: Tensor | None = None

    def _component_errors(self, batch: Batch, predictions: Predictions) -> Tensor:
        """[N, 3] |e| (divided by u_i when mass-normalised)."""
        errors = (predictions.forces - batch.forces).abs()
        if not self.mass_normalised:
            return errors
        if self._masses is None or self._masses.device != errors.device or \
                self._masses.dtype != errors.dtype:
            self._masses = torch.as_tensor(atomic_masses, dtype=errors.dtype,
                                           device=errors.device)
        return errors / self._masses[batch.z].unsqueeze(-1)

    def __call__(self, batch: Batch, predictions: Predictions,
                 totals: BatchTotals | None = None) -> Tensor:
        """The term on `batch`; with `totals`, the share of a shard of the whole batch."""
        errors = self._component_errors(batch, predictions)
        if self.base == "maxerr":
            return _weighted_mean(_frame_max(errors.amax(dim=-1), batch), batch, totals)
        if self.base == "element":
            return self._element_mean(errors.mean(dim=-1), batch, totals)
        frame_mae = _frame_mean(errors.mean(dim=-1), batch)
        if self.base == "cluster":
            clusters = getattr(batch, "cluster", None)
            if clusters is None or bool((clusters < 0).any()):
                raise MLFFError("the cluster loss needs the conformation cluster of every "
                                "training frame")
            balance = getattr(batch, "cluster_balance", None)
            if balance is not None:  # the sample weights alone: no importance correction
                frames = batch.num_graphs if totals is None else totals.frames
                return (batch.weight * balance * frame_mae).sum() / frames
            return _group_mean(frame_mae, clusters, batch, totals)
        return _weighted_mean(frame_mae, batch, totals)

    @staticmethod
    def _element_mean(atom_errors: Tensor, batch: Batch,
                      totals: BatchTotals | None = None) -> Tensor:
        """Mean over elements S of (weighted mean over frames holding S of mean_{i∈S} e_i)."""
        elements, element_of_atom = torch.unique(batch.z, return_inverse=True)
        n_elements, n_frames = elements.numel(), batch.num_graphs
        # one slot per (frame, element): the frame's mean error over its atoms of that element
        slot = batch.batch * n_elements + element_of_atom
        sums = scatter_sum(atom_errors, slot, n_frames * n_elements)
        counts = torch.bincount(slot, minlength=n_frames * n_elements).to(atom_errors.dtype)
        present = counts > 0
        means = sums / counts.clamp_min(1.0)
        holds = present.to(atom_errors.dtype)
        weights = frame_weights(batch).repeat_interleave(n_elements) * holds
        weighted = (weights * means).view(n_frames, n_elements).sum(0)
        if totals is not None:
            holding = totals.element_importance.to(weighted)[elements].clamp_min(1e-12)
            return (weighted / holding).sum() / totals.elements
        frames_holding = _importance(batch).repeat_interleave(n_elements) * holds
        per_element = weighted / frames_holding.view(n_frames, n_elements).sum(0).clamp_min(1e-12)
        return per_element.mean()


class CompositeLoss:
    """ρ × energy term + Σ weight × force term (+ extra terms), as configured.

    Args:
        terms: force terms and weights (see `parse_loss`).
        energy_weight: ρ.
    """

    def __init__(self, terms: Mapping[str, float], energy_weight: float):
        self.terms = dict(terms)
        self.energy_weight = energy_weight
        self.squared_energy = "mse" in self.terms
        self.metric_terms = [(w, ForceMetricLoss(k)) for k, w in self.terms.items()
                             if k != "mse" and w > 0.0]

    @property
    def needs_clusters(self) -> bool:
        return any(k in CLUSTER_TERMS and w > 0.0 for k, w in self.terms.items())

    def __call__(self, batch: Batch, predictions: Predictions,
                 totals: BatchTotals | None = None) -> Tensor:
        """The loss of `batch`; with `totals`, the share of a shard of the whole batch."""
        energy_error = predictions.energy - batch.energy
        energy = energy_error.pow(2) if self.squared_energy else energy_error.abs()
        per_frame = self.energy_weight * energy
        mse_weight = self.terms.get("mse", 0.0)
        if mse_weight > 0.0:
            per_frame = per_frame + mse_weight * per_frame_errors(batch, predictions)[1]
        loss = _weighted_mean(per_frame, batch, totals)
        for weight, term in self.metric_terms:
            loss = loss + weight * term(batch, predictions, totals)
        return loss
