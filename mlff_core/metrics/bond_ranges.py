"""The local half of "unexplored": each covalent bond's length range in the training frames.

The conformation clusters (`mlff_core.metrics.clusters`) see a molecule through one global
descriptor, so a failure that stays local — one X–H bond stretched by 0.3 Å, a proton moved to
another oxygen — hardly moves a large molecule's distance to its cluster (the guardrails
benchmark, RESULTS.md: 3 % of such aspirin frames flagged, against 100 % by a per-bond score).
`BondRanges` watches every bond on its own:

    z_b = |l_b − mean_b| / std_b      (mean and std of bond b over the training frames)
    bond score = max_b z_b / level,   level = BOND_MARGIN × the largest z_b in the training frames

so a bond score above 1 means some bond is further from its training mean, in its own standard
deviations, than BOND_MARGIN times the farthest excursion of any bond in the training data.
The margin keeps the false-flag rate of in-distribution frames low: bond vibrations have heavy
tails, and the farthest training excursion of ~20 bonds is an extreme statistic that a second
run at the same temperature exceeds more often than a cluster radius (measured in RESULTS.md).
Bonds are the first training frame's covalent bonds (`covalent_bonds`); molecules only (in a
periodic liquid or crystal a bond may legitimately break and form).
Units: Å (lengths), dimensionless scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mlff_core.monitors.detectors import bond_lengths

#: The level is this times the largest training excursion (in standard deviations).
BOND_MARGIN = 1.25
#: Floor of a bond's standard deviation (Å): training frames with a rigid bond would otherwise
#: flag any rounding of its length.
MIN_BOND_STD = 1e-3


@dataclass
class BondRanges:
    """Training ranges of a molecule's bonds.

    Attributes:
        bonds: [B, 2] atom index pairs (i < j).
        mean: [B] mean length over the training frames, Å.
        std: [B] standard deviation over the training frames (at least MIN_BOND_STD), Å.
        level: the z-score (in standard deviations) at which the bond score is 1.
        margin: `max_level` ÷ the largest training z-score.
        max_level: the level of the training data alone (margin × the largest training z);
            `level` differs from it after a calibration (`ConformationClusters.calibrate`
            scales both halves of "unexplored" by one factor).
    """

    bonds: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    level: float
    margin: float = BOND_MARGIN
    max_level: float | None = None

    def __post_init__(self):
        if self.max_level is None:
            self.max_level = self.level

    @classmethod
    def fit(cls, positions: np.ndarray, bonds: np.ndarray,
            margin: float = BOND_MARGIN) -> BondRanges | None:
        """Ranges of `bonds` [B, 2] over training positions [F, N, 3] Å; None without bonds."""
        bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
        if len(bonds) == 0:
            return None
        lengths = bond_lengths(np.asarray(positions, dtype=float), bonds)
        mean = lengths.mean(axis=0)
        std = np.maximum(lengths.std(axis=0), MIN_BOND_STD)
        largest = float((np.abs(lengths - mean) / std).max())
        # at least one standard deviation, so identical training frames still give a level
        return cls(bonds, mean, std, margin * max(largest, 1.0), margin)

    def scores(self, positions: np.ndarray, level: float | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Bond score [F] (at `level`, default the current one) and the index of the bond that
        sets it [F], for positions [F, N, 3]."""
        z = np.abs(bond_lengths(np.asarray(positions, dtype=float), self.bonds)
                   - self.mean) / self.std
        worst = z.argmax(axis=-1)
        level = self.level if level is None else level
        return np.take_along_axis(z, worst[..., None], axis=-1)[..., 0] / level, worst

    def to_dict(self) -> dict[str, Any]:
        return {"rule": "max_b |l_b - mean_b| / std_b / level; level = margin x the largest "
                        "training z", "bonds": self.bonds.tolist(), "mean": self.mean.tolist(),
                "std": self.std.tolist(), "level": float(self.level),
                "max_level": float(self.max_level), "margin": float(self.margin)}

    @classmethod
    def from_dict(cls, state: dict[str, Any] | None) -> BondRanges | None:
        if not state:
            return None
        return cls(np.asarray(state["bonds"], dtype=np.int64).reshape(-1, 2),
                   np.asarray(state["mean"], dtype=float), np.asarray(state["std"], dtype=float),
                   float(state["level"]), float(state.get("margin", BOND_MARGIN)),
                   float(state.get("max_level", state["level"])))
