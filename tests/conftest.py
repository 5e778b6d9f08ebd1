"""Shared fixtures: small frames built by hand, and a runner for the real `mlff` console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlff_core.data.frames import Frames

MLFF = Path(sys.executable).with_name("mlff")


def run_mlff(*args: str, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run the installed `mlff` console script; returns the completed process (never raises)."""
    return subprocess.run(
        [str(MLFF), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def run_mlff_here(*args: str) -> subprocess.CompletedProcess:
    """`run_mlff` in this process (no interpreter start-up, libraries already imported): for
    the many short error checks. The same entry point, exit code and output streams."""
    import contextlib
    import io

    from mlff_core.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(arg) for arg in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return subprocess.CompletedProcess(["mlff", *map(str, args)], code, out.getvalue(),
                                       err.getvalue())


def assert_clean_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """One `mlff: error:` line on stderr, non-zero exit, no traceback, mentioning `needles`."""
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in lines if line.startswith("mlff: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture
def water_frames() -> Frames:
    """Three labelled frames of one water molecule (made-up but finite labels)."""
    rng = np.random.default_rng(7)
    base = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.24, 0.927, 0.0]])
    positions = base + 0.02 * rng.standard_normal((3, 3, 3))
    return Frames(
        positions=positions,
        atomic_numbers=[8, 1, 1],
        energies=rng.normal(-2080.0, 0.1, 3),
        forces=rng.normal(0.0, 1.0, (3, 3, 3)),
        levels=["GFN2-xTB"] * 3,
        provenance={"level_of_theory": "GFN2-xTB", "sampling": {"seed": 3}},
    )


@pytest.fixture
def periodic_frames() -> Frames:
    """Two labelled frames of a 2-atom periodic triclinic cell."""
    rng = np.random.default_rng(11)
    cell = np.array([[5.0, 0.0, 0.0], [1.0, 6.0, 0.0], [0.5, 0.3, 7.0]])
    return Frames(
        positions=rng.uniform(0, 4, (2, 2, 3)),
        atomic_numbers=[8, 8],
        energies=[-10.0, -10.5],
        forces=rng.normal(size=(2, 2, 3)),
        cell=np.stack([cell, cell * 1.01]),
        pbc=True,
    )


@pytest.fixture(scope="session")
def exported_water_model(tmp_path_factory) -> Path:
    """A model file made the way users make one: `mlff data generate` (one water, MMFF94),
    `mlff train` (a tiny float64 SchNet, 2 epochs), `mlff export`; it records periodic: false."""
    root = tmp_path_factory.mktemp("water-model")
    steps = [
        ("data", "generate", "--molecule", "water", "--level", "mmff94", "--frames", "24",
         "--temperature", "400", "--seed", "3", "-o", root / "water.npz"),
        ("train", "--data", root / "water.npz", "--model", "schnet", "--hidden", "16",
         "--layers", "2", "--cutoff", "4", "--epochs", "2", "--dtype", "float64",
         "-o", root / "run"),
        ("export", root / "run", "-o", root / "water.pt", "--clusters", "2"),
    ]
    for args in steps:
        result = run_mlff(*args)
        assert result.returncode == 0, result.stderr
    return root / "water.pt"
