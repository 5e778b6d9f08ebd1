"""ASE MD observers built on `mlff_core.monitors`: attach with `dyn.attach(obs, interval=n)`.

    dyn = Langevin(atoms, ...)
    dyn.attach(CollapseObserver(atoms, dynamics=dyn, action="stop", log="collapse.log",
                                flagged_path="collapse.xyz", last_good_path="last_good.xyz"),
               interval=10)
    dyn.attach(ExplorationObserver(atoms, "aspirin.pt", flagged_path="unexplored.xyz"),
               interval=10)
    dyn.attach(DeviationObserver(atoms, "committee.pt", warn_deviation=0.1), interval=10)

Actions: 'flag' records flagged frames and goes on; 'stop' saves the last good frame and ends
`dyn.run()` cleanly after the current step; 'raise' raises `MonitorTriggered`. A frame whose
positions or forces are not finite is a collapse.
"""

from __future__ import annotations

import os

import numpy as np
from ase import Atoms

from mlff_core.errors import MLFFError
from mlff_core.monitors import (
    CollapseDetector,
    DeviationDetector,
    ExplorationDetector,
    Monitor,
    Snapshot,
)


class _Observer:
    """Takes a snapshot of `atoms`, asks the detector, lets the `Monitor` decide."""

    kind = ""

    def __init__(self, atoms: Atoms, action: str, dynamics, log, flagged_path, last_good_path,
                 provenance=None):
        if action == "stop" and dynamics is None:
            raise MLFFError(f"{type(self).__name__}(action='stop') needs dynamics=<the ASE "
                            "dynamics object> to end the run")
        self.atoms = atoms
        self.dynamics = dynamics
        self.monitor = Monitor(self.kind, action, log, flagged_path, last_good_path,
                               provenance=provenance)
        self._calls = 0

    def _step(self) -> int:
        return self.dynamics.nsteps if self.dynamics is not None else self._calls

    def __call__(self) -> None:
        results = getattr(self.atoms.calc, "results", None) or {}
        forces = results.get("forces")
        snapshot = Snapshot(self._step(), self.atoms.positions.copy(), self.atoms.numbers.copy(),
                            self.atoms.cell.array.copy(), self.atoms.pbc.copy(),
                            None if forces is None else np.array(forces))
        self._calls += 1
        flagged, message, act = self.check(snapshot)
        if self.monitor.observe(snapshot, flagged, message, act):
            self.dynamics.max_steps = self.dynamics.nsteps  # ends dyn.run() after this step

    def check(self, snapshot: Snapshot) -> tuple[bool, str, bool]:
        raise NotImplementedError

    @property
    def stopped(self) -> bool:
        return self.monitor.stopped

    def close(self) -> None:
        self.monitor.close()


class CollapseObserver(_Observer):
    """Flags frames where a bond deviates from its reference length by more than `threshold`.

    Args:
        atoms: the atoms being simulated (reference lengths come from them as they are now,
            unless `reference` is given).
        threshold: Å (0.5 as in MDsim; 0.3 as in the JCP paper).
        action: 'flag', 'stop' or 'raise'.
        bonds: [B, 2] bonded pairs; default perceived from covalent radii of the reference.
        reference: structure giving the reference bond lengths.
        dynamics: the ASE dynamics (needed for 'stop').
        log, flagged_path, last_good_path: output files (see `mlff_core.monitors.Monitor`).
    """

    kind = "collapse"

    def __init__(self, atoms: Atoms, threshold: float = 0.5, action: str = "flag",
                 bonds: np.ndarray | None = None, reference: Atoms | None = None, dynamics=None,
                 log: str | os.PathLike | None = None,
                 flagged_path: str | os.PathLike | None = None,
                 last_good_path: str | os.PathLike | None = None):
        super().__init__(atoms, action, dynamics, log, flagged_path, last_good_path,
                         provenance={"threshold_A": threshold})
        self.detector = CollapseDetector.from_atoms(reference if reference is not None
                                                    else atoms, threshold, bonds)

    def check(self, snapshot: Snapshot) -> tuple[bool, str, bool]:
        result = self.detector.check(snapshot.positions, snapshot.cell, snapshot.pbc,
                                     snapshot.forces)
        return result.collapsed, result.describe(), result.collapsed


class _GradedObserver(_Observer):
    """An observer whose detector grades the frame's positions (a warn and a stop level)."""

    def check(self, snapshot: Snapshot) -> tuple[bool, str, bool]:
        result = self.detector.check(snapshot.positions, snapshot.atomic_numbers,
                                     snapshot.cell, snapshot.pbc)
        return result.flagged, result.describe(), result.above_stop


class ExplorationObserver(_GradedObserver):
    """Flags frames outside the model's training data: outside every conformation cluster, or
    (molecules) with a bond outside its training length range.

    Args:
        atoms: the atoms being simulated.
        model: model file (path or `LoadedModel`) whose `explore` method classifies frames.
        warn_ratio: exploration score (the larger of distance/radius and the bond score)
            above which a frame is flagged (1.0: the edge of the training data).
        stop_ratio: score above which `action` applies (default: `warn_ratio`).
        action, dynamics, log, flagged_path, last_good_path: as for `CollapseObserver`.
    """

    kind = "exploration"

    def __init__(self, atoms: Atoms, model, action: str = "flag", dynamics=None,
                 log: str | os.PathLike | None = None,
                 flagged_path: str | os.PathLike | None = None,
                 last_good_path: str | os.PathLike | None = None,
                 warn_ratio: float = 1.0, stop_ratio: float | None = None):
        self.detector = ExplorationDetector(model, warn_ratio, stop_ratio)
        super().__init__(atoms, action, dynamics, log, flagged_path, last_good_path,
                         provenance={"model": str(self.detector.model.path)})


    @property
    def counts(self) -> dict[str, int]:
        return self.detector.counts

    @property
    def explored_ratio(self) -> float:
        """Fraction of classified frames that were explored (NaN without reference clusters)."""
        return self.detector.explored_ratio


class DeviationObserver(_GradedObserver):
    """Flags frames where a committee's members disagree: force deviation
    max_i sqrt((1/M) Σ_k |F_i^k − F̄_i|²) above `warn_deviation` (eV/Å).

    Args:
        atoms: the atoms being simulated.
        model: a committee model file (`mlff train --committee M`), path or `LoadedModel`.
        warn_deviation: eV/Å above which a frame is flagged (DeePMD-kit's trust_lo).
        stop_deviation: eV/Å above which `action` applies (default: `warn_deviation`).
        action, dynamics, log, flagged_path, last_good_path: as for `CollapseObserver`.
    """

    kind = "deviation"

    def __init__(self, atoms: Atoms, model, warn_deviation: float,
                 stop_deviation: float | None = None, action: str = "flag", dynamics=None,
                 log: str | os.PathLike | None = None,
                 flagged_path: str | os.PathLike | None = None,
                 last_good_path: str | os.PathLike | None = None):
        self.detector = DeviationDetector(model, warn_deviation, stop_deviation)
        super().__init__(atoms, action, dynamics, log, flagged_path, last_good_path,
                         provenance={"model": str(self.detector.model.path)})
