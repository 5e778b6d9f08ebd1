"""Starting structures: named molecules (the MD17 set, Ac-Ala3-NHMe), SMILES, water boxes.

Molecules are embedded in 3-D with RDKit (ETKDG, seeded) and relaxed with MMFF94, so the same
name and seed always give the same structure. Atom order is RDKit's: heavy atoms in SMILES order,
then hydrogens; the SMILES travels with the structure so force fields know the bond graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import atomic_masses

from mlff_core.errors import DataError
from mlff_core.units import AVOGADRO

#: Named molecules: the MD17 set, its rMD17 extras, and MD22's smallest peptide.
MOLECULES: dict[str, str] = {
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "ethanol": "CCO",
    "malonaldehyde": "O=C/C=C\\O",  # enol tautomer, as in MD17
    "benzene": "c1ccccc1",
    "toluene": "Cc1ccccc1",
    "naphthalene": "c1ccc2ccccc2c1",
    "salicylic_acid": "OC(=O)c1ccccc1O",
    "uracil": "O=C1C=CNC(=O)N1",
    "paracetamol": "CC(=O)Nc1ccc(O)cc1",
    "azobenzene": "c1ccc(cc1)/N=N/c1ccccc1",
    "ac_ala3_nhme": "CC(=O)N[C@@H](C)C(=O)N[C@@H](C)C(=O)N[C@@H](C)C(=O)NC",
    "water": "O",
}
_ALIASES = {
    "salicylic": "salicylic_acid",
    "malondialdehyde": "malonaldehyde",
    "ac-ala3-nhme": "ac_ala3_nhme",
    "ala3": "ac_ala3_nhme",
}

#: Density of liquid water at 298 K, g/cm³.
WATER_DENSITY = 0.997


@dataclass
class Structure:
    """A starting structure and what is known about its chemistry.

    Attributes:
        name: molecule name, SMILES, or 'water_box_N'.
        atoms: `ase.Atoms` in Å (cell and pbc set for boxes).
        smiles: SMILES whose atom order (hydrogens last) matches `atoms`, when there is one.
        bonds: [B, 2] atom index pairs of covalent bonds (from the chemistry, not the geometry).
        charge: total charge.
    """

    name: str
    atoms: Atoms
    smiles: str | None
    bonds: np.ndarray
    charge: int = 0


def molecule_names() -> list[str]:
    return sorted(MOLECULES)


def canonical_molecule_name(name: str) -> str:
    key = name.strip().lower().replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key not in MOLECULES:
        raise DataError(
            f"unknown molecule {name!r}; known: {', '.join(molecule_names())} (or give --smiles)"
        )
    return key


def named_molecule(name: str, seed: int = 0) -> Structure:
    """Structure of a named molecule (see `MOLECULES`), embedded with `seed`."""
    key = canonical_molecule_name(name)
    structure = molecule_from_smiles(MOLECULES[key], seed=seed)
    structure.name = key
    return structure


def molecule_from_smiles(smiles: str, seed: int = 0) -> Structure:
    """3-D structure of a SMILES string: RDKit ETKDGv3 embedding (seeded) + MMFF94 relaxation."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise DataError(f"cannot parse SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mol, params) != 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise DataError(f"RDKit could not embed SMILES {smiles!r} in 3-D")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    atoms = Atoms(
        numbers=[a.GetAtomicNum() for a in mol.GetAtoms()],
        positions=mol.GetConformer().GetPositions(),
    )
    bonds = np.array(
        [[b.GetBeginAtomIdx(), b.GetEndAtomIdx()] for b in mol.GetBonds()], dtype=np.int64
    ).reshape(-1, 2)
    return Structure(name=smiles, atoms=atoms, smiles=smiles, bonds=bonds,
                     charge=Chem.GetFormalCharge(mol))


def water_box(n_molecules: int, density: float = WATER_DENSITY, relax: bool = True) -> Structure:
    """A cubic periodic box of exactly `n_molecules` waters at `density` g/cm³.

    Waters come from OpenMM's pre-equilibrated TIP3P box (Modeller.addSolvent). Modeller's box for
    a fixed count is too dilute and has clashes across its faces, so the molecule centres are
    scaled to the requested density and the box is relaxed by an energy minimisation with rigid
    TIP3P (OpenMM, PME) until no two molecules overlap. Atom order: O, H, H per molecule.
    """
    if n_molecules < 1:
        raise DataError(f"a water box needs at least one molecule, got {n_molecules}")
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    forcefield = app.ForceField("amber14/tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield, model="tip3p", numAdded=n_molecules, boxShape="cube")
    elements = [atom.element.atomic_number for atom in modeller.topology.atoms()]
    if elements != [8, 1, 1] * n_molecules:
        raise DataError(f"OpenMM made a water box of {len(elements) // 3} molecules, not "
                        f"{n_molecules} ordered O, H, H")
    waters = np.array(modeller.getPositions().value_in_unit(unit.angstrom)).reshape(-1, 3, 3)
    box = np.array(modeller.topology.getPeriodicBoxVectors().value_in_unit(unit.angstrom))

    masses = atomic_masses[[8, 1, 1]]
    centres = (waters * masses[None, :, None]).sum(1) / masses.sum()
    edge = (n_molecules * masses.sum() / AVOGADRO / density * 1e24) ** (1.0 / 3.0)  # Å
    waters = waters - centres[:, None, :] + (centres * edge / box[0, 0])[:, None, :]
    positions = waters.reshape(-1, 3)

    if relax:
        topology = modeller.topology
        topology.setPeriodicBoxVectors(np.eye(3) * edge * 0.1)
        cutoff = min(0.9, 0.45 * edge * 0.1)
        system = forcefield.createSystem(topology, nonbondedMethod=app.PME,
                                         nonbondedCutoff=cutoff * unit.nanometer, rigidWater=True)
        integrator = openmm.VerletIntegrator(0.001)
        platform = openmm.Platform.getPlatformByName("CPU")
        context = openmm.Context(system, integrator, platform)
        context.setPositions(positions * 0.1)
        openmm.LocalEnergyMinimizer.minimize(context, 10.0, 2000)
        state = context.getState(getPositions=True)
        positions = np.array(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))

    atoms = Atoms(
        numbers=np.tile([8, 1, 1], n_molecules),
        positions=positions,
        cell=np.eye(3) * edge,
        pbc=True,
    )
    _wrap_molecules(atoms, 3)
    offsets = 3 * np.arange(n_molecules)[:, None]
    bonds = np.concatenate([offsets + [0, 1], offsets + [0, 2]]).astype(np.int64)
    return Structure(name=f"water_box_{n_molecules}", atoms=atoms, smiles=None, bonds=bonds)


def _wrap_molecules(atoms: Atoms, atoms_per_molecule: int) -> None:
    """Wrap whole molecules into the cell by their first atom, keeping each molecule intact."""
    cell = atoms.cell.array
    positions = atoms.positions.reshape(-1, atoms_per_molecule, 3)
    anchor = positions[:, 0, :]
    shift = -np.floor(np.linalg.solve(cell.T, anchor.T).T) @ cell
    atoms.positions = (positions + shift[:, None, :]).reshape(-1, 3)


def structure_from_file(path: str, index: int = 0) -> Structure:
    """Starting structure from any file `mlff_core.data.read_frames` reads (frame `index`).

    Bonds are perceived from covalent radii (ASE natural cutoffs) since a file carries no
    chemistry.
    """
    from mlff_core.data.formats import read_frames

    frames = read_frames(path)
    atoms = frames.to_atoms(index)
    atoms.calc = None
    return Structure(name=frames.formula, atoms=atoms, smiles=None, bonds=covalent_bonds(atoms))


#: Bond perception margin, Å: atoms i, j are bonded when closer than r_i + r_j + BOND_SKIN.
#: The C++ `fix mlff/monitor` (plugins/lammps/src/fix_mlff_monitor.cpp) uses the same rule and
#: the same radii; a parity test holds them together. (ASE's `NeighborList(natural_cutoffs(...))`
#: with its default skin=0.3 adds the skin to each radius, i.e. r_i + r_j + 0.6 Å, which also
#: bonds many non-bonded H···H and H···O pairs; it is deliberately not used.)
BOND_SKIN = 0.3


def covalent_bonds(atoms: Atoms) -> np.ndarray:
    """Bonds perceived from covalent radii: pairs closer than r_i + r_j + `BOND_SKIN` (Å).

    r are ASE's covalent radii (Cordero et al. 2008, `ase.data.covalent_radii`, ASE's natural
    cutoffs). Plain r_i + r_j would miss C-H bonds (1.09 Å vs 0.76 + 0.31 Å).

    Returns [B, 2] int64 index pairs, i < j, sorted; minimum image along periodic directions.
    """
    from ase.data import covalent_radii
    from ase.neighborlist import neighbor_list

    radii = covalent_radii[atoms.numbers]
    # candidates with a little margin, then the exact rule (the C++ fix evaluates the same sum)
    first, second, distance = neighbor_list("ijd", atoms, radii + 0.5 * BOND_SKIN + 1e-6,
                                            self_interaction=False)
    keep = (first < second) & (distance < radii[first] + radii[second] + BOND_SKIN)
    pairs = sorted(set(zip(first[keep].tolist(), second[keep].tolist(), strict=True)))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def whole_positions(positions: np.ndarray, bonds: np.ndarray, cell: np.ndarray | None,
                    pbc: np.ndarray | None) -> np.ndarray:
    """Positions [N, 3] Å of a molecule (or several) made whole across periodic boundaries.

    Each atom is placed at the minimum image of its bonded neighbour, walking the bond graph
    [B, 2] breadth-first from the lowest index of each connected part; the parts themselves are
    left where their first atom is. Without periodic directions the positions are returned as
    given. The same walk is done in TorchScript by the OpenMM ML/MM adapter.
    """
    positions = np.array(positions, dtype=float)
    if cell is None or pbc is None or not np.any(pbc):
        return positions
    for children, parents in bond_tree_levels(len(positions), bonds):
        step = positions[children] - positions[parents]
        fractional = np.linalg.solve(cell.T, step.T).T
        fractional -= np.where(pbc, np.round(fractional), 0.0)
        positions[children] = positions[parents] + fractional @ cell
    return positions


def bond_tree_levels(n_atoms: int, bonds: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Breadth-first spanning forest of the bond graph, level by level: a list of
    (children [k], parents [k]) index arrays, each child's parent placed in an earlier level."""
    neighbours: list[list[int]] = [[] for _ in range(n_atoms)]
    for i, j in np.asarray(bonds, dtype=np.int64).reshape(-1, 2).tolist():
        neighbours[i].append(j)
        neighbours[j].append(i)
    seen = np.zeros(n_atoms, dtype=bool)
    levels: list[tuple[list[int], list[int]]] = []
    for root in range(n_atoms):
        if seen[root]:
            continue
        seen[root] = True
        frontier, depth = [root], 0
        while frontier:
            following = []
            for parent in frontier:
                for child in neighbours[parent]:
                    if not seen[child]:
                        seen[child] = True
                        following.append(child)
                        if len(levels) <= depth:
                            levels.append(([], []))
                        levels[depth][0].append(child)
                        levels[depth][1].append(parent)
            frontier, depth = following, depth + 1
    return [(np.array(c, dtype=np.int64), np.array(p, dtype=np.int64)) for c, p in levels]
