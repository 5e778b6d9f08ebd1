"""OpenMM speed with a model file: ns/day and engine overhead (step time / raw model time).

For aspirin (21 atoms) and a ~1k-atom periodic water box, each of: openmm-torch TorchForce,
OpenMM PythonForce (both on the CPU platform, float32 model) and the ASE calculator with ASE's
VelocityVerlet. The raw time is the model file's own forward + backward (energy and forces) in
the same process; overhead = engine step time / raw time. All in one run.

    python benchmarks/openmm_speed.py [--steps 200] [--platforms CPU CUDA]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit
import torch
from ase import units as ase_units
from ase.md.verlet import VelocityVerlet
from timing import median_seconds

from ase_bridge import MLFFCalculator
from mlff_core.data.molecules import named_molecule, water_box
from mlff_core.export import load_model, model_metadata, save_model_file
from mlff_core.models import build_potential, hyperparameters
from openmm_bridge import create_python_force, create_torch_force

TIMESTEP_FS = 0.5


def raw_seconds(model, atoms, repeats: int) -> float:
    periodic = bool(atoms.pbc.any())
    pos = torch.tensor(atoms.positions, dtype=model.dtype)
    cell = torch.tensor(atoms.cell.array if periodic else np.zeros((3, 3)), dtype=model.dtype)
    args = (torch.tensor(atoms.numbers), cell, torch.tensor([periodic] * 3))

    def call():
        p = pos.clone().requires_grad_(True)
        torch.autograd.grad(model.module(p, *args), p)

    return median_seconds(call, repeats, warmup=3)


def openmm_seconds(force, atoms, steps: int, platform: str, properties=None) -> float:
    system = openmm.System()
    for mass in atoms.get_masses():
        system.addParticle(mass)
    if atoms.pbc.any():
        system.setDefaultPeriodicBoxVectors(*(atoms.cell.array * 0.1))
    system.addForce(force)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond,
                                                 TIMESTEP_FS * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform),
                             properties or {})
    context.setPositions(atoms.positions * 0.1)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    integrator.step(5)
    context.getState(getEnergy=True)
    start = time.perf_counter()
    integrator.step(steps)
    context.getState(getEnergy=True)  # wait for the work to finish
    return (time.perf_counter() - start) / steps


def ase_seconds(model_path, atoms, steps: int) -> float:
    atoms = atoms.copy()
    atoms.calc = MLFFCalculator(model_path)
    dynamics = VelocityVerlet(atoms, timestep=TIMESTEP_FS * ase_units.fs)
    dynamics.run(3)
    start = time.perf_counter()
    dynamics.run(steps)
    return (time.perf_counter() - start) / steps


def ns_per_day(seconds_per_step: float) -> float:
    return TIMESTEP_FS * 1e-6 / (seconds_per_step / 86400.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--arch", default="painn")
    parser.add_argument("--platforms", nargs="+", default=["CPU"])
    args = parser.parse_args()
    systems = {"aspirin (21 atoms)": named_molecule("aspirin").atoms,
               "water (999 atoms)": water_box(333).atoms}
    print(f"{args.arch}, float32, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} cores, {TIMESTEP_FS} fs steps")
    print(f"{'system':<20}{'engine':<34}{'ms/step':>10}{'ns/day':>10}{'overhead':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        potential = build_potential(args.arch, [1, 6, 8])
        path = save_model_file(potential, Path(tmp) / "m.pt",
                               model_metadata(potential, args.arch, hyperparameters(args.arch)))
        model = load_model(path)
        for name, atoms in systems.items():
            steps = args.steps if len(atoms) < 100 else max(10, args.steps // 10)
            raw = raw_seconds(model, atoms, 20 if len(atoms) < 100 else 5)
            periodic = bool(atoms.pbc.any())
            numbers = atoms.numbers.tolist()
            rows = []
            for platform in args.platforms:
                rows.append((f"TorchForce ({platform})", openmm_seconds(
                    create_torch_force(model, atomic_numbers=numbers, periodic=periodic),
                    atoms, steps, platform)))
                if platform == "CUDA":
                    rows.append(("TorchForce (CUDA, CUDA graphs)", openmm_seconds(
                        create_torch_force(model, atomic_numbers=numbers, periodic=periodic,
                                           cuda_graphs=True), atoms, steps, platform)))
            rows.append(("PythonForce (CPU)", openmm_seconds(
                create_python_force(model, atomic_numbers=numbers, periodic=periodic),
                atoms, steps, "CPU")))
            rows.append(("ASE calculator (VelocityVerlet)", ase_seconds(path, atoms, steps)))
            print(f"{name:<20}{'raw model (forward+backward)':<34}{raw * 1e3:>10.2f}"
                  f"{ns_per_day(raw):>10.3f}{1.0:>10.2f}")
            for engine, seconds in rows:
                print(f"{name:<20}{engine:<34}{seconds * 1e3:>10.2f}"
                      f"{ns_per_day(seconds):>10.3f}{seconds / raw:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
