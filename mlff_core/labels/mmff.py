"""MMFF94 (RDKit) as an ASE calculator: the cheap, empirical level of theory."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from mlff_core import units
from mlff_core.errors import LevelOfTheoryError


def rdkit_molecule(atoms: Atoms, smiles: str | None = None, charge: int = 0):
    """An RDKit molecule with explicit hydrogens whose atom order matches `atoms`.

    With `smiles`, the bond graph comes from it (its atom order, hydrogens added last, must match
    `atoms` — true for molecules built by `mlff_core.data.molecules`); otherwise bonds and bond
    orders are perceived from the geometry (RDKit's DetermineBonds, xyz2mol).
    """
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    if smiles is not None:
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise LevelOfTheoryError(f"MMFF94: cannot parse SMILES {smiles!r}")
        mol = Chem.AddHs(mol)
        numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
        if numbers != atoms.numbers.tolist():
            raise LevelOfTheoryError(
                f"MMFF94: the atoms of SMILES {smiles!r} are not in the order of the frames; "
                "leave out the SMILES to perceive bonds from the geometry"
            )
    else:
        lines = [str(len(atoms)), ""]
        lines += [f"{s} {x:.10f} {y:.10f} {z:.10f}" for s, (x, y, z) in
                  zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)]
        mol = Chem.MolFromXYZBlock("\n".join(lines) + "\n")
        if mol is None:
            raise LevelOfTheoryError("MMFF94: RDKit cannot read this geometry")
        try:
            rdDetermineBonds.DetermineBonds(mol, charge=charge)
        except (ValueError, RuntimeError) as exc:
            raise LevelOfTheoryError(
                f"MMFF94: cannot perceive bonds from the geometry ({exc}); give the SMILES"
            ) from None
    Chem.SanitizeMol(mol)
    return mol


class MMFF94Calculator(Calculator):
    """MMFF94 energies and forces from RDKit, in eV and eV/Å.

    The bond graph is fixed when the calculator first sees a molecule (from `smiles` or perceived
    from that geometry), as for any classical force field. Molecules only: periodic cells are
    refused.

    Parameters:
        smiles: SMILES whose atom order (hydrogens last) matches the atoms; optional.
        variant: 'MMFF94' or 'MMFF94s'.
        charge: total charge, used when perceiving bonds from the geometry.
    """

    implemented_properties = ["energy", "free_energy", "forces"]
    default_parameters = {"smiles": None, "variant": "MMFF94", "charge": 0}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._force_field = None
        self._numbers: np.ndarray | None = None

    def _setup(self, atoms: Atoms) -> None:
        from rdkit.Chem import AllChem

        mol = rdkit_molecule(atoms, self.parameters.smiles, self.parameters.charge)
        props = AllChem.MMFFGetMoleculeProperties(mol, mmffVariant=self.parameters.variant)
        if props is None:
            raise LevelOfTheoryError("MMFF94 has no parameters for this molecule")
        from rdkit.Chem.rdchem import Conformer

        conformer = Conformer(len(atoms))
        for i, xyz in enumerate(atoms.positions):
            conformer.SetAtomPosition(i, xyz.tolist())
        mol.RemoveAllConformers()
        mol.AddConformer(conformer, assignId=True)
        # Fragments (dimers, solvated clusters) interact: keep inter-fragment non-bonded terms.
        force_field = AllChem.MMFFGetMoleculeForceField(
            mol, props, ignoreInterfragInteractions=False
        )
        if force_field is None:
            raise LevelOfTheoryError("MMFF94: RDKit could not build the force field")
        self._force_field = force_field
        self._numbers = atoms.numbers.copy()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if atoms.pbc.any():
            raise LevelOfTheoryError("MMFF94 is for molecules; it cannot label periodic cells")
        if self._force_field is None or not np.array_equal(self._numbers, atoms.numbers):
            self._setup(atoms)
        coords = atoms.positions.ravel().tolist()
        energy = self._force_field.CalcEnergy(coords) * units.KCAL_PER_MOL
        gradient = np.asarray(self._force_field.CalcGrad(coords)).reshape(-1, 3)
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["forces"] = -gradient * units.KCAL_PER_MOL
