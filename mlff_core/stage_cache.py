"""Settings records of cached stages: a stage's directory keeps the settings that made it, so
its results are reused only by a run with the same settings.

A stage (an ASTEROID stage, a benchmark's cached model or run) is a directory. Before any work
goes into it, `claim_stage` writes `settings.json` there: a JSON-able dict of everything that
determines its result (configuration, seeds, content digests of its data and of any input
arrays or weights). A later run that claims the same directory

    * with the same settings reuses what is there (a finished result, or a checkpoint to
      continue from);
    * with other settings gets one `TrainingError` naming the directory and every setting that
      differs (old → new), and nothing is written; or, with `redo=True` (caches that are cheap to
      rebuild and owned by a script, e.g. the benchmarks), a note of the differences, and the
      directory is emptied and its record replaced, so the stage runs again from scratch.

A non-empty directory without a record (written before records existed, or by hand) is
treated as made with unknown settings: refused, or redone.

    >>> settings = {"config": {"epochs": 2}, "data": content_digest(frames)}  # doctest: +SKIP
    >>> if not claim_stage(stage_dir, settings):                              # doctest: +SKIP
    ...     train(stage_dir)          # fresh (or emptied): run the stage
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mlff_core.fileio import atomic_output, read_json_file
from mlff_core.training.trainer import TrainingError

#: The record's file name inside a stage directory.
RECORD = "settings.json"
#: Differences listed in one message (the rest are counted).
SHOWN = 8


# ------------------------------------------------------------------------------------ digests
def _feed(digest: Any, value: Any, rounded: bool) -> None:
    if value is None or isinstance(value, (bool, int, float, str)):
        digest.update(json.dumps(value).encode())
    elif isinstance(value, bytes):
        digest.update(value)
    elif hasattr(value, "content_hash"):  # Frames: the existing hash of its arrays
        digest.update(value.content_hash().encode())
    elif isinstance(value, Mapping):
        digest.update(b"{")
        for key in sorted(value, key=str):
            digest.update(json.dumps(str(key)).encode())
            _feed(digest, value[key], rounded)
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(f"[{len(value)}".encode())
        for item in value:
            _feed(digest, item, rounded)
        digest.update(b"]")
    elif hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        _feed(digest, value.detach().cpu().numpy(), rounded)
    elif isinstance(value, (np.ndarray, np.generic)):
        array = np.ascontiguousarray(value)
        if rounded and np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float32)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    else:
        raise TypeError(f"content_digest cannot digest a {type(value).__name__}")


def content_digest(*values: Any, rounded: bool = False) -> str:
    """16 hex digits of the SHA-256 of `values`: arrays and tensors (dtype, shape, bytes),
    `Frames` (their `content_hash`), dicts (key order ignored), lists, numbers, strings.

    `rounded=True` hashes floating arrays at float32 precision, for inputs recomputed on every
    run (weights from a model's predictions) whose last float64 bits may vary with the thread
    count: the same inputs then give the same digest.
    """
    digest = hashlib.sha256()
    for value in values:
        _feed(digest, value, rounded)
    return digest.hexdigest()[:16]


def config_settings(config: Any) -> dict[str, Any]:
    """What of a `TrainingConfig` decides a training result: every field but the device it runs
    on (a run continued on another device is the same run)."""
    return {k: v for k, v in asdict(config).items() if k != "device"}


def model_digest(path: str | os.PathLike) -> str:
    """`content_digest` of a model file's weights (not of its metadata, which records when and
    with which package versions it was written)."""
    from mlff_core.export.loading import load_model

    return content_digest(load_model(path).to_potential().state_dict())


# -------------------------------------------------------------------------------- differences
def _jsonable(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists, numpy scalars plain numbers)."""
    def default(obj: Any) -> Any:
        if isinstance(obj, (np.ndarray, np.generic)):
            return obj.tolist()
        if isinstance(obj, os.PathLike):
            return os.fspath(obj)
        raise TypeError(f"a stage's settings must be JSON-able, not {type(obj).__name__}")
    return json.loads(json.dumps(value, default=default))


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


_ABSENT = object()


def settings_differences(old: Mapping[str, Any], new: Mapping[str, Any], *,
                         only_given: bool = False) -> list[str]:
    """'key: old → new' for every setting that differs, nested keys dotted
    ('config.epochs: 2 → 3'; '(absent)' for a key on one side only). `only_given` compares only
    the keys of `new` (the others, e.g. inputs known later, are not looked at)."""
    old, new = _jsonable(old), _jsonable(new)
    found: list[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            keys = list(b) if only_given else [*a, *(k for k in b if k not in a)]
            for key in keys:
                walk(a.get(key, _ABSENT), b.get(key, _ABSENT),
                     f"{prefix}.{key}" if prefix else str(key))
        elif a != b:
            found.append(f"{prefix}: {_show(a)} → {_show(b)}")

    walk(old, new, "")
    return found


def describe_differences(differences: Iterable[str]) -> str:
    """The differences on one line ('a: 1 → 2; b: x → y'), at most `SHOWN` of them listed."""
    differences = list(differences)
    text = "; ".join(differences[:SHOWN])
    if len(differences) > SHOWN:
        text += f"; and {len(differences) - SHOWN} more"
    return text


# ------------------------------------------------------------------------------------ records
def read_stage_settings(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The settings record of a stage directory, or None when it has none."""
    path = Path(directory) / RECORD
    return read_json_file(path, "the stage's settings record") if path.is_file() else None


def _holds_results(directory: Path) -> bool:
    return directory.is_dir() and any(p.name != RECORD for p in directory.iterdir())


def stage_differences(directory: str | os.PathLike, settings: Mapping[str, Any], *,
                      only_given: bool = False) -> list[str] | None:
    """How `settings` differ from those recorded in `directory`: None when there is nothing to
    compare with (no directory, or an empty one), [] when they are the same, else the
    differences ('key: old → new'; one entry starting 'no record' for results without a
    record). `only_given`: see `settings_differences`."""
    directory = Path(directory)
    stored = read_stage_settings(directory) if directory.is_dir() else None
    if stored is None:
        return ["no record of the settings that made it"] if _holds_results(directory) else None
    return settings_differences(stored, settings, only_given=only_given)


def _mismatch(directory: Path, differences: list[str], hint: str | None) -> TrainingError:
    hint = hint or f"use another output directory or delete {directory}"
    if differences and differences[0].startswith("no record"):
        return TrainingError(f"{directory}: holds results but no record of the settings that "
                             f"made them (an earlier version?); {hint}")
    return TrainingError(f"{directory}: made with other settings "
                         f"({describe_differences(differences)}); {hint}")


def verify_stage(directory: str | os.PathLike, settings: Mapping[str, Any], *,
                 hint: str | None = None, only_given: bool = False) -> bool:
    """Check without writing anything: True when `directory` holds work made with `settings`,
    False when it holds nothing; a `TrainingError` (the directory, the differences, then `hint`,
    default 'use another output directory or delete DIR') when it was made with others."""
    differences = stage_differences(directory, settings, only_given=only_given)
    if differences:
        raise _mismatch(Path(directory), differences, hint)
    return differences is not None


def _empty(directory: Path) -> None:
    if directory.is_symlink():  # a shared stage linked in: drop the link, not its target
        directory.unlink()
    elif directory.is_dir():
        shutil.rmtree(directory)


def claim_stage(directory: str | os.PathLike, settings: Mapping[str, Any], *,
                redo: bool = False, hint: str | None = None,
                log: Callable[[str], None] = print) -> bool:
    """Claim `directory` for a stage with `settings`; True when it holds earlier work made with
    the same settings (reuse it: a result, or a checkpoint to continue), False when the stage
    starts from nothing (the directory is created and the record written first).

    Other settings raise a `TrainingError` naming the directory and the differences, writing
    nothing (see `verify_stage`); with `redo=True` they are reported through `log`, the
    directory is emptied and the stage starts again with the new record.
    """
    directory = Path(directory)
    differences = stage_differences(directory, settings)
    if differences:
        if not redo:
            raise _mismatch(directory, differences, hint)
        log(f"{directory}: made with other settings ({describe_differences(differences)}); "
            "redoing it")
        _empty(directory)
    elif differences == []:
        return True
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_output(directory / RECORD, "w") as fh:
        json.dump(_jsonable(settings), fh, indent=1)
    return False
