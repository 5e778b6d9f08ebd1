"""Committee training (`mlff train --committee M`): M runs on the same data split that differ
only in their initialisation seed, in one run directory.

Layout of a committee run directory:

    committee.json   {"size": M, "seeds": [s, s+1, ...], "data_seed": s,
                      "members": ["member-0", ...], "finished": [true, false, ...]}
    member-0/        an ordinary training run (run.json, best.pt, checkpoint.pt, log.csv)
    member-1/ ...

Members are trained one after the other; committee.json is rewritten (atomically) as each one
finishes, so `--resume` after a kill skips the finished members and continues the one that
was interrupted from its checkpoint. `mlff export` on the directory writes one model file that
holds every member (`mlff_core.models.Committee`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlff_core.fileio import atomic_output, read_json_file
from mlff_core.training.parallel import is_main_process
from mlff_core.training.run import make_trainer
from mlff_core.training.trainer import Trainer, TrainingConfig, TrainingError

COMMITTEE_RECORD = "committee.json"


def committee_record(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The committee.json of a run directory, or None when it is a single run."""
    path = Path(run_dir) / COMMITTEE_RECORD
    if not path.exists():
        return None
    record = read_json_file(path, "the committee's record")
    if not isinstance(record, dict) or not isinstance(record.get("members"), list) \
            or len(record["members"]) < 2:
        raise TrainingError(f"{path}: not a committee record of this suite (needs a list of "
                            "at least 2 members)")
    return record


def member_dirs(run_dir: str | os.PathLike, record: dict[str, Any]) -> list[Path]:
    """The members' run directories."""
    return [Path(run_dir) / name for name in record["members"]]


def _stored_config(first_member: Path, config: TrainingConfig,
                   options: dict[str, Any]) -> TrainingConfig:
    """The settings the committee started with (member 0's run.json), for members that had
    not started when it was interrupted; only --epochs may change them, as for one run."""
    from mlff_core.training.run import resume_differences

    if not (first_member / "run.json").exists():
        return config  # killed before its first epoch: nothing was recorded yet
    stored = read_json_file(first_member / "run.json", "the run's record")
    recorded = TrainingConfig(**stored["config"])
    differences = resume_differences(recorded, options.get("requested") or {})
    if differences:
        raise TrainingError(f"{first_member.parent}: cannot resume with other settings "
                            f"({'; '.join(differences)}); drop these options")
    if options.get("epochs") is not None:
        recorded.epochs = options["epochs"]
    return recorded


def _write_record(run_dir: Path, record: dict[str, Any]) -> None:
    if not is_main_process():  # data-parallel training: rank 0 writes the run directory
        return
    with atomic_output(run_dir / COMMITTEE_RECORD, "w") as fh:
        json.dump(record, fh, indent=2)


def train_committee(config: TrainingConfig, run_dir: str | os.PathLike, size: int,
                    data: Sequence[str | os.PathLike], *, resume: bool = False,
                    fit: Callable[[Trainer, str], Any], **options: Any) -> list[Trainer | None]:
    """Train (or resume) a committee of `size` members in `run_dir`.

    Member k is `make_trainer(config with seed = config.seed + k, run_dir/member-k, data,
    data_seed=config.seed, **options)`: one training/validation split for all, M
    initialisations. `fit(trainer, description)` trains one member (the caller's progress
    display). Returns each member's trainer (None for a member finished before a resume).

    Raises:
        TrainingError: `run_dir` already holds a run (without `resume`), or a committee of
            another size.
    """
    if size < 2:
        raise TrainingError(f"a committee needs at least 2 members, got {size}")
    run_dir = Path(run_dir)
    record = committee_record(run_dir)
    requested = dict(options.pop("requested", None) or {})
    seed_asked = requested.pop("--seed", None)  # the committee's seed; members hold seed + k
    options["requested"] = requested
    if resume:
        if record is None:
            raise TrainingError(f"{run_dir}: nothing to resume (no {COMMITTEE_RECORD})")
        if len(record["members"]) != size:
            raise TrainingError(f"{run_dir}: holds a committee of {len(record['members'])} "
                                f"members, not {size}; resume it with --committee "
                                f"{len(record['members'])}")
        if seed_asked is not None and seed_asked[1] != record["data_seed"]:
            raise TrainingError(f"{run_dir}: cannot resume with another --seed (the "
                                f"committee's is {record['data_seed']})")
        config = _stored_config(member_dirs(run_dir, record)[0], config, options)
    else:
        if record is not None or (run_dir / "checkpoint.pt").exists():
            raise TrainingError(f"{run_dir}: already holds a training run; pass --resume to "
                                "continue it or choose another output directory")
        # recorded once member 0's trainer has checked the data: bad input leaves nothing
        record = {"size": size, "seeds": [config.seed + k for k in range(size)],
                  "data_seed": config.seed, "members": [f"member-{k}" for k in range(size)],
                  "finished": [False] * size}
    trainers: list[Trainer | None] = []
    for k, member in enumerate(member_dirs(run_dir, record)):
        if record["finished"][k]:
            trainers.append(None)
            continue
        started = (member / "checkpoint.pt").exists()
        trainer = make_trainer(replace(config, seed=int(record["seeds"][k])), member, data,
                               resume=resume and started, data_seed=int(record["data_seed"]),
                               **options)
        if not (run_dir / COMMITTEE_RECORD).exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_record(run_dir, record)
        fit(trainer, f"member {k + 1}/{size}")
        record["finished"][k] = True
        _write_record(run_dir, record)
        trainers.append(trainer)
    return trainers
