"""Frames labelled on a Dask cluster, in chunks that survive a killed run.

The frames are cut into chunks of `chunk_size` consecutive frames; each chunk is one Dask task
(`label_chunk`), which labels its frames with a fresh calculator of the level of theory. As a
chunk comes back, the client writes it atomically to the run's chunk directory beside the
output (`OUTPUT.chunks/chunk-0000016.npz`, plain arrays, never pickled), so a killed job loses at
most the chunks in flight: run the same command again and only the missing chunks are labelled.

Failures are never a silent hole:
- a frame whose calculation fails (an SCF that does not converge, atoms too close) is tried
  again with a fresh calculator, then recorded with its index and message;
- a task whose worker dies is rerun by Dask on another worker (`retries`); one that keeps
  failing marks every frame of its chunk as failed, with the error;
- at the end, if any frame failed, `LabellingFailed` lists them by index; the chunks labelled so
  far stay on disk, no output is written, and a rerun retries only the chunks with failures.

Each frame's result depends only on that frame (xTB and MMFF94 start every frame afresh), so a
cluster labels bit for bit as the serial `relabel_frames` does; DFT reuses the previous frame's
density as its first guess within a chunk, so its energies agree to the SCF tolerance only.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlff_core.data.frames import Frames
from mlff_core.data.generate import labelling_system, relabelled_frames
from mlff_core.errors import DataError, LevelOfTheoryError
from mlff_core.fileio import atomic_output
from mlff_core.labels.levels import LevelOfTheory, get_level
from mlff_core.progress import Advance, no_progress

#: Frames per Dask task by the level's family: enough that scheduling (milliseconds per task)
#: costs little against the frames' own time (MMFF94 ≈ ms, GFN2-xTB ≈ 0.1 s, DFT minutes per
#: frame), few enough that a killed run loses little and many workers all get work.
CHUNK_SIZES = {"empirical": 64, "semi-empirical": 16, "dft": 1}


def default_chunk_size(level: LevelOfTheory) -> int:
    """Frames per task for `level` when none is given (see `CHUNK_SIZES`)."""
    return CHUNK_SIZES.get(level.family, 16)

#: Tries per frame inside a task (a fresh calculator each time) before it is reported.
FRAME_ATTEMPTS = 2

_RECORD = "record.json"


def chunk_directory(output: str | os.PathLike) -> Path:
    """Where the finished chunks of a run writing `output` are kept."""
    output = Path(output)
    return output.with_name(output.name + ".chunks")


@dataclass
class LabelledChunk:
    """The labels of frames start … start + len − 1.

    Attributes:
        start: index of the chunk's first frame in the whole dataset.
        energies: [k] eV; NaN where the frame failed.
        forces: [k, atoms, 3] eV/Å; NaN where the frame failed.
        failures: dataset frame index -> what went wrong.
    """

    start: int
    energies: np.ndarray
    forces: np.ndarray
    failures: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.energies)


class LabellingFailed(LevelOfTheoryError):
    """Some frames could not be labelled; `failures` maps their indices to the reasons."""

    def __init__(self, failures: dict[int, str], n_frames: int, kept: Path | None):
        self.failures = dict(sorted(failures.items()))
        listed = "; ".join(f"frame {i}: {why}" for i, why in list(self.failures.items())[:5])
        more = len(self.failures) - 5
        where = (f"; the labelled chunks are kept in {kept}: run the same command again to "
                 "retry only the failed frames" if kept is not None else "")
        super().__init__(f"{len(self.failures)} of {n_frames} frames could not be labelled "
                         f"(frames {_index_ranges(self.failures)}): {listed}"
                         f"{f'; and {more} more' if more > 0 else ''}{where}")


def _index_ranges(indices) -> str:
    """'3, 7-9, 12' for [3, 7, 8, 9, 12]."""
    ranges: list[list[int]] = []
    for i in sorted(indices):
        if ranges and i == ranges[-1][1] + 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


class ChunkStore:
    """The finished chunks of one labelling run, one npz each, in `directory`.

    `settings` (the frames' content hash, the level, the chunk size) are written to
    `record.json` when the store is opened first; a later run with other settings is refused,
    naming each difference, so chunks of two runs are never mixed.
    """

    def __init__(self, directory: str | os.PathLike, settings: dict[str, Any]):
        self.directory = Path(directory)
        self.settings = json.loads(json.dumps(settings))

    def open(self) -> dict[int, LabelledChunk]:
        """The chunks saved so far, by first frame index (creates the directory and record
        on a first run).

        Raises:
            DataError: the record or a chunk file is damaged, or the record's settings differ.
        """
        from mlff_core.stage_cache import describe_differences, settings_differences

        record = self.directory / _RECORD
        if not record.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            with atomic_output(record, "w") as fh:
                json.dump({"settings": self.settings}, fh, indent=2)
            return {}
        try:
            saved = json.loads(record.read_text())["settings"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"the labelling record is damaged ({exc}); delete "
                            f"{self.directory} to start over", record) from None
        differences = settings_differences(saved, self.settings)
        if differences:
            raise DataError(f"these chunks were labelled with other settings "
                            f"({describe_differences(differences)}); rerun with the same input "
                            f"and options, or delete {self.directory} to start over",
                            self.directory)
        chunks = {}
        for path in sorted(self.directory.glob("chunk-*.npz")):
            chunk = self._read(path)
            chunks[chunk.start] = chunk
        return chunks

    def _read(self, path: Path) -> LabelledChunk:
        try:
            with np.load(path, allow_pickle=False) as data:
                failed = data["failed_frames"].tolist()
                messages = data["failure_messages"].tolist()
                return LabelledChunk(int(data["start"]), data["energies"], data["forces"],
                                     dict(zip(failed, messages, strict=True)))
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise DataError(f"a saved chunk is damaged ({exc}); delete it and rerun to label "
                            "its frames again", path) from None

    def save(self, chunk: LabelledChunk) -> None:
        """Write `chunk` atomically (a kill mid-write leaves no chunk file, never half a one)."""
        failed = np.array(sorted(chunk.failures), dtype=np.int64)
        messages = np.array([chunk.failures[i] for i in failed.tolist()], dtype=np.str_)
        with atomic_output(self.directory / f"chunk-{chunk.start:07d}.npz") as fh:
            np.savez(fh, start=np.array(chunk.start), energies=chunk.energies,
                     forces=chunk.forces, failed_frames=failed, failure_messages=messages)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def label_chunk(frames: Frames, start: int, level_key: str, smiles: str | None,
                charge: int) -> LabelledChunk:
    """Label `frames` (frames start … start + len − 1 of the dataset) with the level called
    `level_key`; runs on a Dask worker. A frame that fails is tried again with a fresh
    calculator, then recorded in `failures`."""
    level = get_level(level_key)
    calculator = level.calculator(smiles=smiles, charge=charge)
    energies = np.full(frames.n_frames, np.nan)
    forces = np.full(frames.positions.shape, np.nan)
    failures: dict[int, str] = {}
    for i in range(frames.n_frames):
        for _ in range(FRAME_ATTEMPTS):
            atoms = frames.to_atoms(i)
            atoms.calc = calculator
            try:
                energies[i] = atoms.get_potential_energy()
                forces[i] = atoms.get_forces()
                failures.pop(start + i, None)
                break
            except LevelOfTheoryError as exc:
                failures[start + i] = str(exc)
                calculator = level.calculator(smiles=smiles, charge=charge)
        if start + i in failures:
            energies[i], forces[i] = np.nan, np.nan
    return LabelledChunk(start, energies, forces, failures)


def label_frames_on_cluster(frames: Frames, level: LevelOfTheory, client,
                            store: ChunkStore | None = None,
                            chunk_size: int | None = None,
                            advance: Advance = no_progress, retries: int = 2) -> Frames:
    """The same configurations labelled by `level` on the workers of `client` (a
    `distributed.Client`), as `relabel_frames` labels them in this process.

    Args:
        store: where finished chunks are saved and found again (None: kept in memory only).
        chunk_size: frames per task (default: by the level, `default_chunk_size`).
        advance: called with the number of frames of each chunk as it finishes (saved chunks
            found on disk are reported at the start).
        retries: how often Dask reruns a task whose worker died or raised.

    Raises:
        LevelOfTheoryError: the level cannot label periodic frames.
        LabellingFailed: some frames failed; the chunks done so far stay in `store`.
    """
    from distributed import as_completed

    system = labelling_system(frames, level)
    chunk_size = chunk_size or default_chunk_size(level)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    chunks = store.open() if store is not None else {}
    starts = range(0, frames.n_frames, chunk_size)
    for start in list(chunks):
        if chunks[start].failures or start not in starts:
            del chunks[start]  # retried below
    advance(sum(len(chunk) for chunk in chunks.values()))
    futures = {}
    for start in starts:
        if start not in chunks:
            part = frames[start:start + chunk_size]
            future = client.submit(label_chunk, part, start, level.key, system["smiles"],
                                   system["charge"], retries=retries, pure=False)
            futures[future] = (start, part.n_frames)
    for future in as_completed(futures):
        start, count = futures[future]
        try:
            chunk = future.result()
        except Exception as exc:  # the task failed on every try (e.g. its worker kept dying)
            reason = f"its task failed {retries + 1} times ({type(exc).__name__}: {exc})"
            chunk = LabelledChunk(start, np.full(count, np.nan),
                                  np.full((count, frames.n_atoms, 3), np.nan),
                                  {start + i: reason for i in range(count)})
        if store is not None:
            store.save(chunk)
        chunks[start] = chunk
        advance(count)
    failures = {i: why for chunk in chunks.values() for i, why in chunk.failures.items()}
    if failures:
        raise LabellingFailed(failures, frames.n_frames,
                              store.directory if store is not None else None)
    ordered = [chunks[start] for start in starts]
    return relabelled_frames(frames, np.concatenate([c.energies for c in ordered]),
                             np.concatenate([c.forces for c in ordered]), level)


def labelling_settings(frames: Frames, level: LevelOfTheory, chunk_size: int) -> dict[str, Any]:
    """What decides a chunk store's contents: the frames, the level and the chunk size."""
    return {"frames": frames.content_hash(), "n_frames": frames.n_frames, "level": level.key,
            "chunk_size": chunk_size}


#: Labels a set of frames: (frames, level, advance, chunk directory or None) -> labelled frames.
Labeller = Callable[[Frames, LevelOfTheory, Advance, Path | None], Frames]


def cluster_labeller(client, chunk_size: int | None = None) -> Labeller:
    """A `Labeller` that labels on `client`'s workers; with a chunk directory, finished chunks
    are kept there until the whole set is labelled (then removed)."""
    def label(frames: Frames, level: LevelOfTheory, advance: Advance = no_progress,
              chunks: Path | None = None) -> Frames:
        size = chunk_size or default_chunk_size(level)
        store = (None if chunks is None
                 else ChunkStore(chunks, labelling_settings(frames, level, size)))
        labelled = label_frames_on_cluster(frames, level, client, store, size, advance)
        if store is not None:
            store.remove()
        return labelled

    return label
