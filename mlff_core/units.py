"""Physical constants and unit conversions used across mlff-plugins.

Inside `mlff_core` lengths are Å, energies eV, forces eV/Å, masses amu (relative atomic mass),
time fs. Engines convert at their boundary with the factors below.

kcal/mol and kJ/mol are exact since the 2019 SI redefinition (N_A and e are defined values);
Hartree and Bohr are CODATA 2022 recommended values.
"""

from __future__ import annotations

#: Avogadro constant, 1/mol (exact).
AVOGADRO = 6.022_140_76e23
#: Elementary charge, C (exact); 1 eV = this many J.
ELEMENTARY_CHARGE = 1.602_176_634e-19
#: Boltzmann constant, eV/K (exact: k_B / e).
BOLTZMANN_EV_PER_K = 1.380_649e-23 / ELEMENTARY_CHARGE

#: 1 kcal/mol in eV (thermochemical calorie, 4.184 J).
KCAL_PER_MOL = 4184.0 / (AVOGADRO * ELEMENTARY_CHARGE)
#: 1 kJ/mol in eV.
KJ_PER_MOL = 1000.0 / (AVOGADRO * ELEMENTARY_CHARGE)
#: 1 Hartree in eV (CODATA 2022).
HARTREE = 27.211_386_245_981
#: 1 Bohr radius in Å (CODATA 2022).
BOHR = 0.529_177_210_544
#: 1 nm in Å.
NANOMETER = 10.0
#: 1 meV in eV.
MILLI_EV = 1.0e-3

#: Force units accepted by reports and the CLI, as eV/Å per unit.
FORCE_UNITS: dict[str, float] = {
    "eV/A": 1.0,
    "meV/A": MILLI_EV,
    "kcal/mol/A": KCAL_PER_MOL,
    "kJ/mol/nm": KJ_PER_MOL / NANOMETER,
    "Ha/Bohr": HARTREE / BOHR,
}

#: Energy units, as eV per unit.
ENERGY_UNITS: dict[str, float] = {
    "eV": 1.0,
    "meV": MILLI_EV,
    "kcal/mol": KCAL_PER_MOL,
    "kJ/mol": KJ_PER_MOL,
    "Ha": HARTREE,
}


def force_conversion(unit: str) -> float:
    """Factor that turns a force in eV/Å into `unit` (multiply by it).

    Raises ValueError naming the accepted units for an unknown one.
    """
    try:
        return 1.0 / FORCE_UNITS[unit]
    except KeyError:
        raise ValueError(
            f"unknown force unit {unit!r}; use one of {', '.join(FORCE_UNITS)}"
        ) from None


def energy_conversion(unit: str) -> float:
    """Factor that turns an energy in eV into `unit` (multiply by it)."""
    try:
        return 1.0 / ENERGY_UNITS[unit]
    except KeyError:
        raise ValueError(
            f"unknown energy unit {unit!r}; use one of {', '.join(ENERGY_UNITS)}"
        ) from None
