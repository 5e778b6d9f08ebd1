"""ASE bridge: the mlff-plugins model file as an ASE calculator, and MD observers."""

from ase_bridge.calculator import MLFFCalculator
from ase_bridge.observers import CollapseObserver, ExplorationObserver

__all__ = ["CollapseObserver", "ExplorationObserver", "MLFFCalculator"]
