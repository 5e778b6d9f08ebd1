"""ASE bridge: the mlff-plugins model file as an ASE calculator, and MD observers."""

from ase_bridge.calculator import MLFFCalculator
from ase_bridge.observers import CollapseObserver, DeviationObserver, ExplorationObserver

__all__ = ["CollapseObserver", "DeviationObserver", "ExplorationObserver", "MLFFCalculator"]
