"""Unit conversions against CODATA constants (scipy.constants) and exact SI definitions."""

import pytest
import scipy.constants as sc

from mlff_core import units


def test_kcal_per_mol_from_exact_si_constants():
    assert units.KCAL_PER_MOL == pytest.approx(4184.0 / (sc.Avogadro * sc.e), rel=1e-15)
    # Textbook value: 1 eV = 23.0605 kcal/mol.
    assert 1.0 / units.KCAL_PER_MOL == pytest.approx(23.0605, abs=1e-4)


def test_kj_per_mol_and_boltzmann():
    assert units.KJ_PER_MOL == pytest.approx(1000.0 / (sc.Avogadro * sc.e), rel=1e-15)
    assert units.KJ_PER_MOL * 4.184 == pytest.approx(units.KCAL_PER_MOL, rel=1e-15)
    assert units.BOLTZMANN_EV_PER_K == pytest.approx(
        sc.physical_constants["Boltzmann constant in eV/K"][0], rel=1e-12
    )


def test_hartree_and_bohr_match_codata():
    # scipy ships CODATA 2018 or 2022; both agree with ours to better than 1e-8.
    assert units.HARTREE == pytest.approx(sc.physical_constants["Hartree energy in eV"][0],
                                          rel=1e-8)
    assert units.BOHR == pytest.approx(sc.physical_constants["Bohr radius"][0] * 1e10, rel=1e-8)


def test_force_conversions():
    assert units.force_conversion("eV/A") == 1.0
    assert units.force_conversion("meV/A") == pytest.approx(1000.0)
    assert units.force_conversion("kcal/mol/A") == pytest.approx(23.060548, rel=1e-6)
    # 1 eV/Å = 96.485 kJ/mol/Å = 964.85 kJ/mol/nm
    assert units.force_conversion("kJ/mol/nm") == pytest.approx(964.8533, rel=1e-6)
    with pytest.raises(ValueError, match="unknown force unit"):
        units.force_conversion("N")
    assert units.energy_conversion("kcal/mol") == pytest.approx(23.060548, rel=1e-6)
