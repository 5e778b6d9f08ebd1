"""The levels of theory the suite can label with, by name, from cheapest to most accurate.

    mmff94   MMFF94 force field (RDKit)          empirical, molecules only
    gfn1     GFN1-xTB (tblite)                    semi-empirical tight binding, molecules and cells
    gfn2     GFN2-xTB (tblite)                    semi-empirical tight binding, molecules and cells
    dft      Kohn-Sham DFT (PySCF), PBE/def2-SVP  `dft:XC/BASIS` picks another (dft:B3LYP/def2-TZVP)

Each level makes an ASE calculator; frames record the level's `tag` as their level of theory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ase.calculators.calculator import Calculator

from mlff_core.errors import LevelOfTheoryError
from mlff_core.labels.dft import (
    DEFAULT_BASIS,
    DEFAULT_XC,
    PYSCF_INSTALL,
    PySCFCalculator,
    pyscf_available,
)
from mlff_core.labels.mmff import MMFF94Calculator
from mlff_core.labels.xtb import XTB_METHODS, XTBCalculator


@dataclass(frozen=True)
class LevelOfTheory:
    """A named way of computing energies and forces.

    Attributes:
        key: canonical name used on the command line ('gfn2', 'dft:PBE/def2-SVP').
        tag: what labelled frames record ('GFN2-xTB', 'DFT PBE/def2-SVP').
        family: 'empirical', 'semi-empirical' or 'dft' (cheap → accurate).
        periodic: whether it can label periodic cells.
        options: keyword arguments for the calculator.
    """

    key: str
    tag: str
    family: str
    periodic: bool
    description: str
    options: dict[str, Any] = field(default_factory=dict)

    def available(self) -> bool:
        return self.family != "dft" or pyscf_available()

    def require(self) -> LevelOfTheory:
        """This level, if it can run here.

        Raises:
            LevelOfTheoryError: its optional extra is not installed, naming the install command.
        """
        if not self.available():
            raise LevelOfTheoryError(
                f"level of theory {self.key} needs PySCF, an optional extra: {PYSCF_INSTALL}"
            )
        return self

    def calculator(self, *, smiles: str | None = None, charge: int = 0,
                   multiplicity: int = 1) -> Calculator:
        """A fresh ASE calculator for this level.

        Args:
            smiles: bond graph for force fields (MMFF94), atom order matching the frames.
            charge, multiplicity: total charge and spin multiplicity of the system.
        """
        if self.family == "empirical":
            return MMFF94Calculator(smiles=smiles, charge=charge)
        if self.family == "semi-empirical":
            return XTBCalculator(method=self.options["method"], charge=charge,
                                 multiplicity=multiplicity)
        return PySCFCalculator(charge=charge, multiplicity=multiplicity, **self.options)


_LEVELS = {
    "mmff94": LevelOfTheory("mmff94", "MMFF94", "empirical", False,
                            "MMFF94 force field (RDKit); molecules only"),
    "gfn1": LevelOfTheory("gfn1", "GFN1-xTB", "semi-empirical", True,
                          "GFN1-xTB tight binding (tblite)", {"method": XTB_METHODS["gfn1"]}),
    "gfn2": LevelOfTheory("gfn2", "GFN2-xTB", "semi-empirical", True,
                          "GFN2-xTB tight binding (tblite)", {"method": XTB_METHODS["gfn2"]}),
}
_ALIASES = {"mmff": "mmff94", "gfn1-xtb": "gfn1", "gfn2-xtb": "gfn2", "xtb": "gfn2"}


def _dft_level(xc: str, basis: str) -> LevelOfTheory:
    return LevelOfTheory(
        f"dft:{xc}/{basis}", f"DFT {xc}/{basis}", "dft", False,
        f"Kohn-Sham DFT {xc}/{basis} (PySCF, density fitting); molecules only",
        {"xc": xc, "basis": basis},
    )


def get_level(name: str) -> LevelOfTheory:
    """The level of theory called `name` (case-insensitive); `dft` or `dft:XC/BASIS` for DFT.

    Raises:
        LevelOfTheoryError: unknown name, naming the known ones.
    """
    key = name.strip()
    lowered = key.lower()
    if lowered in _LEVELS or lowered in _ALIASES:
        return _LEVELS[_ALIASES.get(lowered, lowered)]
    if lowered == "dft":
        return _dft_level(DEFAULT_XC, DEFAULT_BASIS)
    if lowered.startswith("dft:"):
        spec = key[4:]
        if spec.count("/") != 1 or not all(spec.split("/")):
            raise LevelOfTheoryError(f"DFT level must read dft:XC/BASIS, got {name!r}")
        xc, basis = spec.split("/")
        return _dft_level(xc, basis)
    raise LevelOfTheoryError(
        f"unknown level of theory {name!r}; use one of {', '.join(list_levels())} or dft:XC/BASIS"
    )


def list_levels() -> list[str]:
    """Names of the built-in levels, cheapest first."""
    return [*list(_LEVELS), "dft"]
