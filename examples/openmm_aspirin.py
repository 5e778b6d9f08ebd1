"""Aspirin at 500 K in OpenMM with an mlff-plugins model file and the guardrail reporters.

    python examples/openmm_aspirin.py [--model demo-output/aspirin.pt] [--steps 2000] \
        [--platform CPU] [--seed 1]

`make demo` writes demo-output/aspirin.pt. Everything OpenMM-specific below is ordinary
OpenMM; the model file adds one force and three reporters.
"""

import argparse
import sys
from pathlib import Path

import openmm
import openmm.app as app
import openmm.unit as unit

from mlff_core.data.molecules import named_molecule
from openmm_bridge import add_mlff_force
from openmm_bridge.md import topology_from_atoms
from openmm_bridge.reporters import (
    CollapseReporter,
    ExplorationReporter,
    MaxForceReporter,
    run_simulation,
)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="demo-output/aspirin.pt")
parser.add_argument("--steps", type=int, default=2000)
parser.add_argument("--output-dir", default="openmm-aspirin")
parser.add_argument("--platform", help="OpenMM platform (default: the fastest available)")
parser.add_argument("--seed", type=int, default=1, help="velocities and thermostat noise")
args = parser.parse_args()
if not Path(args.model).exists():
    sys.exit(f"{args.model} not found: run `make demo` first (it writes demo-output/aspirin.pt)")
out = Path(args.output_dir)
out.mkdir(exist_ok=True)

# A starting structure and its topology (any PDB with bonds works the same way).
aspirin = named_molecule("aspirin")
topology = topology_from_atoms(aspirin.atoms, aspirin.bonds)
positions = aspirin.atoms.positions * unit.angstrom

# The system: particles, the MLFF force (checks elements and periodicity), no COM drift.
system = openmm.System()
for atom in topology.atoms():
    system.addParticle(atom.element.mass)
add_mlff_force(system, topology, args.model)
system.addForce(openmm.CMMotionRemover())

integrator = openmm.LangevinMiddleIntegrator(500 * unit.kelvin, 1 / unit.picosecond,
                                             0.5 * unit.femtosecond)
integrator.setRandomNumberSeed(args.seed)
platform = [openmm.Platform.getPlatformByName(args.platform)] if args.platform else []
simulation = app.Simulation(topology, system, integrator, *platform)
simulation.context.setPositions(positions)
simulation.context.setVelocitiesToTemperature(500 * unit.kelvin, args.seed)

simulation.reporters.append(app.DCDReporter(str(out / "trajectory.dcd"), 100))
simulation.reporters.append(app.StateDataReporter(sys.stdout, 500, step=True, temperature=True,
                                                  potentialEnergy=True, speed=True))
simulation.reporters.append(MaxForceReporter(out / "forces.log", 100))
simulation.reporters.append(ExplorationReporter(out / "exploration.log", 100, model=args.model,
                                                save_frames=out / "unexplored.xyz"))
simulation.reporters.append(CollapseReporter(out / "collapse.log", 100, threshold=0.5,
                                             action="stop", last_good_path=out / "last_good.pdb"))

outcome = run_simulation(simulation, args.steps)
print(f"ran {outcome['steps_run']} steps" + (f"; stopped: {outcome['reason']}"
                                              if outcome["stopped"] else ""))
