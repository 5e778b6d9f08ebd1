"""OpenMM reporters built on `mlff_core.monitors`: drop them into `simulation.reporters`.

    simulation.reporters.append(CollapseReporter("collapse.log", 100, threshold=0.5,
                                                 action="stop", last_good_path="last_good.pdb"))
    simulation.reporters.append(ExplorationReporter("exploration.log", 100, model="aspirin.pt",
                                                    save_frames="unexplored.xyz"))
    simulation.reporters.append(DeviationReporter("deviation.log", 100, model="committee.pt",
                                                  warn_deviation=0.1))
    simulation.reporters.append(MaxForceReporter("forces.log", 100))
    run_simulation(simulation, 20000)

OpenMM's `Simulation.step()` has no way for a reporter to end the run, so `action="stop"` saves
the last good frame (PDB), logs a clear line and raises `SimulationStopped`;
`run_simulation()` (and `mlff md`) treat that as a normal end of the run. The exception is
raised when OpenMM next asks the reporter for its schedule, i.e. after every other reporter has
recorded the step at which the run stops, and before the integrator moves on.

A frame with a non-finite position is a collapse. When OpenMM itself refuses to go on because
coordinates became NaN between two checks, `run_simulation()` ends the run the same way: a
clean stop with that reason and the collapse reporter's last good frame.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from mlff_core.data.molecules import covalent_bonds
from mlff_core.errors import MLFFError
from mlff_core.fileio import atomic_output
from mlff_core.monitors import (
    CollapseDetector,
    DeviationDetector,
    ExplorationDetector,
    Monitor,
    Snapshot,
    validate_interval,
)

log = logging.getLogger("mlff.openmm")


class SimulationStopped(Exception):  # noqa: N818 (a normal outcome, not an error)
    """Raised by a reporter with action='stop' once the last good frame is saved."""

    def __init__(self, step: int, reason: str, last_good: Path | None):
        self.step, self.reason, self.last_good = step, reason, last_good
        saved = f"; last good frame saved to {last_good}" if last_good else ""
        super().__init__(f"simulation stopped at step {step}: {reason}{saved}")


def run_simulation(simulation: app.Simulation, steps: int) -> dict:
    """`simulation.step(steps)`, ending cleanly when a reporter stops the run.

    Returns {"steps_run", "stopped", "reason", "last_good"}.
    """
    start = simulation.currentStep
    try:
        simulation.step(steps)
    except SimulationStopped as stopped:
        stop = stopped
    except openmm.OpenMMException as exc:
        if "nan" not in str(exc).lower():
            raise
        message = str(exc).strip().splitlines()[0].split("  For more information")[0]
        stop = _stop_on_nan(simulation, message)
    else:
        return {"steps_run": simulation.currentStep - start, "stopped": False, "reason": None,
                "last_good": None}
    log.warning(str(stop))
    return {"steps_run": simulation.currentStep - start, "stopped": True, "reason": stop.reason,
            "last_good": None if stop.last_good is None else str(stop.last_good)}


def _stop_on_nan(simulation: app.Simulation, message: str) -> SimulationStopped:
    """OpenMM found NaN coordinates between two checks: a collapse. The collapse reporter (if
    any) records it and saves its last good frame."""
    reason = f"non-finite coordinates (OpenMM: {message})"
    for reporter in simulation.reporters:
        if isinstance(reporter, CollapseReporter) and reporter.detector is not None:
            numbers = np.array([a.element.atomic_number for a in simulation.topology.atoms()])
            nan = np.full((len(numbers), 3), np.nan)
            reporter.monitor.halt(Snapshot(simulation.currentStep, nan, numbers), reason)
            return SimulationStopped(simulation.currentStep, f"collapse: {reason}",
                                     reporter.monitor.saved_last_good)
    return SimulationStopped(simulation.currentStep, f"collapse: {reason}", None)


def _snapshot(simulation: app.Simulation, state: openmm.State) -> Snapshot:
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    numbers = np.array([a.element.atomic_number for a in simulation.topology.atoms()])
    cell = pbc = None
    if simulation.topology.getPeriodicBoxVectors() is not None or \
            simulation.system.usesPeriodicBoundaryConditions():
        cell = np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom))
        pbc = np.ones(3, dtype=bool)
    return Snapshot(simulation.currentStep, np.asarray(positions, dtype=float), numbers, cell,
                    pbc)


class _MonitorReporter:
    """Common part: interval, snapshot, Monitor bookkeeping, PDB last-good writer, stop."""

    kind = ""
    _include = ["positions"]

    def __init__(self, file: str | os.PathLike | None, reportInterval: int, action: str,  # noqa: N803
                 flagged_path: str | os.PathLike | None,
                 last_good_path: str | os.PathLike | None, provenance: dict | None = None):
        self._interval = validate_interval(reportInterval, "reportInterval")
        self._topology: app.Topology | None = None
        self._stop: SimulationStopped | None = None
        self.monitor = Monitor(self.kind, action, file, flagged_path,
                               last_good_path if last_good_path is not None else
                               (None if action != "stop" else "last_good.pdb"),
                               write_last_good=self._write_pdb, provenance=provenance)

    def describeNextReport(self, simulation: app.Simulation) -> dict:  # noqa: N802 (OpenMM API)
        if self._stop is not None:
            stop, self._stop = self._stop, None
            raise stop
        self._prepare(simulation)
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": False, "include": self._include}

    def _prepare(self, simulation: app.Simulation) -> None:
        self._topology = simulation.topology

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        snapshot = _snapshot(simulation, state)
        flagged, message, act = self.check(snapshot, state)
        if self.monitor.observe(snapshot, flagged, message, act):
            # raised from describeNextReport, once the other reporters have had this step
            self._stop = SimulationStopped(snapshot.step, f"{self.kind}: {message}",
                                           self.monitor.saved_last_good)

    def check(self, snapshot: Snapshot, state: openmm.State) -> tuple[bool, str, bool]:
        raise NotImplementedError

    def _write_pdb(self, snapshot: Snapshot, path: Path) -> None:
        with atomic_output(path, "w") as fh:
            app.PDBFile.writeFile(self._topology, snapshot.positions * unit.angstrom, fh)

    def close(self) -> None:
        if hasattr(self, "monitor"):
            self.monitor.close()

    def __del__(self):
        self.close()


class CollapseReporter(_MonitorReporter):
    """Flags frames in which a bond deviates from its reference length by more than `threshold`.

    Args:
        file: log file (one line per check), or None.
        reportInterval: steps between checks.
        threshold: Å (0.5 as in MDsim; 0.3 as in the JCP paper).
        action: 'flag', 'stop' or 'raise'.
        bonds: [B, 2] bonded pairs; default: the Topology's bonds, or, when it has none,
            bonds perceived from covalent radii of the starting structure.
        reference_positions: [N, 3] Å giving reference bond lengths (default: the positions
            when the simulation first asks this reporter, i.e. the starting structure).
        flagged_path: extended XYZ collecting flagged frames; last_good_path: PDB written on
            stop.
    """

    kind = "collapse"

    def __init__(self, file: str | os.PathLike | None, reportInterval: int,  # noqa: N803
                 threshold: float = 0.5, action: str = "flag", bonds=None,
                 reference_positions: np.ndarray | None = None,
                 flagged_path: str | os.PathLike | None = None,
                 last_good_path: str | os.PathLike | None = None):
        if not threshold > 0:
            raise MLFFError(f"collapse threshold must be a positive length in Å, got {threshold}")
        super().__init__(file, reportInterval, action, flagged_path, last_good_path,
                         provenance={"threshold_A": threshold})
        self.threshold = threshold
        self._bonds = bonds
        self._reference = reference_positions
        self.detector: CollapseDetector | None = None

    def _prepare(self, simulation: app.Simulation) -> None:
        super()._prepare(simulation)
        if self.detector is not None:
            return
        state = simulation.context.getState(getPositions=True)
        start = _snapshot(simulation, state)
        if self._reference is not None:
            start.positions = np.asarray(self._reference, dtype=float)
        atoms = start.to_atoms()
        bonds = self._bonds
        if bonds is None:
            bonds = np.array([[b.atom1.index, b.atom2.index] for b in simulation.topology.bonds()],
                             dtype=np.int64).reshape(-1, 2)
            if len(bonds) == 0:
                bonds = covalent_bonds(atoms)
        self.detector = CollapseDetector.from_atoms(atoms, self.threshold, bonds)

    def check(self, snapshot: Snapshot, state: openmm.State) -> tuple[bool, str, bool]:
        result = self.detector.check(snapshot.positions, snapshot.cell, snapshot.pbc)
        return result.collapsed, result.describe(), result.collapsed


class _GradedReporter(_MonitorReporter):
    """A reporter whose detector grades the frame's positions (a warn and a stop level)."""

    def check(self, snapshot: Snapshot, state: openmm.State) -> tuple[bool, str, bool]:
        result = self.detector.check(snapshot.positions, snapshot.atomic_numbers, snapshot.cell,
                                     snapshot.pbc)
        return result.flagged, result.describe(), result.above_stop


class ExplorationReporter(_GradedReporter):
    """Flags frames outside every conformation cluster of the model's training data.

    Args:
        file: log file, or None. reportInterval: steps between checks.
        model: model file (its `explore` method classifies frames).
        action: 'flag', 'stop' or 'raise'.
        save_frames: extended XYZ collecting flagged frames (ready for relabelling).
        last_good_path: PDB written on stop.
        warn_ratio: exploration score (the larger of distance/radius and the bond score)
            above which a frame is flagged (1.0: the edge of the training data).
        stop_ratio: score above which `action` applies (default: `warn_ratio`).
    """

    kind = "exploration"

    def __init__(self, file: str | os.PathLike | None, reportInterval: int, model,  # noqa: N803
                 action: str = "flag", save_frames: str | os.PathLike | None = None,
                 last_good_path: str | os.PathLike | None = None, warn_ratio: float = 1.0,
                 stop_ratio: float | None = None):
        self.detector = ExplorationDetector(model, warn_ratio, stop_ratio)
        super().__init__(file, reportInterval, action, save_frames, last_good_path,
                         provenance={"model": str(self.detector.model.path)})


    @property
    def counts(self) -> dict[str, int]:
        return self.detector.counts

    @property
    def explored_ratio(self) -> float:
        return self.detector.explored_ratio


class DeviationReporter(_GradedReporter):
    """Flags frames where a committee's members disagree: force deviation
    max_i sqrt((1/M) Σ_k |F_i^k − F̄_i|²) above `warn_deviation` (eV/Å).

    Args:
        file: log file, or None. reportInterval: steps between checks.
        model: a committee model file (`mlff train --committee M`).
        warn_deviation: eV/Å above which a frame is flagged (DeePMD-kit's trust_lo).
        stop_deviation: eV/Å above which `action` applies (default: `warn_deviation`).
        action: 'flag', 'stop' or 'raise'.
        save_frames: extended XYZ collecting flagged frames; last_good_path: PDB written on
            stop.
    """

    kind = "deviation"

    def __init__(self, file: str | os.PathLike | None, reportInterval: int, model,  # noqa: N803
                 warn_deviation: float, stop_deviation: float | None = None,
                 action: str = "flag", save_frames: str | os.PathLike | None = None,
                 last_good_path: str | os.PathLike | None = None):
        self.detector = DeviationDetector(model, warn_deviation, stop_deviation)
        super().__init__(file, reportInterval, action, save_frames, last_good_path,
                         provenance={"model": str(self.detector.model.path)})



class MaxForceReporter:
    """Writes the largest atomic force of each reported frame (a collapse precursor).

    Columns: step, max |F| in kJ/mol/nm and in eV/Å, index of that atom.
    """

    def __init__(self, file: str | os.PathLike, reportInterval: int):  # noqa: N803
        self._interval = validate_interval(reportInterval, "reportInterval")
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        self._out = open(file, "w")  # noqa: SIM115 (kept open for the run, like DCDReporter)
        self._out.write("# step\tmax_force_kJ/mol/nm\tmax_force_eV/A\tatom\n")
        self.values: list[float] = []

    def describeNextReport(self, simulation: app.Simulation) -> dict:  # noqa: N802
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": None, "include": ["forces"]}

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        forces = state.getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer)
        norms = np.linalg.norm(np.asarray(forces), axis=1)
        atom = int(np.argmax(norms))
        self.values.append(float(norms[atom]))
        from mlff_core.units import KJ_PER_MOL, NANOMETER

        self._out.write(f"{simulation.currentStep}\t{norms[atom]:.6g}\t"
                        f"{norms[atom] * KJ_PER_MOL / NANOMETER:.6g}\t{atom}\n")
        self._out.flush()

    def close(self) -> None:
        if hasattr(self, "_out") and not self._out.closed:
            self._out.close()

    def __del__(self):
        self.close()
