"""MACE per MD step: this suite's engines against MACE's own routes, on the same weights.

One MACE (mace-torch's modules; 64x0e+64x1o, max_ell 3, correlation 3, 2 layers, 5 Å, H/C/O,
random weights, float32 by default) is written as mace_run_train writes it (pickled `.model`
and e3nn-compiled `_compiled.model`) and imported with `mlff import` both ways. Then, per MD
step (Verlet, 0.5 fs), side by side in one process, on aspirin (21 atoms) and a periodic
water box (1,029 atoms):

- OpenMM (CPU platform): our TorchForce and PythonForce vs openmm-ml's `MLPotential('mace')`
  (a PythonForce around MACE with mace's own neighbour list);
- ASE (VelocityVerlet): our `MLFFCalculator` vs `mace.calculators.MACECalculator`.

Ratio = ours / peer (≤ 1: ours is no slower). Steps alternate between routes in rounds so that
machine noise hits every route alike; the median round is reported.

    python benchmarks/mace_speed.py [--steps 20] [--rounds 3] [--dtype float32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit
import torch
from ase import units as ase_units
from ase.md.verlet import VelocityVerlet

sys.path.insert(0, str(Path(__file__).parent))
from model_speed import water_structure  # noqa: E402

from ase_bridge import MLFFCalculator  # noqa: E402
from mlff_core.data.molecules import named_molecule  # noqa: E402
from mlff_core.export.importers import import_model  # noqa: E402
from mlff_core.models.mace import build_mace, quiet_mace  # noqa: E402
from openmm_bridge import create_python_force, create_torch_force  # noqa: E402
from openmm_bridge.md import topology_from_atoms  # noqa: E402

TIMESTEP_FS = 0.5


def write_mace_files(work: Path, dtype: torch.dtype) -> tuple[Path, Path]:
    """(pickled .model, e3nn-compiled _compiled.model) of one random MACE."""
    from e3nn.util.jit import compile as e3nn_compile

    torch.manual_seed(0)
    model = build_mace([1, 6, 8], hidden=64, num_interactions=2, cutoff=5.0, num_rbf=8,
                       max_L=1, max_ell=3, correlation=3, radial_mlp=[64, 64, 64],
                       num_polynomial_cutoff=5, avg_num_neighbors=20.0).to(dtype)
    pickled, compiled = work / "bench.model", work / "bench_compiled.model"
    torch.save(model, pickled)
    with quiet_mace():
        torch.jit.save(e3nn_compile(model), str(compiled))
    return pickled, compiled


def openmm_context(force: openmm.Force | None, atoms, system: openmm.System | None = None):
    if system is None:
        system = openmm.System()
        for mass in atoms.get_masses():
            system.addParticle(mass)
        if atoms.pbc.any():
            system.setDefaultPeriodicBoxVectors(*(atoms.cell.array * 0.1))
        system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(TIMESTEP_FS * 1e-3),
                             openmm.Platform.getPlatformByName("CPU"),
                             {"Threads": str(torch.get_num_threads())})
    if atoms.pbc.any():
        context.setPeriodicBoxVectors(*(atoms.cell.array * 0.1))
    context.setPositions(atoms.positions * 0.1)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    return context


def openmm_mlpotential_context(pickled: Path, atoms):
    from openmmml import MLPotential

    topology = topology_from_atoms(atoms)
    if atoms.pbc.any():
        topology.setPeriodicBoxVectors(atoms.cell.array * 0.1)
    with quiet_mace():
        system = MLPotential("mace", modelPath=str(pickled)).createSystem(
            topology, returnEnergyType="energy")  # a plain MACE has no interaction_energy
    return openmm_context(None, atoms, system)


def ase_stepper(atoms, calculator):
    atoms = atoms.copy()
    atoms.calc = calculator
    dynamics = VelocityVerlet(atoms, TIMESTEP_FS * ase_units.fs)
    return dynamics.run


def timed(step, steps: int) -> float:
    start = time.perf_counter()
    step(steps)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    from mace.calculators import MACECalculator

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pickled, compiled = write_mace_files(work, dtype)
        ours = {form: import_model("mace", source, work / f"ours_{form}.pt", trust_pickle=True)
                for form, source in (("blocks", pickled), ("compiled", compiled))}
        print(f"MACE 64x0e+64x1o, max_ell 3, correlation 3, 2 layers, 5 Å, {args.dtype}, "
              f"{args.threads} threads; ms per MD step, median of {args.rounds} rounds of "
              f"{args.steps} steps")
        for name, atoms in (("aspirin", named_molecule("aspirin").atoms),
                            ("water", water_structure(343))):
            periodic = bool(atoms.pbc.any())
            contexts = []  # a context must outlive its integrator's step method

            def stepper(context, keep=contexts):
                keep.append(context)
                return context.getIntegrator().step

            steps = args.steps if len(atoms) < 100 else max(args.steps // 4, 3)
            routes = {
                "OpenMM TorchForce (ours, blocks)": stepper(openmm_context(create_torch_force(
                    ours["blocks"], atomic_numbers=atoms.numbers.tolist(), periodic=periodic),
                    atoms)),
                "OpenMM TorchForce (ours, compiled)": stepper(openmm_context(create_torch_force(
                    ours["compiled"], atomic_numbers=atoms.numbers.tolist(),
                    periodic=periodic), atoms)),
                "OpenMM PythonForce (ours, blocks)": stepper(openmm_context(create_python_force(
                    ours["blocks"], atomic_numbers=atoms.numbers.tolist(), periodic=periodic),
                    atoms)),
                "OpenMM MLPotential('mace') (openmm-ml)":
                    stepper(openmm_mlpotential_context(pickled, atoms)),
                "ASE MLFFCalculator (ours, blocks)":
                    ase_stepper(atoms, MLFFCalculator(ours["blocks"])),
                "ASE MACECalculator (mace)": ase_stepper(atoms, MACECalculator(
                    model_paths=str(pickled), device="cpu", default_dtype=args.dtype)),
            }
            for step in routes.values():
                step(2)  # warm-up: TorchScript optimises during the first calls
            samples = {route: [] for route in routes}
            for _ in range(args.rounds):
                for route, step in routes.items():
                    samples[route].append(timed(step, steps))
            median = {route: statistics.median(values) for route, values in samples.items()}
            print(f"\n{name} ({len(atoms)} atoms, {'periodic' if periodic else 'molecule'})")
            for route, seconds in median.items():
                print(f"  {route:<42}{seconds * 1e3:>10.1f} ms/step")
            omm = median["OpenMM MLPotential('mace') (openmm-ml)"]
            for route in [r for r in median if r.startswith("OpenMM") and "ours" in r]:
                print(f"  ratio {route} / openmm-ml: {median[route] / omm:.2f}")
            print(f"  ratio ASE ours / MACECalculator: "
                  f"{median['ASE MLFFCalculator (ours, blocks)'] / median['ASE MACECalculator (mace)']:.2f}")  # noqa: E501


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
