"""Data generation: Langevin sampling with one level, labels from the same or another level."""

import numpy as np
import pytest
import scipy.constants as sc

from mlff_core.data.generate import LangevinSampling, generate_frames, relabel_frames
from mlff_core.data.molecules import named_molecule, water_box
from mlff_core.errors import DataError, LevelOfTheoryError
from mlff_core.labels import get_level

HARTREE_EV = sc.physical_constants["Hartree energy in eV"][0]
BOHR_A = sc.physical_constants["Bohr radius"][0] * 1e10
KCAL = 4184.0 / (sc.Avogadro * sc.e)
SHORT = LangevinSampling(temperature=500.0, stride=3, equilibration=10, seed=2)


def _direct_tblite(method, numbers, positions):
    from tblite.interface import Calculator

    calc = Calculator(method, numbers, positions / BOHR_A)
    calc.set("verbosity", 0)
    result = calc.singlepoint()
    return result["energy"] * HARTREE_EV, -result["gradient"] * HARTREE_EV / BOHR_A


@pytest.fixture(scope="module")
def aspirin_gfn2():
    return generate_frames(named_molecule("aspirin"), get_level("gfn2"), 4, SHORT)


def test_generated_labels_equal_direct_tblite_calls(aspirin_gfn2):
    frames = aspirin_gfn2
    assert frames.n_frames == 4 and frames.formula == "C9H8O4"
    assert set(frames.levels) == {"GFN2-xTB"}
    for i in range(frames.n_frames):
        energy, forces = _direct_tblite("GFN2-xTB", frames.atomic_numbers, frames.positions[i])
        assert frames.energies[i] == pytest.approx(energy, abs=1e-6)
        np.testing.assert_allclose(frames.forces[i], forces, atol=1e-6)


def test_sampling_moves_atoms_and_keeps_molecule_whole(aspirin_gfn2):
    frames = aspirin_gfn2
    steps = np.linalg.norm(np.diff(frames.positions, axis=0), axis=-1)
    assert steps.max() > 0.01  # configurations differ
    bonds = np.array(frames.provenance["system"]["bonds"])
    lengths = np.linalg.norm(
        frames.positions[:, bonds[:, 0]] - frames.positions[:, bonds[:, 1]], axis=-1
    )
    assert lengths.max() < 1.8 and lengths.min() > 0.85


def test_provenance_records_how_frames_were_made(aspirin_gfn2):
    prov = aspirin_gfn2.provenance
    assert prov["level_of_theory"] == "GFN2-xTB"
    assert prov["sampling"] == {"method": "langevin", "driver_level": "GFN2-xTB",
                                "temperature": 500.0, "timestep": 0.5, "friction": 10.0,
                                "stride": 3, "equilibration": 10, "seed": 2}
    assert prov["system"]["smiles"] == "CC(=O)Oc1ccccc1C(=O)O"
    assert {"tblite", "ase", "numpy"} <= set(prov["package_versions"])


def test_generation_is_deterministic_for_a_seed():
    structure = named_molecule("ethanol")
    level = get_level("gfn2")
    a = generate_frames(structure, level, 3, SHORT)
    b = generate_frames(structure, level, 3, SHORT)
    c = generate_frames(structure, level, 3, LangevinSampling(stride=3, equilibration=10, seed=3))
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.energies, b.energies)
    assert not np.allclose(a.positions, c.positions)


def test_label_level_differs_from_driver():
    from rdkit import Chem
    from rdkit.Chem import AllChem

    structure = named_molecule("ethanol")
    frames = generate_frames(structure, get_level("mmff94"), 3, SHORT,
                             label_level=get_level("gfn1"))
    assert set(frames.levels) == {"GFN1-xTB"}
    assert frames.provenance["sampling"]["driver_level"] == "MMFF94"
    for i in range(3):
        energy, forces = _direct_tblite("GFN1-xTB", frames.atomic_numbers, frames.positions[i])
        assert frames.energies[i] == pytest.approx(energy, abs=1e-6)

    cheap = relabel_frames(frames, get_level("mmff94"))
    assert set(cheap.levels) == {"MMFF94"}
    assert cheap.provenance["relabelled_from"] == ["GFN1-xTB"]
    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    props = AllChem.MMFFGetMoleculeProperties(mol)
    for i in range(3):
        conformer = Chem.Conformer(9)
        for k, xyz in enumerate(frames.positions[i]):
            conformer.SetAtomPosition(k, xyz.tolist())
        mol.RemoveAllConformers()
        mol.AddConformer(conformer)
        ff = AllChem.MMFFGetMoleculeForceField(mol, props)
        assert cheap.energies[i] == pytest.approx(ff.CalcEnergy() * KCAL, rel=1e-12)
    np.testing.assert_array_equal(cheap.positions, frames.positions)


def test_periodic_water_box_with_gfn1():
    frames = generate_frames(water_box(6), get_level("gfn1"), 2,
                             LangevinSampling(temperature=300.0, stride=1, equilibration=1))
    assert frames.is_periodic and frames.cell.shape == (2, 3, 3)
    assert frames.n_atoms == 18
    with pytest.raises(LevelOfTheoryError, match="cannot drive a periodic system"):
        generate_frames(water_box(2), get_level("mmff94"), 1, SHORT)


def test_sampling_settings_are_checked():
    with pytest.raises(DataError, match="temperature must be positive"):
        LangevinSampling(temperature=-1)


class _Kill(Exception):
    """Stands for Ctrl-C or a batch system's kill in the middle of a run."""


def _killed_after(units):
    """A progress callback that kills the run after `units` MD steps + labelled frames."""
    count = [0]

    def advance(n=1):
        count[0] += n
        if count[0] > units:
            raise _Kill

    return advance


@pytest.mark.parametrize("label", [None, "gfn1"])
def test_a_killed_generation_resumes_to_the_uninterrupted_frames(tmp_path, label):
    """Before: a Ctrl-C lost every labelled frame. The resumed run continues the same MD
    (positions, momenta, thermostat random state) and gives bit for bit the frames of a run
    that was never stopped. Killed during sampling (half-way through the MD), or during
    labelling (after 4 of 6 frames: partial saves every 2 frames)."""
    from mlff_core.data.partial import PartialRun

    ethanol, driver = named_molecule("ethanol"), get_level("mmff94")
    labeller = get_level(label) if label else None
    settings = {"case": label}
    reference = generate_frames(ethanol, driver, 6, SHORT, labeller)
    # 10 equilibration steps, 6 frames × stride 3, then (with labels) 6 labelled frames
    kill_after = 10 + 18 + 4 if label else 10 + 3 * 3 + 2
    partial = PartialRun(tmp_path / "e.npz.partial.npz", settings, every_frames=2,
                         every_seconds=1e9)
    with pytest.raises(_Kill):
        generate_frames(ethanol, driver, 6, SHORT, labeller, _killed_after(kill_after), partial)
    saved = partial.load()
    assert str(saved["phase"]) == ("label" if label else "sample")
    assert int(saved["frames_done"]) == (4 if label else 2), int(saved["frames_done"])
    resumed = generate_frames(ethanol, driver, 6, SHORT, labeller,
                              partial=PartialRun(partial.path, settings, every_frames=2))
    for name in ("positions", "energies", "forces"):
        assert np.array_equal(getattr(resumed, name), getattr(reference, name)), name
    assert list(resumed.levels) == list(reference.levels)
    with pytest.raises(DataError, match=r"other settings \(case: "):
        PartialRun(partial.path, {"case": "other"}).load()
