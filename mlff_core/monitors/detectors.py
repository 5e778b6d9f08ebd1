"""Streaming detectors that look at one frame at a time, cheap enough for every few MD steps.

One definition in every engine (the C++ `fix mlff/monitor` implements the same rules, and
`tests/test_monitor_parity.py` runs both on the same planted trajectory):

- `CollapseDetector` ("Forces are not enough", MDsim): a frame is collapsed when any bond
  deviates from its reference length by more than `threshold` (0.5 Å by default, 0.3 Å as in
  the JCP paper), or when any position (or force, where the engine hands them over) is not
  finite. Bonds come from the engine's topology, else from the reference frame: atoms i, j are
  bonded when closer than r_i + r_j + 0.3 Å (covalent radii, minimum image; see
  `mlff_core.data.molecules.covalent_bonds`). Bond lengths are minimum-image lengths.
- `ExplorationDetector` (JCP 159, 035101): classifies a frame with the model file's `explore`
  method: explored (inside a training conformation cluster), unexplored (outside all of them),
  or "no reference clusters" when the file has none for this system. A model trained on
  periodic cells (`"periodic": true`) classifies the frame with its cell
  (`explore_periodic`); any other model sees the atoms as a molecule, made whole across the
  box first (`explore`). Two scores, each 1 at the edge of the training data: the ratio
  distance/radius to the nearest cluster (global), and for molecules the bond score (local: the
  bond furthest outside its training length range, `mlff_core.metrics.bond_ranges`), which sees
  one stretched bond or a moved proton that the global descriptor of a large molecule misses.
  A frame is unexplored when either is above 1. Their maximum is a graded signal (both logged
  for every checked frame): `warn_ratio` (default 1.0) flags a frame, and `stop_ratio`
  (default: `warn_ratio`) is where a monitor's action ('stop', 'raise') applies, as
  DeePMD-kit's lower and upper trust levels. Files written before the bond score give the
  ratio alone.
- `DeviationDetector` (a committee model file, `mlff train --committee M`): the force deviation
  ε = max_i sqrt((1/M) Σ_k |F_i^k − F̄_i|²) in eV/Å (DeePMD-kit's model deviation) from the file's
  `committee_forces`, graded by `warn_deviation` and `stop_deviation` as the ratio is. It sees
  the frame as the engines' model does: with its cell for a model trained on periodic cells,
  else as a molecule made whole.
Units: Å, eV/Å.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from mlff_core.data.molecules import covalent_bonds, whole_positions
from mlff_core.errors import DataError

EXPLORED, UNEXPLORED, NO_REFERENCE = "explored", "unexplored", "no reference clusters"
NOT_CLASSIFIED = "not classified"  # non-finite positions or overlapping atoms (a collapse)
STATUSES = (EXPLORED, UNEXPLORED, NO_REFERENCE, NOT_CLASSIFIED)


#: The words a collapse check's description uses for NaN or inf positions or forces (stop
#: reasons are matched on them: no engine stores such a frame).
NON_FINITE = "non-finite"


@dataclass
class CollapseCheck:
    """Outcome of one collapse check: the bond that moved most from its reference length, or
    the first atom whose position (or force) is not finite."""

    collapsed: bool
    max_deviation: float  # Å (inf for a non-finite frame)
    bond: tuple[int, int]
    length: float  # Å
    reference: float  # Å
    non_finite: str | None = None  # "position" or "force" of atom `bond[0]`

    def describe(self) -> str:
        if self.non_finite is not None:
            return f"atom {self.bond[0]} has a {NON_FINITE} {self.non_finite} (NaN or inf)"
        i, j = self.bond
        return (f"bond {i}-{j} is {self.length:.3f} Å (reference {self.reference:.3f} Å, "
                f"deviation {self.max_deviation:.3f} Å)")


def first_non_finite(positions: np.ndarray, forces: np.ndarray | None = None
                     ) -> tuple[int, str] | None:
    """(atom index, "position" | "force") of the first atom with a NaN or inf coordinate or
    force component, positions checked first; None when everything is finite."""
    for name, values in (("position", positions), ("force", forces)):
        if values is None:
            continue
        bad = ~np.isfinite(np.asarray(values, dtype=float)).all(axis=1)
        if bad.any():
            return int(np.argmax(bad)), name
    return None


def bond_lengths(positions: np.ndarray, bonds: np.ndarray, cell: np.ndarray | None = None,
                 pbc: np.ndarray | None = None) -> np.ndarray:
    """Lengths [..., B] (Å) of bonds [B, 2] in positions [..., N, 3] (one frame or a stack);
    minimum image along periodic directions."""
    vectors = positions[..., bonds[:, 1], :] - positions[..., bonds[:, 0], :]
    if cell is not None and pbc is not None and np.any(pbc):
        fractional = vectors @ np.linalg.inv(cell)
        fractional -= np.where(pbc, np.round(fractional), 0.0)
        vectors = fractional @ cell
    return np.linalg.norm(vectors, axis=-1)


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
              pbc: np.ndarray | None = None, forces: np.ndarray | None = None) -> CollapseCheck:
        """Check one frame: positions [N, 3] Å (and forces [N, 3], any unit, when known)."""
        bad = first_non_finite(positions, forces)
        if bad is not None:
            atom, what = bad
            return CollapseCheck(True, float("inf"), (atom, atom), float("nan"), float("nan"),
                                 what)
        lengths = bond_lengths(np.asarray(positions, dtype=float), self.bonds, cell, pbc)
        deviation = np.abs(lengths - self.reference_lengths)
        worst = int(np.argmax(deviation))
        i, j = (int(x) for x in self.bonds[worst])
        return CollapseCheck(bool(deviation[worst] > self.threshold), float(deviation[worst]),
                             (i, j), float(lengths[worst]), float(self.reference_lengths[worst]))


def trust_levels(warn: float, stop: float | None = None, name: str = "ratio"
                 ) -> tuple[float, float]:
    """(warn, stop) levels of a graded signal, checked: warn > 0, stop ≥ warn; stop defaults
    to warn. `name` is the signal's option stem in errors ('ratio': warn_ratio, stop_ratio)."""
    level = float(warn)
    top = level if stop is None else float(stop)
    if not (np.isfinite(level) and level > 0):
        raise DataError(f"warn_{name} must be a positive number, got {warn!r}")
    if not (np.isfinite(top) and top >= level):
        raise DataError(f"stop_{name} ({stop!r}) must be at least warn_{name} ({level:g})")
    return level, top


class ModelView:
    """A frame as a model file sees it: with its cell for a model trained on periodic cells
    (`"periodic": true`), else as a molecule made whole across the box along its bonds
    (perceived once, from the first frame given). The engines' calculators follow the same
    rule, so a detector sees what the model computed."""

    def __init__(self, model):
        self.periodic = model.metadata.get("periodic") is True
        self._bonds: np.ndarray | None = None

    def __call__(self, positions: np.ndarray, atomic_numbers: np.ndarray,
                 cell: np.ndarray | None, pbc: np.ndarray | None) -> tuple[np.ndarray, bool]:
        """(positions [N, 3] Å, whether the model sees them with the cell)."""
        in_cell = pbc is not None and bool(np.any(pbc))
        if not in_cell or self.periodic:
            return positions, in_cell
        if self._bonds is None:
            self._bonds = covalent_bonds(Atoms(numbers=atomic_numbers, positions=positions,
                                               cell=cell, pbc=pbc))
        return whole_positions(positions, self._bonds, np.asarray(cell, dtype=float), pbc), False


def ratio_levels(warn_ratio: float = 1.0, stop_ratio: float | None = None
                 ) -> tuple[float, float]:
    """(warn, stop) levels of the distance/radius ratio (see `trust_levels`)."""
    return trust_levels(warn_ratio, stop_ratio, "ratio")


@dataclass
class ExplorationCheck:
    status: str  # one of STATUSES
    cluster: int  # nearest cluster (−1 without reference clusters)
    ratio: float  # distance to its centroid / its radius (> 1: outside the clusters)
    # Score above the warn / the stop level. A frame that cannot be classified is neither:
    # non-finite positions and overlapping atoms are the collapse monitor's to flag.
    flagged: bool = False
    above_stop: bool = False
    bond_score: float = float("nan")  # > 1: `bond` outside its training range (NaN: none)
    bond: tuple[int, int] | None = None  # atoms of the bond that sets the bond score

    @property
    def score(self) -> float:
        """The graded signal: the larger of the ratio and the bond score (> 1: unexplored)."""
        return self.ratio if self.bond is None else max(self.ratio, self.bond_score)

    def describe(self) -> str:
        if self.status == NO_REFERENCE:
            return "no reference clusters for this system in the model file"
        if self.status == NOT_CLASSIFIED:
            return "not classified: non-finite positions or overlapping atoms"
        text = f"{self.status}: nearest cluster {self.cluster}, distance/radius {self.ratio:.3f}"
        if self.bond is not None:
            text += f", bond {self.bond[0]}-{self.bond[1]} score {self.bond_score:.3f}"
        return text


class ExplorationDetector:
    """Explored/unexplored classification with a model file's scripted `explore` method.

    Args:
        model: model file path or `LoadedModel`.
        warn_ratio: score (the larger of distance/radius and the bond score) above which a
            frame is flagged (1.0: outside the training data).
        stop_ratio: score above which a monitor's action applies (default: `warn_ratio`); at
            least `warn_ratio`.
    """

    def __init__(self, model, warn_ratio: float = 1.0, stop_ratio: float | None = None):
        from mlff_core.export.loading import LoadedModel, load_model

        self.warn_ratio, self.stop_ratio = ratio_levels(warn_ratio, stop_ratio)
        self.model = model if isinstance(model, LoadedModel) else load_model(model)
        self._view = ModelView(self.model)
        self.counts = dict.fromkeys(STATUSES, 0)  # frames checked, by status

    def check(self, positions: np.ndarray, atomic_numbers: np.ndarray,
              cell: np.ndarray | None = None, pbc: np.ndarray | None = None) -> ExplorationCheck:
        positions = np.asarray(positions, dtype=float)
        numbers = torch.as_tensor(np.asarray(atomic_numbers, dtype=np.int64))
        if not np.isfinite(positions).all():
            return self._counted(ExplorationCheck(NOT_CLASSIFIED, -1, float("nan")))
        positions, with_cell = self._view(positions, atomic_numbers, cell, pbc)
        with torch.no_grad():
            if with_cell:
                result = self.model.module.explore_periodic(
                    torch.as_tensor(positions), numbers,
                    torch.as_tensor(np.asarray(cell, dtype=float)),
                    torch.as_tensor(np.asarray(pbc, dtype=bool)))
            else:
                result = self.model.module.explore(torch.as_tensor(positions), numbers)
        cluster, ratio = int(result[0]), float(result[1])
        if cluster < 0:
            return self._counted(ExplorationCheck(NO_REFERENCE, -1, float("nan")))
        if not np.isfinite(ratio):  # e.g. two atoms on top of each other: 1/r is infinite
            return self._counted(ExplorationCheck(NOT_CLASSIFIED, -1, float("nan")))
        check = ExplorationCheck(EXPLORED, cluster, ratio)
        if len(result) >= 5 and int(result[3]) >= 0:  # files before the bond score: [2]
            check.bond_score, check.bond = float(result[2]), (int(result[3]), int(result[4]))
        score = check.score
        check.status = UNEXPLORED if score > 1.0 else EXPLORED
        check.flagged, check.above_stop = score > self.warn_ratio, score > self.stop_ratio
        return self._counted(check)

    def _counted(self, result: ExplorationCheck) -> ExplorationCheck:
        self.counts[result.status] += 1
        return result

    @property
    def explored_ratio(self) -> float:
        """Fraction of classified frames that were explored (NaN when none was classified)."""
        classified = self.counts[EXPLORED] + self.counts[UNEXPLORED]
        return self.counts[EXPLORED] / classified if classified else float("nan")



def force_deviation(forces: np.ndarray) -> np.ndarray:
    """Per-atom force deviation [N] eV/Å of committee forces [M, N, 3]:
    sqrt((1/M) Σ_k |F_i^k − F̄_i|²), the members' spread around their mean (DeePMD-kit)."""
    forces = np.asarray(forces, dtype=float)
    spread = forces - forces.mean(axis=0, keepdims=True)
    return np.sqrt((spread ** 2).sum(axis=2).mean(axis=0))


@dataclass
class DeviationCheck:
    """Outcome of one committee check: the largest per-atom force deviation and its atom."""

    deviation: float  # eV/Å (NaN: the members' forces are not finite)
    atom: int
    flagged: bool = False  # above the warn level
    above_stop: bool = False

    def describe(self) -> str:
        if not np.isfinite(self.deviation):
            return "not classified: non-finite positions or forces"
        return f"force deviation {self.deviation:.3f} eV/Å (atom {self.atom})"


class DeviationDetector:
    """Committee force deviation of a frame, graded by trust levels.

    Args:
        model: a committee model file (path or `LoadedModel`).
        warn_deviation: eV/Å above which a frame is flagged (DeePMD-kit's trust_lo; 0.05-0.15
            eV/Å are usual for molecules).
        stop_deviation: eV/Å above which a monitor's action applies (default: the warn level).

    Raises:
        MLFFError: the model file is not a committee.
    """

    def __init__(self, model, warn_deviation: float, stop_deviation: float | None = None):
        from mlff_core.errors import MLFFError
        from mlff_core.export.loading import LoadedModel, load_model

        self.warn, self.stop = trust_levels(warn_deviation, stop_deviation, "deviation")
        self.model = model if isinstance(model, LoadedModel) else load_model(model)
        if self.model.committee_size < 2:
            raise MLFFError(f"{self.model.path}: not a committee model file, so it has no force "
                            "deviation to monitor (train one with mlff train --committee M)")
        self._view = ModelView(self.model)

    def check(self, positions: np.ndarray, atomic_numbers: np.ndarray,
              cell: np.ndarray | None = None, pbc: np.ndarray | None = None) -> DeviationCheck:
        positions = np.asarray(positions, dtype=float)
        if not np.isfinite(positions).all():
            return DeviationCheck(float("nan"), -1)
        positions, with_cell = self._view(positions, atomic_numbers, cell, pbc)
        as64 = lambda x: torch.as_tensor(np.asarray(x, dtype=float))  # noqa: E731
        forces = self.model.module.committee_forces(
            as64(positions), torch.as_tensor(np.asarray(atomic_numbers, dtype=np.int64)),
            as64(cell if with_cell else np.zeros((3, 3))),
            torch.as_tensor(np.asarray(pbc, dtype=bool) if with_cell else np.zeros(3, bool)))
        per_atom = force_deviation(forces.detach().numpy())
        if not np.isfinite(per_atom).all():
            return DeviationCheck(float("nan"), -1)
        atom = int(np.argmax(per_atom))
        value = float(per_atom[atom])
        return DeviationCheck(value, atom, value > self.warn, value > self.stop)
