"""`MLFFCalculator`: an mlff-plugins model file as an ASE calculator.

    from ase_bridge import MLFFCalculator
    atoms.calc = MLFFCalculator("aspirin.pt", device="cpu")

Energies in eV, forces in eV/Å (−∂E/∂x by autograd), stress in eV/Å³ for periodic cells
((1/V) ∂E/∂ε with a symmetric strain ε applied to positions and cell), per-atom energies.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from mlff_core.export.loading import LoadedModel, load_model


class MLFFCalculator(Calculator):
    """ASE calculator for a model file.

    Args:
        model: path of the model file, or a `LoadedModel`.
        device: 'cpu', 'cuda' or 'cuda:N'.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(self, model: str | os.PathLike | LoadedModel, device: str = "cpu", **kwargs):
        super().__init__(**kwargs)
        self.model = model if isinstance(model, LoadedModel) else load_model(model, device)
        self.device = torch.device(device)
        self._dtype = self.model.dtype

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self.model.check_species(atoms.numbers)
        periodic = bool(atoms.pbc.any())
        if "stress" in properties and not atoms.pbc.all():
            raise PropertyNotImplementedError("stress needs a cell periodic in all directions")

        as_tensor = lambda x: torch.as_tensor(x, dtype=self._dtype, device=self.device)  # noqa: E731
        positions = as_tensor(atoms.positions).requires_grad_(True)
        cell = as_tensor(atoms.cell.array if periodic else np.zeros((3, 3)))
        numbers = torch.as_tensor(atoms.numbers, dtype=torch.long, device=self.device)
        pbc = torch.as_tensor(atoms.pbc, device=self.device)
        strain = torch.zeros(3, 3, dtype=self._dtype, device=self.device, requires_grad=True)
        symmetric = 0.5 * (strain + strain.T)
        strained_positions = positions + positions @ symmetric
        strained_cell = cell + cell @ symmetric

        energy = self.model.module(strained_positions, numbers, strained_cell, pbc)
        gradients = torch.autograd.grad(energy, [positions, strain], allow_unused=True)
        self.results["energy"] = float(energy.detach())
        self.results["free_energy"] = self.results["energy"]
        self.results["forces"] = -gradients[0].detach().cpu().double().numpy()
        if periodic and atoms.pbc.all() and gradients[1] is not None:
            virial = gradients[1].detach().cpu().double().numpy()
            stress = virial / atoms.get_volume()
            self.results["stress"] = stress.flat[[0, 4, 8, 5, 2, 1]]
        if "energies" in properties:
            self.results["energies"] = self._atomic_energies(atoms)

    def _atomic_energies(self, atoms) -> np.ndarray:
        """Per-atom energies [N] eV: forward_graph on the atoms plus their periodic images out
        to the model's receptive field (what LAMMPS does with ghost atoms)."""
        from mlff_core.models.ghosts import ghost_graph

        positions, numbers, edge_index, _ = ghost_graph(atoms, self.model.cutoff,
                                                        self.model.num_interactions)
        with torch.no_grad():
            energies = self.model.module.forward_graph(
                torch.as_tensor(positions, dtype=self._dtype, device=self.device),
                torch.as_tensor(numbers, device=self.device),
                torch.as_tensor(edge_index, device=self.device), torch.tensor(len(atoms)))
        return energies.double().cpu().numpy()
