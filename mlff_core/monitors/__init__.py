"""Streaming collapse, exploration and committee-deviation detectors shared by every engine's
reporters."""

from mlff_core.monitors.detectors import (
    EXPLORED,
    NO_REFERENCE,
    NOT_CLASSIFIED,
    STATUSES,
    UNEXPLORED,
    CollapseCheck,
    CollapseDetector,
    DeviationCheck,
    DeviationDetector,
    ExplorationCheck,
    ExplorationDetector,
    bond_lengths,
    first_non_finite,
    force_deviation,
    ratio_levels,
    trust_levels,
)
from mlff_core.monitors.monitor import (
    ACTIONS,
    FlaggedFrameWriter,
    Monitor,
    MonitorTriggered,
    Snapshot,
    stop_outcome,
    summary_line,
    validate_interval,
)

__all__ = ["ACTIONS", "EXPLORED", "NOT_CLASSIFIED", "NO_REFERENCE", "STATUSES", "UNEXPLORED",
           "CollapseCheck", "CollapseDetector", "DeviationCheck",
           "DeviationDetector", "ExplorationCheck", "ExplorationDetector",
           "FlaggedFrameWriter", "Monitor", "MonitorTriggered", "Snapshot", "bond_lengths",
           "force_deviation", "ratio_levels", "stop_outcome", "trust_levels",
           "first_non_finite", "summary_line", "validate_interval"]
