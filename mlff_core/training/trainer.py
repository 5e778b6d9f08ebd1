"""The trainer: energy + force fitting with Adam, plateau LR schedule, EMA, early stopping,
gradient clipping, per-sample weights, metric-guided force losses, extra loss terms, warm starts,
and resumable checkpoints.

A run directory holds:
    run.json        configuration, species, data provenance (files, hashes, levels, sizes)
    checkpoint.pt   full state after the last finished epoch (resume from here)
    best.pt         EMA weights of the epoch with the lowest validation loss (exported)
    log.csv         one row per epoch
    clusters.json   the training frames' conformation clusters (for cluster losses, or as
                    given, e.g. by fine-tuning; `export_run` reuses them)
Checkpoints hold only tensors and plain values, and are read with `weights_only=True`.

Under torchrun the trainer is data-parallel (`mlff_core.training.parallel`): each process takes
a shard of every batch, and rank 0 alone writes the run directory.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch_geometric.data import Batch

from mlff_core.data.frames import Frames
from mlff_core.errors import MLFFError
from mlff_core.fileio import atomic_output, load_weights
from mlff_core.metrics.clusters import ConformationClusters
from mlff_core.models import build_potential, hyperparameters
from mlff_core.models.potential import Potential
from mlff_core.runtime import torch_device
from mlff_core.training.ema import ExponentialMovingAverage
from mlff_core.training.graphs import batch_indices, frame_graphs, scripted_neighbor_list
from mlff_core.training.losses import (
    BatchTotals,
    CompositeLoss,
    LossTerm,
    Predictions,
    cluster_balance,
    parse_loss,
)
from mlff_core.training.parallel import ProcessGroup, distributed_loss, process_device

LOG_FIELDS = ("epoch", "lr", "train_loss", "val_loss", "val_energy_mae", "val_force_mae",
              "val_force_rmse", "seconds")


class TrainingError(MLFFError):
    """A training run cannot start or continue (bad configuration, incompatible resume)."""


#: How a cluster loss reaches rare clusters (see `TrainingConfig`).
CLUSTER_SAMPLING = ("weights", "balanced")


@dataclass
class TrainingConfig:
    """Everything that defines a training run (stored in run.json and every checkpoint).

    Units: learning rates per step; energy_weight ρ multiplies squared energy errors in eV²
    against mean squared force errors in eV²/Å² (absolute errors, eV, with metric-guided
    force losses; see `mlff_core.training.losses`). `loss` maps force terms to weights;
    `n_clusters` is the number of conformation clusters per system for cluster losses (None:
    chosen by silhouette score). `cluster_sampling` is how a cluster loss reaches its rare
    clusters: "weights" (every frame seen once per epoch, carrying its balance weight
    N / (K n_k)) or "balanced" (frames drawn with replacement with probability ∝ N / (K n_k),
    so every cluster fills about 1/K of each batch; the other terms are importance-weighted
    back to the plain mean). Both estimate the same loss; "balanced" has smaller gradient
    spikes when a cluster is very rare.
    """

    architecture: str = "painn"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    epochs: int = 300
    batch_size: int = 16
    learning_rate: float = 5e-4
    lr_factor: float = 0.5
    lr_patience: int = 10
    min_learning_rate: float = 1e-6
    early_stopping_patience: int = 40
    energy_weight: float = 0.01
    ema_decay: float = 0.99
    gradient_clip: float = 10.0
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    max_minutes: float | None = None
    loss: dict[str, float] = field(default_factory=lambda: {"mse": 1.0})
    n_clusters: int | None = None
    cluster_sampling: str = "weights"

    def __post_init__(self) -> None:
        try:
            self.hyperparameters = hyperparameters(self.architecture, **self.hyperparameters)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        try:
            self.loss = parse_loss(self.loss)
        except MLFFError as exc:
            raise TrainingError(str(exc)) from None
        if self.dtype not in ("float32", "float64"):
            raise TrainingError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if not self.learning_rate >= 0:  # 0 is allowed here (a stage that must not move)
            raise TrainingError(f"learning rate must not be negative, got {self.learning_rate}")
        if not self.min_learning_rate >= 0 or not 0 < self.lr_factor < 1:
            raise TrainingError("the learning-rate schedule needs min-lr >= 0 and 0 < lr-factor "
                                f"< 1, got {self.min_learning_rate} and {self.lr_factor}")
        if not self.energy_weight >= 0:
            raise TrainingError(f"energy weight must be zero or positive, got "
                                f"{self.energy_weight}")
        try:
            torch_device(self.device)
        except MLFFError as exc:
            raise TrainingError(str(exc)) from None
        if self.epochs < 1 or self.batch_size < 1:
            raise TrainingError("epochs and batch size must be at least 1")
        if self.cluster_sampling not in CLUSTER_SAMPLING:
            raise TrainingError(f"cluster_sampling must be one of {', '.join(CLUSTER_SAMPLING)}, "
                                f"got {self.cluster_sampling!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


@dataclass
class EpochRecord:
    epoch: int
    lr: float
    train_loss: float
    val_loss: float
    val_energy_mae: float
    val_force_mae: float
    val_force_rmse: float
    seconds: float
    improved: bool = False


def fit_reference_energies(frames: Sequence[Frames], species: list[int]) -> np.ndarray:
    """Per-element energies E_ref(Z) [S] eV minimising Σ_f (E_f − Σ_i E_ref(Z_i))².

    Least squares (minimum-norm when the compositions do not determine every element, e.g. a
    single molecule, where only the sum is fixed).
    """
    rows, targets = [], []
    for part in frames:
        counts = np.array([(part.atomic_numbers == z).sum() for z in species], dtype=float)
        rows.append(np.repeat(counts[None], part.n_frames, axis=0))
        targets.append(part.energies)
    solution, *_ = np.linalg.lstsq(np.concatenate(rows), np.concatenate(targets), rcond=None)
    return solution


def force_scale(frames: Sequence[Frames]) -> float:
    """RMS of the force components of the training frames, eV/Å (the model's output scale)."""
    squares = np.concatenate([part.forces.reshape(-1) ** 2 for part in frames])
    return float(np.sqrt(squares.mean())) or 1.0


def initial_potential(config: TrainingConfig, species: Sequence[int],
                      labelled: Sequence[Frames]) -> Potential:
    """A freshly initialised potential (seeded by the caller) for `species`, with reference
    energies and force scale fitted on `labelled` frames."""
    settings = dict(config.hyperparameters)
    if "avg_num_neighbors" in settings and settings["avg_num_neighbors"] is None:
        settings["avg_num_neighbors"] = average_neighbors(labelled, settings["cutoff"])
    potential = build_potential(config.architecture, list(species),
                                **settings).to(config.torch_dtype)
    references = fit_reference_energies(labelled, list(species))
    potential.atomic_reference.copy_(torch.as_tensor(references))
    potential.energy_scale.fill_(force_scale(labelled))
    return potential


def average_neighbors(frames: Sequence[Frames], cutoff: float, max_frames: int = 100) -> float:
    """Mean number of neighbours within `cutoff` Å per atom, over up to `max_frames` evenly
    spaced frames of each system (MACE's `avg_num_neighbors`, which divides its messages)."""
    search = scripted_neighbor_list()
    edges = atoms = 0
    for part in frames:
        pbc = torch.as_tensor(part.pbc)
        for f in np.unique(np.linspace(0, part.n_frames - 1, min(part.n_frames, max_frames))
                           .astype(int)):
            cell = (torch.zeros(3, 3, dtype=torch.float64) if part.cell is None
                    else torch.as_tensor(part.cell[f], dtype=torch.float64))
            edge_index, _ = search(torch.as_tensor(part.positions[f], dtype=torch.float64),
                                   cell, pbc, float(cutoff))
            edges += edge_index.shape[1]
            atoms += part.n_atoms
    return round(edges / max(atoms, 1), 6)


class Objective(Protocol):
    """A training objective that needs the potential itself (e.g. score matching): a scalar
    from a batch (with `totals`, the share of a shard of the whole batch; see
    `losses.BatchTotals`); `needs_labels` False lets it train on unlabeled frames."""

    needs_labels: bool

    def __call__(self, potential: Potential, batch: Batch,
                 totals: BatchTotals | None = None) -> torch.Tensor: ...


def predict(potential: Potential, batch: Batch, create_graph: bool = False) -> Predictions:
    """Energies [G] and forces −∂E/∂x [N, 3] of a batch of training graphs."""
    positions = batch.pos.detach().requires_grad_(True)
    vectors = positions[batch.edge_index[1]] - positions[batch.edge_index[0]] + batch.shift
    energy = potential.batch_energies(batch.z, batch.edge_index, vectors, batch.batch,
                                      batch.num_graphs)
    (gradient,) = torch.autograd.grad(energy.sum(), positions, create_graph=create_graph)
    return Predictions(energy=energy, forces=-gradient)


class Trainer:
    """Train a `Potential` on labelled frames.

    Args:
        config: the run's settings.
        train, val: labelled frames (one `Frames` per system); val may be empty only when
            `config.epochs` is used without early stopping.
        run_dir: where checkpoints, logs and run.json go.
        init_potential: warm start (fine-tuning) from these weights; its species, reference
            energies and scale are kept.
        sample_weights: per system, [F] weights for the training frames (indexed by frame).
        val_sample_weights: the same for the validation frames (the validation loss is then
            weighted like the training loss).
        clusters: per training system, fitted conformation clusters for cluster losses
            (default: fitted on the training frames with `config.n_clusters`).
        extra_losses: (weight, term) pairs added to the energy + force loss.
        objective: replaces the energy + force loss (e.g. `ScoreMatching`); frames may be
            unlabeled when it needs no labels (then `init_potential` is required), and the
            validation loss is the objective on the validation frames.
        provenance: data provenance written to run.json (and later to the model file).

    Under torchrun (a `torch.distributed` process group of 2 or more) every process builds the
    same trainer and trains its shard of each batch; see `mlff_core.training.parallel`.
    """

    def __init__(self, config: TrainingConfig, train: Sequence[Frames], val: Sequence[Frames],
                 run_dir: str | os.PathLike, *, init_potential: Potential | None = None,
                 sample_weights: Sequence[np.ndarray] | None = None,
                 val_sample_weights: Sequence[np.ndarray] | None = None,
                 clusters: Sequence[ConformationClusters] | None = None,
                 extra_losses: Sequence[tuple[float, LossTerm]] = (),
                 objective: Objective | None = None,
                 provenance: dict[str, Any] | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.extra_losses = list(extra_losses)
        self.provenance = provenance or {}
        self.objective = objective
        self.parallel = ProcessGroup.current()
        if self.parallel is not None and self.extra_losses:
            raise TrainingError("extra loss terms cannot be split across processes (their "
                                "batch normalisation is unknown); train them in one process")
        labelled = objective is None or objective.needs_labels
        for part in (*train, *val) if labelled else ():
            if not part.has_labels:
                raise TrainingError(f"{part.source or part.formula}: training needs energies "
                                    "and forces")
        if not train:
            raise TrainingError("no training frames")
        self.train_frames, self.val_frames = list(train), list(val)
        torch.manual_seed(config.seed)
        species = sorted({int(z) for part in (*train, *val) for z in part.atomic_numbers})
        if init_potential is not None:
            known = set(init_potential.species.tolist())
            if not set(species) <= known:
                raise TrainingError(
                    f"the initial model does not know atomic number(s) "
                    f"{sorted(set(species) - known)} of the data"
                )
            self.potential = init_potential
        elif not labelled:
            raise TrainingError("training on unlabeled frames needs an initial model (its "
                                "species, reference energies and force scale)")
        else:
            self.potential = initial_potential(config, species, train)
        measured = getattr(self.potential.representation, "data_hyperparameters", None)
        if measured is not None:  # recorded, so export rebuilds the same model
            config.hyperparameters = {**config.hyperparameters, **measured()}
        self.device = process_device(config.device, self.parallel)
        self.potential.to(device=self.device, dtype=config.torch_dtype)
        self.species = [int(z) for z in self.potential.species.tolist()]

        self.loss_function = CompositeLoss(config.loss, config.energy_weight)
        self.clusters = list(clusters) if clusters is not None else None
        train_clusters: list[np.ndarray | None] = [None] * len(train)
        val_clusters: list[np.ndarray | None] = [None] * len(val)
        if self.loss_function.needs_clusters:
            if self.clusters is None:
                self.clusters = [ConformationClusters(n_clusters=config.n_clusters,
                                                      random_state=config.seed).fit(part)
                                 for part in train]
                if self.parallel is not None:  # one set of clusters, rank 0's, on every process
                    self.clusters = [ConformationClusters.from_dict(c) for c in
                                     self.parallel.broadcast_json([c.to_dict()
                                                                   for c in self.clusters])]
            train_clusters = self._cluster_ids(train)
            val_clusters = self._cluster_ids(val)

        cutoff = self.potential.cutoff
        weights = _mean_one(sample_weights) if sample_weights is not None else [None] * len(train)
        self.train_graphs = [g for k, part in enumerate(train)
                             for g in frame_graphs(part, cutoff, config.torch_dtype,
                                                   weights=weights[k], system=k,
                                                   clusters=train_clusters[k])]
        val_weights = _mean_one(val_sample_weights) if val_sample_weights is not None else \
            [None] * len(val)
        self.val_graphs = [g for k, part in enumerate(val)
                           for g in frame_graphs(part, cutoff, config.torch_dtype, system=k,
                                                 weights=val_weights[k],
                                                 clusters=val_clusters[k])]
        self._check_cutoff(cutoff)
        self.sampling_probabilities: np.ndarray | None = None
        if self.loss_function.needs_clusters:
            balance = cluster_balance(np.concatenate(train_clusters))
            balanced = config.cluster_sampling == "balanced"
            if balanced:
                # Drawn ∝ b: the cluster term becomes a plain mean (balance 1), every other term
                # is importance-corrected by 1 / b (see `losses.frame_weights`).
                self.sampling_probabilities = balance / balance.sum()
            for graph, b in zip(self.train_graphs, balance, strict=True):
                graph.cluster_balance = torch.tensor([1.0 if balanced else b],
                                                     dtype=config.torch_dtype)
                if balanced:
                    graph.importance = torch.tensor([1.0 / b], dtype=config.torch_dtype)

        self.optimizer = torch.optim.Adam(self.potential.parameters(), lr=config.learning_rate)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience,
            min_lr=config.min_learning_rate * 0.5,
        )
        self.ema = ExponentialMovingAverage(self.potential, config.ema_decay)
        self._shared_loss = (None if self.parallel is None else
                             distributed_loss(self.potential, self._batch_loss, self.device))
        self.epoch = 0
        self.best_val_loss = float("inf")
        self.best_epoch = 0
        self.epochs_without_improvement = 0
        self.stop_reason = ""

    def _frame_name(self, system: int, frame: int) -> tuple[str, int]:
        """(file, frame index in it) of training frame `frame` of system `system`, as far as
        the provenance tells (the index within the training set otherwise)."""
        part = self.train_frames[system]
        described = self.provenance.get("systems") or []
        if system < len(described) and frame < len(described[system].get("train_indices", [])):
            frame = int(described[system]["train_indices"][frame])
        return part.source or part.formula, frame

    def _check_cutoff(self, cutoff: float) -> None:
        """Refuse a cutoff that leaves an atom of a training frame with no neighbour: the model
        then sees nothing of its environment (e.g. `--cutoff 0.1`)."""
        from ase.data import chemical_symbols

        for system, part in enumerate(self.train_frames):
            graph = next((g for g in self.train_graphs if int(g.system) == system), None)
            if graph is None or part.n_atoms < 2:
                continue
            alone = np.setdiff1d(np.arange(part.n_atoms), graph.edge_index[0].numpy())
            if alone.size == 0:
                continue
            atom, (name, frame) = int(alone[0]), self._frame_name(system, int(graph.frame))
            nearest = ""
            if not part.is_periodic:
                positions = part.positions[int(graph.frame)]
                distances = np.linalg.norm(positions - positions[atom], axis=1)
                nearest = f" (the nearest is {np.sort(distances)[1]:.2f} Å away)"
            symbol = chemical_symbols[part.atomic_numbers[atom]]
            raise TrainingError(
                f"cutoff {cutoff:g} Å leaves atom {atom} ({symbol}) of frame {frame} of {name} "
                f"without a neighbour{nearest}: the model would see nothing of its environment; "
                "use a larger --cutoff")

    def _stopped_here(self) -> str:
        done = self.epoch - 1
        return ("The run stops here; no epoch finished" if done == 0 else
                f"The run stops here; checkpoint.pt holds epoch {done}")

    def _nonfinite_frames(self, graphs: Sequence) -> str:
        """'FILE frame(s) i, j' for the frames of `batch` whose own loss is not finite; when
        each alone is finite (the weights diverged) or none is (a huge label poisoned the
        fitted reference energies or force scale), all of the batch's, and the frame with the
        largest label."""
        bad = []
        for graph in graphs:
            single = Batch.from_data_list([graph]).to(self.device)
            if self.objective is not None:
                loss = self.objective(self.potential, single)
            else:
                loss = self._loss(single, predict(self.potential, single))
            if not torch.isfinite(loss.detach()).all():
                bad.append(graph)
        named = bad if 0 < len(bad) < len(graphs) else graphs
        by_file: dict[str, list[int]] = {}
        for graph in named:
            name, frame = self._frame_name(int(graph.system), int(graph.frame))
            by_file.setdefault(name, []).append(frame)
        text = "; ".join(f"{name} frame{'s' if len(frames) > 1 else ''} "
                         f"{', '.join(map(str, sorted(frames)))}"
                         for name, frames in by_file.items())
        if named is graphs and getattr(graphs[0], "energy", None) is not None:
            size = [max(abs(float(g.energy)) / g.num_nodes, float(g.forces.abs().max()))
                    for g in graphs]
            top = graphs[int(np.argmax(size))]
            name, frame = self._frame_name(int(top.system), int(top.frame))
            text += (f" (the largest label is {name} frame {frame}'s: energy "
                     f"{float(top.energy):.4g} eV, max |force| "
                     f"{float(top.forces.abs().max()):.4g} eV/Å)")
        return text

    def _cluster_ids(self, systems: Sequence[Frames]) -> list[np.ndarray]:
        """Per system, [F] the nearest training cluster of each frame, numbered across systems
        (system 0's clusters first)."""
        assert self.clusters is not None
        offsets = np.cumsum([0] + [c.n_clusters_ for c in self.clusters])
        ids = []
        for part in systems:
            match = [k for k, c in enumerate(self.clusters)
                     if np.array_equal(c.atomic_numbers_, part.atomic_numbers)]
            if not match:
                raise TrainingError(f"{part.source or part.formula}: no conformation clusters "
                                    "for this system (the cluster loss needs them)")
            nearest, _ = self.clusters[match[0]].classify(part)
            ids.append(nearest + offsets[match[0]])
        return ids

    # ---------------------------------------------------------------------------- persistence
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "log.csv"

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run directory (rank 0, or the only process)."""
        return self.parallel is None or self.parallel.is_main

    def _write_run_json(self) -> None:
        if not self.is_main:
            return
        document = {
            "config": asdict(self.config),
            "species": self.species,
            "energy_scale": float(self.potential.energy_scale),
            "atomic_reference": self.potential.atomic_reference.tolist(),
            "data": self.provenance,
            "sizes": {"train": len(self.train_graphs), "val": len(self.val_graphs)},
        }
        with atomic_output(self.run_dir / "run.json", "w") as fh:
            json.dump(document, fh, indent=2, default=str)
        if self.clusters is not None:
            with atomic_output(self.run_dir / "clusters.json", "w") as fh:
                json.dump([c.to_dict() for c in self.clusters], fh)

    def _save(self, path: Path, state: dict[str, Any]) -> None:
        if not self.is_main:
            return
        with atomic_output(path) as fh:
            torch.save(state, fh)

    def _checkpoint_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "model": self.potential.state_dict(),
            "ema": self.ema.state_dict(),
            "ema_updates": self.ema.updates,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "epochs_without_improvement": self.epochs_without_improvement,
            "torch_rng": torch.get_rng_state(),
            "config": asdict(self.config),
            "species": self.species,
        }

    def resume(self) -> None:
        """Continue from `checkpoint.pt` in the run directory (weights_only load)."""
        if not self.checkpoint_path.exists():
            raise TrainingError(f"{self.checkpoint_path}: no checkpoint to resume from")
        try:
            state = load_weights(self.checkpoint_path, map_location=self.device)
        except MLFFError as exc:
            raise TrainingError(f"{exc}; cannot resume from it") from None
        if state["species"] != self.species or state["config"]["architecture"] != \
                self.config.architecture:
            raise TrainingError(f"{self.checkpoint_path}: checkpoint is for another model "
                                "(architecture or species differ)")
        self.potential.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"], int(state["ema_updates"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.best_val_loss = float(state["best_val_loss"])
        self.best_epoch = int(state["best_epoch"])
        self.epochs_without_improvement = int(state["epochs_without_improvement"])
        torch.set_rng_state(state["torch_rng"])
        self._truncate_log(self.epoch)

    def _truncate_log(self, last_epoch: int) -> None:
        """Drop log rows of epochs after the checkpoint (written before a kill)."""
        if not self.is_main or not self.log_path.exists():
            return
        with open(self.log_path, newline="") as fh:
            rows = [row for row in csv.DictReader(fh) if int(row["epoch"]) <= last_epoch]
        with atomic_output(self.log_path, "w") as fh:
            writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def _append_log(self, record: EpochRecord) -> None:
        if not self.is_main:
            return
        new = not self.log_path.exists()
        with open(self.log_path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
            if new:
                writer.writeheader()
            row = asdict(record)
            writer.writerow({k: row[k] for k in LOG_FIELDS})

    # ------------------------------------------------------------------------------- training
    def _loss(self, batch: Batch, predictions: Predictions,
              totals: BatchTotals | None = None) -> torch.Tensor:
        loss = self.loss_function(batch, predictions, totals)
        for weight, term in self.extra_losses:
            loss = loss + weight * term(batch, predictions)
        return loss

    def _batch_loss(self, batch: Batch, totals: BatchTotals | None = None) -> torch.Tensor:
        """The training loss of `batch` (with `totals`, its share of the whole batch), with the
        graph kept for the gradient."""
        if self.objective is not None:
            return self.objective(self.potential, batch, totals)
        return self._loss(batch, predict(self.potential, batch, create_graph=True), totals)

    def _shard(self, graphs: Sequence, indices: np.ndarray
               ) -> tuple[Batch | None, BatchTotals | None]:
        """This process's shard of the batch of `graphs[indices]` and the whole batch's totals
        (the whole batch and None in one process; no shard when the batch has fewer graphs
        than there are processes and none is left for this one)."""
        if self.parallel is None:
            return Batch.from_data_list([graphs[k] for k in indices]), None
        mine = self.parallel.shard(indices)
        totals = BatchTotals.of([graphs[k] for k in indices])
        return (Batch.from_data_list([graphs[k] for k in mine]) if len(mine) else None), totals

    def _train_epoch(self) -> float:
        self.potential.train()
        total, count = 0.0, 0
        seed = self.config.seed * 1_000_003 + self.epoch
        for indices in batch_indices(len(self.train_graphs), self.config.batch_size, True, seed,
                                     self.sampling_probabilities):
            value = self._train_step(indices)
            if not np.isfinite(value):
                raise TrainingError(
                    f"training loss is not finite ({value}) at epoch {self.epoch} in the batch "
                    f"of {self._nonfinite_frames([self.train_graphs[k] for k in indices])}: "
                    "check their labels (a huge, NaN or infinite energy or force), or start "
                    f"anew with a lower --lr if the weights diverged. {self._stopped_here()}")
            if self.config.gradient_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.potential.parameters(),
                                               self.config.gradient_clip)
            self.optimizer.step()
            self.ema.update(self.potential)
            total += value * len(indices)
            count += len(indices)
        return total / max(count, 1)

    def _train_step(self, indices: np.ndarray) -> float:
        """Gradients of the batch of training graphs `indices` (summed over the processes);
        returns its loss (NaN or inf: nothing was back-propagated)."""
        shard, totals = self._shard(self.train_graphs, indices)
        self.optimizer.zero_grad(set_to_none=True)
        if self.parallel is None:
            loss = self._batch_loss(shard.to(self.device))
            value = float(loss.detach())
            if np.isfinite(value):
                loss.backward()
            return value
        # DDP averages the processes' gradients: back-propagate W × this process's share. A
        # process without a shard still joins the gradient exchange, with a share of zero.
        scale = float(self.parallel.world_size)
        if shard is None:
            shard, scale = Batch.from_data_list([self.train_graphs[indices[0]]]), 0.0
        share = self._shared_loss(shard.to(self.device), totals)
        value = self.parallel.total(share * (scale / self.parallel.world_size))
        if np.isfinite(value):
            (share * scale).backward()
        return value

    def evaluate(self, graphs: Sequence) -> dict[str, float]:
        """Loss and errors of the current weights on `graphs` (energy eV, forces eV/Å; errors
        are NaN on unlabeled graphs); the processes share the graphs and sum their results."""
        self.potential.eval()
        sums = np.zeros(7)  # loss × G, Σ|ΔE|, Σ|ΔF|, Σ ΔF², graphs, labelled, components
        for indices in batch_indices(len(graphs), max(self.config.batch_size, 32), False, 0):
            shard, totals = self._shard(graphs, indices)
            if shard is None:
                continue
            batch = shard.to(self.device)
            size = len(indices)
            sums[4] += batch.num_graphs
            if self.objective is not None:
                sums[0] += float(self.objective(self.potential, batch, totals).detach()) * size
            if getattr(batch, "forces", None) is None:
                continue
            raw = predict(self.potential, batch)
            predictions = Predictions(raw.energy.detach(), raw.forces.detach())
            if self.objective is None:
                sums[0] += float(self._loss(batch, predictions, totals)) * size
            sums[1] += float((predictions.energy - batch.energy).abs().sum())
            difference = predictions.forces - batch.forces
            sums[2] += float(difference.abs().sum())
            sums[3] += float(difference.pow(2).sum())
            sums[5] += batch.num_graphs
            sums[6] += difference.numel()
        summed = self.parallel.sum(sums) if self.parallel is not None else sums.tolist()
        loss_sum, e_abs, f_abs, f_sq, n_graphs, n_labelled, n_components = summed  # floats
        nan = float("nan")
        return {"loss": loss_sum / n_graphs if n_graphs else nan,
                "energy_mae": e_abs / n_labelled if n_labelled else nan,
                "force_mae": f_abs / n_components if n_components else nan,
                "force_rmse": (f_sq / n_components) ** 0.5 if n_components else nan}

    def fit(self, on_epoch: Callable[[EpochRecord], None] | None = None) -> EpochRecord | None:
        """Train until the epoch limit, early stopping, the LR floor or the time budget.

        Returns the last epoch's record (None when the run was already complete).
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_run_json()
        started = time.monotonic()
        record = None
        while self.epoch < self.config.epochs:
            epoch_start = time.monotonic()
            self.epoch += 1
            train_loss = self._train_epoch()
            with self.ema.applied(self.potential):
                metrics = self.evaluate(self.val_graphs if self.val_graphs else
                                        self.train_graphs)
            if not np.isfinite(metrics["loss"]):
                raise TrainingError(
                    f"validation loss is not finite at epoch {self.epoch}: a validation frame's "
                    "labels are huge or NaN, or the weights diverged (start anew with a lower "
                    f"--lr). {self._stopped_here()}")
            self.scheduler.step(metrics["loss"])
            improved = metrics["loss"] < self.best_val_loss
            if improved:
                self.best_val_loss, self.best_epoch = metrics["loss"], self.epoch
                self.epochs_without_improvement = 0
                self._save(self.best_path, {"model": self.ema.state_dict(), "epoch": self.epoch,
                                            "val_metrics": metrics, "species": self.species,
                                            "config": asdict(self.config)})
            else:
                self.epochs_without_improvement += 1
            record = EpochRecord(self.epoch, self.optimizer.param_groups[0]["lr"], train_loss,
                                 metrics["loss"], metrics["energy_mae"], metrics["force_mae"],
                                 metrics["force_rmse"], time.monotonic() - epoch_start, improved)
            self._append_log(record)
            self._save(self.checkpoint_path, self._checkpoint_state())
            if on_epoch is not None:
                on_epoch(record)
            if self.epochs_without_improvement >= self.config.early_stopping_patience:
                self.stop_reason = (f"early stopping: no improvement for "
                                    f"{self.epochs_without_improvement} epochs")
                break
            if self.optimizer.param_groups[0]["lr"] < self.config.min_learning_rate:
                self.stop_reason = "learning rate reached its floor"
                break
            limit = self.config.max_minutes
            over = limit is not None and time.monotonic() - started > 60.0 * limit
            if self.parallel is not None:  # rank 0's clock ends the run on every process
                over = self.parallel.main_decides(over)
            if over:
                self.stop_reason = f"time budget of {limit} min reached"
                break
        else:
            self.stop_reason = self.stop_reason or "epoch limit reached"
        return record


def _mean_one(weights: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per-system sample weights divided by their mean over every frame of every system: one
    dataset constant, so the losses' Σ w ℓ keeps each frame's relative weight (ASTEROID eq. 2)
    and the loss keeps the scale of unweighted training."""
    parts = [np.asarray(w, dtype=float) for w in weights]
    scale = float(np.concatenate(parts).mean()) if parts else 1.0
    return [w / scale if scale > 0 else w for w in parts]
