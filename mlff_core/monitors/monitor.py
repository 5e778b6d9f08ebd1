"""Engine-independent bookkeeping of a detector during one MD run: a log of checks, the flagged
frames (written in the native format, ready for `mlff data relabel`), the last good frame, and
the action on a flagged frame: 'flag' (record and go on), 'stop' (end the run cleanly after
saving the last good frame) or 'raise' (raise `MonitorTriggered`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlff_core.data.formats import write_frames
from mlff_core.data.frames import Frames
from mlff_core.errors import MLFFError

ACTIONS = ("flag", "stop", "raise")


class MonitorTriggered(MLFFError):
    """A monitor with action 'raise' saw a flagged frame."""


@dataclass
class Snapshot:
    """What a monitor keeps of a frame: step, positions [N, 3] Å, atoms, cell, pbc."""

    step: int
    positions: np.ndarray
    atomic_numbers: np.ndarray
    cell: np.ndarray | None = None
    pbc: np.ndarray | None = None

    def to_atoms(self):
        from ase import Atoms

        periodic = self.pbc is not None and bool(np.any(self.pbc))
        return Atoms(numbers=self.atomic_numbers, positions=self.positions,
                     cell=self.cell if periodic else None, pbc=self.pbc if periodic else False)


def write_xyz(snapshot: Snapshot, path: Path) -> None:
    """Default last-good-frame writer: extended XYZ (atomic)."""
    import ase.io

    from mlff_core.fileio import atomic_path

    atoms = snapshot.to_atoms()
    atoms.info["step"] = snapshot.step
    with atomic_path(path) as tmp:
        ase.io.write(tmp, atoms, format="extxyz")


class Monitor:
    """Bookkeeping for one detector.

    Args:
        kind: what is watched ('collapse', 'exploration'), used in messages and provenance.
        action: 'flag', 'stop' or 'raise'.
        log: text file with one line per check (step, status, details), or None.
        flagged_path: native .npz that collects flagged frames, or None.
        last_good_path: where 'stop' saves the last unflagged frame (default writer: extxyz).
        write_last_good: engine-specific writer (OpenMM writes PDB with its topology).
        provenance: extra facts stored with the flagged frames (model file, engine, ...).
    """

    def __init__(self, kind: str, action: str = "flag", log: str | os.PathLike | None = None,
                 flagged_path: str | os.PathLike | None = None,
                 last_good_path: str | os.PathLike | None = None,
                 write_last_good: Callable[[Snapshot, Path], None] = write_xyz,
                 provenance: dict[str, Any] | None = None):
        if action not in ACTIONS:
            raise MLFFError(f"unknown monitor action {action!r}; use one of {', '.join(ACTIONS)}")
        self.kind, self.action = kind, action
        self.flagged_path = None if flagged_path is None else Path(flagged_path)
        self.last_good_path = None if last_good_path is None else Path(last_good_path)
        self.write_last_good = write_last_good
        self.provenance = provenance or {}
        self.flagged: list[tuple[Snapshot, str]] = []
        self.last_good: Snapshot | None = None
        self.first_flagged_step: int | None = None
        self.stopped = False
        self.checks = 0
        self._log = None
        if log is not None:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            self._log = open(log, "w")  # noqa: SIM115 (kept open for the run)
            self._log.write("# step\tstatus\tdetails\n")

    def observe(self, snapshot: Snapshot, flagged: bool, message: str) -> bool:
        """Record one checked frame; returns True when the run should stop now.

        Raises:
            MonitorTriggered: on a flagged frame with action 'raise'.
        """
        self.checks += 1
        if self._log is not None:
            self._log.write(f"{snapshot.step}\t{'FLAGGED' if flagged else 'ok'}\t{message}\n")
            self._log.flush()
        if not flagged:
            self.last_good = snapshot
            return False
        if self.first_flagged_step is None:
            self.first_flagged_step = snapshot.step
        self.flagged.append((snapshot, message))
        self._write_flagged()
        if self.action == "raise":
            self.close()
            raise MonitorTriggered(f"{self.kind} at step {snapshot.step}: {message}")
        if self.action == "stop":
            self.stopped = True
            if self.last_good is not None and self.last_good_path is not None:
                self.write_last_good(self.last_good, self.last_good_path)
            return True
        return False

    def _write_flagged(self) -> None:
        if self.flagged_path is None:
            return
        snapshots = [s for s, _ in self.flagged]
        periodic = snapshots[0].pbc is not None and bool(np.any(snapshots[0].pbc))
        frames = Frames(
            positions=np.stack([s.positions for s in snapshots]),
            atomic_numbers=snapshots[0].atomic_numbers,
            cell=np.stack([s.cell for s in snapshots]) if periodic else None,
            pbc=snapshots[0].pbc if periodic else np.zeros(3, dtype=bool),
            levels=np.full(len(snapshots), "unlabelled"),
            provenance={"flagged_by": self.kind, "steps": [s.step for s in snapshots],
                        "reasons": [m for _, m in self.flagged], **self.provenance},
        )
        write_frames(frames, self.flagged_path)

    def summary(self) -> str:
        if not self.flagged:
            return f"{self.kind}: {self.checks} frames checked, none flagged"
        stop = " (run stopped)" if self.stopped else ""
        return (f"{self.kind}: {self.checks} frames checked, {len(self.flagged)} flagged, "
                f"first at step {self.first_flagged_step}{stop}")

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
