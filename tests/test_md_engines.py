"""`mlff md` in its three engines says the same things the same way: friction 0 is NVE in each
(LAMMPS used to divide by it), and a stop with no good frame before it says so."""

import pytest
from conftest import run_mlff
from models_helpers import save_random_model

from mlff_core.data.formats import write_frames
from mlff_core.data.frames import Frames
from mlff_core.data.molecules import named_molecule
from mlff_core.engines import get_engine


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("md")
    start = write_frames(Frames.from_atoms([named_molecule("ethanol").atoms]),
                         root / "start.xyz")
    return save_random_model(root / "m.pt", "schnet", periodic=False), start


@pytest.mark.parametrize("engine", ["openmm", "ase", "lammps"])
def test_friction_zero_runs_nve(tmp_path, inputs, engine):
    model, start = inputs
    options = {"platform": "Reference"} if engine == "openmm" else {}
    summary = get_engine(engine)(model, start, tmp_path / engine, steps=20, report_interval=10,
                                 friction=0.0, action="flag", **options)
    assert summary["ensemble"] == "NVE" and summary["steps_run"] == 20
    langevin = get_engine(engine)(model, start, tmp_path / "nvt", steps=10, report_interval=10,
                                  friction=2.0, action="flag", **options)
    assert langevin["ensemble"] == "NVT (Langevin, 300 K, 2/ps)"


def test_a_stop_at_the_first_check_says_there_is_no_good_frame(tmp_path, inputs):
    model, start = inputs
    result = run_mlff("md", "--engine", "openmm", "--platform", "Reference", "--model", model,
                      "--structure", start, "--steps", "40", "--report-interval", "10",
                      "--bond-threshold", "0.000001", "-o", tmp_path / "md")
    assert result.returncode == 0, result.stderr
    assert "stopped: collapse: bond " in result.stdout
    assert "no good frame to save (the first check was already flagged)" in result.stdout
    assert "None" not in result.stdout
