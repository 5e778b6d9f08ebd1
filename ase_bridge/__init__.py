"""ASE bridge: the mlff-plugins model file as an ASE calculator, and MD observers."""

from ase_bridge.calculator import MLFFCalculator

__all__ = ["MLFFCalculator"]
