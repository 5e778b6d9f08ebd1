"""Langevin MD in OpenMM with a model file and the monitors on (`mlff md --engine openmm`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
from ase import Atoms

from mlff_core.data.molecules import covalent_bonds
from mlff_core.engines import ensemble
from mlff_core.errors import MLFFError
from mlff_core.export.loading import load_model
from mlff_core.fileio import atomic_output
from mlff_core.monitors import stop_outcome
from mlff_core.progress import Advance, no_progress
from openmm_bridge.forces import add_mlff_force
from openmm_bridge.reporters import (
    CollapseReporter,
    DeviationReporter,
    ExplorationReporter,
    MaxForceReporter,
    run_simulation,
)


def topology_from_atoms(atoms: Atoms, bonds: np.ndarray | None = None) -> app.Topology:
    """An OpenMM Topology for ASE atoms: one residue, bonds from covalent radii (or given),
    periodic box vectors when the atoms are periodic."""
    topology = app.Topology()
    chain = topology.addChain()
    residue = topology.addResidue("MOL", chain)
    members = []
    counts: dict[str, int] = {}
    for symbol in atoms.get_chemical_symbols():
        counts[symbol] = counts.get(symbol, 0) + 1
        members.append(topology.addAtom(f"{symbol}{counts[symbol]}",
                                        app.Element.getBySymbol(symbol), residue))
    for i, j in (covalent_bonds(atoms) if bonds is None else bonds):
        topology.addBond(members[int(i)], members[int(j)])
    if atoms.pbc.any():
        topology.setPeriodicBoxVectors(atoms.cell.array * 0.1 * unit.nanometer)
    return topology


def read_structure(path: str | os.PathLike) -> tuple[app.Topology, np.ndarray]:
    """Topology and positions (Å) from a PDB, or from any file `mlff_core.data` reads (xyz,
    extxyz, npz, traj; first frame).

    A PDB keeps its residues and bonds when OpenMM reads every atom of it; PDBs whose atom
    names repeat within a residue (as ASE writes them) make OpenMM merge atoms, so those are
    read atom by atom instead and get bonds from covalent radii.
    """
    import warnings

    import ase.io

    path = Path(path)
    if not path.exists():
        raise MLFFError(f"{path}: structure file not found")
    if path.suffix.lower() == ".pdb":
        atoms = ase.io.read(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicate-atom warnings: handled below
            pdb = app.PDBFile(str(path))
        if pdb.topology.getNumAtoms() == len(atoms) and pdb.topology.getNumBonds() > 0:
            positions = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
            return pdb.topology, positions
        return topology_from_atoms(atoms), atoms.positions
    from mlff_core.data.molecules import structure_from_file

    structure = structure_from_file(str(path))
    return topology_from_atoms(structure.atoms, structure.bonds), structure.atoms.positions


def run_openmm_md(model: str | os.PathLike, structure: str | os.PathLike, output_dir: str, *,
                  temperature: float = 300.0, timestep: float = 0.5, steps: int = 1000,
                  report_interval: int = 100, friction: float = 1.0,
                  bond_threshold: float = 0.5, action: str = "stop", seed: int = 0,
                  advance: Advance = no_progress, backend: str = "torch",
                  platform: str | None = None, warn_ratio: float = 1.0,
                  stop_ratio: float | None = None, warn_deviation: float | None = None,
                  stop_deviation: float | None = None, **ignored: Any) -> dict[str, Any]:
    """Langevin MD with the model file; returns a summary (also written as summary.json).

    Writes to `output_dir`: start.pdb, trajectory.dcd, state.csv (StateDataReporter),
    collapse.log, collapse.xyz, exploration.log, unexplored.xyz, forces.log, last_good.pdb (on
    stop).

    Args:
        temperature: K; timestep: fs; friction: 1/ps (0: NVE, velocity Verlet); bond_threshold: Å.
        action: what the collapse monitor does ('flag', 'stop', 'raise').
        warn_ratio, stop_ratio: the exploration monitor flags frames whose score (the larger
            of distance/radius and the bond score) exceeds warn_ratio and, with stop_ratio,
            stops the run above it.
        warn_deviation, stop_deviation: eV/Å; with a committee model file, the deviation
            monitor (deviation.log, deviation.xyz) flags frames whose committee force
            deviation exceeds warn_deviation and, with stop_deviation, stops above it.
        backend: 'torch' (openmm-torch) or 'python' (PythonForce).
        platform: OpenMM platform name (default: OpenMM's fastest available).
        ignored: options meant for other engines.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_model(model)
    topology, positions = read_structure(structure)
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    if topology.getPeriodicBoxVectors() is not None:
        system.setDefaultPeriodicBoxVectors(*topology.getPeriodicBoxVectors())
    add_mlff_force(system, topology, loaded, backend=backend)
    system.addForce(openmm.CMMotionRemover())
    if friction > 0:
        integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin,
                                                     friction / unit.picosecond,
                                                     timestep * unit.femtosecond)
        integrator.setRandomNumberSeed(seed)
    else:
        integrator = openmm.VerletIntegrator(timestep * unit.femtosecond)
    args = () if platform is None else (_platform(platform),)
    try:
        simulation = app.Simulation(topology, system, integrator, *args)
    except openmm.OpenMMException as exc:
        raise MLFFError(f"OpenMM platform {platform or 'default'} cannot run this system: "
                        f"{str(exc).strip().splitlines()[0]}") from None
    simulation.context.setPositions(positions * unit.angstrom)
    simulation.context.setVelocitiesToTemperature(temperature * unit.kelvin, seed)
    with atomic_output(out / "start.pdb", "w") as fh:
        app.PDBFile.writeFile(topology, positions * unit.angstrom, fh)

    collapse = CollapseReporter(out / "collapse.log", report_interval, bond_threshold, action,
                                flagged_path=out / "collapse.xyz",
                                last_good_path=out / "last_good.pdb")
    exploration = ExplorationReporter(out / "exploration.log", report_interval, loaded,
                                      action="flag" if stop_ratio is None else "stop",
                                      save_frames=out / "unexplored.xyz",
                                      last_good_path=out / "last_good.pdb",
                                      warn_ratio=warn_ratio, stop_ratio=stop_ratio)
    forces = MaxForceReporter(out / "forces.log", report_interval)
    monitors = [collapse, exploration]
    if warn_deviation is not None:
        monitors.append(DeviationReporter(
            out / "deviation.log", report_interval, loaded, warn_deviation, stop_deviation,
            action="flag" if stop_deviation is None else "stop",
            save_frames=out / "deviation.xyz", last_good_path=out / "last_good.pdb"))
    simulation.reporters += [
        app.DCDReporter(str(out / "trajectory.dcd"), report_interval),
        app.StateDataReporter(str(out / "state.csv"), report_interval, step=True, time=True,
                              potentialEnergy=True, kineticEnergy=True, totalEnergy=True,
                              temperature=True, speed=True),
        *monitors, forces, _ProgressReporter(report_interval, advance),
    ]
    started = time.perf_counter()
    advance(0)  # stepping starts: a failure from here on keeps the partial output
    outcome = run_simulation(simulation, steps)
    if not outcome["stopped"]:  # a monitor stopped the run at its very last step
        outcome.update(stop_outcome(*(m.monitor for m in monitors)))
    seconds = time.perf_counter() - started
    for reporter in (*monitors, forces):
        reporter.close()
    summary = {
        "engine": "openmm", "platform": simulation.context.getPlatform().getName(),
        "backend": backend, "model": str(model), "structure": str(structure),
        "trajectory": str(out / "trajectory.dcd"), "topology": str(out / "start.pdb"),
        "atoms": topology.getNumAtoms(), "temperature_K": temperature, "timestep_fs": timestep,
        "report_interval": report_interval, "frame_interval_ps": timestep * report_interval / 1e3,
        "first_frame_ps": timestep * report_interval / 1e3,  # reporters skip step 0
        "ensemble": ensemble(friction, temperature),
        "steps_requested": steps, **outcome, "seconds": seconds,
        "ns_per_day": outcome["steps_run"] * timestep * 1e-6 / (seconds / 86400.0)
        if seconds > 0 else None,
        "collapse": collapse.monitor.summary(),
        "exploration": exploration.monitor.summary(),
        "deviation": monitors[2].monitor.summary() if len(monitors) > 2 else None,
        "exploration_counts": dict(exploration.counts),
        "explored_ratio": exploration.explored_ratio,
        "max_force_kJ_mol_nm": max(forces.values) if forces.values else None,
        "files": sorted(p.name for p in out.iterdir()),
    }
    with atomic_output(out / "summary.json", "w") as fh:
        json.dump(summary, fh, indent=2, default=str)
    return summary


def _platform(name: str) -> openmm.Platform:
    """An OpenMM platform by name, or one clear error listing those this machine has."""
    names = [openmm.Platform.getPlatform(i).getName()
             for i in range(openmm.Platform.getNumPlatforms())]
    if name not in names:
        raise MLFFError(f"OpenMM platform {name!r} is not available here; this OpenMM has "
                        f"{', '.join(names)}")
    return openmm.Platform.getPlatformByName(name)


class _ProgressReporter:
    """Advances a progress bar every `interval` steps."""

    def __init__(self, interval: int, advance: Advance):
        self._interval, self._advance = interval, advance

    def describeNextReport(self, simulation):  # noqa: N802
        return {"steps": self._interval - simulation.currentStep % self._interval,
                "periodic": None, "include": []}

    def report(self, simulation, state):
        self._advance(self._interval)
