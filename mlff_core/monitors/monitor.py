"""Engine-independent bookkeeping of a detector during one MD run: a log of checks, the flagged
frames (streamed to an extended-XYZ file, ready for `mlff data relabel`), the last good frame,
and the action on a flagged frame: 'flag' (record and go on), 'stop' (end the run cleanly after
saving the last good frame) or 'raise' (raise `MonitorTriggered`).

Vocabulary shared by every engine (the LAMMPS fix writes the same words):
- log lines: `step<TAB>ok|FLAGGED<TAB><kind>: <details>`, kind 'collapse', 'exploration' or
  'deviation';
- summaries: `summary_line()`.

Flagged frames are appended one frame per write() and flushed, so a run that is killed leaves
a readable file of the frames flagged so far (never a truncated frame, short of a crash inside
that single write), and memory and time stay linear in the number of flagged frames.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlff_core.errors import MLFFError

ACTIONS = ("flag", "stop", "raise")
KINDS = ("collapse", "exploration", "deviation")
FLAGGED_SUFFIXES = (".xyz", ".extxyz")


class MonitorTriggered(MLFFError):
    """A monitor with action 'raise' saw a flagged frame."""


@dataclass
class Snapshot:
    """What a monitor keeps of a frame: step, positions [N, 3] Å, atoms, cell, pbc, and the
    forces [N, 3] (any unit) where the engine hands them over for free."""

    step: int
    positions: np.ndarray
    atomic_numbers: np.ndarray
    cell: np.ndarray | None = None
    pbc: np.ndarray | None = None
    forces: np.ndarray | None = None

    @property
    def periodic(self) -> bool:
        return self.pbc is not None and bool(np.any(self.pbc))

    def to_atoms(self):
        from ase import Atoms

        return Atoms(numbers=self.atomic_numbers, positions=self.positions,
                     cell=self.cell if self.periodic else None,
                     pbc=self.pbc if self.periodic else False)


def write_xyz(snapshot: Snapshot, path: Path) -> None:
    """Default last-good-frame writer: extended XYZ (atomic)."""
    import ase.io

    from mlff_core.fileio import atomic_path

    atoms = snapshot.to_atoms()
    atoms.info["step"] = snapshot.step
    with atomic_path(path) as tmp:
        ase.io.write(tmp, atoms, format="extxyz")


def summary_line(kind: str, checks: int, flagged: int, first_step: int | None,
                 stopped: bool) -> str:
    """One line about a monitor's run, worded the same in every engine."""
    if not flagged:
        return f"{kind}: {checks} frames checked, none flagged"
    stop = " (run stopped)" if stopped else ""
    return (f"{kind}: {checks} frames checked, {flagged} flagged, first at step "
            f"{first_step}{stop}")


def validate_interval(interval: Any, name: str = "report interval") -> int:
    """A positive whole number of steps, or one clear error."""
    if isinstance(interval, bool) or int(interval) != interval or interval < 1:
        raise MLFFError(f"{name} must be a positive whole number of steps, got {interval!r}")
    return int(interval)


class FlaggedFrameWriter:
    """Appends flagged frames to an extended-XYZ file, one frame per write() (crash-safe).

    Each frame carries `step`, `reason` and `flagged_by` in its comment line; periodic frames
    carry their cell (`Lattice`), molecules none (`pbc="F F F"`).
    """

    def __init__(self, path: str | os.PathLike, flagged_by: str,
                 provenance: dict[str, Any] | None = None):
        self.path = Path(path)
        if self.path.suffix.lower() not in FLAGGED_SUFFIXES:
            raise MLFFError(f"{self.path}: flagged frames are streamed as extended XYZ; give a "
                            f"path ending in {' or '.join(FLAGGED_SUFFIXES)}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flagged_by = flagged_by
        self.provenance = {k: str(v) for k, v in (provenance or {}).items()}
        self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 (open for the run)

    def append(self, snapshot: Snapshot, reason: str) -> None:
        import ase.io

        atoms = snapshot.to_atoms()
        atoms.info.update(step=snapshot.step, reason=reason, flagged_by=self.flagged_by,
                          **self.provenance)
        text = io.StringIO()
        ase.io.write(text, atoms, format="extxyz")
        self._file.write(text.getvalue())  # the whole frame at once
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class Monitor:
    """Bookkeeping for one detector.

    Args:
        kind: what is watched ('collapse', 'exploration' or 'deviation'), used in messages and
            provenance.
        action: 'flag', 'stop' or 'raise'.
        log: text file with one line per check (step, status, details), or None.
        flagged_path: extended-XYZ file (.xyz) that collects flagged frames, or None.
        last_good_path: where 'stop' saves the last unflagged frame (default writer: extxyz).
        write_last_good: engine-specific writer (OpenMM writes PDB with its topology).
        provenance: extra facts stored with each flagged frame (model file, threshold, ...).
    """

    def __init__(self, kind: str, action: str = "flag", log: str | os.PathLike | None = None,
                 flagged_path: str | os.PathLike | None = None,
                 last_good_path: str | os.PathLike | None = None,
                 write_last_good: Callable[[Snapshot, Path], None] = write_xyz,
                 provenance: dict[str, Any] | None = None):
        if action not in ACTIONS:
            raise MLFFError(f"unknown monitor action {action!r}; use one of {', '.join(ACTIONS)}")
        if kind not in KINDS:
            raise MLFFError(f"unknown monitor kind {kind!r}; use one of {', '.join(KINDS)}")
        self.kind, self.action = kind, action
        self.last_good_path = None if last_good_path is None else Path(last_good_path)
        self.write_last_good = write_last_good
        self.last_good: Snapshot | None = None
        self.first_flagged: tuple[int, str] | None = None  # (step, details) of the first flag
        self.stop_reason: str | None = None  # 'kind: details' of the frame acted on
        self.n_flagged = 0
        self.stopped = False
        self.checks = 0
        self._frames = None if flagged_path is None else \
            FlaggedFrameWriter(flagged_path, kind, provenance)
        self._log = None
        if log is not None:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            self._log = open(log, "w", encoding="utf-8")  # noqa: SIM115 (open for the run)
            self._log.write("# step\tstatus\tdetails\n")

    @property
    def first_flagged_step(self) -> int | None:
        return None if self.first_flagged is None else self.first_flagged[0]

    def observe(self, snapshot: Snapshot, flagged: bool, message: str,
                act: bool | None = None) -> bool:
        """Record one checked frame; returns True when the run should stop now.

        `act` (default: `flagged`) says whether the action ('stop', 'raise') applies to this
        flagged frame: a graded monitor flags above its warn level and acts above its stop level.

        Raises:
            MonitorTriggered: on a flagged frame to act on, with action 'raise'.
        """
        self.checks += 1
        if self._log is not None:
            status = "FLAGGED" if flagged else "ok"
            self._log.write(f"{snapshot.step}\t{status}\t{self.kind}: {message}\n")
            self._log.flush()
        if not flagged:
            self.last_good = snapshot
            return False
        self.n_flagged += 1
        if self.first_flagged is None:
            self.first_flagged = (snapshot.step, message)
        if self._frames is not None:
            self._frames.append(snapshot, message)
        if act is False or self.action == "flag":
            return False
        self.stop_reason = f"{self.kind}: {message}"
        if self.action == "raise":
            self.close()
            raise MonitorTriggered(f"{self.kind} at step {snapshot.step}: {message}")
        self.stopped = True  # action 'stop'
        if self.last_good is not None and self.last_good_path is not None:
            self.write_last_good(self.last_good, self.last_good_path)
        return True

    def halt(self, snapshot: Snapshot, message: str) -> None:
        """The engine cannot go on (e.g. it found NaN coordinates between two checks): record
        the frame as flagged and stop, saving the last good frame, whatever the action
        ('raise' still raises)."""
        if not self.observe(snapshot, True, message):  # action 'flag'
            self.stopped = True
            self.stop_reason = f"{self.kind}: {message}"
            if self.last_good is not None and self.last_good_path is not None:
                self.write_last_good(self.last_good, self.last_good_path)

    @property
    def outcome(self) -> dict[str, Any]:
        """{"stopped", "reason", "last_good"} of the run as this monitor saw it."""
        saved = self.saved_last_good
        return {"stopped": self.stopped, "reason": self.stop_reason if self.stopped else None,
                "last_good": None if saved is None else str(saved)}

    @property
    def saved_last_good(self) -> Path | None:
        """The last good frame's file once a stop has written it, else None."""
        if self.stopped and self.last_good is not None:
            return self.last_good_path
        return None

    def summary(self) -> str:
        return summary_line(self.kind, self.checks, self.n_flagged, self.first_flagged_step,
                            self.stopped)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._frames is not None:
            self._frames.close()


def stop_outcome(*monitors: Monitor) -> dict[str, Any]:
    """{"stopped", "reason", "last_good"} of a run: the first of `monitors` that stopped it
    (a run summary's fields; not stopped when none did)."""
    for monitor in monitors:
        if monitor.stopped:
            return monitor.outcome
    return {"stopped": False, "reason": None, "last_good": None}
