"""Predictions for metrics: from a model file (batched), any ASE calculator, or a file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from mlff_core.data.frames import Frames
from mlff_core.errors import DataError
from mlff_core.export.loading import LoadedModel
from mlff_core.fileio import atomic_output
from mlff_core.models.neighbors import neighbor_list
from mlff_core.progress import Advance, no_progress


def predict_with_model(model: LoadedModel, frames: Frames, batch_size: int = 64,
                       advance: Advance = no_progress) -> tuple[np.ndarray, np.ndarray]:
    """Energies [F] eV and forces [F, N, 3] eV/Å from a model file.

    Molecules are evaluated `batch_size` frames at a time: the frames become one disjoint graph
    through the file's `forward_graph` (per-atom energies summed per frame; forces by autograd
    of the total, which splits exactly because the frames do not interact). Periodic frames go
    through `forward` one at a time. `advance` is called once per frame.
    """
    model.check_species(frames.atomic_numbers)
    dtype, device, n_atoms = model.dtype, model.device, frames.n_atoms
    energies = np.empty(frames.n_frames)
    forces = np.empty_like(frames.positions)
    numbers = torch.as_tensor(frames.atomic_numbers, device=device)
    if frames.is_periodic:
        pbc = torch.as_tensor(frames.pbc, device=device)
        for f in range(frames.n_frames):
            pos = torch.as_tensor(frames.positions[f], dtype=dtype, device=device)
            pos.requires_grad_(True)
            cell = torch.as_tensor(frames.cell[f], dtype=dtype, device=device)
            energy = model.module(pos, numbers, cell, pbc)
            (gradient,) = torch.autograd.grad(energy, pos)
            energies[f], forces[f] = float(energy.detach()), -gradient.cpu().numpy()
            advance(1)
        return energies, forces

    no_cell = torch.zeros(3, 3, dtype=torch.float64)
    no_pbc = torch.zeros(3, dtype=torch.bool)
    for start in range(0, frames.n_frames, batch_size):
        stop = min(start + batch_size, frames.n_frames)
        edges = []
        for k, f in enumerate(range(start, stop)):
            edge_index, _ = neighbor_list(torch.as_tensor(frames.positions[f]), no_cell, no_pbc,
                                          model.cutoff)
            edges.append(edge_index + k * n_atoms)
        count = stop - start
        pos = torch.as_tensor(frames.positions[start:stop].reshape(-1, 3), dtype=dtype,
                              device=device).requires_grad_(True)
        atomic = model.module.forward_graph(pos, numbers.repeat(count),
                                            torch.cat(edges, dim=1).to(device),
                                            torch.tensor(count * n_atoms))
        (gradient,) = torch.autograd.grad(atomic.sum(), pos)
        energies[start:stop] = atomic.detach().reshape(count, n_atoms).sum(1).double().cpu()
        forces[start:stop] = -gradient.reshape(count, n_atoms, 3).double().cpu().numpy()
        advance(count)
    return energies, forces


def predict_with_calculator(calculator, frames: Frames,
                            advance: Advance = no_progress) -> tuple[np.ndarray, np.ndarray]:
    """Energies [F] eV and forces [F, N, 3] eV/Å from any ASE calculator."""
    energies = np.empty(frames.n_frames)
    forces = np.empty_like(frames.positions)
    for f in range(frames.n_frames):
        atoms = frames.to_atoms(f)
        atoms.calc = calculator
        energies[f] = atoms.get_potential_energy()
        forces[f] = atoms.get_forces()
        advance(1)
    return energies, forces


def read_predictions(path: str | os.PathLike) -> tuple[np.ndarray | None, np.ndarray]:
    """(energies [F] eV or None, forces [F, N, 3] eV/Å) from a predictions npz."""
    path = Path(path)
    if not path.is_file():
        raise DataError("predictions file not found", path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"not a readable npz file ({exc})", path) from None
    if "forces" not in data:
        raise DataError(f"predictions need a 'forces' array [frames, atoms, 3] in eV/Å "
                        f"(found {', '.join(sorted(data)) or 'nothing'})", path)
    forces = np.asarray(data["forces"], dtype=np.float64)
    if forces.ndim != 3 or forces.shape[-1] != 3:
        raise DataError(f"'forces' must have shape [frames, atoms, 3], got {forces.shape}", path)
    energies = data.get("energies")
    return (None if energies is None else np.asarray(energies, dtype=np.float64).reshape(-1),
            forces)


def write_predictions(path: str | os.PathLike, energies: np.ndarray, forces: np.ndarray) -> None:
    """Predictions npz: `energies` [F] eV, `forces` [F, N, 3] eV/Å."""
    with atomic_output(path) as fh:
        np.savez_compressed(fh, energies=energies, forces=forces)
