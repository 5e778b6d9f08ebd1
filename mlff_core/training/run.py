"""Training from files: read data, split it (seeded), record provenance, train or resume."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mlff_core.data.formats import read_frames
from mlff_core.data.frames import UNKNOWN_LEVEL, Frames
from mlff_core.data.splits import split_indices
from mlff_core.errors import DataError
from mlff_core.export.loading import load_model
from mlff_core.fileio import read_json_file
from mlff_core.progress import ProgressFactory, progress_bar
from mlff_core.training.trainer import EpochRecord, Trainer, TrainingConfig, TrainingError


def read_systems_from_files(paths: Sequence[str | os.PathLike]) -> list[Frames]:
    """Frames of each file; files holding the same system (same atoms, same order) are joined."""
    return join_systems([read_frames(path) for path in paths])


def join_systems(files: Sequence[Frames]) -> list[Frames]:
    """Frames of the same system (same atoms, same order) joined, in order of first appearance."""
    systems: dict[bytes, list[Frames]] = {}
    for frames in files:
        systems.setdefault(frames.atomic_numbers.tobytes(), []).append(frames)
    return [parts[0] if len(parts) == 1 else Frames.concatenate(parts)
            for parts in systems.values()]


def known_levels(frames: Frames) -> list[str]:
    """The levels of theory of a file's frames, without "unknown"."""
    return sorted(set(frames.levels.tolist()) - {UNKNOWN_LEVEL})


def check_levels(files: Sequence[Frames], model_levels: Sequence[str] = (),
                 model_name: str = "") -> None:
    """Refuse data that mix levels of theory, among themselves or with the model they continue
    (`model_levels`): their energies differ by a level-dependent offset (hundreds of eV for
    MMFF94 against GFN2-xTB) and their forces by the method, so a model fitted to both fits
    neither. Frames of unknown level are not judged.

    Raises:
        TrainingError: naming each file with its level(s); `--allow-mixed-levels` overrides.
    """
    levels = {level for frames in files for level in known_levels(frames)}
    described = "; ".join(f"{frames.source or frames.formula}: {', '.join(known_levels(frames))}"
                          for frames in files if known_levels(frames))
    allow = "mlff train and mlff finetune take --allow-mixed-levels if you mean it"
    theirs = set(model_levels) - {UNKNOWN_LEVEL}
    if theirs and levels - theirs:
        raise TrainingError(f"model {model_name} was trained on {', '.join(sorted(theirs))} "
                            f"labels but the data are {described}; continuing a model on "
                            f"another level of theory mixes levels ({allow})")
    if len(levels) > 1:
        raise TrainingError(f"the data mix levels of theory ({described}); energies of "
                            f"different levels differ by an offset and forces by the method, so "
                            f"one model fits neither ({allow})")


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
                 seed: int = 0, allow_mixed_levels: bool = False,
                 model_levels: Sequence[str] = (), model_name: str = ""
                 ) -> tuple[list[Frames], list[Frames], dict[str, Any]]:
    """Training and validation frames plus their provenance.

    Without `val_data`, each system is split with `split_indices` (`n_val` frames or fraction,
    at least one; `n_train` frames or fraction, default all the rest); with `val_data`, those
    files validate and `n_train` (default all) frames of `data` train. The provenance records,
    per system, the indices of its training frames in the (joined) files, so the training set
    can be rebuilt later (e.g. by `mlff export` to fit conformation clusters).

    Files of different levels of theory, or of another level than `model_levels` (the model
    being continued), are refused unless `allow_mixed_levels` (see `check_levels`).
    """
    files = [read_frames(path) for path in data]
    val_files = [read_frames(path) for path in val_data]
    if not allow_mixed_levels:
        check_levels([*files, *val_files], model_levels, model_name)
    systems = join_systems(files)
    validation = join_systems(val_files) if val_data else []
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


def model_levels(metadata: dict[str, Any]) -> list[str]:
    """The levels of theory a model file was trained on (from its training provenance)."""
    level = (metadata.get("training") or {}).get("level_of_theory")
    return [level] if isinstance(level, str) else [str(x) for x in level or []]


#: Settings a resumed run may change; every other one is the run's own.
RESUMABLE_CHANGES = ("epochs", "max_minutes", "device")


def resume_differences(stored: TrainingConfig,
                       requested: Mapping[str, tuple[str, Any]]) -> list[str]:
    """'NAME old → new' for each requested setting that differs from the stored run's.

    `requested` maps an option's name (as the user typed it, e.g. '--hidden') to the config
    key it sets ('hidden' in `hyperparameters` is written 'hyperparameters.hidden') and its
    value."""
    differences = []
    for name, (key, value) in requested.items():
        if key in RESUMABLE_CHANGES:
            continue
        field_name, _, sub = key.partition(".")
        old = getattr(stored, field_name)
        old = old.get(sub) if sub else old
        if old != value:
            differences.append(f"{name} {old} → {value}")
    return differences


def _check_same_data(run_dir: Path, now: dict[str, Any], stored: dict[str, Any]) -> None:
    """A resumed run must see the frames it started with, split the same way (a validation
    frame moved into training would leak; `export` rebuilds the clusters from the record)."""
    if [s["hash"] for s in now["systems"]] != [s["hash"] for s in stored["systems"]]:
        raise TrainingError(f"{run_dir}: the data differ from those the run started with")
    if now.get("val_files", []) != stored.get("val_files", []):
        raise TrainingError(f"{run_dir}: cannot resume with other --val-data (the run started "
                            f"with {', '.join(stored.get('val_files', [])) or 'none'})")
    for key, option in (("val_indices", "--n-val"), ("train_indices", "--n-train")):
        if [s[key] for s in now["systems"]] != [s[key] for s in stored["systems"]]:
            split = "; ".join(f"{len(s['train_indices'])} training, {len(s['val_indices'])} "
                              f"validation frames" for s in stored["systems"])
            raise TrainingError(f"{run_dir}: cannot resume with another {option} (the run's "
                                f"split: {split})")


def make_trainer(config: TrainingConfig, run_dir: str | os.PathLike,
                 data: Sequence[str | os.PathLike], val_data: Sequence[str | os.PathLike] = (),
                 n_train: int | float | None = None, n_val: int | float = 0.1,
                 init_model: str | os.PathLike | None = None, resume: bool = False,
                 epochs: int | None = None, allow_mixed_levels: bool = False,
                 requested: Mapping[str, tuple[str, Any]] | None = None,
                 data_seed: int | None = None) -> Trainer:
    """A trainer for a new run in `run_dir`, or one restored from its last checkpoint.

    A run directory that already holds a checkpoint is only continued with `resume=True`, with
    the configuration stored in it and the same data; `epochs` may extend a resumed run.
    `requested` holds the settings the user asked for explicitly (see `resume_differences`):
    a resume refuses any that differ from the stored run's, rather than ignore them.
    `data_seed` seeds the training/validation split (default: `config.seed`, which also seeds
    the initialisation); committee members share one split and differ in `config.seed`.
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
        differences = resume_differences(config, requested or {})
        if differences:
            raise TrainingError(
                f"{run_dir}: cannot resume with other settings ({'; '.join(differences)}); a "
                f"resumed run keeps the settings it started with (only --epochs, --max-minutes "
                f"and --device may change): drop these options, or start a new run elsewhere")
        if epochs is not None:
            config.epochs = epochs
        data_seed = stored["data"].get("seed", config.seed)
        train, val, provenance = prepare_data(data, val_data, n_train, n_val, data_seed,
                                              allow_mixed_levels=True)  # checked at the start
        _check_same_data(run_dir, provenance, stored["data"])
        provenance = stored["data"]
    else:
        if has_run:
            raise TrainingError(f"{run_dir}: already holds a training run; pass --resume to "
                                "continue it or choose another output directory")
        loaded = load_model(init_model) if init_model is not None else None
        train, val, provenance = prepare_data(
            data, val_data, n_train, n_val, config.seed if data_seed is None else data_seed,
            allow_mixed_levels,
            model_levels=model_levels(loaded.metadata) if loaded else (),
            model_name=Path(init_model).name if init_model is not None else "")
    init_potential = None
    if init_model is not None and not resume:
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
