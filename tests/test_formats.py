"""Readers and writers: MD17/MD22/rMD17 round trips in their own units, native, extxyz, traj,
and one clear error for each kind of bad file, with nothing partial left on disk."""

import json

import numpy as np
import pytest
import scipy.constants as sc

from mlff_core.data import formats
from mlff_core.data.formats import read_frames, read_systems, write_frames
from mlff_core.data.frames import Frames
from mlff_core.errors import DataError

#: 1 kcal/mol in eV computed here from scipy's constants, independently of mlff_core.units.
KCAL = 4184.0 / (sc.Avogadro * sc.e)


def _raw_md17(n_frames=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "R": rng.normal(size=(n_frames, 3, 3)),
        "z": np.array([8, 1, 1]),
        "E": rng.normal(-47000.0, 2.0, (n_frames, 1)),  # kcal/mol, shape (F, 1) as in sGDML
        "F": rng.normal(0.0, 30.0, (n_frames, 3, 3)),  # kcal/mol/Å
        "theory": np.array("PBE+vdW-TS"),
        "name": np.array("water"),
    }


def _no_leftovers(directory, expected=()):
    return sorted(p.name for p in directory.iterdir()) == sorted(expected)


def test_md17_round_trip(tmp_path):
    raw = _raw_md17()
    np.savez(tmp_path / "md17.npz", **raw)
    frames = read_frames(tmp_path / "md17.npz")
    np.testing.assert_allclose(frames.energies, raw["E"][:, 0] * KCAL, rtol=1e-14)
    np.testing.assert_allclose(frames.forces, raw["F"] * KCAL, rtol=1e-14)
    np.testing.assert_array_equal(frames.positions, raw["R"])
    assert set(frames.levels) == {"PBE+vdW-TS"}
    write_frames(frames, tmp_path / "again.npz", "md17")
    with np.load(tmp_path / "again.npz") as again:
        np.testing.assert_allclose(again["E"], raw["E"], rtol=1e-13)
        np.testing.assert_allclose(again["F"], raw["F"], rtol=1e-13)
        np.testing.assert_array_equal(again["R"], raw["R"])
        np.testing.assert_array_equal(again["z"], raw["z"])
        assert str(again["theory"]) == "PBE+vdW-TS"


def test_md22_units_are_honoured(tmp_path):
    raw = _raw_md17()
    raw.update(e_unit=np.array("eV"), r_unit=np.array("Ang"), name=np.array("Ac-Ala3-NHMe"))
    np.savez(tmp_path / "md22.npz", **raw)
    frames = read_frames(tmp_path / "md22.npz", "md22")
    np.testing.assert_allclose(frames.energies, raw["E"][:, 0])
    assert frames.provenance["source"]["name"] == "Ac-Ala3-NHMe"


def test_rmd17_round_trip(tmp_path):
    raw = _raw_md17(seed=1)
    rmd17 = {"coords": raw["R"], "nuclear_charges": raw["z"], "energies": raw["E"][:, 0],
             "forces": raw["F"], "old_indices": np.arange(4)}
    np.savez(tmp_path / "rmd17.npz", **rmd17)
    frames = read_frames(tmp_path / "rmd17.npz")
    np.testing.assert_allclose(frames.energies, rmd17["energies"] * KCAL, rtol=1e-14)
    assert frames.levels[0] == formats.RMD17_LEVEL
    write_frames(frames, tmp_path / "again.npz", "rmd17")
    with np.load(tmp_path / "again.npz") as again:
        for key in ("coords", "nuclear_charges", "energies", "forces"):
            np.testing.assert_allclose(again[key], rmd17[key], rtol=1e-13)


def test_native_round_trip_keeps_everything(tmp_path, periodic_frames):
    periodic_frames.provenance = {"level_of_theory": "GFN1-xTB", "sampling": {"seed": 5}}
    periodic_frames.levels = np.array(["GFN1-xTB", "MMFF94"])
    write_frames(periodic_frames, tmp_path / "native.npz")
    back = read_frames(tmp_path / "native.npz")
    for name in ("positions", "atomic_numbers", "energies", "forces", "cell", "pbc", "masses",
                 "levels"):
        np.testing.assert_array_equal(getattr(back, name), getattr(periodic_frames, name))
    assert back.provenance == periodic_frames.provenance
    with np.load(tmp_path / "native.npz") as raw:
        metadata = json.loads(str(raw["metadata"]))
    assert metadata["units"] == {"length": "Angstrom", "energy": "eV",
                                 "force": "eV/Angstrom", "mass": "amu"}


@pytest.mark.parametrize("suffix", [".xyz", ".extxyz", ".traj"])
def test_ase_formats_round_trip(tmp_path, periodic_frames, suffix):
    write_frames(periodic_frames, tmp_path / f"frames{suffix}")
    back = read_frames(tmp_path / f"frames{suffix}")
    np.testing.assert_allclose(back.positions, periodic_frames.positions, atol=1e-8)
    np.testing.assert_allclose(back.energies, periodic_frames.energies)
    np.testing.assert_allclose(back.forces, periodic_frames.forces, atol=1e-8)
    np.testing.assert_allclose(back.cell, periodic_frames.cell, atol=1e-8)
    assert back.pbc.all()


def test_mixed_systems_split_by_composition(tmp_path, water_frames, periodic_frames):
    import ase.io

    images = list(water_frames.iter_atoms()) + list(periodic_frames.iter_atoms())
    ase.io.write(tmp_path / "mixed.xyz", images)
    systems = read_systems(tmp_path / "mixed.xyz")
    assert [s.formula for s in systems] == ["H2O", "O2"]
    with pytest.raises(DataError, match="2 different systems"):
        read_frames(tmp_path / "mixed.xyz")


# --------------------------------------------------------------------------------- bad input
def _write_bad(tmp_path, kind):
    path = tmp_path / {"unknown_format": "data.foo", "bad_symbol": "bad.xyz",
                       "corrupt": "corrupt.npz"}.get(kind, f"{kind}.npz")
    raw = _raw_md17()
    if kind == "nan":
        raw["F"][2, 1, 0] = np.nan
        np.savez(path, **raw)
    elif kind == "inf_positions":
        raw["R"][1, 0, 0] = np.inf
        np.savez(path, **raw)
    elif kind == "shape_mismatch":
        raw["F"] = raw["F"][:, :2]
        np.savez(path, **raw)
    elif kind == "missing_keys":
        np.savez(path, positions=raw["R"], numbers=raw["z"])
    elif kind == "md17_without_forces":
        del raw["F"]
        np.savez(path, **raw)
    elif kind == "unknown_format":
        path.write_text("this is not a known format\n")
    elif kind == "bad_symbol":
        path.write_text("2\nProperties=species:S:1:pos:R:3\nXx 0 0 0\nH 0 0 1\n")
    elif kind == "corrupt":
        path.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    elif kind == "bad_element_number":
        raw["z"] = np.array([8, 1, 0])
        np.savez(path, **raw)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("nan", "forces contains NaN values at frame 2"),
        ("inf_positions", "positions contains infinite values at frame 1"),
        ("shape_mismatch", "forces have shape (4, 2, 3) but positions have shape (4, 3, 3)"),
        ("missing_keys", "npz without the expected keys (found numbers, positions)"),
        ("md17_without_forces", "MD17/MD22 npz is missing key(s) 'F'"),
        ("unknown_format", "unknown format"),
        ("bad_symbol", "unknown element symbol 'Xx'"),
        ("corrupt", "not a readable npz file"),
        ("bad_element_number", "unknown element with atomic number 0"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path, kind, message):
    path = _write_bad(tmp_path, kind)
    with pytest.raises(DataError) as info:
        read_frames(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_frames(tmp_path / "nope.npz")


def test_native_version_check(tmp_path, water_frames):
    arrays = formats.native_arrays(water_frames)
    metadata = json.loads(str(arrays["metadata"]))
    metadata["format_version"] = 99
    arrays["metadata"] = np.array(json.dumps(metadata))
    np.savez(tmp_path / "future.npz", **arrays)
    with pytest.raises(DataError, match="unsupported format_version 99"):
        read_frames(tmp_path / "future.npz")


def test_failed_writes_leave_nothing(tmp_path, water_frames, monkeypatch):
    unlabelled = Frames(positions=water_frames.positions, atomic_numbers=[8, 1, 1])
    with pytest.raises(DataError, match="need energies and forces"):
        write_frames(unlabelled, tmp_path / "x.npz", "md17")
    with pytest.raises(DataError, match="unknown output format"):
        write_frames(water_frames, tmp_path / "x.unknown")

    def half_written(fh, **arrays):
        fh.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(formats.np, "savez_compressed", half_written)
    with pytest.raises(OSError, match="disk full"):
        write_frames(water_frames, tmp_path / "y.npz")
    assert _no_leftovers(tmp_path)


def test_failed_write_keeps_previous_file(tmp_path, water_frames, monkeypatch):
    target = tmp_path / "keep.npz"
    write_frames(water_frames, target)
    before = target.read_bytes()
    monkeypatch.setattr(formats.np, "savez_compressed",
                        lambda fh, **a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        write_frames(water_frames, target)
    assert target.read_bytes() == before
    assert _no_leftovers(tmp_path, ["keep.npz"])


def test_written_files_follow_the_umask(tmp_path, water_frames):
    import os
    import stat

    old = os.umask(0o022)
    try:
        for name in ("a.npz", "a.xyz"):
            write_frames(water_frames, tmp_path / name)
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644
    finally:
        os.umask(old)
