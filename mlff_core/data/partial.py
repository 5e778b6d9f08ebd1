"""Partial results of a long labelling run, saved as it goes so that a killed run resumes.

`mlff data generate` with DFT labels takes hours; a Ctrl-C, a lost SSH session or a batch
system's time limit must not throw away the frames already labelled. `PartialRun` keeps them in
one npz beside the output (`OUTPUT.partial.npz`; plain arrays and a JSON record, never
pickled), written atomically every `every_frames` frames or `every_seconds` seconds, whichever
comes first. The record holds the settings that made the frames; a resume with other settings
is refused, naming each difference, so frames of two runs are never mixed.

    >>> partial = PartialRun(Path("aspirin.npz.partial.npz"), settings)   # doctest: +SKIP
    >>> state = partial.load()        # None: start afresh; else the arrays saved last
    >>> partial.save(state, frames_done=k)                                # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlff_core.errors import DataError
from mlff_core.fileio import atomic_output

#: The record's key inside the npz (a JSON string: settings and progress).
_RECORD = "partial_record"


def partial_path(output: str | os.PathLike) -> Path:
    """Where the partial results of a run writing `output` are kept."""
    output = Path(output)
    return output.with_name(output.name + ".partial.npz")


class PartialRun:
    """Saved progress of one labelling run.

    Args:
        path: the npz to keep (see `partial_path`).
        settings: JSON-able settings that decide the frames (structure, levels, sampling,
            frame count); compared on `load`.
        every_frames, every_seconds: save after this many new frames, or once this much time
            passed since the last save (whichever first; DFT frames take minutes each).
    """

    def __init__(self, path: str | os.PathLike, settings: dict[str, Any],
                 every_frames: int = 25, every_seconds: float = 60.0):
        self.path = Path(path)
        self.settings = json.loads(json.dumps(settings))  # as it reads back from disk
        self.every_frames = every_frames
        self.every_seconds = every_seconds
        self._saved_frames = 0
        self._saved_at = time.monotonic()
        self.holds_progress = False  # True once progress was loaded from or saved to `path`

    def load(self) -> dict[str, np.ndarray] | None:
        """The arrays saved last (with 'frames_done' and 'phase' from the record), or None
        when there is no partial run.

        Raises:
            DataError: the file is damaged, or it was made with other settings.
        """
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
            record = json.loads(str(arrays.pop(_RECORD)))
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise DataError(f"the partial run is damaged ({exc}); delete it or pass "
                            "--overwrite to start over", self.path) from None
        from mlff_core.stage_cache import describe_differences, settings_differences

        differences = settings_differences(record["settings"], self.settings)
        if differences:
            raise DataError(f"the partial run was made with other settings "
                            f"({describe_differences(differences)}); resume with the same "
                            "options, or pass --overwrite to start over", self.path)
        self._saved_frames = int(record["frames_done"])
        self.holds_progress = True
        return {**arrays, "frames_done": np.array(record["frames_done"]),
                "phase": np.array(record["phase"])}

    def due(self, frames_done: int) -> bool:
        """Whether progress up to `frames_done` frames should be saved now."""
        return (frames_done - self._saved_frames >= self.every_frames
                or time.monotonic() - self._saved_at >= self.every_seconds)

    def save(self, arrays: dict[str, np.ndarray], frames_done: int, phase: str) -> None:
        """Write `arrays` and the progress atomically (a kill mid-write keeps the last save)."""
        record = {"settings": self.settings, "frames_done": frames_done, "phase": phase}
        with atomic_output(self.path) as fh:
            np.savez(fh, **arrays, **{_RECORD: np.array(json.dumps(record))})
        self._saved_frames = frames_done
        self._saved_at = time.monotonic()
        self.holds_progress = True

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
