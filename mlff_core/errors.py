"""Exceptions with messages meant for users: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations

import os


class MLFFError(Exception):
    """Base class of every error the suite reports to users as a single clear line."""


class DataError(MLFFError):
    """A data file (or in-memory dataset) is missing, malformed or holds invalid values.

    The message names the file (when there is one) and the problem.
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if self.path is None else f"{self.path}: {problem}")


class LevelOfTheoryError(MLFFError):
    """A level of theory is unknown, unavailable (optional extra missing) or failed on a frame."""


class ModelFileError(MLFFError):
    """A model file is not a valid mlff-plugins TorchScript model."""


class SpeciesError(MLFFError):
    """A system holds an element the model was not trained on."""


class ClusterError(MLFFError):
    """A Dask scheduler cannot be reached, or a batch-system cluster cannot be set up from its
    configuration file."""
