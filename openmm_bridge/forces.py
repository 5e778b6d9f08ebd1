"""The model file as OpenMM forces: openmm-torch `TorchForce` or OpenMM 8.6's `PythonForce`.

The model file computes in Å and eV; OpenMM works in nm and kJ/mol. A small TorchScript module
built at load time converts at the boundary (positions nm → Å, box vectors nm → Å, energy
eV → kJ/mol) and carries the atomic numbers of the atoms it applies to, so the same file runs
unchanged:

    force = create_torch_force("aspirin.pt", topology=topology)      # whole system
    force = create_torch_force("aspirin.pt", atoms=ml_atoms, topology=topology)   # ML/MM
    system.addForce(force)

`add_mlff_force(system, topology, "aspirin.pt")` does the same after checking that the model
knows every element and that its periodicity matches the system's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional

import numpy as np
import openmm
import torch
from torch import Tensor, nn

from mlff_core.errors import MLFFError, SpeciesError
from mlff_core.export.loading import LoadedModel, load_model
from mlff_core.units import KJ_PER_MOL, NANOMETER

#: kJ/mol per eV.
EV_TO_KJ_PER_MOL = 1.0 / KJ_PER_MOL

BACKENDS = ("torch", "python")


class OpenMMModule(nn.Module):
    """TorchScript adapter: OpenMM's forward(positions[, boxvectors]) → model file → kJ/mol.

    Args:
        model: the model file's scripted module.
        atomic_numbers: [M] atoms the model sees (the whole system or the ML subset).
        indices: [M] their indices among OpenMM's positions, or None when the force is given
            exactly those particles (whole system, or PythonForce particle subsets).
        periodic: pass box vectors to the model.
    """

    def __init__(self, model: torch.jit.ScriptModule, atomic_numbers: Sequence[int],
                 indices: Sequence[int] | None, periodic: bool):
        super().__init__()
        self.model = model
        self.register_buffer("atomic_numbers", torch.tensor(list(atomic_numbers),
                                                            dtype=torch.long))
        self.subset = indices is not None
        self.register_buffer("indices", torch.tensor(list(indices) if indices is not None
                                                     else [], dtype=torch.long))
        self.periodic = periodic
        self.length_scale = NANOMETER
        self.energy_scale = EV_TO_KJ_PER_MOL

    def forward(self, positions: Tensor, boxvectors: Optional[Tensor] = None) -> Tensor:  # noqa: UP045 (TorchScript)
        if self.subset:
            positions = positions[self.indices]
        positions = positions * self.length_scale
        if self.periodic and boxvectors is not None:
            cell = boxvectors.to(positions.dtype) * self.length_scale
            pbc = torch.ones(3, dtype=torch.bool, device=positions.device)
        else:
            cell = torch.zeros(3, 3, dtype=positions.dtype, device=positions.device)
            pbc = torch.zeros(3, dtype=torch.bool, device=positions.device)
        energy = self.model(positions, self.atomic_numbers, cell, pbc)
        return energy * self.energy_scale


def _loaded(model) -> LoadedModel:
    return model if isinstance(model, LoadedModel) else load_model(model)


def atomic_numbers_of(topology: openmm.app.Topology | None, atoms: Sequence[int] | None,
                      model: LoadedModel) -> list[int]:
    """Atomic numbers of the ML atoms: from the topology, or from the model's single training
    system when no topology is given."""
    if topology is not None:
        everything = list(topology.atoms())
        chosen = everything if atoms is None else [everything[i] for i in atoms]
        numbers = []
        for atom in chosen:
            if atom.element is None:
                raise MLFFError(f"topology atom {atom.index} ({atom.name}) has no element")
            numbers.append(atom.element.atomic_number)
        return numbers
    systems = (model.metadata.get("exploration") or {}).get("systems", [])
    if len(systems) != 1 or atoms is not None:
        raise MLFFError("pass topology= (or atomic_numbers=) to tell the model which elements "
                        "the particles are")
    return list(systems[0]["atomic_numbers"])


def _periodicity(model: LoadedModel, periodic: bool | None) -> bool:
    if periodic is not None:
        return periodic
    trained = model.metadata.get("periodic")
    return bool(trained) if trained is not None else False


def create_torch_force(model: str | os.PathLike | LoadedModel, atoms: Sequence[int] | None = None,
                       topology: openmm.app.Topology | None = None,
                       atomic_numbers: Sequence[int] | None = None,
                       periodic: bool | None = None,
                       cuda_graphs: bool | None = None) -> openmm.Force:
    """An openmm-torch `TorchForce` running the model file.

    Args:
        model: model file path or `LoadedModel`.
        atoms: indices of the ML atoms (ML/MM); None for the whole system.
        topology: gives the elements; alternatively `atomic_numbers` of the ML atoms.
        periodic: use periodic box vectors (default: the model's training data periodicity).
        cuda_graphs: request CUDA graphs on the CUDA platform; default: only when the model
            file says it supports them (ours build a neighbour list of varying size on every
            call, which CUDA graphs cannot capture).
    """
    loaded = _loaded(model)
    numbers = list(atomic_numbers) if atomic_numbers is not None else \
        atomic_numbers_of(topology, atoms, loaded)
    loaded.check_species(numbers)
    is_periodic = _periodicity(loaded, periodic)
    module = torch.jit.script(OpenMMModule(loaded.module, numbers, atoms, is_periodic))
    force = _torch_force_class()(module)
    force.setUsesPeriodicBoundaryConditions(is_periodic)
    allowed = bool(loaded.metadata.get("cuda_graphs", False))
    if cuda_graphs if cuda_graphs is not None else allowed:
        force.setProperty("useCUDAGraphs", "true")
    return force


def load_torch_plugins() -> None:
    """Register openmm-torch's kernels even when `openmm` was imported before `torch`.

    OpenMM loads its plugins when it is imported; openmm-torch's need libnvrtc.so.12, which
    `import torch` loads, so in that import order they fail silently and every Context with a
    TorchForce raises "does not support all required kernels". Retrying them once torch is
    loaded registers the kernels.
    """
    import os

    failures = [f for f in openmm.Platform.getPluginLoadFailures() if "OpenMMTorch" in f]
    for failure in failures:
        path = failure.split("Error loading library ", 1)[-1].split(":", 1)[0]
        if os.path.exists(path) and "OpenCL" not in os.path.basename(path):
            try:
                openmm.Platform.loadPluginLibrary(path)
            except Exception:  # noqa: BLE001 (e.g. CUDA plugins on machines without CUDA)
                continue


def _torch_force_class():
    """openmmtorch.TorchForce (kernels registered), imported without its 'simtk.openmm is
    deprecated' log line (openmmtorch 1.5 still imports simtk.openmm)."""
    import logging

    load_torch_plugins()
    logging.disable(logging.WARNING)
    try:
        from openmmtorch import TorchForce
    finally:
        logging.disable(logging.NOTSET)
    return TorchForce


class _PythonForceComputation:
    """The computation of a PythonForce: State → (energy kJ/mol, forces kJ/mol/nm)."""

    def __init__(self, loaded: LoadedModel, atomic_numbers: Sequence[int], periodic: bool):
        self.module = torch.jit.script(OpenMMModule(loaded.module, atomic_numbers, None,
                                                    periodic))
        self.dtype = loaded.dtype
        self.periodic = periodic

    def __call__(self, state: openmm.State):
        positions = state.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer)
        pos = torch.as_tensor(np.asarray(positions), dtype=self.dtype).requires_grad_(True)
        box = None
        if self.periodic:
            vectors = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(
                openmm.unit.nanometer)
            box = torch.as_tensor(np.asarray(vectors), dtype=self.dtype)
        energy = self.module(pos, box)
        (gradient,) = torch.autograd.grad(energy, pos)
        return float(energy.detach()), -gradient.double().numpy()


def create_python_force(model: str | os.PathLike | LoadedModel,
                        atoms: Sequence[int] | None = None,
                        topology: openmm.app.Topology | None = None,
                        atomic_numbers: Sequence[int] | None = None,
                        periodic: bool | None = None) -> openmm.Force:
    """The same model through OpenMM's `PythonForce` (the route openmm-ml takes for its
    built-in models): OpenMM hands the computation only the ML particles."""
    loaded = _loaded(model)
    numbers = list(atomic_numbers) if atomic_numbers is not None else \
        atomic_numbers_of(topology, atoms, loaded)
    loaded.check_species(numbers)
    is_periodic = _periodicity(loaded, periodic)
    force = openmm.PythonForce(_PythonForceComputation(loaded, numbers, is_periodic))
    if atoms is not None:
        force.setParticles(list(atoms))
    force.setUsesPeriodicBoundaryConditions(is_periodic)
    return force


def check_compatible(model: LoadedModel, system: openmm.System,
                     topology: openmm.app.Topology | None, atoms: Sequence[int] | None) -> None:
    """Raise before a simulation starts if the model cannot run this system.

    Checks: every ML atom's element is known by the model; the model's periodicity (from its
    training data) matches the system's.
    """
    if topology is not None:
        model.check_species(atomic_numbers_of(topology, atoms, model))
    trained_periodic = model.metadata.get("periodic")
    system_periodic = system.usesPeriodicBoundaryConditions() or (
        topology is not None and topology.getPeriodicBoxVectors() is not None)
    if trained_periodic is not None and bool(trained_periodic) != bool(system_periodic):
        if trained_periodic:
            raise MLFFError(f"model {model.path.name} was trained on periodic systems but this "
                            "system is not periodic; give the topology box vectors "
                            "(setPeriodicBoxVectors) or use a model trained on molecules")
        raise MLFFError(f"model {model.path.name} was trained on molecules (no periodic cell) "
                        "but this system is periodic; use a model trained on periodic data")


def add_mlff_force(system: openmm.System, topology: openmm.app.Topology,
                   model: str | os.PathLike | LoadedModel, atoms: Sequence[int] | None = None,
                   backend: str = "torch", force_group: int = 0) -> openmm.Force:
    """Check compatibility, create the force (TorchForce or PythonForce) and add it."""
    if backend not in BACKENDS:
        raise MLFFError(f"unknown backend {backend!r}; use 'torch' or 'python'")
    loaded = _loaded(model)
    check_compatible(loaded, system, topology, atoms)
    periodic = system.usesPeriodicBoundaryConditions() or \
        topology.getPeriodicBoxVectors() is not None
    create = create_torch_force if backend == "torch" else create_python_force
    force = create(loaded, atoms=atoms, topology=topology, periodic=periodic)
    force.setForceGroup(force_group)
    system.addForce(force)
    return force


__all__ = ["BACKENDS", "EV_TO_KJ_PER_MOL", "OpenMMModule", "SpeciesError", "add_mlff_force",
           "check_compatible", "create_python_force", "create_torch_force"]
