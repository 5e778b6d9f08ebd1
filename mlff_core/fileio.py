"""Atomic file output: results appear complete under their final name, or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask_mode() -> int:
    """The mode open() would give a new file (0666 minus the umask); mkstemp uses 0600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix) and rename it onto `path` only if the
    block succeeds; on any exception the temporary file is removed and `path` is untouched.

    For writers that open the file themselves (ASE picks the format from the suffix, which is
    kept). The result gets the permissions open() would give (mkstemp's are 0600).
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix,
                                   dir=directory)
    except OSError as exc:  # name the user's path, not the hidden temporary file
        raise OSError(exc.errno, f"cannot write here ({exc.strerror})", str(path)) from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class _Probe(Exception):
    pass


def check_writable(path: str | os.PathLike) -> None:
    """Fail now, not after hours of work, when `path` cannot be written: a temporary file is
    made beside it and removed again (its directory is created if missing).

    Raises:
        OSError: naming `path` (see `atomic_path`).
    """
    with contextlib.suppress(_Probe), atomic_path(path):
        raise _Probe


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside `path`; it replaces `path` only if the block succeeds, so a
    failed or interrupted write never leaves a partial file behind.

    Example:
        >>> with atomic_output("out.npz") as fh:   # doctest: +SKIP
        ...     np.savez(fh, x=x)
    """
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def read_json_file(path: str | os.PathLike, what: str):
    """Parsed JSON of `path`, or one clear `DataError` naming the file (missing, unreadable,
    not JSON); `what` says what the file is, e.g. "the run's record"."""
    import json

    from mlff_core.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} is missing", path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} is not valid JSON ({exc}); the file is damaged", path) from None


def load_weights(path: str | os.PathLike, map_location="cpu") -> dict:
    """A checkpoint or weights file saved with `torch.save`, loaded with weights_only=True
    (never unpickling code), or one clear `DataError` naming the file when it is missing,
    empty, truncated or not a torch file."""
    import torch

    from mlff_core.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError("is missing", path)
    if path.stat().st_size == 0:
        raise DataError("is empty (a run stopped while writing it?)", path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 (torch raises RuntimeError, EOFError, pickle errors)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"is not a readable torch checkpoint, truncated or damaged ({first})",
                        path) from None
    if not isinstance(state, dict):
        raise DataError("does not hold a checkpoint dictionary", path)
    return state
