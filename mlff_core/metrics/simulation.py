"""Simulation metrics of MD trajectories ("Forces are not enough", MDsim; JCP 159, 035101).

- stability: frames before the first collapsed frame (a bond off its reference length by more
  than the threshold, 0.5 Å by default);
- h(r): the distribution of all interatomic distances of each frame (MDsim: 500 bins on
  [0, 10) Å, density-normalised so that Σ h Δr = 1), averaged over frames, and its MAE to a
  reference h(r) = mean over bins of |h − h_ref| (1/Å);
- RDF g_ab(r) per element pair for periodic systems;
- RMSD (to the first frame, after optimal superposition) and per-atom RMSF, via mdtraj;
- contact map: fraction of frames in which each atom pair is closer than a cutoff (mdtraj);
- per-frame max |F|, potential energy trace, explored ratio and mean |F| in explored vs
  unexplored frames.
Units: Å, eV, eV/Å.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mlff_core.data.frames import Frames
from mlff_core.metrics.descriptors import element_pairs, pair_rdf
from mlff_core.monitors.detectors import CollapseDetector

HR_BINS, HR_MAX = 500, 10.0


def stability(frames: Frames, threshold: float = 0.5, bonds: np.ndarray | None = None,
              reference: Frames | None = None) -> dict[str, Any]:
    """Frames before collapse.

    Args:
        threshold: Å.
        bonds: [B, 2] bonded pairs (engine topology); default from covalent radii of the
            reference structure.
        reference: frames whose first frame gives the reference bond lengths (default the
            trajectory's own first frame); with several frames, the mean length is used.

    Returns:
        {"frames_before_collapse", "collapsed", "first_collapse_frame", "n_frames",
         "max_deviation" [F] (Å), "threshold"}
    """
    ref = reference if reference is not None else frames[:1]
    detector = CollapseDetector.from_atoms(ref.to_atoms(0), threshold, bonds)
    if ref.n_frames > 1:
        from mlff_core.monitors.detectors import bond_lengths

        detector.reference_lengths = np.mean(
            [bond_lengths(ref.positions[f], detector.bonds,
                          None if ref.cell is None else ref.cell[f], ref.pbc)
             for f in range(ref.n_frames)], axis=0)
    deviations, first = [], None
    for f in range(frames.n_frames):
        check = detector.check(frames.positions[f], None if frames.cell is None else
                               frames.cell[f], frames.pbc)
        deviations.append(check.max_deviation)
        if check.collapsed and first is None:
            first = f
    return {"frames_before_collapse": frames.n_frames if first is None else first,
            "collapsed": first is not None, "first_collapse_frame": first,
            "n_frames": frames.n_frames, "max_deviation": deviations, "threshold": threshold}


def distance_distribution(frames: Frames, bins: int = HR_BINS,
                          r_max: float = HR_MAX) -> tuple[np.ndarray, np.ndarray]:
    """h(r): bin centres [bins] Å and the frame-averaged density [bins] 1/Å."""
    n = frames.n_atoms
    i, j = np.triu_indices(n, k=1)
    edges = np.linspace(0.0, r_max, bins + 1)
    total = np.zeros(bins)
    for f in range(frames.n_frames):
        distances = np.linalg.norm(frames.positions[f, i] - frames.positions[f, j], axis=1)
        histogram, _ = np.histogram(distances, edges, density=True)
        total += np.nan_to_num(histogram)
    return 0.5 * (edges[1:] + edges[:-1]), total / frames.n_frames


def hr_mae(h: np.ndarray, h_reference: np.ndarray) -> float:
    """MAE between two h(r) curves on the same bins (1/Å)."""
    return float(np.abs(np.asarray(h) - np.asarray(h_reference)).mean())


def radial_distribution(frames: Frames, r_max: float = 6.0,
                        bins: int = 120) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Frame-averaged g_ab(r) per element pair of a periodic trajectory.

    Returns bin centres [bins] Å and {"O-H": g [bins], ...}.
    """
    from ase.data import chemical_symbols

    species = sorted(set(frames.atomic_numbers.tolist()))
    numbers = torch.as_tensor(frames.atomic_numbers)
    pbc = torch.as_tensor(frames.pbc)
    total = None
    for f in range(frames.n_frames):
        g = pair_rdf(torch.as_tensor(frames.positions[f]), numbers,
                     torch.as_tensor(frames.cell[f]), pbc, species, r_max, bins).numpy()
        total = g if total is None else total + g
    total /= frames.n_frames
    centres = (np.arange(bins) + 0.5) * r_max / bins
    curves = {f"{chemical_symbols[a]}-{chemical_symbols[b]}": total[k * bins:(k + 1) * bins]
              for k, (a, b) in enumerate(element_pairs(species))}
    return centres, curves


def _mdtraj(frames: Frames):
    import mdtraj
    from ase.data import chemical_symbols

    topology = mdtraj.Topology()
    chain = topology.add_chain()
    residue = topology.add_residue("MOL", chain)
    for z in frames.atomic_numbers:
        symbol = chemical_symbols[z]
        topology.add_atom(symbol, mdtraj.element.get_by_symbol(symbol), residue)
    return mdtraj.Trajectory(frames.positions / 10.0, topology)


def rmsd_rmsf(frames: Frames) -> tuple[np.ndarray, np.ndarray]:
    """RMSD [F] to the first frame and RMSF [N] per atom, Å, after optimal superposition."""
    import mdtraj

    trajectory = _mdtraj(frames)
    rmsd = mdtraj.rmsd(trajectory, trajectory, 0) * 10.0
    trajectory.superpose(trajectory, 0)
    rmsf = mdtraj.rmsf(trajectory, None) * 10.0
    return rmsd, rmsf


def contact_map(frames: Frames, cutoff: float = 3.0) -> np.ndarray:
    """[N, N] fraction of frames in which atoms i and j are closer than `cutoff` Å."""
    import mdtraj

    n = frames.n_atoms
    i, j = np.triu_indices(n, k=1)
    distances = mdtraj.compute_distances(_mdtraj(frames), np.stack([i, j], axis=1)) * 10.0
    fraction = (distances < cutoff).mean(axis=0)
    result = np.eye(n)
    result[i, j] = result[j, i] = fraction
    return result


def force_statistics(forces: np.ndarray) -> np.ndarray:
    """Per-frame max |F| [F] (eV/Å) from forces [F, N, 3]."""
    return np.linalg.norm(forces, axis=-1).max(axis=1)


def exploration_statistics(ratios: np.ndarray, forces: np.ndarray | None = None
                           ) -> dict[str, Any]:
    """Explored ratio and mean |F| (eV/Å) of explored vs unexplored frames.

    Args:
        ratios: [F] distance / cluster radius per frame (NaN: no reference clusters).
        forces: [F, N, 3] eV/Å, optional.
    """
    ratios = np.asarray(ratios, dtype=float)
    known = np.isfinite(ratios)
    result: dict[str, Any] = {"frames": int(len(ratios)), "classified": int(known.sum())}
    if not known.any():
        result["explored_ratio"] = None
        return result
    explored = known & (ratios <= 1.0)
    unexplored = known & (ratios > 1.0)
    result["explored_ratio"] = float(explored.sum() / known.sum())
    if forces is not None:
        norms = np.linalg.norm(forces, axis=-1).mean(axis=1)
        result["mean_force_explored"] = float(norms[explored].mean()) if explored.any() else None
        result["mean_force_unexplored"] = (float(norms[unexplored].mean())
                                           if unexplored.any() else None)
    return result
