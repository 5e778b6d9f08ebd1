"""Langevin MD in ASE with a model file and the monitors on (`mlff md --engine ase`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import units
from ase.constraints import FixCom
from ase.io.trajectory import Trajectory
from ase.md import MDLogger
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from ase_bridge.calculator import MLFFCalculator
from ase_bridge.observers import CollapseObserver, DeviationObserver, ExplorationObserver
from mlff_core.data.molecules import structure_from_file
from mlff_core.engines import ensemble
from mlff_core.export.loading import load_model
from mlff_core.fileio import atomic_output
from mlff_core.monitors import stop_outcome
from mlff_core.progress import Advance, attach_step_progress, no_progress


def run_ase_md(model: str | os.PathLike, structure: str | os.PathLike, output_dir: str, *,
               temperature: float = 300.0, timestep: float = 0.5, steps: int = 1000,
               report_interval: int = 100, friction: float = 1.0, bond_threshold: float = 0.5,
               action: str = "stop", seed: int = 0, advance: Advance = no_progress,
               device: str = "cpu", warn_ratio: float = 1.0, stop_ratio: float | None = None,
               warn_deviation: float | None = None, stop_deviation: float | None = None,
               **ignored: Any) -> dict[str, Any]:
    """Langevin MD with the model file as an ASE calculator; returns a summary.

    Writes to `output_dir`: trajectory.traj, md.log, collapse.log, collapse.xyz,
    exploration.log, unexplored.xyz, last_good.xyz (on stop), summary.json.

    Args: temperature K, timestep fs, friction 1/ps (0: NVE, velocity Verlet), bond_threshold
    Å; `action` applies to the collapse monitor. The exploration monitor flags frames whose
    score (distance/radius or bond score, the larger) exceeds `warn_ratio` and, with
    `stop_ratio`, stops above it. With
    `warn_deviation` (eV/Å; a committee model file) the deviation monitor flags frames whose
    committee force deviation exceeds it (deviation.log, deviation.xyz) and, with
    `stop_deviation`, stops above that.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_model(model, device)
    start = structure_from_file(str(structure))
    atoms = start.atoms.copy()
    atoms.calc = MLFFCalculator(loaded, device=device)
    atoms.get_forces()  # in the setup: a model that cannot run this system fails before step 0
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    atoms.set_constraint(FixCom())
    if friction > 0:
        dynamics = Langevin(atoms, timestep=timestep * units.fs, temperature_K=temperature,
                            friction=friction / (1000.0 * units.fs), fixcm=False, rng=rng)
    else:
        dynamics = VelocityVerlet(atoms, timestep=timestep * units.fs)
    collapse = CollapseObserver(atoms, bond_threshold, action, bonds=start.bonds,
                                dynamics=dynamics, log=out / "collapse.log",
                                flagged_path=out / "collapse.xyz",
                                last_good_path=out / "last_good.xyz")
    exploration = ExplorationObserver(atoms, loaded, dynamics=dynamics,
                                      log=out / "exploration.log",
                                      flagged_path=out / "unexplored.xyz",
                                      last_good_path=out / "last_good.xyz",
                                      warn_ratio=warn_ratio, stop_ratio=stop_ratio,
                                      action="flag" if stop_ratio is None else "stop")
    monitors = [collapse, exploration]
    if warn_deviation is not None:
        monitors.append(DeviationObserver(
            atoms, loaded, warn_deviation, stop_deviation, dynamics=dynamics,
            action="flag" if stop_deviation is None else "stop", log=out / "deviation.log",
            flagged_path=out / "deviation.xyz", last_good_path=out / "last_good.xyz"))
    started = time.perf_counter()
    with Trajectory(str(out / "trajectory.traj"), "w", atoms) as trajectory, \
            MDLogger(dynamics, atoms, str(out / "md.log"), peratom=False) as logger:
        # a non-finite frame is the collapse monitor's to report; the file keeps readable frames
        dynamics.attach(lambda: np.isfinite(atoms.positions).all() and trajectory.write(),
                        interval=report_interval)
        dynamics.attach(logger, interval=report_interval)
        for monitor in monitors:
            dynamics.attach(monitor, interval=report_interval)
        attach_step_progress(dynamics, advance)
        advance(0)  # stepping starts: a failure from here on keeps the partial output
        dynamics.run(steps)
    seconds = time.perf_counter() - started
    for monitor in monitors:
        monitor.close()
    summary = {
        "engine": "ase", "model": str(model), "structure": str(structure), "atoms": len(atoms),
        "trajectory": str(out / "trajectory.traj"), "topology": None,
        "ensemble": ensemble(friction, temperature),
        "temperature_K": temperature, "timestep_fs": timestep, "steps_requested": steps,
        "report_interval": report_interval, "frame_interval_ps": timestep * report_interval / 1e3,
        "first_frame_ps": 0.0,  # the start is frame 0
        "steps_run": dynamics.nsteps, **stop_outcome(*(m.monitor for m in monitors)),
        "seconds": seconds,
        "ns_per_day": dynamics.nsteps * timestep * 1e-6 / (seconds / 86400.0) if seconds else None,
        "collapse": collapse.monitor.summary(), "exploration": exploration.monitor.summary(),
        "deviation": monitors[2].monitor.summary() if len(monitors) > 2 else None,
        "exploration_counts": dict(exploration.counts),
        "explored_ratio": exploration.explored_ratio,
        "files": sorted(p.name for p in out.iterdir()),
    }
    with atomic_output(out / "summary.json", "w") as fh:
        json.dump(summary, fh, indent=2, default=str)
    return summary
