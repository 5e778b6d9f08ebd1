"""Training from files: read data, split it (seeded), record provenance, train or resume."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mlff_core.data.formats import read_frames
from mlff_core.data.frames import Frames
from mlff_core.data.splits import split_indices
from mlff_core.errors import DataError
from mlff_core.export.loading import load_model
from mlff_core.fileio import read_json_file
from mlff_core.progress import ProgressFactory, progress_bar
from mlff_core.training.trainer import EpochRecord, Trainer, TrainingConfig, TrainingError


def read_systems_from_files(paths: Sequence[str | os.PathLike]) -> list[Frames]:
    """Frames of each file; files holding the same system (same atoms, same order) are joined."""
    systems: dict[bytes, list[Frames]] = {}
    for path in paths:
        frames = read_frames(path)
        systems.setdefault(frames.atomic_numbers.tobytes(), []).append(frames)
    return [parts[0] if len(parts) == 1 else Frames.concatenate(parts)
            for parts in systems.values()]


def _describe(frames: Frames) -> dict[str, Any]:
    return {
        "formula": frames.formula,
        "frames": frames.n_frames,
        "periodic": frames.is_periodic,
        "hash": frames.content_hash(),
        "levels": sorted(set(frames.levels.tolist())),
        "source": frames.source,
        "sampling": frames.provenance.get("sampling"),
    }


def prepare_data(data: Sequence[str | os.PathLike], val_data: Sequence[str | os.PathLike] = (),
                 n_train: int | float | None = None, n_val: int | float = 0.1,
                 seed: int = 0) -> tuple[list[Frames], list[Frames], dict[str, Any]]:
    """Training and validation frames plus their provenance.

    Without `val_data`, each system is split with `split_indices` (`n_val` frames or fraction,
    at least one; `n_train` frames or fraction, default all the rest); with `val_data`, those
    files validate and `n_train` (default all) frames of `data` train. The provenance records,
    per system, the indices of its training frames in the (joined) files, so the training set
    can be rebuilt later (e.g. by `mlff export` to fit conformation clusters).
    """
    systems = read_systems_from_files(data)
    validation = read_systems_from_files(val_data) if val_data else []
    train, splits = [], []
    for system in systems:
        if val_data:
            count = system.n_frames if n_train is None else n_train
            split = split_indices(system.n_frames, count, 0, 0, seed)
        else:
            val_count = n_val if not isinstance(n_val, float) else \
                max(1, round(n_val * system.n_frames))
            count = system.n_frames - val_count if n_train is None else n_train
            split = split_indices(system.n_frames, count, val_count, 0, seed)
            validation.append(system[split.val])
        train.append(system[split.train])
        splits.append(split)
    descriptions = []
    for system, split in zip(systems, splits, strict=True):
        description = _describe(system)
        description["train_indices"] = split.train.tolist()
        description["val_indices"] = split.val.tolist()
        descriptions.append(description)
    levels = sorted({level for part in train for level in part.levels.tolist()})
    provenance: dict[str, Any] = {
        "files": [str(p) for p in data],
        "val_files": [str(p) for p in val_data],
        "systems": descriptions,
        "seed": seed,
        "level_of_theory": levels[0] if len(levels) == 1 else levels,
        "dataset_hash": "+".join(d["hash"][:16] for d in descriptions),
    }
    return train, validation, provenance


def training_frames(provenance: dict[str, Any], split: str = "train") -> list[Frames]:
    """Rebuild a run's training (or, with split='val', validation) frames from its recorded
    files and indices.

    Raises:
        DataError: no files recorded, a file is missing, or its content changed since training.
    """
    if not provenance.get("files") or not provenance.get("systems"):
        raise DataError("the run recorded no data files to rebuild its frames from")
    systems = read_systems_from_files(provenance["files"])
    recorded = provenance["systems"]
    if [s.content_hash() for s in systems] != [d["hash"] for d in recorded]:
        raise DataError("the training data files changed since training",
                        ", ".join(provenance["files"]))
    key = {"train": "train_indices", "val": "val_indices"}[split]
    return [system[np.asarray(d[key], dtype=np.int64)]
            for system, d in zip(systems, recorded, strict=True) if len(d[key])]


def make_trainer(config: TrainingConfig, run_dir: str | os.PathLike,
                 data: Sequence[str | os.PathLike], val_data: Sequence[str | os.PathLike] = (),
                 n_train: int | float | None = None, n_val: int | float = 0.1,
                 init_model: str | os.PathLike | None = None, resume: bool = False,
                 epochs: int | None = None) -> Trainer:
    """A trainer for a new run in `run_dir`, or one restored from its last checkpoint.

    A run directory that already holds a checkpoint is only continued with `resume=True`, with
    the configuration stored in it and the same data; `epochs` may extend a resumed run.
    """
    run_dir = Path(run_dir)
    has_run = (run_dir / "checkpoint.pt").exists()
    if resume:
        if not has_run:
            raise TrainingError(f"{run_dir}: nothing to resume (no checkpoint.pt)")
        stored = read_json_file(run_dir / "run.json", "the run's record")
        try:
            config = TrainingConfig(**stored["config"])
        except (KeyError, TypeError) as exc:
            raise TrainingError(f"{run_dir / 'run.json'}: not a record of this suite's "
                                f"training runs ({exc})") from None
        if epochs is not None:
            config.epochs = epochs
        data_seed = stored["data"].get("seed", config.seed)
        train, val, provenance = prepare_data(data, val_data, n_train, n_val, data_seed)
        if [s["hash"] for s in provenance["systems"]] != \
                [s["hash"] for s in stored["data"]["systems"]]:
            raise TrainingError(f"{run_dir}: the data differ from those the run started with")
        provenance = stored["data"]
    else:
        if has_run:
            raise TrainingError(f"{run_dir}: already holds a training run; pass --resume to "
                                "continue it or choose another output directory")
        train, val, provenance = prepare_data(data, val_data, n_train, n_val, config.seed)
    init_potential = None
    if init_model is not None and not resume:
        loaded = load_model(init_model)
        init_potential = loaded.to_potential()
        provenance["init_model"] = {"path": str(init_model),
                                    "training": loaded.metadata.get("training", {})}
        config = TrainingConfig(**{**asdict(config),
                                   "architecture": loaded.metadata["architecture"],
                                   "hyperparameters": loaded.metadata["hyperparameters"]})
    trainer = Trainer(config, train, val, run_dir, init_potential=init_potential,
                      provenance=provenance)
    if resume:
        trainer.resume()
    return trainer


def train_from_files(config: TrainingConfig, run_dir: str | os.PathLike,
                     data: Sequence[str | os.PathLike], *,
                     on_epoch: Callable[[EpochRecord], None] | None = None,
                     **options: Any) -> Trainer:
    """`make_trainer(...)` then `fit`; returns the trainer."""
    trainer = make_trainer(config, run_dir, data, **options)
    trainer.fit(on_epoch)
    return trainer


def fit_with_progress(trainer: Trainer, description: str,
                      progress: ProgressFactory = progress_bar) -> EpochRecord | None:
    """`trainer.fit()` under a progress bar: in epochs, or in seconds when the run has a time
    budget (`max_minutes`; the epoch limit is then usually not what stops it)."""
    limit = trainer.config.max_minutes
    if limit is None:
        with progress(description, max(trainer.config.epochs - trainer.epoch, 0)) as advance:
            return trainer.fit(lambda _record: advance(1))
    total = max(1, int(60 * limit))
    started = time.monotonic()
    with progress(f"{description}, {limit:g} min", total) as advance:
        shown = [0]

        def tick(_record: EpochRecord) -> None:
            now = min(int(time.monotonic() - started), total)
            advance(now - shown[0])
            shown[0] = now

        record = trainer.fit(tick)
        advance(total - shown[0])
    return record
