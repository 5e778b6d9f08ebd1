"""One periodicity rule for every engine (ASE here, the LAMMPS pair style in C++, OpenMM at
system creation):

- A model trained on periodic cells (`"periodic": true` in mlff.json) refuses a system that is
  periodic in no direction.
- A model trained on molecules (`"periodic": false`) sees its atoms as one isolated system: in a
  periodic cell they are made whole along their bonds, and must stay at least one cutoff away
  from every periodic image of themselves; then the model runs on them without the cell.
  Otherwise the system is refused (a 6 Å box around aspirin, a water box with a molecular
  model). With a fractional span s_k of the atoms along a periodic direction k, every image is
  at least (1 − s_k)·d_k away, d_k being the spacing of the lattice planes.
- A model file that does not say (`"periodic": null`, older files) runs as it is asked to.

OpenMM's ML/MM case (a molecular model on the ML subset of a periodic system) follows the
second rule; the ML atoms are made whole by the TorchScript adapter at every step.
"""

from __future__ import annotations

import numpy as np

from mlff_core.errors import MLFFError


def model_periodicity(metadata: dict) -> bool | None:
    """True (trained on periodic cells), False (on molecules) or None (the file does not say)."""
    value = metadata.get("periodic")
    return None if value is None else bool(value)


def image_gaps(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Smallest distance [3] (Å) between the atoms [N, 3] and their periodic images along each
    lattice direction, as bounded by their fractional span (inf along non-periodic ones)."""
    cell = np.asarray(cell, dtype=float)
    fractional = np.linalg.solve(cell.T, np.asarray(positions, dtype=float).T).T
    span = fractional.max(axis=0) - fractional.min(axis=0)
    spacing = 1.0 / np.linalg.norm(np.linalg.inv(cell).T, axis=1)
    return np.where(np.asarray(pbc, dtype=bool), (1.0 - span) * spacing, np.inf)


def check_isolated(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float,
                   model_name: str) -> None:
    """Raise `MLFFError` when whole `positions` come within `cutoff` of their own images."""
    gaps = image_gaps(positions, cell, pbc)
    k = int(np.argmin(gaps))
    if gaps[k] < cutoff:
        spacing = 1.0 / np.linalg.norm(np.linalg.inv(np.asarray(cell, dtype=float)).T, axis=1)[k]
        raise MLFFError(
            f"model {model_name} was trained on molecules, but these atoms come within "
            f"{gaps[k]:.2f} Å of their own periodic images along {'abc'[k]} (cutoff {cutoff} Å; "
            f"the lattice planes are {spacing:.2f} Å apart). Use a cell at least one cutoff "
            "wider than the molecule, pbc=False, or a model trained on periodic cells")


def refuse_non_periodic(model_name: str) -> MLFFError:
    return MLFFError(f"model {model_name} was trained on periodic cells, but this system is not "
                     "periodic in any direction; give it a cell (pbc) or use a model trained "
                     "on molecules")
