"""Output places a command may write to: refuse one an earlier run used, unless `--overwrite`.

A stale file next to fresh ones is silent damage: an earlier split's `test.npz` beside a new
`train.npz` leaks test frames into training, an earlier MD run's `collapse.xyz` and
`last_good.*` beside a new healthy run look like its own. Each command names the files it
writes (glob patterns); an output directory holding any of them, or an output file that
exists, is refused unless the user passes `--overwrite`, which removes those files first.
Files a command does not write (the user's own, e.g. the input beside `-o .`) are never touched.

`md_outputs` also undoes a run that fails before its first step: nothing partial is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from mlff_core.errors import MLFFError

#: What `mlff md` writes, in any engine (OpenMM, ASE, LAMMPS), including older versions' names.
MD_OUTPUTS = ("summary.json", "start.pdb", "start.data", "trajectory.dcd", "trajectory.traj",
              "trajectory.lammpstrj", "state.csv", "md.log", "in.md", "log.lammps",
              "monitor.log", "flagged.xyz", "collapse.log", "collapse.xyz", "collapse.npz",
              "exploration.log", "unexplored.xyz", "unexplored.npz", "deviation.log",
              "deviation.xyz", "forces.log", "last_good.pdb", "last_good.xyz")

#: What `mlff data split` writes.
SPLIT_OUTPUTS = ("train.npz", "val.npz", "test.npz")


class OutputInUseError(MLFFError):
    """An output directory or file already holds an earlier run's output."""


def earlier_outputs(directory: str | os.PathLike, patterns: Sequence[str],
                    keep: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Entries of `directory` matching `patterns` (sorted; empty when it does not exist),
    except the files in `keep` (the command's inputs, which may bear an output's name)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    kept = {Path(path).resolve() for path in keep}
    return sorted({path for pattern in patterns for path in directory.glob(pattern)
                   if path.resolve() not in kept})


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def claim_output_dir(directory: str | os.PathLike, patterns: Sequence[str],
                     overwrite: bool, what: str, keep: Sequence[str | os.PathLike] = ()) -> Path:
    """Make `directory` ready for a command that writes files matching `patterns`; the files
    in `keep` (its inputs) are neither counted nor removed.

    Raises:
        OutputInUseError: it holds such files and `overwrite` is False (names a few of them);
            or it is a file.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputInUseError(f"{directory}: is a file, not a directory for {what}")
    stale = earlier_outputs(directory, patterns, keep)
    if stale and not overwrite:
        names = ", ".join(p.name for p in stale[:4]) + (", ..." if len(stale) > 4 else "")
        raise OutputInUseError(
            f"{directory}: already holds an earlier {what} ({names}); pass --overwrite to "
            "replace it, or choose another directory")
    _remove(stale)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def claim_output_file(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse to replace an existing file unless `overwrite` (the write itself stays atomic)."""
    path = Path(path)
    if path.is_dir():
        raise OutputInUseError(f"{path}: is a directory, not a file to write")
    if path.exists() and not overwrite:
        raise OutputInUseError(f"{path}: already exists; pass --overwrite to replace it, or "
                               "choose another name")
    return path


class RunStarted:
    """Whether a run got past its setup (`mark` is called when stepping starts)."""

    def __init__(self) -> None:
        self.started = False

    def mark(self) -> None:
        self.started = True


@contextlib.contextmanager
def md_outputs(directory: str | os.PathLike, overwrite: bool,
               keep: Sequence[str | os.PathLike] = ()) -> Iterator[RunStarted]:
    """Claim `directory` for an MD run (`keep`: its inputs); yields a `RunStarted` whose
    `mark()` the caller calls when the engine starts stepping.

    When the body raises before that, the files it wrote are removed again (and the directory,
    if this call created it and nothing else is in it): a run that failed in its setup leaves
    nothing. A run that failed later keeps its partial trajectory and logs, readable up to
    the failure.
    """
    directory = Path(directory)
    created = not directory.exists()
    claim_output_dir(directory, MD_OUTPUTS, overwrite, "MD run", keep)
    run = RunStarted()
    try:
        yield run
    except BaseException:
        if not run.started:
            _remove(earlier_outputs(directory, MD_OUTPUTS, keep))
            if created and not any(directory.iterdir()):
                directory.rmdir()
        raise
