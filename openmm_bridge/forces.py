"""The model file as OpenMM forces: openmm-torch `TorchForce` or OpenMM 8.6's `PythonForce`.

The model file computes in Å and eV; OpenMM works in nm and kJ/mol. A small TorchScript module
built at load time converts at the boundary (positions nm → Å, box vectors nm → Å, energy
eV → kJ/mol) and carries the atomic numbers of the atoms it applies to, so the same file runs
unchanged:

    force = create_torch_force("aspirin.pt", topology=topology)      # whole system
    force = create_torch_force("aspirin.pt", atoms=ml_atoms, topology=topology)   # ML/MM
    system.addForce(force)

`add_mlff_force(system, topology, "aspirin.pt")` does the same after checking that the model
knows every element, that the topology, the System and the ML atom indices agree, and that its
periodicity matches the system's (`mlff_core.export.periodicity`): a model trained on periodic
cells needs a periodic system; a model trained on molecules runs on a non-periodic system, or on
the ML subset of a periodic one (ML/MM, e.g. a solvated ligand): the ML atoms are then made
whole across the box along their Topology bonds at every step, and the model sees them as an
isolated molecule; an ML atom that is a virtual site of the System (openmm-ml's hydrogen link
atom on a cut ML–MM bond) is moved with its ML parent atom. (At system creation OpenMM has no
positions to check that a whole periodic system would be far enough from its images, so a
molecular model on a whole periodic system is refused.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional

import numpy as np
import openmm
import torch
from torch import Tensor, nn

from mlff_core.data.molecules import bond_tree_levels
from mlff_core.errors import MLFFError, SpeciesError
from mlff_core.export.loading import LoadedModel, load_model
from mlff_core.export.periodicity import model_periodicity
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
        whole_levels: for a molecular model on the ML subset of a periodic system: the bond
            tree of the ML atoms level by level ((children, parents) index lists into the M
            atoms, `mlff_core.data.molecules.bond_tree_levels`); each child is moved to the
            minimum image of its parent, then the model runs without the box.
    """

    def __init__(self, model: torch.jit.ScriptModule, atomic_numbers: Sequence[int],
                 indices: Sequence[int] | None, periodic: bool,
                 whole_levels: Sequence[tuple[Sequence[int], Sequence[int]]] = ()):
        super().__init__()
        # the levels flattened: level k is entries bounds[k]:bounds[k + 1] (TorchScript-friendly)
        sizes = [len(c) for c, _ in whole_levels]
        self.register_buffer("tree_children", torch.tensor(
            [i for c, _ in whole_levels for i in c], dtype=torch.long))
        self.register_buffer("tree_parents", torch.tensor(
            [i for _, p in whole_levels for i in p], dtype=torch.long))
        self.register_buffer("tree_bounds", torch.tensor(
            [sum(sizes[:k]) for k in range(len(sizes) + 1)], dtype=torch.long))
        self.make_whole = len(whole_levels) > 0
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
        if self.make_whole and boxvectors is not None:
            positions = self._whole(positions, boxvectors.to(positions.dtype) * self.length_scale)
        if self.periodic and boxvectors is not None:
            cell = boxvectors.to(positions.dtype) * self.length_scale
            pbc = torch.ones(3, dtype=torch.bool, device=positions.device)
        else:
            cell = torch.zeros(3, 3, dtype=positions.dtype, device=positions.device)
            pbc = torch.zeros(3, dtype=torch.bool, device=positions.device)
        energy = self.model(positions, self.atomic_numbers, cell, pbc)
        return energy * self.energy_scale

    def _whole(self, positions: Tensor, box: Tensor) -> Tensor:
        """Each bonded child at the minimum image of its parent (OpenMM's reduced box: a along
        x, b in the xy plane), level by level from the roots of the bond tree."""
        bounds: list[int] = self.tree_bounds.tolist()
        for k in range(len(bounds) - 1):
            children = self.tree_children[bounds[k]:bounds[k + 1]]
            parents = self.tree_parents[bounds[k]:bounds[k + 1]]
            delta = positions[children] - positions[parents]
            delta = delta - torch.round(delta[:, 2:3] / box[2, 2]) * box[2]
            delta = delta - torch.round(delta[:, 1:2] / box[1, 1]) * box[1]
            delta = delta - torch.round(delta[:, 0:1] / box[0, 0]) * box[0]
            positions = positions.index_copy(0, children, positions[parents] + delta)
        return positions


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


def _force_geometry(model: LoadedModel, periodic: bool | None, atoms: Sequence[int] | None,
                    topology: openmm.app.Topology | None,
                    system: openmm.System | None = None) -> tuple[bool, list]:
    """(pass box vectors to the model, bond-tree levels for making the ML atoms whole) for a
    force on a system that is periodic or not (`periodic`; None: as the model was trained);
    `system` gives the virtual sites among the ML atoms (see `ml_bond_tree`)."""
    trained = model_periodicity(model.metadata)
    system_periodic = periodic if periodic is not None else bool(trained)
    if not system_periodic or trained is not False:
        return system_periodic, []
    # a molecular model on a periodic system: only its ML subset, made whole (check_compatible)
    if atoms is None or topology is None:
        raise MLFFError(f"model {model.path.name} was trained on molecules (no periodic cell) "
                        "but this system is periodic; a molecular model runs on the ML subset "
                        "of a periodic system (pass atoms= and topology=), or use a model "
                        "trained on periodic data")
    return False, ml_bond_tree(topology, atoms, system)


def virtual_site_bonds(system: openmm.System | None, atoms: Sequence[int]) -> list:
    """(site, parent) particle pairs tying each ML atom that is a virtual site of `system` to
    its first parent particle among the ML atoms.

    openmm-ml's createMixedSystem caps each cut ML–MM bond with a hydrogen link atom: a
    massless `LocalCoordinatesSite` on (ML atom, MM atom), appended to the System and, with no
    bond, to the Topology it passes to addForces, and listed among the ML atoms. OpenMM places
    the site from its parents, so it lies next to its ML atom; this pair puts it in the bond
    tree, so that making the ML atoms whole moves it with that atom."""
    if system is None:
        return []
    chosen = {int(atom) for atom in atoms}
    pairs = []
    for atom in atoms:
        atom = int(atom)
        if atom >= system.getNumParticles() or not system.isVirtualSite(atom):
            continue
        site = system.getVirtualSite(atom)
        parents = [site.getParticle(k) for k in range(site.getNumParticles())]
        parent = next((p for p in parents if p in chosen and p != atom), None)
        if parent is not None:
            pairs.append((atom, parent))
    return pairs


def ml_bond_tree(topology: openmm.app.Topology, atoms: Sequence[int],
                 system: openmm.System | None = None) -> list:
    """Bond-tree levels of the ML atoms (indices among them) from the Topology's bonds and,
    when `system` is given, each virtual site among them tied to its ML parent atom
    (`virtual_site_bonds`: openmm-ml's link atoms)."""
    position = {int(atom): k for k, atom in enumerate(atoms)}
    bonds = [(position[b.atom1.index], position[b.atom2.index]) for b in topology.bonds()
             if b.atom1.index in position and b.atom2.index in position]
    bonds += [(position[site], position[parent])
              for site, parent in virtual_site_bonds(system, atoms)]
    if len(atoms) > 1 and not bonds:
        raise MLFFError("the Topology has no bonds among the ML atoms; they are needed to keep "
                        "the ML molecule whole across the periodic box (add bonds, e.g. "
                        "CONECT records, or Topology.createStandardBonds())")
    return [(c.tolist(), p.tolist()) for c, p in bond_tree_levels(len(atoms), np.array(bonds))]


def create_torch_force(model: str | os.PathLike | LoadedModel, atoms: Sequence[int] | None = None,
                       topology: openmm.app.Topology | None = None,
                       atomic_numbers: Sequence[int] | None = None,
                       periodic: bool | None = None,
                       cuda_graphs: bool | None = None,
                       system: openmm.System | None = None) -> openmm.Force:
    """An openmm-torch `TorchForce` running the model file.

    Args:
        model: model file path or `LoadedModel`.
        atoms: indices of the ML atoms (ML/MM); None for the whole system.
        topology: gives the elements; alternatively `atomic_numbers` of the ML atoms.
        periodic: use periodic box vectors (default: the model's training data periodicity).
        cuda_graphs: request CUDA graphs on the CUDA platform; default: only when the model
            file says it supports them (ours build a neighbour list of varying size on every
            call, which CUDA graphs cannot capture).
        system: the System the force is for, when ML atoms are virtual sites (openmm-ml's
            link atoms): a molecular model on a periodic system then moves each with its ML
            parent atom when it makes the ML atoms whole.
    """
    loaded = _loaded(model)
    numbers = list(atomic_numbers) if atomic_numbers is not None else \
        atomic_numbers_of(topology, atoms, loaded)
    loaded.check_species(numbers)
    model_periodic, levels = _force_geometry(loaded, periodic, atoms, topology, system)
    module = torch.jit.script(OpenMMModule(loaded.module, numbers, atoms, model_periodic,
                                           levels))
    force = _torch_force_class()(module)
    force.setUsesPeriodicBoundaryConditions(model_periodic or bool(levels))
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

    def __init__(self, loaded: LoadedModel, atomic_numbers: Sequence[int], periodic: bool,
                 whole_levels: list):
        self.module = torch.jit.script(OpenMMModule(loaded.module, atomic_numbers, None,
                                                    periodic, whole_levels))
        self.periodic = periodic or bool(whole_levels)

    def __call__(self, state: openmm.State):
        positions = state.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer)
        # float64 in: the model forms interatomic vectors in it, then casts to its own dtype
        pos = torch.as_tensor(np.asarray(positions), dtype=torch.float64).requires_grad_(True)
        box = None
        if self.periodic:
            vectors = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(
                openmm.unit.nanometer)
            box = torch.as_tensor(np.asarray(vectors), dtype=torch.float64)
        energy = self.module(pos, box)
        (gradient,) = torch.autograd.grad(energy, pos)
        return float(energy.detach()), -gradient.double().numpy()


def create_python_force(model: str | os.PathLike | LoadedModel,
                        atoms: Sequence[int] | None = None,
                        topology: openmm.app.Topology | None = None,
                        atomic_numbers: Sequence[int] | None = None,
                        periodic: bool | None = None,
                        system: openmm.System | None = None) -> openmm.Force:
    """The same model through OpenMM's `PythonForce` (the route openmm-ml takes for its
    built-in models): OpenMM hands the computation only the ML particles. `system` as in
    `create_torch_force`."""
    loaded = _loaded(model)
    numbers = list(atomic_numbers) if atomic_numbers is not None else \
        atomic_numbers_of(topology, atoms, loaded)
    loaded.check_species(numbers)
    model_periodic, levels = _force_geometry(loaded, periodic, atoms, topology, system)
    force = openmm.PythonForce(_PythonForceComputation(loaded, numbers, model_periodic, levels))
    if atoms is not None:
        force.setParticles(list(atoms))
    force.setUsesPeriodicBoundaryConditions(model_periodic or bool(levels))
    return force


def check_compatible(model: LoadedModel, system: openmm.System,
                     topology: openmm.app.Topology | None, atoms: Sequence[int] | None) -> None:
    """Raise before a simulation starts if the model cannot run this system.

    Checks: the Topology has as many atoms as the System has particles; the ML atom indices
    are whole numbers, distinct and in range; every ML atom's element is known by the model;
    the model's periodicity (from its training data) fits the system's (see the module
    docstring).
    """
    n_particles = system.getNumParticles()
    if topology is not None and topology.getNumAtoms() != n_particles:
        raise MLFFError(f"the Topology has {topology.getNumAtoms()} atoms but the System has "
                        f"{n_particles} particles; they must describe the same atoms")
    if atoms is not None:
        validate_atom_indices(atoms, n_particles)
    if topology is not None:
        model.check_species(atomic_numbers_of(topology, atoms, model))
    trained = model_periodicity(model.metadata)
    periodic = system.usesPeriodicBoundaryConditions() or (
        topology is not None and topology.getPeriodicBoxVectors() is not None)
    if trained is True and not periodic:
        raise MLFFError(f"model {model.path.name} was trained on periodic systems but this "
                        "system is not periodic; give the topology box vectors "
                        "(setPeriodicBoxVectors) or use a model trained on molecules")
    if trained is False and periodic:
        _force_geometry(model, True, atoms, topology, system)  # the ML subset, with bonds


def validate_atom_indices(atoms: Sequence[int], n_particles: int) -> None:
    """One clear error for ML atom indices that are not distinct particle indices."""
    indices = list(atoms)
    if not indices:
        raise MLFFError("atoms= is empty; give the indices of the ML atoms")
    if any(isinstance(i, bool) or int(i) != i for i in indices):
        raise MLFFError("atoms= must hold whole particle indices")
    bad = [int(i) for i in indices if not 0 <= int(i) < n_particles]
    if bad:
        raise MLFFError(f"atoms= holds {bad[0]}, outside the System's particle indices "
                        f"0..{n_particles - 1}")
    if len(set(map(int, indices))) != len(indices):
        repeated = next(i for i in indices if indices.count(i) > 1)
        raise MLFFError(f"atoms= lists particle {repeated} more than once")


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
    force = create(loaded, atoms=atoms, topology=topology, periodic=periodic, system=system)
    force.setForceGroup(force_group)
    system.addForce(force)
    return force


__all__ = ["BACKENDS", "EV_TO_KJ_PER_MOL", "OpenMMModule", "SpeciesError", "add_mlff_force",
           "check_compatible", "create_python_force", "create_torch_force"]
