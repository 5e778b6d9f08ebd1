"""Levels of theory: each calculator against a direct call of its library, and forces against
finite differences of its own energy."""

import numpy as np
import pytest
import scipy.constants as sc
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from mlff_core.data.molecules import named_molecule, water_box
from mlff_core.errors import LevelOfTheoryError
from mlff_core.labels import MMFF94Calculator, XTBCalculator, get_level, list_levels
from mlff_core.labels.dft import pyscf_available

HARTREE_EV = sc.physical_constants["Hartree energy in eV"][0]
BOHR_A = sc.physical_constants["Bohr radius"][0] * 1e10
KCAL = 4184.0 / (sc.Avogadro * sc.e)


@pytest.fixture(scope="module")
def distorted_aspirin():
    """Aspirin with every atom displaced by up to 0.1 Å, so forces are large and non-trivial."""
    structure = named_molecule("aspirin", seed=1)
    rng = np.random.default_rng(0)
    structure.atoms.positions += rng.uniform(-0.1, 0.1, structure.atoms.positions.shape)
    return structure


@pytest.mark.parametrize("method", ["GFN1-xTB", "GFN2-xTB"])
def test_xtb_matches_direct_tblite_call(distorted_aspirin, method):
    from tblite.interface import Calculator

    atoms = distorted_aspirin.atoms.copy()
    atoms.calc = XTBCalculator(method=method)
    direct = Calculator(method, atoms.numbers, atoms.positions / BOHR_A)
    direct.set("verbosity", 0)
    result = direct.singlepoint()
    assert atoms.get_potential_energy() == pytest.approx(result["energy"] * HARTREE_EV, abs=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), -result["gradient"] * HARTREE_EV / BOHR_A,
                               atol=1e-6)


@pytest.mark.parametrize("method", ["GFN1-xTB", "GFN2-xTB"])
def test_xtb_forces_are_energy_gradients(distorted_aspirin, method):
    atoms = distorted_aspirin.atoms.copy()
    atoms.calc = XTBCalculator(method=method, accuracy=0.01)
    analytic = atoms.get_forces()
    numeric = calculate_numerical_forces(atoms, eps=1e-4, iatoms=[0, 5, 12, 20])
    np.testing.assert_allclose(analytic[[0, 5, 12, 20]], numeric, atol=2e-4)


def test_xtb_periodic_stress_is_strain_derivative():
    atoms = water_box(8).atoms
    atoms.calc = XTBCalculator(method="GFN1-xTB", accuracy=0.001)
    analytic = atoms.get_stress()
    # eps 1e-4: the SCF noise in the energy (~1e-7 eV) divided by 2·eps·V stays ~1e-6 eV/Å³,
    # while the truncation error of the central difference is O(eps²)
    numeric = calculate_numerical_stress(atoms, eps=1e-4)
    np.testing.assert_allclose(analytic, numeric, atol=2e-5)


def test_mmff_matches_direct_rdkit_call(distorted_aspirin):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    atoms = distorted_aspirin.atoms.copy()
    mol = Chem.AddHs(Chem.MolFromSmiles(distorted_aspirin.smiles))
    conformer = Chem.Conformer(len(atoms))
    for i, xyz in enumerate(atoms.positions):
        conformer.SetAtomPosition(i, xyz.tolist())
    mol.AddConformer(conformer)
    ff = AllChem.MMFFGetMoleculeForceField(mol, AllChem.MMFFGetMoleculeProperties(mol))
    expected = ff.CalcEnergy() * KCAL

    atoms.calc = MMFF94Calculator(smiles=distorted_aspirin.smiles)
    assert atoms.get_potential_energy() == pytest.approx(expected, rel=1e-12)
    # Bonds perceived from the geometry give the same force field.
    perceived = atoms.copy()
    perceived.calc = MMFF94Calculator()
    assert perceived.get_potential_energy() == pytest.approx(expected, rel=1e-12)


def test_mmff_forces_are_energy_gradients(distorted_aspirin):
    atoms = distorted_aspirin.atoms.copy()
    atoms.calc = MMFF94Calculator(smiles=distorted_aspirin.smiles)
    np.testing.assert_allclose(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-5),
                               atol=1e-5)


def test_mmff_refuses_periodic_and_misordered_input(distorted_aspirin):
    box = water_box(2).atoms
    box.calc = MMFF94Calculator()
    with pytest.raises(LevelOfTheoryError, match="periodic"):
        box.get_potential_energy()
    atoms = distorted_aspirin.atoms.copy()[::-1]
    atoms.calc = MMFF94Calculator(smiles=distorted_aspirin.smiles)
    with pytest.raises(LevelOfTheoryError, match="not in the order"):
        atoms.get_potential_energy()


def test_level_names():
    assert list_levels() == ["mmff94", "gfn1", "gfn2", "dft"]
    assert get_level("GFN2").tag == "GFN2-xTB"
    assert get_level("mmff").key == "mmff94"
    assert get_level("dft").tag == "DFT PBE/def2-SVP"
    assert get_level("dft:B3LYP/def2-TZVP").options == {"xc": "B3LYP", "basis": "def2-TZVP"}
    with pytest.raises(LevelOfTheoryError, match="unknown level of theory 'ccsd'"):
        get_level("ccsd")
    with pytest.raises(LevelOfTheoryError, match="dft:XC/BASIS"):
        get_level("dft:PBE")


def test_require_names_the_missing_extra(monkeypatch):
    from mlff_core.labels import levels

    assert get_level("gfn2").require().key == "gfn2"
    monkeypatch.setattr(levels, "pyscf_available", lambda: False)
    assert get_level("mmff94").require().key == "mmff94"
    with pytest.raises(LevelOfTheoryError,
                       match=r"dft:PBE/def2-SVP needs PySCF.*pip install 'mlff-plugins\[dft\]'"):
        get_level("dft").require()


def _pyscf_molecule(atoms: Atoms):
    """The reference PySCF molecule of `atoms` in STO-3G, built in the test."""
    from pyscf import gto

    return gto.M(atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(),
                                                     atoms.positions, strict=True)],
                 basis="sto-3g", unit="Angstrom", verbose=0)


@pytest.mark.skipif(not pyscf_available(), reason="PySCF (the [dft] extra) is not installed")
def test_dft_matches_pyscf_and_finite_differences():
    from pyscf import dft

    atoms = Atoms("OH2", positions=[[0, 0, 0.1], [0.95, 0.1, 0], [-0.3, 0.9, 0]])
    atoms.calc = get_level("dft:PBE/sto-3g").calculator()
    mol = _pyscf_molecule(atoms)
    mf = dft.RKS(mol).density_fit()
    mf.xc = "PBE"
    mf.conv_tol = 1e-10
    assert atoms.get_potential_energy() == pytest.approx(mf.kernel() * HARTREE_EV, abs=1e-6)
    numeric = calculate_numerical_forces(atoms, eps=1e-4, iatoms=[0])
    np.testing.assert_allclose(atoms.get_forces()[[0]], numeric, atol=5e-4)


@pytest.mark.skipif(not pyscf_available(), reason="PySCF (the [dft] extra) is not installed")
def test_hartree_fock_level_skips_the_grid_and_matches_pyscf():
    """`dft:HF/BASIS` is Hartree–Fock without an XC grid: PySCF's RKS with xc='HF' (which builds
    one it does not need) gives the same energy, and the forces match finite differences."""
    from pyscf import dft

    atoms = Atoms("OH2", positions=[[0, 0, 0.1], [0.95, 0.1, 0], [-0.3, 0.9, 0]])
    calculator = get_level("dft:HF/sto-3g").calculator()
    atoms.calc = calculator
    energy = atoms.get_potential_energy()
    mol = _pyscf_molecule(atoms)
    mf = dft.RKS(mol).density_fit()
    mf.xc = "HF"
    mf.conv_tol = 1e-10
    assert energy == pytest.approx(mf.kernel() * HARTREE_EV, abs=1e-6)
    assert calculator.grid_points == 0
    numeric = calculate_numerical_forces(atoms, eps=1e-4, iatoms=[1])
    np.testing.assert_allclose(atoms.get_forces()[[1]], numeric, atol=5e-4)
