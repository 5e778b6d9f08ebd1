"""Streaming detectors that look at one frame at a time, cheap enough for every few MD steps.

- `CollapseDetector` ("Forces are not enough", MDsim): a frame is collapsed when any bond
  deviates from its reference length by more than `threshold` (0.5 Å by default, 0.3 Å as in
  the JCP paper).
- `ExplorationDetector` (JCP 159, 035101): classifies a frame with the model file's `explore`
  method: explored (inside a training conformation cluster), unexplored (outside all of them),
  or "no reference clusters" when the file has none for this system.
Units: Å.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from mlff_core.data.molecules import covalent_bonds
from mlff_core.errors import DataError

EXPLORED, UNEXPLORED, NO_REFERENCE = "explored", "unexplored", "no reference clusters"


@dataclass
class CollapseCheck:
    """Outcome of one collapse check: the bond that moved most from its reference length."""

    collapsed: bool
    max_deviation: float  # Å
    bond: tuple[int, int]
    length: float  # Å
    reference: float  # Å

    def describe(self) -> str:
        i, j = self.bond
        return (f"bond {i}-{j} is {self.length:.3f} Å (reference {self.reference:.3f} Å, "
                f"deviation {self.max_deviation:.3f} Å)")


def bond_lengths(positions: np.ndarray, bonds: np.ndarray, cell: np.ndarray | None = None,
                 pbc: np.ndarray | None = None) -> np.ndarray:
    """Lengths [B] (Å) of bonds [B, 2]; minimum image along periodic directions."""
    vectors = positions[bonds[:, 1]] - positions[bonds[:, 0]]
    if cell is not None and pbc is not None and np.any(pbc):
        fractional = vectors @ np.linalg.inv(cell)
        fractional -= np.where(pbc, np.round(fractional), 0.0)
        vectors = fractional @ cell
    return np.linalg.norm(vectors, axis=1)


class CollapseDetector:
    """Bond-length collapse/stretch detector.

    Args:
        bonds: [B, 2] atom index pairs.
        reference_lengths: [B] Å, the length of each bond in the reference structure (or the
            mean over reference data).
        threshold: largest allowed |length − reference|, Å.
    """

    def __init__(self, bonds: np.ndarray, reference_lengths: np.ndarray, threshold: float = 0.5):
        self.bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
        self.reference_lengths = np.asarray(reference_lengths, dtype=float).reshape(-1)
        if len(self.bonds) == 0:
            raise DataError("no bonds to watch: the structure has no covalent bonds")
        if self.reference_lengths.shape != (len(self.bonds),):
            raise DataError(f"{self.reference_lengths.size} reference lengths for "
                            f"{len(self.bonds)} bonds")
        if threshold <= 0:
            raise DataError(f"collapse threshold must be positive, got {threshold} Å")
        self.threshold = float(threshold)

    @classmethod
    def from_atoms(cls, atoms: Atoms, threshold: float = 0.5,
                   bonds: np.ndarray | None = None) -> CollapseDetector:
        """Reference lengths from `atoms`; bonds given (engine topology) or perceived from
        covalent radii (ASE natural cutoffs)."""
        bonds = covalent_bonds(atoms) if bonds is None else np.asarray(bonds).reshape(-1, 2)
        lengths = bond_lengths(atoms.positions, bonds, atoms.cell.array, atoms.pbc)
        return cls(bonds, lengths, threshold)

    def check(self, positions: np.ndarray, cell: np.ndarray | None = None,
              pbc: np.ndarray | None = None) -> CollapseCheck:
        lengths = bond_lengths(np.asarray(positions, dtype=float), self.bonds, cell, pbc)
        deviation = np.abs(lengths - self.reference_lengths)
        worst = int(np.argmax(deviation))
        i, j = (int(x) for x in self.bonds[worst])
        return CollapseCheck(bool(deviation[worst] > self.threshold), float(deviation[worst]),
                             (i, j), float(lengths[worst]), float(self.reference_lengths[worst]))


@dataclass
class ExplorationCheck:
    status: str  # EXPLORED, UNEXPLORED or NO_REFERENCE
    cluster: int  # nearest cluster (−1 without reference clusters)
    ratio: float  # distance to its centroid / its radius (> 1: unexplored)

    def describe(self) -> str:
        if self.status == NO_REFERENCE:
            return "no reference clusters for this system in the model file"
        return f"{self.status}: nearest cluster {self.cluster}, distance/radius {self.ratio:.3f}"


class ExplorationDetector:
    """Explored/unexplored classification with a model file's scripted `explore` method.

    Args:
        model: model file path or `LoadedModel`.
    """

    def __init__(self, model):
        from mlff_core.export.loading import LoadedModel, load_model

        self.model = model if isinstance(model, LoadedModel) else load_model(model)

    def check(self, positions: np.ndarray, atomic_numbers: np.ndarray,
              cell: np.ndarray | None = None, pbc: np.ndarray | None = None) -> ExplorationCheck:
        pos = torch.as_tensor(np.asarray(positions, dtype=float))
        numbers = torch.as_tensor(np.asarray(atomic_numbers, dtype=np.int64))
        with torch.no_grad():
            if pbc is not None and np.any(pbc):
                result = self.model.module.explore_periodic(
                    pos, numbers, torch.as_tensor(np.asarray(cell, dtype=float)),
                    torch.as_tensor(np.asarray(pbc, dtype=bool)))
            else:
                result = self.model.module.explore(pos, numbers)
        cluster, ratio = int(result[0]), float(result[1])
        if cluster < 0 or not np.isfinite(ratio):
            return ExplorationCheck(NO_REFERENCE, -1, float("nan"))
        return ExplorationCheck(UNEXPLORED if ratio > 1.0 else EXPLORED, cluster, ratio)
