"""Fine-grained force metrics (JCP 159, 035101, eqs. 1-13): global, per element, per
conformation cluster, mass-normalised, max error, and the ratio of bad points (RBP).

For frames n = 1..N with per-atom errors e_iα = F̂_iα − F_iα and relative atomic masses u_i:

    F_mae      = mean_n  mean_{i,α} |e_iα|          F_max_err   = mean_n  max_{i,α} |e_iα|
    FNM_mae    = mean_n  mean_{i,α} |e_iα| / u_i    FNM_max_err = mean_n  max_{i,α} |e_iα| / u_i

u_i is the standard relative atomic mass (H 1.008, C 12.011; `fnm_masses="standard"`, the
default) or, as the JCP paper's Table II implies, the integer mass (the relative atomic mass
rounded: H 1, C 12, N 14, O 16; `fnm_masses="integer"`). Documents record which.

Per element S the inner mean/max runs over the atoms of element S only; per cluster k the outer
mean runs over the frames of cluster k only. RBP(k) is the fraction of frames of cluster k whose
own F_mae exceeds the global F_mae. Energy MAE and RMSE are reported beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mlff_core.data.frames import Frames
from mlff_core.errors import DataError
from mlff_core.units import energy_conversion, force_conversion

#: The masses u_i of the FNM metrics: standard relative atomic masses, or rounded to integers.
FNM_MASSES = ("standard", "integer")

#: The energy unit that goes with each force unit in reports.
ENERGY_UNIT_FOR = {"kcal/mol/A": "kcal/mol", "eV/A": "eV", "meV/A": "meV",
                   "kJ/mol/nm": "kJ/mol", "Ha/Bohr": "Ha"}


@dataclass
class FrameErrors:
    """Per-frame statistics every metric is built from (eV/Å, eV).

    Attributes:
        abs_errors: [F, N, 3] |F̂ − F|.
        masses: [N] relative atomic masses u_i.
        energy_errors: [F] Ê − E, or None when either side has no energies.
    """

    abs_errors: np.ndarray
    masses: np.ndarray
    energy_errors: np.ndarray | None

    @property
    def frame_mae(self) -> np.ndarray:
        """[F] mean_{i,α} |e| of each frame."""
        return self.abs_errors.mean(axis=(1, 2))

    @property
    def frame_max(self) -> np.ndarray:
        """[F] max_{i,α} |e| of each frame."""
        return self.abs_errors.max(axis=(1, 2))

    def _summary(self, frames: np.ndarray, atoms: np.ndarray | slice = slice(None)) -> dict:
        errors = self.abs_errors[frames][:, atoms]  # [F', N', 3]
        normalised = errors / self.masses[atoms][None, :, None]
        result = {
            "F_mae": float(errors.mean(axis=(1, 2)).mean()),
            "F_max_err": float(errors.max(axis=(1, 2)).mean()),
            "FNM_mae": float(normalised.mean(axis=(1, 2)).mean()),
            "FNM_max_err": float(normalised.max(axis=(1, 2)).mean()),
        }
        return result


def frame_errors(reference: Frames, predicted_forces: np.ndarray,
                 predicted_energies: np.ndarray | None = None) -> FrameErrors:
    """Errors of predictions against labelled reference frames.

    Args:
        reference: frames with forces (eV/Å) and, for energy metrics, energies (eV).
        predicted_forces: [F, N, 3] eV/Å.
        predicted_energies: [F] eV, optional.

    Raises:
        DataError: missing labels, or predictions whose shape does not match the frames.
    """
    if reference.forces is None:
        raise DataError("reference frames have no forces to compare with", reference.source)
    predicted_forces = np.asarray(predicted_forces, dtype=np.float64)
    if predicted_forces.shape != reference.forces.shape:
        raise DataError(
            f"predicted forces have shape {predicted_forces.shape} but the data have "
            f"{reference.forces.shape} (frames, atoms, 3)", reference.source)
    if not np.isfinite(predicted_forces).all():
        frame = int(np.argmax(~np.isfinite(predicted_forces).all(axis=(1, 2))))
        raise DataError(f"predicted forces are NaN or infinite at frame {frame}"
                        f"{_closest_pair(reference.positions[frame])}", reference.source)
    energy_errors = None
    if predicted_energies is not None and reference.energies is not None:
        predicted_energies = np.asarray(predicted_energies, dtype=np.float64).reshape(-1)
        if predicted_energies.shape != reference.energies.shape:
            raise DataError(
                f"{predicted_energies.size} predicted energies for {reference.n_frames} frames",
                reference.source)
        energy_errors = predicted_energies - reference.energies
    return FrameErrors(np.abs(predicted_forces - reference.forces), reference.masses,
                       energy_errors)


def _closest_pair(positions: np.ndarray) -> str:
    """', where atoms i and j are d Å apart' when two atoms (nearly) overlap, else ''."""
    from mlff_core.models.potential import OVERLAP_DISTANCE

    if len(positions) < 2:
        return ""
    distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    distances[np.diag_indices(len(positions))] = np.inf
    i, j = np.unravel_index(np.argmin(distances), distances.shape)
    if distances[i, j] >= OVERLAP_DISTANCE:
        return ""
    return (f", where atoms {min(i, j)} and {max(i, j)} are {distances[i, j]:.3f} Å apart "
            "(overlapping atoms are outside any model's domain)")


def force_metrics(reference: Frames, predicted_forces: np.ndarray,
                  predicted_energies: np.ndarray | None = None,
                  cluster_labels: np.ndarray | None = None,
                  unit: str = "kcal/mol/A", fnm_masses: str = "standard") -> dict[str, Any]:
    """All force metrics as the `metrics.json` document.

    Args:
        reference: labelled frames (one system).
        predicted_forces: [F, N, 3] eV/Å.
        predicted_energies: [F] eV (energy MAE/RMSE are reported when given).
        cluster_labels: [F] integer conformation cluster per frame (per-cluster metrics and RBP);
            negative labels mark frames outside every cluster ("unexplored"), kept in the
            global and per-element metrics but in no cluster.
        unit: force unit of the report (kcal/mol/A, eV/A, meV/A, ...); FNM metrics are in this
            unit per amu, energies in the matching energy unit.
        fnm_masses: 'standard' (relative atomic masses) or 'integer' (rounded, as JCP Table II).

    Returns:
        {"force_unit", "energy_unit", "global": {...}, "per_element": {symbol: {...}},
         "per_cluster": {"k": {..., "RBP", "n_frames"}}, "unexplored": {...}} (per_cluster
        only with labels; unexplored only when some labels are negative).
    """
    errors = frame_errors(reference, predicted_forces, predicted_energies)
    if fnm_masses not in FNM_MASSES:
        raise DataError(f"unknown FNM masses {fnm_masses!r}; use one of {', '.join(FNM_MASSES)}")
    if fnm_masses == "integer":
        errors.masses = np.round(errors.masses)
    to_force = force_conversion(unit)
    energy_unit = ENERGY_UNIT_FOR.get(unit, "eV")
    to_energy = energy_conversion(energy_unit)
    all_frames = np.arange(reference.n_frames)

    def scaled(summary: dict, frames: np.ndarray) -> dict:
        out = {key: value * to_force for key, value in summary.items()}
        if errors.energy_errors is not None:
            e = errors.energy_errors[frames]
            out["E_mae"] = float(np.abs(e).mean()) * to_energy
            out["E_rmse"] = float(np.sqrt((e ** 2).mean())) * to_energy
        out["n_frames"] = int(len(frames))
        return out

    document: dict[str, Any] = {
        "force_unit": unit,
        "energy_unit": energy_unit,
        "fnm_masses": fnm_masses,
        "global": scaled(errors._summary(all_frames), all_frames),
        "per_element": {},
    }
    for symbol in reference.elements:
        atoms = np.array([s == symbol for s in reference.symbols])
        summary = {k: v * to_force for k, v in errors._summary(all_frames, atoms).items()}
        summary["n_atoms"] = int(atoms.sum())
        document["per_element"][symbol] = summary

    if cluster_labels is not None:
        labels = np.asarray(cluster_labels).reshape(-1)
        if labels.shape != (reference.n_frames,):
            raise DataError(f"{labels.size} cluster labels for {reference.n_frames} frames")
        if not np.issubdtype(labels.dtype, np.integer):
            if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
                raise DataError("cluster labels must be integers")
            labels = labels.astype(np.int64)
        global_mae = errors.frame_mae.mean()
        clusters = {}
        for k in sorted(int(x) for x in np.unique(labels) if x >= 0):
            members = np.flatnonzero(labels == k)
            summary = scaled(errors._summary(members), members)
            summary["RBP"] = float((errors.frame_mae[members] > global_mae).mean())
            clusters[str(k)] = summary
        document["per_cluster"] = clusters
        outside = np.flatnonzero(labels < 0)
        document["global"]["n_unexplored"] = int(len(outside))
        if len(outside):
            document["unexplored"] = scaled(errors._summary(outside), outside)
    return document
