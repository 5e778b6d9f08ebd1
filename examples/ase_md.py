"""Langevin MD in ASE with an mlff-plugins model file and the collapse/exploration observers.

    python examples/ase_md.py [--model demo-output/aspirin.pt] [--structure aspirin] \
        [--steps 2000] [--temperature 500] [--interval 20] [--output-dir ase-md] [--seed 1]

`--structure` is a structure file (xyz, extxyz, pdb, npz, traj; first frame) or a named
molecule (`mlff data molecules`). `make demo` writes demo-output/aspirin.pt (and
demo-output/aspirin_start.xyz). Everything ASE-specific below is ordinary ASE; the model file
adds one calculator and two observers.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from ase import units
from ase.constraints import FixCom
from ase.io.trajectory import Trajectory
from ase.md import MDLogger
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta

from ase_bridge import CollapseObserver, ExplorationObserver, MLFFCalculator
from mlff_core.data.molecules import (
    MOLECULES,
    canonical_molecule_name,
    molecule_names,
    named_molecule,
    structure_from_file,
)
from mlff_core.errors import MLFFError

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="demo-output/aspirin.pt", help="model file (.pt)")
parser.add_argument("--structure", default="aspirin",
                    help="structure file, or a named molecule (default: aspirin)")
parser.add_argument("--steps", type=int, default=2000)
parser.add_argument("--temperature", type=float, default=500.0, help="K")
parser.add_argument("--timestep", type=float, default=0.5, help="fs")
parser.add_argument("--friction", type=float, default=1.0, help="1/ps")
parser.add_argument("--interval", type=int, default=20,
                    help="steps between trajectory frames and monitor checks")
parser.add_argument("--threshold", type=float, default=0.5, help="collapse threshold, Å")
parser.add_argument("--output-dir", default="ase-md")
parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
parser.add_argument("--seed", type=int, default=1, help="velocities and thermostat noise")
args = parser.parse_args()
if not Path(args.model).exists():
    sys.exit(f"{args.model} not found: run `make demo` first (it writes demo-output/aspirin.pt)")
out = Path(args.output_dir)
out.mkdir(parents=True, exist_ok=True)

try:
    # A starting structure; its bonds (from covalent radii for a file) are the collapse
    # monitor's reference.
    if Path(args.structure).exists():
        structure = structure_from_file(args.structure)
    elif canonical_molecule_name(args.structure) in MOLECULES:
        structure = named_molecule(args.structure)
    else:
        sys.exit(f"{args.structure}: neither a structure file nor a named molecule "
                 f"({', '.join(molecule_names())})")
    atoms = structure.atoms.copy()

    # The model file as an ASE calculator (checks elements and periodicity on first use).
    atoms.calc = MLFFCalculator(args.model, device=args.device)

    rng = np.random.default_rng(args.seed)
    thermalize_momenta(atoms, temperature_K=args.temperature, rng=rng)
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    atoms.set_constraint(FixCom())  # no drift of the centre of mass (ASE's recommended way)
    dyn = Langevin(atoms, timestep=args.timestep * units.fs, temperature_K=args.temperature,
                   friction=args.friction / (1000.0 * units.fs), fixcm=False, rng=rng)

    # The guardrails: stop cleanly on a bond collapse (saving the last good frame); record
    # frames outside every conformation cluster of the model's training data.
    collapse = CollapseObserver(atoms, threshold=args.threshold, action="stop",
                                bonds=structure.bonds, dynamics=dyn,
                                log=out / "collapse.log", flagged_path=out / "collapse.xyz",
                                last_good_path=out / "last_good.xyz")
    exploration = ExplorationObserver(atoms, atoms.calc.model, dynamics=dyn,
                                      log=out / "exploration.log",
                                      flagged_path=out / "unexplored.xyz")

    with Trajectory(str(out / "trajectory.traj"), "w", atoms) as trajectory, \
            MDLogger(dyn, atoms, str(out / "md.log"), peratom=False) as logger:
        for observer in (trajectory.write, logger, collapse, exploration):
            dyn.attach(observer, interval=args.interval)
        dyn.run(args.steps)
    collapse.close()
    exploration.close()
except MLFFError as exc:  # bad model file, unknown element, wrong periodicity, ...
    sys.exit(f"error: {exc}")

print(f"{structure.name}: {len(atoms)} atoms, {dyn.nsteps} of {args.steps} steps "
      f"({dyn.nsteps * args.timestep / 1000:g} ps) at {args.temperature:g} K"
      + (f"; stopped: {collapse.monitor.first_flagged[1]}" if collapse.stopped else ""))
print(collapse.monitor.summary())
print(exploration.monitor.summary())
ratio = exploration.explored_ratio
print("explored ratio: " + ("n/a (the model file has no reference clusters)"
                            if np.isnan(ratio) else f"{ratio:.2f}"))
print(f"final temperature {atoms.get_temperature():.0f} K, "
      f"potential energy {atoms.get_potential_energy():.3f} eV")
print(f"files in {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
