"""Starting structures: named molecules, SMILES and water boxes."""

import numpy as np
import pytest
from ase.neighborlist import neighbor_list

from mlff_core.data.molecules import MOLECULES, covalent_bonds, named_molecule, water_box
from mlff_core.errors import DataError

MD17_FORMULAS = {
    "aspirin": "C9H8O4",
    "ethanol": "C2H6O",
    "malonaldehyde": "C3H4O2",
    "benzene": "C6H6",
    "toluene": "C7H8",
    "naphthalene": "C10H8",
    "salicylic_acid": "C7H6O3",
    "uracil": "C4H4N2O2",
    "ac_ala3_nhme": "C12H22N4O4",
}


@pytest.mark.parametrize(("name", "formula"), sorted(MD17_FORMULAS.items()))
def test_named_molecules_have_the_right_formula_and_bonds(name, formula):
    structure = named_molecule(name)
    assert structure.atoms.get_chemical_formula(mode="hill") == formula
    # The SMILES bond graph agrees with bonds perceived from the relaxed geometry.
    from_geometry = {tuple(b) for b in covalent_bonds(structure.atoms)}
    from_smiles = {tuple(sorted(b)) for b in structure.bonds.tolist()}
    assert from_geometry == from_smiles


def test_embedding_is_seeded():
    a, b, c = (named_molecule("aspirin", seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.atoms.positions, b.atoms.positions)
    assert not np.allclose(a.atoms.positions, c.atoms.positions)


def test_every_named_molecule_embeds():
    for name in MOLECULES:
        assert len(named_molecule(name).atoms) > 0


def test_unknown_molecule():
    with pytest.raises(DataError, match="unknown molecule 'caffeine'"):
        named_molecule("caffeine")


def test_water_box_density_and_no_clashes():
    structure = water_box(32)
    atoms = structure.atoms
    assert len(atoms) == 96 and atoms.pbc.all()
    grams = 32 * 18.01528 / 6.02214076e23
    assert grams / (atoms.get_volume() * 1e-24) == pytest.approx(0.997, rel=1e-3)
    i, j, d = neighbor_list("ijd", atoms, 3.0)
    same = i // 3 == j // 3
    oxygen_pairs = (atoms.numbers[i] == 8) & (atoms.numbers[j] == 8) & ~same
    assert d[oxygen_pairs].min() > 2.4  # no overlapping molecules, also across faces
    np.testing.assert_allclose(d[same & (atoms.numbers[i] == 8)], 0.9572, atol=1e-3)
    assert len(structure.bonds) == 64
