"""Levels of theory as ASE calculators: MMFF94 (RDKit), GFN1/GFN2-xTB (tblite), DFT (PySCF)."""

from mlff_core.labels.dft import PySCFCalculator
from mlff_core.labels.levels import LevelOfTheory, get_level, list_levels
from mlff_core.labels.mmff import MMFF94Calculator
from mlff_core.labels.xtb import XTBCalculator

__all__ = [
    "LevelOfTheory",
    "MMFF94Calculator",
    "PySCFCalculator",
    "XTBCalculator",
    "get_level",
    "list_levels",
]
