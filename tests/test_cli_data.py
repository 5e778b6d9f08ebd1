"""`mlff data ...` through the real console script: outputs, and one clear error line for bad
input with nothing written."""

import json

import numpy as np
import pytest
from conftest import assert_clean_error, run_mlff, run_mlff_here

from mlff_core.data.formats import read_frames
from mlff_core.data.generate import relabel_frames
from mlff_core.labels import get_level


def test_generate_info_convert_split_relabel(tmp_path):
    out = tmp_path / "ethanol.npz"
    result = run_mlff("data", "generate", "--molecule", "ethanol", "--level", "mmff94",
                      "--label-level", "gfn2", "--frames", "12", "--stride", "2",
                      "--equilibration", "5", "--seed", "1", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "wrote 12 frames of C2H6O (GFN2-xTB labels)" in result.stdout
    generated = read_frames(out)  # labelled on a local Dask cluster, as the serial path does
    serial = relabel_frames(generated, get_level("gfn2"))
    np.testing.assert_array_equal(generated.energies, serial.energies)
    np.testing.assert_array_equal(generated.forces, serial.forces)
    assert not (tmp_path / "ethanol.npz.chunks").exists()

    info = run_mlff_here("data", "info", out, "--json")  # in process: no interpreter start-up
    summary = json.loads(info.stdout)
    assert summary["frames"] == 12 and summary["atoms"] == 9
    assert summary["levels"] == {"GFN2-xTB": 12}
    assert summary["provenance"]["sampling"]["seed"] == 1
    text = run_mlff_here("data", "info", out).stdout
    assert "C2H6O" in text and "GFN2-xTB (12)" in text

    assert run_mlff_here("data", "convert", out, tmp_path / "e.xyz").returncode == 0
    assert run_mlff_here("data", "convert", tmp_path / "e.xyz", tmp_path / "md17.npz",
                         "--to", "md17").returncode == 0
    back = read_frames(tmp_path / "md17.npz")
    original = read_frames(out)
    np.testing.assert_allclose(back.forces, original.forces, atol=1e-8)  # extxyz: 8 decimals
    np.testing.assert_allclose(back.energies, original.energies, rtol=1e-12)

    split = run_mlff_here("data", "split", out, "--train", "8", "--val", "2",
                          "-o", tmp_path / "sp")
    assert split.returncode == 0, split.stderr
    sizes = {n: read_frames(tmp_path / "sp" / f"{n}.npz").n_frames
             for n in ("train", "val", "test")}
    assert sizes == {"train": 8, "val": 2, "test": 2}

    cheap = tmp_path / "cheap.npz"  # on a local Dask cluster of 2 workers, tasks of 5 frames
    relabel = run_mlff("data", "relabel", out, "--level", "mmff94", "-o", cheap, "--workers", "2",
                       "--chunk-size", "5")
    assert relabel.returncode == 0, relabel.stderr
    assert "relabel · MMFF94 · 2 Dask workers now" in relabel.stderr  # the progress bar
    labelled = read_frames(cheap)
    assert set(labelled.levels) == {"MMFF94"}
    np.testing.assert_array_equal(labelled.energies,
                                  relabel_frames(generated, get_level("mmff94")).energies)
    assert not (tmp_path / "cheap.npz.chunks").exists()  # removed once the output is written


def _bad_file(tmp_path, kind):
    rng = np.random.default_rng(0)
    R, z = rng.normal(size=(3, 3, 3)), np.array([8, 1, 1])
    E, F = rng.normal(size=(3, 1)), rng.normal(size=(3, 3, 3))
    path = tmp_path / f"{kind}.npz"
    if kind == "nan":
        E[1] = np.nan
        np.savez(path, R=R, z=z, E=E, F=F)
    elif kind == "shape":
        np.savez(path, R=R, z=z, E=E, F=F[:, :2])
    elif kind == "keys":
        np.savez(path, coordinates=R, z=z)
    elif kind == "symbol":
        path = tmp_path / "symbol.xyz"
        path.write_text("1\nProperties=species:S:1:pos:R:3\nQq 0 0 0\n")
    elif kind == "format":
        path = tmp_path / "data.unknown"
        path.write_text("garbage\n")
    return path


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("missing", "file not found"),
        ("nan", "energies contains NaN values"),
        ("shape", "forces have shape (3, 2, 3)"),
        ("keys", "npz without the expected keys"),
        ("symbol", "unknown element symbol 'Qq'"),
        ("format", "unknown format"),
    ],
)
def test_bad_input_is_one_clear_line_and_writes_nothing(tmp_path, kind, needle):
    path = tmp_path / "missing.npz" if kind == "missing" else _bad_file(tmp_path, kind)
    before = set(tmp_path.iterdir())
    result = run_mlff("data", "convert", path, tmp_path / "out.npz")
    assert_clean_error(result, str(path), needle)
    assert set(tmp_path.iterdir()) == before
    assert_clean_error(run_mlff("data", "info", path), str(path), needle)


def test_bad_options_are_one_clear_line(tmp_path):
    out = tmp_path / "x.npz"
    for options, needle in (
            (["--molecule", "caffeine", "--level", "gfn2"], "unknown molecule 'caffeine'"),
            (["--molecule", "ethanol", "--level", "ccsd"], "unknown level of theory 'ccsd'"),
            (["--level", "gfn2"], "give exactly one of"),
            (["--water-box", "2", "--level", "mmff94", "--frames", "1"],
             "cannot drive a periodic system"),
            (["--molecule", "ethanol", "--level", "gfn2", "--frames", "0"], "--frames")):
        assert_clean_error(run_mlff_here("data", "generate", *options, "-o", out), needle)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_help_has_examples():
    for command in (["data", "generate"], ["data", "relabel"], ["data", "info"],
                    ["data", "convert"], ["data", "split"], ["demo"]):
        result = run_mlff_here(*command, "--help")
        assert result.returncode == 0
        assert "Example" in result.stdout, command


def _write_ase_trajectory(path, labelled=True):
    """Two water frames written with ASE's own Trajectory, labels set by hand (eV, eV/Å)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import Trajectory

    positions = [
        [[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]],
        [[0.0, 0.0, 0.1], [0.95, 0.05, 0.0], [-0.25, 0.92, 0.0]],
    ]
    energies = [-2080.25, -2080.5]
    forces = [
        [[0.5, -0.25, 0.0], [-0.75, 0.125, 0.0], [0.25, 0.125, 0.0]],
        [[-1.0, 0.5, 0.25], [0.5, -0.5, 0.0], [0.5, 0.0, -0.25]],
    ]
    with Trajectory(str(path), "w") as trajectory:
        for pos, energy, force in zip(positions, energies, forces, strict=True):
            atoms = Atoms("OH2", positions=pos)
            if labelled:
                atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=force)
            trajectory.write(atoms)
    return np.array(positions), np.array(energies), np.array(forces)


def test_convert_from_ase_format(tmp_path):
    # A file whose suffix says nothing: only `--from ase:traj` tells the reader what it is.
    source = tmp_path / "water.dat"
    positions, energies, forces = _write_ase_trajectory(source)
    out = tmp_path / "water.npz"
    result = run_mlff("data", "convert", source, out, "--from", "ase:traj")
    assert result.returncode == 0, result.stderr
    assert "wrote 2 frames" in result.stdout
    frames = read_frames(out)
    assert frames.atomic_numbers.tolist() == [8, 1, 1]
    np.testing.assert_allclose(frames.positions, positions)
    np.testing.assert_allclose(frames.energies, energies)  # ASE's eV are the native unit
    np.testing.assert_allclose(frames.forces, forces)


def test_convert_from_unknown_ase_format_is_one_clear_line(tmp_path):
    source = tmp_path / "water.dat"
    _write_ase_trajectory(source)
    result = run_mlff("data", "convert", source, tmp_path / "out.npz", "--from", "ase:nosuchfmt")
    assert_clean_error(result, "nosuchfmt")
    assert "unknown" in result.stderr.lower()
    assert not (tmp_path / "out.npz").exists()


def test_convert_from_ase_format_without_labels_to_md17_is_one_clear_line(tmp_path):
    source = tmp_path / "water.dat"
    _write_ase_trajectory(source, labelled=False)
    out = tmp_path / "md17.npz"
    result = run_mlff("data", "convert", source, out, "--from", "ase:traj", "--to", "md17")
    assert_clean_error(result, str(out), "need energies and forces")
    assert not out.exists()
