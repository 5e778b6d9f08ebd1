"""Continued learning end to end on a tiny setup: a real engine runs MD with a barely trained
model, the unexplored and pre-collapse frames are really labelled (MMFF94), training continues,
and the summary, new frames, model and report agree with independent checks."""

import json
import os

import numpy as np
import pytest
from browser import CHROMIUM, inspect_page
from conftest import assert_clean_error, run_mlff

from mlff_core.data.formats import read_frames, write_frames
from mlff_core.data.frames import Frames
from mlff_core.data.generate import LangevinSampling, generate_frames
from mlff_core.data.molecules import covalent_bonds, named_molecule
from mlff_core.data.trajectories import read_trajectory
from mlff_core.errors import DataError
from mlff_core.export import export_run, load_model
from mlff_core.labels import get_level
from mlff_core.metrics.simulation import stability
from mlff_core.monitors.detectors import ExplorationDetector
from mlff_core.report.build import build_report
from mlff_core.training import TrainingConfig, make_trainer
from mlff_core.training.active import ActiveLearningSettings, run_stability, starts_of_passes


@pytest.fixture(scope="module")
def weak_model(tmp_path_factory):
    """A SchNet trained for 3 epochs on 60 MMFF94 aspirin frames (it collapses at 800 K), with
    its training files recorded in the model file, plus a starting structure."""
    root = tmp_path_factory.mktemp("al")
    frames = generate_frames(named_molecule("aspirin"), get_level("mmff94"), 60,
                             LangevinSampling(temperature=300.0, stride=5, equilibration=50))
    data = write_frames(frames, root / "aspirin.npz")
    config = TrainingConfig(architecture="schnet", epochs=3, batch_size=8, learning_rate=1e-3,
                            hyperparameters={"hidden": 16, "num_interactions": 2})
    make_trainer(config, root / "run", [data], n_val=10).fit()
    model = export_run(root / "run", root / "model.pt", n_clusters=2)
    starts = write_frames(frames[[0, 30]], root / "starts.xyz")
    return data, model, starts


def _al_command(model, starts, out, *extra):
    return ["active-learn", "--model", model, "--structures", starts, "--engine", "ase",
            "--level", "mmff94", "--rounds", "1", "--runs", "1", "--steps", "300",
            "--report-interval", "10", "--temperature", "800", "--epochs", "2",
            "--batch-size", "8", "--pre-collapse", "3", "-o", out, *extra]


def test_one_round_end_to_end(weak_model, tmp_path):
    data, model, starts = weak_model
    out = tmp_path / "al"
    result = run_mlff(*_al_command(model, starts, out))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    (round_,) = summary["rounds"]
    assert len(round_["runs"]) == 2 and len(summary["final"]["runs"]) == 2

    # Independent analysis of each trajectory with the starting model.
    detector = ExplorationDetector(load_model(model))
    start_frames = read_frames(starts)
    analysed = []
    for s, row in enumerate(round_["runs"]):
        run_dir = out / "round_1" / "md" / row["run"]
        md = json.loads((run_dir / "summary.json").read_text())
        assert md["engine"] == "ase" and md["steps_run"] <= 300
        trajectory = read_trajectory(run_dir / "trajectory.traj")
        start = start_frames[[s]]
        stable = stability(trajectory, 0.5, bonds=covalent_bonds(start.to_atoms(0)),
                           reference=start)
        assert row["frames_before_collapse"] == stable["frames_before_collapse"]
        before = stable["frames_before_collapse"]
        unexplored = [detector.check(trajectory.positions[f], trajectory.atomic_numbers)
                      .status == "unexplored" for f in range(before)]
        assert row["unexplored_ratio"] == pytest.approx(np.mean(unexplored) if before else 0.0)
        chosen = set(np.flatnonzero(unexplored).tolist())
        if stable["collapsed"]:
            chosen |= set(range(max(0, before - 3), before))
        assert row["candidates"] == len(chosen)
        analysed.append(trajectory[sorted(chosen)] if chosen else None)

    # The new frames are those candidates, labelled by MMFF94 itself.
    expected = [a for a in analysed if a is not None]
    assert expected, "the weak model neither collapsed nor left its clusters: no test"
    new = read_frames(out / "round_1" / "new_frames.npz")
    pool = Frames.concatenate(expected)
    assert pool.n_frames <= 100  # below the per-round limit: every candidate is labelled
    np.testing.assert_allclose(new.positions, pool.positions, atol=1e-10)
    assert round_["new_frames"] == new.n_frames == pool.n_frames
    assert set(new.levels.tolist()) == {"MMFF94"}
    assert not (out / "round_1" / "new_frames.chunks").exists()  # labelled on Dask, then tidied
    reference = get_level("mmff94").calculator(
        smiles=new.provenance["system"].get("smiles"))
    for f in (0, new.n_frames - 1):
        atoms = new.to_atoms(f)
        atoms.calc = reference
        assert atoms.get_potential_energy() == pytest.approx(new.energies[f], abs=1e-8)
        np.testing.assert_allclose(atoms.get_forces(), new.forces[f], atol=1e-8)

    # Training continued on the original training frames plus the new ones.
    run = json.loads((out / "round_1" / "train" / "run.json").read_text())
    assert run["sizes"]["train"] == 50 + new.n_frames
    tuned = load_model(out / "round_1" / "model.pt")
    assert summary["final_model"] == str(out / "round_1" / "model.pt")
    assert tuned.metadata["exploration"]["systems"][0]["cluster_sizes"] and \
        sum(tuned.metadata["exploration"]["systems"][0]["cluster_sizes"]) == 50 + new.n_frames

    html = (out / "report.html").read_text()
    for figure in ("fig-stability", "fig-unexplored", "fig-errors"):
        assert figure in html
    if CHROMIUM is not None or os.environ.get("CI"):
        page = inspect_page((out / "report.html").as_uri())
        assert page["console_errors"] == [] and page["exceptions"] == []
        assert all(ok for _, ok in page["images"]), page["images"]


def test_refuses_mixed_levels_and_existing_output(weak_model, tmp_path):
    _, model, starts = weak_model
    command = _al_command(model, starts, tmp_path / "al")
    command[command.index("mmff94")] = "gfn2"
    result = run_mlff(*command)
    assert_clean_error(result, "labelled with MMFF94", "--level is GFN2-xTB")
    assert not (tmp_path / "al").exists()


def test_new_starts_every_pass():
    """Disjoint blocks of one seeded permutation, one per round and one for the final pass;
    too few structures for them is one error naming the file."""
    settings = ActiveLearningSettings(rounds=2, starts_per_round=3, seed=4)
    blocks = starts_of_passes(10, settings, "starts.xyz")
    order = np.random.default_rng(4).permutation(10)
    assert [b.tolist() for b in blocks] == [sorted(order[k * 3:(k + 1) * 3]) for k in range(3)]
    assert len(set(np.concatenate(blocks).tolist())) == 9
    assert all(b.tolist() == list(range(4)) for b in starts_of_passes(4, ActiveLearningSettings(
        rounds=2)))
    with pytest.raises(DataError, match=r"starts\.xyz.*3 MD passes of 4 new starts each need "
                                        r"12"):
        starts_of_passes(10, ActiveLearningSettings(rounds=2, starts_per_round=4), "starts.xyz")


def test_too_few_structures_for_new_starts_is_one_error(weak_model, tmp_path):
    _, model, starts = weak_model
    result = run_mlff(*_al_command(model, starts, tmp_path / "al", "--starts-per-round", "2"))
    assert_clean_error(result, "2 structures", "2 MD passes of 2 new starts each need 4")
    assert not (tmp_path / "al").exists()


@pytest.mark.parametrize("engine", ["openmm", "lammps"])
def test_round_with_other_engines(weak_model, tmp_path, engine):
    """The trajectory each engine writes (DCD + PDB, LAMMPS dump with a box around the
    molecule) is read back as the molecule and analysed like ASE's."""
    data, model, starts = weak_model
    command = _al_command(model, starts, tmp_path / "al", "--no-final-md",
                          "--starts-per-round", "1")
    command[command.index("ase")] = engine
    result = run_mlff(*command)
    assert result.returncode == 0, result.stderr
    (round_,) = json.loads((tmp_path / "al" / "summary.json").read_text())["rounds"]
    # one start of the two, the one the seeded draw gives, and the run began there
    (index,) = round_["starts"]
    assert [index] == starts_of_passes(2, ActiveLearningSettings(
        rounds=1, starts_per_round=1, final_md=False, seed=0))[0].tolist()
    start = read_frames(starts)[[index]]
    (row,) = round_["runs"]
    run_dir = tmp_path / "al" / "round_1" / "md" / row["run"]
    np.testing.assert_allclose(read_frames(tmp_path / "al" / "round_1" / "md" /
                                           "start_0.xyz").positions, start.positions, atol=1e-6)
    md = json.loads((run_dir / "summary.json").read_text())
    trajectory = read_trajectory(md["trajectory"], topology=md["topology"])
    positions = trajectory.positions[: row["frames_before_collapse"]]
    # whole molecules: every bond of the start stays below 3 Å before the collapse
    bonds = covalent_bonds(start.to_atoms(0))
    lengths = np.linalg.norm(positions[:, bonds[:, 0]] - positions[:, bonds[:, 1]], axis=-1)
    assert lengths.max() < 3.0
    # the offline report reads the same trajectory as the same molecule
    report = build_report([model], data, [f"{engine}={md['trajectory']}"],
                          topology=md["topology"])
    (entry,) = report.document["trajectories"]
    assert entry["frames"] == trajectory.n_frames and "hr_mae" in entry
    assert round_["new_frames"] == read_frames(tmp_path / "al" / "round_1" /
                                               "new_frames.npz").n_frames


def test_a_run_that_blew_up_collapsed_after_its_last_stored_frame():
    """No engine stores a frame with non-finite positions, so the stored frames of a run that
    blew up look stable; the engine's stop reason says otherwise."""
    water = Frames(positions=np.tile([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]],
                                     (3, 1, 1)), atomic_numbers=np.array([8, 1, 1]))
    reason = {"reason": "collapse: atom 0 has a non-finite position (NaN or inf)"}
    blew_up = run_stability(reason, water, water[[0]], 0.5)
    assert blew_up["collapsed"] and blew_up["frames_before_collapse"] == 3
    calm = run_stability({"reason": None}, water, water[[0]], 0.5)
    assert not calm["collapsed"] and calm["frames_before_collapse"] == 3
    stretched = water[[0, 1, 2]]
    stretched.positions[2, 1, 0] += 0.6  # a real collapse in the stored frames comes first
    assert run_stability(reason, stretched, water[[0]], 0.5)["frames_before_collapse"] == 2
