"""Streaming collapse and exploration detectors shared by every engine's reporters."""

from mlff_core.monitors.detectors import (
    EXPLORED,
    NO_REFERENCE,
    UNEXPLORED,
    CollapseCheck,
    CollapseDetector,
    ExplorationCheck,
    ExplorationDetector,
    bond_lengths,
)
from mlff_core.monitors.monitor import ACTIONS, Monitor, MonitorTriggered, Snapshot

__all__ = ["ACTIONS", "EXPLORED", "NO_REFERENCE", "UNEXPLORED", "CollapseCheck",
           "CollapseDetector", "ExplorationCheck", "ExplorationDetector", "Monitor",
           "MonitorTriggered", "Snapshot", "bond_lengths"]
