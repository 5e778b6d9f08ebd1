"""Streaming collapse and exploration detectors shared by every engine's reporters."""

from mlff_core.monitors.detectors import (
    EXPLORED,
    NO_REFERENCE,
    NOT_CLASSIFIED,
    STATUSES,
    UNEXPLORED,
    CollapseCheck,
    CollapseDetector,
    ExplorationCheck,
    ExplorationDetector,
    bond_lengths,
    first_non_finite,
    ratio_levels,
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
           "CollapseCheck", "CollapseDetector", "ExplorationCheck", "ExplorationDetector",
           "FlaggedFrameWriter", "Monitor", "MonitorTriggered", "Snapshot", "bond_lengths",
           "ratio_levels", "stop_outcome",
           "first_non_finite", "summary_line", "validate_interval"]
