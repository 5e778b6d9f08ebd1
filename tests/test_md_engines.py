"""`mlff md` in its three engines says the same things the same way: friction 0 is NVE in each
(LAMMPS used to divide by it), and a stop with no good frame before it says so."""

import re

import numpy as np
import pytest
from conftest import run_mlff
from models_helpers import save_random_model

from mlff_core.data.formats import read_frames, write_frames
from mlff_core.data.frames import Frames
from mlff_core.data.molecules import named_molecule
from mlff_core.data.trajectories import read_trajectory
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
    # The summary says when the trajectory's first frame was taken, so times (stability_ps) are
    # the same in every engine: the last frame is the last step, frame 0 at 0 ps is the start
    # (up to the shift LAMMPS applies to put a molecule in its box).
    frames = read_trajectory(summary["trajectory"], summary["topology"])
    last_ps = summary["first_frame_ps"] + (frames.n_frames - 1) * summary["frame_interval_ps"]
    assert last_ps == pytest.approx(20 * summary["timestep_fs"] / 1000)
    first, initial = frames.positions[0], read_frames(start).positions[0]
    starts_at_zero = np.allclose(first - first.mean(0), initial - initial.mean(0), atol=1e-3)
    assert starts_at_zero == (summary["first_frame_ps"] == 0)
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


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """A model file with exploration clusters of ethanol MD frames, and a start inside them."""
    from models_helpers import ethanol_md_frames, save_model_with_clusters

    root = tmp_path_factory.mktemp("graded")
    frames = ethanol_md_frames()
    start = write_frames(frames[[0]], root / "start.xyz")
    return save_model_with_clusters(root / "m.pt", frames), start


@pytest.mark.parametrize("engine", ["openmm", "ase", "lammps"])
def test_the_exploration_levels_flag_and_stop_alike_in_every_engine(tmp_path, clustered,
                                                                     engine):
    """warn_ratio flags without stopping; stop_ratio ends the run cleanly with its reason.
    (ASE and LAMMPS check the start frame, step 0; OpenMM reporters first report at step 10.)"""
    model, start = clustered
    first = 10 if engine == "openmm" else 0
    checks = 4 if engine == "openmm" else 5
    options = {"platform": "Reference"} if engine == "openmm" else {}
    run = get_engine(engine)
    # a warn level far below every frame's ratio: each of the 4 checks is flagged, no stop
    warned = run(model, start, tmp_path / "warn", steps=40, report_interval=10, action="flag",
                 warn_ratio=1e-4, stop_ratio=1e6, **options)
    assert not warned["stopped"] and warned["steps_run"] == 40, warned
    assert warned["exploration"] == (f"exploration: {checks} frames checked, {checks} flagged, "
                                     f"first at step {first}")
    # a stop level below every ratio: the first check ends the run
    stopped = run(model, start, tmp_path / "stop", steps=40, report_interval=10,
                  action="flag", warn_ratio=1e-4, stop_ratio=2e-4, **options)
    assert stopped["stopped"] and stopped["steps_run"] == first, stopped
    assert re.fullmatch(r"exploration: (un)?explored: nearest cluster \d+, distance/radius "
                        r"\d+\.\d{3}, bond \d+-\d+ score \d+\.\d{3}", stopped["reason"]), stopped
    assert stopped["exploration"] == ("exploration: 1 frames checked, 1 flagged, first at step "
                                      f"{first} (run stopped)")
    assert stopped["last_good"] is None  # the first check was already flagged


def test_stop_ratio_below_warn_ratio_is_one_clear_error(tmp_path, clustered):
    model, start = clustered
    result = run_mlff("md", "--engine", "ase", "--model", model, "--structure", start,
                      "--warn-ratio", "1.5", "--stop-ratio", "1.2", "-o", tmp_path / "md")
    assert result.returncode != 0
    assert "stop_ratio (1.2) must be at least warn_ratio (1.5)" in result.stderr
    assert not (tmp_path / "md").exists()


@pytest.fixture(scope="module")
def committee(tmp_path_factory):
    """A committee model file of 3 random members, and an ethanol start."""
    from models_helpers import save_random_committee

    root = tmp_path_factory.mktemp("committee")
    start = write_frames(Frames.from_atoms([named_molecule("ethanol").atoms]),
                         root / "start.xyz")
    return save_random_committee(root / "c.pt")[0], start


@pytest.mark.parametrize("engine", ["openmm", "ase", "lammps"])
def test_the_committee_deviation_levels_flag_and_stop_alike_in_every_engine(tmp_path,
                                                                           committee, engine):
    """warn_deviation flags without stopping; stop_deviation ends the run with its reason."""
    model, start = committee
    first = 10 if engine == "openmm" else 0
    checks = 4 if engine == "openmm" else 5
    options = {"platform": "Reference"} if engine == "openmm" else {}
    run = get_engine(engine)
    warned = run(model, start, tmp_path / "warn", steps=40, report_interval=10, action="flag",
                 warn_deviation=1e-6, **options)
    assert not warned["stopped"] and warned["steps_run"] == 40, warned
    assert warned["deviation"] == (f"deviation: {checks} frames checked, {checks} flagged, "
                                   f"first at step {first}")
    assert warned["exploration"].startswith("exploration: ")  # still on beside it
    stopped = run(model, start, tmp_path / "stop", steps=40, report_interval=10,
                  action="flag", warn_deviation=1e-6, stop_deviation=2e-6, **options)
    assert stopped["stopped"] and stopped["steps_run"] == first, stopped
    assert re.fullmatch(r"deviation: force deviation \d+\.\d{3} eV/Å \(atom \d+\)",
                        stopped["reason"]), stopped
    assert stopped["deviation"] == ("deviation: 1 frames checked, 1 flagged, first at step "
                                    f"{first} (run stopped)")
    quiet = run(model, start, tmp_path / "off", steps=10, report_interval=10, action="flag",
                **options)
    assert quiet["deviation"] is None  # off unless asked for
