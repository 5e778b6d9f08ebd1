"""Kohn-Sham DFT through PySCF as an ASE calculator (optional extra `mlff-plugins[dft]`)."""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from mlff_core import units
from mlff_core.errors import LevelOfTheoryError

DEFAULT_XC = "PBE"
DEFAULT_BASIS = "def2-SVP"
PYSCF_INSTALL = "pip install 'mlff-plugins[dft]'"


def pyscf_available() -> bool:
    try:
        import pyscf  # noqa: F401
    except ImportError:
        return False
    return True


class PySCFCalculator(Calculator):
    """DFT energies and analytic forces (eV, eV/Å) from PySCF, for molecules.

    Parameters:
        xc: exchange-correlation functional (PySCF/libxc name), default PBE; ``HF`` is
            Hartree–Fock, run without an integration grid.
        basis: Gaussian basis set, default def2-SVP.
        charge, multiplicity: total charge and spin multiplicity 2S+1 (UKS when open shell).
        density_fit: resolution-of-identity for the Coulomb term (much faster, ~1e-5 Ha error).
        conv_tol: SCF energy convergence in Hartree.
        grid_level: PySCF integration grid level (0-9).
        reuse_guess: start each SCF from the previous density matrix (same atoms).
    """

    implemented_properties = ["energy", "free_energy", "forces"]
    default_parameters = {
        "xc": DEFAULT_XC,
        "basis": DEFAULT_BASIS,
        "charge": 0,
        "multiplicity": 1,
        "density_fit": True,
        "conv_tol": 1e-9,
        "grid_level": 3,
        "max_memory_mb": 4000,
        "reuse_guess": True,
    }

    def __init__(self, **kwargs):
        if not pyscf_available():
            raise LevelOfTheoryError(
                f"DFT needs PySCF, an optional extra: {PYSCF_INSTALL}"
            )
        super().__init__(**kwargs)
        self.grid_points = 0  # XC integration points of the last calculation (0: none)
        self._density = None
        self._numbers = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        from pyscf import dft, gto, scf
        from pyscf.data.nist import BOHR as PYSCF_BOHR

        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        p = self.parameters
        if atoms.pbc.any():
            raise LevelOfTheoryError("the PySCF DFT level is for molecules, not periodic cells")
        try:
            mol = gto.M(
                atom=list(zip(atoms.get_chemical_symbols(), atoms.positions.tolist(),
                              strict=True)),
                unit="Angstrom",
                basis=p.basis,
                charge=p.charge,
                spin=p.multiplicity - 1,
                verbose=0,
                max_memory=p.max_memory_mb,
            )
        except (RuntimeError, KeyError, ValueError) as exc:
            raise LevelOfTheoryError(f"PySCF cannot build the molecule ({exc})") from None
        if p.xc.upper() == "HF":  # exact exchange only: no XC grid to build
            mf = scf.RHF(mol) if p.multiplicity == 1 else scf.UHF(mol)
        else:
            mf = dft.RKS(mol) if p.multiplicity == 1 else dft.UKS(mol)
            mf.xc = p.xc
            mf.grids.level = p.grid_level
        mf.conv_tol = p.conv_tol
        if p.density_fit:
            mf = mf.density_fit()
        same_atoms = self._numbers is not None and np.array_equal(self._numbers, atoms.numbers)
        guess = self._density if (p.reuse_guess and same_atoms) else None
        energy_ha = mf.kernel(dm0=guess)
        if not mf.converged:
            raise LevelOfTheoryError(f"DFT ({p.xc}/{p.basis}) SCF did not converge")
        gradient = mf.nuc_grad_method().kernel()
        grids = getattr(mf, "grids", None)
        self.grid_points = 0 if grids is None else int(np.size(grids.weights))
        self._density = mf.make_rdm1()
        self._numbers = atoms.numbers.copy()
        energy = float(energy_ha) * units.HARTREE
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        # PySCF turned Å into Bohr with its own constant, so its gradient is per its Bohr.
        self.results["forces"] = -np.asarray(gradient) * (units.HARTREE / PYSCF_BOHR)
