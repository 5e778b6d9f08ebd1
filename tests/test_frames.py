"""The Frames container: validation, selection, joining, ASE round trips."""

import numpy as np
import pytest
from ase.data import atomic_masses

from mlff_core.data.frames import Frames
from mlff_core.errors import DataError


def test_basic_properties(water_frames):
    assert (water_frames.n_frames, water_frames.n_atoms) == (3, 3)
    assert water_frames.formula == "H2O"
    assert water_frames.elements == ["H", "O"]
    assert water_frames.symbols == ["O", "H", "H"]
    assert water_frames.has_labels and not water_frames.is_periodic
    np.testing.assert_allclose(water_frames.masses, atomic_masses[[8, 1, 1]])
    summary = water_frames.summary()
    assert summary["elements"] == {"H": 2, "O": 1}
    assert summary["levels"] == {"GFN2-xTB": 3}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"positions": np.full((2, 3, 3), np.nan)}, "positions contains NaN values at frame 0"),
        ({"energies": [1.0, np.inf]}, "energies contains infinite values"),
        ({"forces": np.zeros((2, 4, 3))}, "forces have shape (2, 4, 3)"),
        ({"energies": [1.0, 2.0, 3.0]}, "energies has 3 values but there are 2 frames"),
        ({"atomic_numbers": [8, 1]}, "atomic_numbers has shape (2,)"),
        ({"atomic_numbers": [8, 1, 0]}, "unknown element with atomic number 0"),
        ({"atomic_numbers": [8, 1, 300]}, "unknown element with atomic number 300"),
        ({"pbc": True}, "periodic frames need a cell"),
        ({"positions": np.zeros((0, 3, 3)), "energies": None, "forces": None}, "no frames"),
        ({"masses": [16.0, -1.0, 1.0]}, "masses must be positive"),
    ],
)
def test_invalid_values_are_rejected(change, message):
    arguments = {
        "positions": np.zeros((2, 3, 3)),
        "atomic_numbers": [8, 1, 1],
        "energies": [1.0, 2.0],
        "forces": np.zeros((2, 3, 3)),
    }
    arguments.update(change)
    with pytest.raises(DataError) as info:
        Frames(**arguments, source="bad.npz")
    assert str(info.value).startswith("bad.npz: ")
    assert message in str(info.value)


def test_selection_and_concatenation(water_frames):
    one = water_frames[1]
    assert one.n_frames == 1
    np.testing.assert_array_equal(one.positions[0], water_frames.positions[1])
    picked = water_frames[np.array([True, False, True])]
    np.testing.assert_array_equal(picked.energies, water_frames.energies[[0, 2]])
    joined = Frames.concatenate([water_frames[:1], water_frames[1:]])
    np.testing.assert_array_equal(joined.forces, water_frames.forces)
    np.testing.assert_array_equal(joined.levels, water_frames.levels)
    other = Frames(positions=np.zeros((1, 2, 3)), atomic_numbers=[1, 1])
    with pytest.raises(DataError, match="atoms differ"):
        Frames.concatenate([water_frames, other])
    with pytest.raises(IndexError):
        water_frames[3]


def test_ase_round_trip(periodic_frames):
    images = list(periodic_frames.iter_atoms())
    assert images[1].get_potential_energy() == pytest.approx(-10.5)
    back = Frames.from_atoms(images)
    np.testing.assert_allclose(back.positions, periodic_frames.positions)
    np.testing.assert_allclose(back.forces, periodic_frames.forces)
    np.testing.assert_allclose(back.cell, periodic_frames.cell)
    assert back.pbc.all()


def test_content_hash_depends_on_data(water_frames):
    same = water_frames[:]
    assert same.content_hash() == water_frames.content_hash()
    changed = water_frames[:]
    changed.positions[0, 0, 0] += 1e-9
    assert changed.content_hash() != water_frames.content_hash()
