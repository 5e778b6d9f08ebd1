"""Simulation metrics of MD trajectories ("Forces are not enough", MDsim; JCP 159, 035101).

- stability: frames before the first collapsed frame. Molecules: a bond off its reference
  length by more than the threshold (0.5 Å by default). Periodic liquids and materials, where
  bonds may break and form: MDsim's RDF criterion, the first window of frames (1 ps) whose
  element-pair RDFs differ from the reference by more than a threshold (`rdf_stability`);
- h(r) as MDsim defines it: the distances of every atom pair of every frame pooled into one
  histogram of 500 bins on (0, 10] Å, density-normalised (∫ h dr = 1), and its MAE to a
  reference h(r) = r_max · mean over bins |h − h_ref| = ∫ |h − h_ref| dr (0 to 2);
- RDF g_ab(r) per element pair for periodic systems (MDsim: 500 bins on [0, 6) Å), and the
  RDF MAE per pair, r_max · mean |g − g_ref|;
- diffusivity per element from the mean squared displacement of unwrapped coordinates (centre
  of mass removed): D = slope / 6 of a straight-line fit of MSD(t) over a stated lag window;
- RMSD (to the first frame, after optimal superposition) and per-atom RMSF, via mdtraj;
- contact map as the JCP paper draws it: the mean distance of every atom pair, and its MAE to
  the reference data's; and the fraction of frames in which each pair is closer than a cutoff;
- per-frame max |F|, potential energy trace, explored ratio and mean |F| in explored vs
  unexplored frames.
Units: Å, ps, eV, eV/Å; diffusivity cm²/s.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mlff_core.data.frames import Frames
from mlff_core.metrics.descriptors import element_pairs, pair_rdf
from mlff_core.monitors.detectors import CollapseDetector

HR_BINS, HR_MAX = 500, 10.0  # MDsim's h(r)
RDF_BINS, RDF_MAX = 500, 6.0  # MDsim's RDF
RDF_WINDOW_PS, RDF_THRESHOLD = 1.0, 3.0  # MDsim's water criterion: 1 ps windows, MAE above 3
RDF_WINDOW_FRAMES = 10  # when the time between frames is not known (MDsim water: 0.1 ps)
ANGSTROM2_PER_PS_IN_CM2_PER_S = 1e-4  # 1 Å²/ps = 1e-16 cm² / 1e-12 s


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
    """h(r) as MDsim computes it: bin centres [bins] Å and the density [bins] 1/Å of the
    distances of every atom pair of every frame, pooled into one histogram on [0, r_max]
    (distances beyond r_max are left out; ∫ h dr = 1 over the range)."""
    i, j = np.triu_indices(frames.n_atoms, k=1)
    edges = np.linspace(0.0, r_max, bins + 1)
    counts = np.zeros(bins)
    for f in range(frames.n_frames):
        distances = np.linalg.norm(frames.positions[f, i] - frames.positions[f, j], axis=1)
        counts += np.histogram(distances, edges)[0]
    total = counts.sum()
    density = counts / (total * (r_max / bins)) if total else counts
    return 0.5 * (edges[1:] + edges[:-1]), density


def hr_mae(h: np.ndarray, h_reference: np.ndarray, r_max: float = HR_MAX) -> float:
    """MDsim's h(r) MAE of two curves on the same bins over (0, r_max]: r_max · mean |Δh| =
    ∫ |Δh| dr, dimensionless, 0 (identical) to 2 (no overlap)."""
    return float(r_max * np.abs(np.asarray(h) - np.asarray(h_reference)).mean())


def frame_rdfs(frames: Frames, r_max: float = RDF_MAX, bins: int = RDF_BINS
               ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Per-frame g_ab(r) of a periodic trajectory: bin centres [bins] Å, pair names ("H-O"),
    and g [F, P, bins] (`mlff_core.metrics.descriptors.pair_rdf`: n_ab / (N_a ρ_b 4πr²Δr), the
    normalisation of MDsim, whose like pairs also divide by N_a²)."""
    from ase.data import chemical_symbols

    species = sorted(set(frames.atomic_numbers.tolist()))
    pairs = element_pairs(species)
    numbers = torch.as_tensor(frames.atomic_numbers)
    pbc = torch.as_tensor(frames.pbc)
    g = np.stack([pair_rdf(torch.as_tensor(frames.positions[f]), numbers,
                           torch.as_tensor(frames.cell[f]), pbc, species, r_max, bins)
                  .numpy().reshape(len(pairs), bins) for f in range(frames.n_frames)])
    names = [f"{chemical_symbols[a]}-{chemical_symbols[b]}" for a, b in pairs]
    return (np.arange(bins) + 0.5) * r_max / bins, names, g


def radial_distribution(frames: Frames, r_max: float = RDF_MAX,
                        bins: int = RDF_BINS) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Frame-averaged g_ab(r) per element pair of a periodic trajectory.

    Returns bin centres [bins] Å and {"H-O": g [bins], ...}.
    """
    centres, names, g = frame_rdfs(frames, r_max, bins)
    mean = g.mean(axis=0)
    return centres, {name: mean[k] for k, name in enumerate(names)}


def rdf_mae(curves: dict[str, np.ndarray], reference: dict[str, np.ndarray],
            r_max: float = RDF_MAX) -> dict[str, float]:
    """MDsim's RDF MAE per element pair found in both: r_max · mean over bins |g − g_ref|."""
    return {pair: float(r_max * np.abs(np.asarray(g) - np.asarray(reference[pair])).mean())
            for pair, g in curves.items() if pair in reference}


def rdf_stability(frames: Frames, reference: dict[str, np.ndarray], window: int,
                  threshold: float = RDF_THRESHOLD, r_max: float = RDF_MAX,
                  bins: int = RDF_BINS) -> dict[str, Any]:
    """MDsim's stability criterion for periodic liquids and materials: the run is unstable from
    the first frame i at which the RDFs of frames i … i + window − 1 differ from `reference`
    (pair → g [bins]) by an RDF MAE above `threshold` for any pair (MDsim water: 1 ps windows,
    threshold 3). Windows overlap, so a sudden failure is found up to window − 1 frames before
    the frame where it happens, as in MDsim; a run shorter than a window is one window.

    Returns:
        {"frames_before_collapse", "collapsed", "first_collapse_frame", "n_frames",
         "window_frames", "threshold", "max_rdf_mae" [windows]}
    """
    if window < 1:
        raise ValueError(f"the RDF window must hold at least one frame, got {window}")
    _, names, g = frame_rdfs(frames, r_max, bins)
    keep = [k for k, name in enumerate(names) if name in reference]
    if not keep:
        from mlff_core.errors import DataError

        raise DataError(f"no element pair of the trajectory ({', '.join(names)}) is in the "
                        "reference RDFs", frames.source)
    ref = np.stack([np.asarray(reference[names[k]]) for k in keep])
    window = min(window, frames.n_frames)  # a run shorter than a window is one window
    sums = np.concatenate([np.zeros((1, len(keep), bins)), np.cumsum(g[:, keep], axis=0)])
    starts = np.arange(frames.n_frames - window + 1)
    window_g = (sums[starts + window] - sums[starts]) / window  # [W, P, bins]
    worst = r_max * np.abs(window_g - ref[None]).mean(axis=2).max(axis=1)  # [W]
    above = np.flatnonzero(worst > threshold)
    first = int(above[0]) if len(above) else None
    return {"frames_before_collapse": frames.n_frames if first is None else first,
            "collapsed": first is not None, "first_collapse_frame": first,
            "n_frames": frames.n_frames, "window_frames": int(window),
            "threshold": float(threshold), "max_rdf_mae": worst.tolist()}


def unwrapped_positions(frames: Frames) -> np.ndarray:
    """[F, N, 3] Å: positions of a periodic trajectory made continuous across the box, each
    frame's displacement from the previous one taken as its minimum image (right while no atom
    moves half a box length between frames); molecules are returned as they are."""
    positions = np.asarray(frames.positions, dtype=float)
    if not frames.is_periodic:
        return positions.copy()
    out = np.empty_like(positions)
    out[0] = positions[0]
    pbc = np.asarray(frames.pbc, dtype=bool)
    for f in range(1, len(positions)):
        cell = frames.cell[f]
        # pinv: a non-periodic axis may have a zero cell vector
        step = (positions[f] - positions[f - 1]) @ np.linalg.pinv(cell)
        step -= np.where(pbc, np.round(step), 0.0)
        out[f] = out[f - 1] + step @ cell
    return out


def mean_squared_displacement(positions: np.ndarray) -> np.ndarray:
    """MSD [F] (Å²) at lags 0 … F − 1 of positions [F, N, 3], averaged over atoms and over every
    time origin (the FFT algorithm of nMoldyn: MSD(m) = S1(m) − 2 S2(m), S2 the position
    autocorrelation)."""
    x = np.asarray(positions, dtype=float)
    n_frames = len(x)
    squared = (x ** 2).sum(axis=2)  # [F, N]
    spectrum = np.fft.rfft(x, n=2 * n_frames, axis=0)
    autocorrelation = np.fft.irfft(spectrum * spectrum.conj(), axis=0)[:n_frames].sum(axis=2)
    counts = n_frames - np.arange(n_frames)
    s2 = autocorrelation / counts[:, None]
    padded = np.concatenate([squared, np.zeros((1, x.shape[1]))])
    running = 2.0 * squared.sum(axis=0)
    s1 = np.empty((n_frames, x.shape[1]))
    for m in range(n_frames):
        running = running - padded[m - 1] - padded[n_frames - m]
        s1[m] = running / (n_frames - m)
    return (s1 - 2.0 * s2).mean(axis=1)


def diffusivity(frames: Frames, frame_interval_ps: float,
                fit_window: tuple[float, float] = (0.1, 0.5)) -> dict[str, Any]:
    """Self-diffusion coefficient per element, D = slope / 6 of MSD(t) (Einstein relation),
    from unwrapped coordinates with the centre of mass (mass-weighted) removed.

    Args:
        frame_interval_ps: time between frames, ps.
        fit_window: the lags fitted, as fractions of the run's length (default 10 % to 50 %:
            past the ballistic start, before the few-origin tail).

    Returns:
        {"unit": "cm^2/s", "fit_window_ps": [t0, t1], "per_element": {"O": D, ...}}

    Raises:
        DataError: fewer than 3 lags in the window.
    """
    from ase.data import atomic_masses, chemical_symbols

    from mlff_core.errors import DataError

    positions = unwrapped_positions(frames)
    masses = atomic_masses[frames.atomic_numbers]
    centre = (positions * masses[None, :, None]).sum(axis=1) / masses.sum()
    positions = positions - centre[:, None, :]
    lags = np.arange(frames.n_frames)
    first = int(np.ceil(fit_window[0] * (frames.n_frames - 1)))
    last = int(np.floor(fit_window[1] * (frames.n_frames - 1)))
    if last - first + 1 < 3:
        raise DataError(f"{frames.n_frames} frames are too few to fit a diffusivity over "
                        f"{fit_window[0]:.0%}-{fit_window[1]:.0%} of the run", frames.source)
    times = lags[first:last + 1] * frame_interval_ps
    result: dict[str, Any] = {"unit": "cm^2/s", "fit_window_ps": [float(times[0]),
                                                                  float(times[-1])],
                              "per_element": {}}
    for z in sorted(set(frames.atomic_numbers.tolist())):
        msd = mean_squared_displacement(positions[:, frames.atomic_numbers == z])
        slope = np.polyfit(times, msd[first:last + 1], 1)[0]  # Å²/ps
        result["per_element"][chemical_symbols[z]] = float(
            slope / 6.0 * ANGSTROM2_PER_PS_IN_CM2_PER_S)
    return result


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


def distance_map(frames: Frames) -> np.ndarray:
    """[N, N] mean over frames of each pairwise distance r_ij (Å): the contact map as the JCP
    paper (159, 035101) draws it."""
    positions = np.asarray(frames.positions, dtype=float)
    total = np.zeros((frames.n_atoms, frames.n_atoms))
    for frame in positions:
        total += np.linalg.norm(frame[:, None] - frame[None], axis=-1)
    return total / max(frames.n_frames, 1)


def distance_map_mae(distances: np.ndarray, reference: np.ndarray) -> float:
    """Mean over atom pairs i < j of |r̄_ij − r̄_ij,ref| (Å) of two distance maps."""
    i, j = np.triu_indices(len(distances), k=1)
    return float(np.abs(distances[i, j] - reference[i, j]).mean())


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
