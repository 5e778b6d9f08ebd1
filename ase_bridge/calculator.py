"""`MLFFCalculator`: an mlff-plugins model file as an ASE calculator.

    from ase_bridge import MLFFCalculator
    atoms.calc = MLFFCalculator("aspirin.pt", device="cpu")

Energies in eV, forces in eV/Å (−∂E/∂x by autograd), stress in eV/Å³ for periodic cells
((1/V) ∂E/∂ε with a symmetric strain ε applied to positions and cell), per-atom energies (of
model files that have them: not a TorchScript module imported without `atomic_energies`).

Periodicity follows `mlff_core.export.periodicity`: a model trained on molecules runs on
periodic atoms only when, made whole, they stay one cutoff away from their own images (then
it sees them without the cell); a model trained on periodic cells refuses non-periodic atoms.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from mlff_core.data.molecules import covalent_bonds, whole_positions
from mlff_core.export.loading import LoadedModel, load_model
from mlff_core.export.periodicity import check_isolated, model_periodicity, refuse_non_periodic
from mlff_core.runtime import torch_device


class MLFFCalculator(Calculator):
    """ASE calculator for a model file.

    Args:
        model: path of the model file, or a `LoadedModel`.
        device: 'cpu', 'cuda' or 'cuda:N'.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(self, model: str | os.PathLike | LoadedModel, device: str = "cpu", **kwargs):
        super().__init__(**kwargs)
        self.device = torch_device(device)
        self.model = model if isinstance(model, LoadedModel) else load_model(model, device)
        self._trained_periodic = model_periodicity(self.model.metadata)
        self._bonds: dict[bytes, np.ndarray] = {}  # per system, to make molecules whole

    def _model_input(self, atoms) -> tuple[np.ndarray, bool]:
        """Positions [N, 3] Å the model sees, and whether it sees them with the cell."""
        in_cell = bool(atoms.pbc.any())
        name = self.model.path.name
        if self._trained_periodic is True and not in_cell:
            raise refuse_non_periodic(name)
        if self._trained_periodic is False and in_cell:
            key = atoms.numbers.tobytes()
            if key not in self._bonds:
                self._bonds[key] = covalent_bonds(atoms)
            whole = whole_positions(atoms.positions, self._bonds[key], atoms.cell.array,
                                    atoms.pbc)
            check_isolated(whole, atoms.cell.array, atoms.pbc, self.model.cutoff, name)
            return whole, False
        return atoms.positions, in_cell

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self.model.check_species(atoms.numbers)
        if "energies" in properties and not self.model.per_atom_energies:
            from mlff_core.models.external import NO_PER_ATOM_ENERGIES

            raise PropertyNotImplementedError(f"model {self.model.path.name} "
                                              f"{NO_PER_ATOM_ENERGIES}")
        if "stress" in properties and not atoms.pbc.all():
            raise PropertyNotImplementedError("stress needs a cell periodic in all directions")
        model_positions, periodic = self._model_input(atoms)

        # float64 in: the model forms interatomic vectors in it, then casts to its own dtype
        as_tensor = lambda x: torch.as_tensor(x, dtype=torch.float64, device=self.device)  # noqa: E731
        positions = as_tensor(model_positions).requires_grad_(True)
        cell = as_tensor(atoms.cell.array if periodic else np.zeros((3, 3)))
        numbers = torch.as_tensor(atoms.numbers, dtype=torch.long, device=self.device)
        pbc = torch.as_tensor(atoms.pbc & periodic, device=self.device)
        strain = torch.zeros(3, 3, dtype=torch.float64, device=self.device, requires_grad=True)
        symmetric = 0.5 * (strain + strain.T)
        strained_positions = positions + positions @ symmetric
        strained_cell = cell + cell @ symmetric

        energy = self.model.module(strained_positions, numbers, strained_cell, pbc)
        gradients = torch.autograd.grad(energy, [positions, strain], allow_unused=True)
        self.results["energy"] = float(energy.detach())
        self.results["free_energy"] = self.results["energy"]
        self.results["forces"] = -gradients[0].detach().cpu().double().numpy()
        if atoms.pbc.all() and gradients[1] is not None:
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
                torch.as_tensor(positions, dtype=torch.float64, device=self.device),
                torch.as_tensor(numbers, device=self.device),
                torch.as_tensor(edge_index, device=self.device), torch.tensor(len(atoms)))
        return energies.double().cpu().numpy()
