"""Committees (`mlff train --committee M`): one model file holding M members, engines that use
their mean, and a force-deviation monitor (DeePMD-kit's model deviation) checked against hand
computations and the members' own forces."""

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from conftest import run_mlff, run_mlff_here
from models_helpers import save_random_committee, save_random_model

from ase_bridge import DeviationObserver, MLFFCalculator
from mlff_core.data.molecules import named_molecule
from mlff_core.errors import MLFFError, ModelFileError
from mlff_core.export import load_model
from mlff_core.monitors import DeviationDetector, force_deviation


def test_force_deviation_equals_a_hand_computation():
    # two members, two atoms. Atom 0: (1,0,0) and (-1,0,0), mean 0, each 1 away: sqrt(2/2) = 1.
    # Atom 1: (0,3,0) and (0,-1,0), mean (0,1,0), each 2 away: sqrt(8/2) = 2.
    forces = np.array([[[1.0, 0, 0], [0, 3.0, 0]],
                       [[-1.0, 0, 0], [0, -1.0, 0]]])
    np.testing.assert_allclose(force_deviation(forces), [1.0, 2.0])
    # three members that agree: no deviation; one that differs by d in x from two that agree:
    # mean off by d/3, squares (d/3)², (d/3)², (2d/3)² → sqrt(6d²/27) = d·sqrt(2/9)
    agree = np.zeros((3, 1, 3))
    np.testing.assert_allclose(force_deviation(agree), [0.0])
    odd = agree.copy()
    odd[2, 0, 0] = 0.9
    np.testing.assert_allclose(force_deviation(odd), [0.9 * np.sqrt(2.0 / 9.0)])


def _member_forces(member, positions, numbers):
    x = torch.tensor(positions, dtype=torch.float64, requires_grad=True)
    energy = member(x, torch.tensor(numbers), torch.zeros(3, 3, dtype=torch.float64),
                    torch.zeros(3, dtype=torch.bool))
    (gradient,) = torch.autograd.grad(energy, x)
    return float(energy.detach()), -gradient.numpy()


@pytest.fixture(scope="module")
def committee(tmp_path_factory):
    return save_random_committee(tmp_path_factory.mktemp("committee") / "c.pt")


def test_a_committee_file_runs_as_the_mean_of_its_members(committee):
    path, members = committee
    atoms = named_molecule("ethanol").atoms
    loaded = load_model(path)
    assert loaded.committee_size == 3 and loaded.metadata["committee_size"] == 3
    own = [_member_forces(m, atoms.positions, atoms.numbers) for m in members]
    # ASE (the model file's forward) gives the members' mean energy and forces
    atoms.calc = MLFFCalculator(loaded)
    assert atoms.get_potential_energy() == pytest.approx(np.mean([e for e, _ in own]),
                                                         abs=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), np.mean([f for _, f in own], axis=0),
                               atol=1e-10)
    # committee_forces gives each member's own forces
    forces = loaded.module.committee_forces(
        torch.tensor(atoms.positions), torch.tensor(atoms.numbers),
        torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.bool))
    assert forces.shape == (3, len(atoms), 3)
    for k, (_, f) in enumerate(own):
        np.testing.assert_allclose(forces[k].numpy(), f, atol=1e-10)
    # and the detector's deviation is the hand formula on those forces
    spread = np.array([f for _, f in own])
    per_atom = np.sqrt(((spread - spread.mean(axis=0)) ** 2).sum(axis=2).mean(axis=0))
    check = DeviationDetector(loaded, warn_deviation=1e-6).check(atoms.positions, atoms.numbers)
    assert check.deviation == pytest.approx(per_atom.max(), rel=1e-10)
    assert check.atom == int(per_atom.argmax()) and check.flagged and check.above_stop
    assert 0.0 < check.deviation


def test_a_molecule_in_a_box_is_seen_whole_as_the_engines_see_it(committee):
    """A molecule cut by the box edge gives the deviation of the whole molecule."""
    path, _ = committee
    atoms = named_molecule("ethanol").atoms
    detector = DeviationDetector(path, 1.0)
    whole = detector.check(atoms.positions, atoms.numbers)
    cell = np.eye(3) * 20.0
    shifted = atoms.positions - atoms.positions[0] + 0.2  # atom 0 near the corner
    wrapped = Atoms(numbers=atoms.numbers, positions=shifted, cell=cell, pbc=True)
    wrapped.wrap()
    assert np.ptp(wrapped.positions, axis=0).max() > 15  # really cut across the box
    cut = detector.check(wrapped.positions, atoms.numbers, cell, np.ones(3, bool))
    assert cut.deviation == pytest.approx(whole.deviation, rel=1e-9)


def test_the_ase_observer_flags_above_warn_and_stops_above_stop(tmp_path, committee):
    from ase.md.verlet import VelocityVerlet

    path, _ = committee
    atoms = named_molecule("ethanol").atoms
    atoms.calc = MLFFCalculator(path)
    value = DeviationDetector(path, 1.0).check(atoms.positions, atoms.numbers).deviation
    dynamics = VelocityVerlet(atoms, timestep=0.1)
    observer = DeviationObserver(atoms, path, warn_deviation=value / 2,
                                 stop_deviation=value * 10, dynamics=dynamics, action="stop",
                                 log=tmp_path / "d.log")
    observer()
    assert observer.monitor.n_flagged == 1 and not observer.stopped
    stopping = DeviationObserver(atoms, path, warn_deviation=value / 2,
                                 stop_deviation=value / 2, dynamics=dynamics, action="stop")
    stopping()
    assert stopping.stopped
    assert stopping.monitor.stop_reason.startswith("deviation: force deviation ")
    observer.close()
    line = (tmp_path / "d.log").read_text().splitlines()[1]
    assert line.startswith("0\tFLAGGED\tdeviation: force deviation ")


def test_a_single_model_has_no_deviation_to_monitor(tmp_path):
    single = save_random_model(tmp_path / "one.pt", "schnet", periodic=False)
    with pytest.raises(MLFFError, match="not a committee model file"):
        DeviationDetector(single, 0.1)
    # a single model's committee_forces is its own forces: a committee of one
    atoms = named_molecule("ethanol").atoms
    loaded = load_model(single)
    forces = loaded.module.committee_forces(
        torch.tensor(atoms.positions), torch.tensor(atoms.numbers),
        torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.bool))
    atoms.calc = MLFFCalculator(loaded)
    np.testing.assert_allclose(forces[0].numpy(), atoms.get_forces(), atol=1e-10)
    start = tmp_path / "start.xyz"
    atoms.write(start)
    result = run_mlff_here("md", "--engine", "ase", "--model", single, "--structure", start,
                           "--warn-deviation", "0.1", "-o", tmp_path / "md")
    assert result.returncode != 0 and "is not a committee model file" in result.stderr
    assert not (tmp_path / "md").exists()


def test_deviation_levels_are_checked(committee):
    path, _ = committee
    for warn, stop, words in ((0.0, None, "warn_deviation must be a positive number"),
                              (0.2, 0.1, "stop_deviation (0.1) must be at least "
                                         "warn_deviation (0.2)")):
        with pytest.raises(MLFFError) as info:
            DeviationDetector(path, warn, stop)
        assert words in str(info.value)


def test_a_committee_model_cannot_be_fine_tuned_as_one(committee):
    path, _ = committee
    with pytest.raises(ModelFileError, match="committee of 3 models cannot be trained further"):
        load_model(path).to_potential()


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """30 MMFF94-labelled ethanol frames."""
    from models_helpers import ethanol_md_frames

    from mlff_core.data.formats import write_frames

    return write_frames(ethanol_md_frames(30), tmp_path_factory.mktemp("data") / "e.npz")


@pytest.fixture(scope="module")
def trained_committee(tmp_path_factory, tiny_dataset):
    """`mlff train --committee 2` for 2 epochs, and its export."""
    root = tmp_path_factory.mktemp("train_committee")
    run = root / "run"
    result = run_mlff("train", "--data", tiny_dataset, "--model", "schnet", "--hidden", "8",
                      "--layers", "1", "--epochs", "2", "--batch-size", "8", "--dtype",
                      "float64", "--committee", "2", "--seed", "5", "-o", run)
    assert result.returncode == 0, result.stderr
    exported = run_mlff("export", run, "-o", root / "c.pt")
    assert exported.returncode == 0, exported.stderr
    return run, root / "c.pt"


def test_train_committee_trains_members_on_one_split_with_their_own_seeds(trained_committee,
                                                                         tmp_path):
    run, model = trained_committee
    record = json.loads((run / "committee.json").read_text())
    assert record["seeds"] == [5, 6] and record["finished"] == [True, True]
    runs = [json.loads((run / f"member-{k}" / "run.json").read_text()) for k in range(2)]
    assert [r["config"]["seed"] for r in runs] == [5, 6]
    split = [[s["train_indices"] for s in r["data"]["systems"]] for r in runs]
    assert split[0] == split[1]  # one training/validation split for all
    loaded = load_model(model)
    assert loaded.committee_size == 2
    assert [m["run_dir"] for m in loaded.metadata["training"]["committee"]["members"]] == \
        [str((run / f"member-{k}").resolve()) for k in range(2)]
    # the file's forces are the mean of the members exported one by one
    atoms = named_molecule("ethanol").atoms
    forces = []
    for k in range(2):
        assert run_mlff_here("export", run / f"member-{k}", "-o",
                             tmp_path / f"m{k}.pt").returncode == 0
        atoms.calc = MLFFCalculator(tmp_path / f"m{k}.pt")
        forces.append(atoms.get_forces())
    assert np.abs(forces[0] - forces[1]).max() > 1e-4  # different seeds, different members
    atoms.calc = MLFFCalculator(model)
    np.testing.assert_allclose(atoms.get_forces(), np.mean(forces, axis=0), atol=1e-9)


def test_a_resumed_committee_skips_finished_members_and_keeps_its_settings(trained_committee,
                                                                          tmp_path,
                                                                          tiny_dataset):
    import shutil

    run, _ = trained_committee
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    # as if killed before member 1 started: its directory gone, not finished
    shutil.rmtree(copy / "member-1")
    record = json.loads((copy / "committee.json").read_text())
    record["finished"][1] = False
    (copy / "committee.json").write_text(json.dumps(record))
    before = (copy / "member-0" / "best.pt").read_bytes()
    result = run_mlff_here("train", "--data", tiny_dataset, "-o", copy, "--committee", "2",
                           "--resume")
    assert result.returncode == 0, result.stderr
    assert (copy / "member-0" / "best.pt").read_bytes() == before  # finished: untouched
    resumed = json.loads((copy / "member-1" / "run.json").read_text())["config"]
    original = json.loads((run / "member-1" / "run.json").read_text())["config"]
    assert resumed == original  # the committee's settings, not the command line's defaults
    wrong = run_mlff_here("train", "--data", tiny_dataset, "-o", copy, "--committee", "3",
                          "--resume")
    assert wrong.returncode != 0 and "holds a committee of 2 members" in wrong.stderr
    again = run_mlff_here("train", "--data", tiny_dataset, "-o", copy, "--committee", "2")
    assert again.returncode != 0 and "already holds a training run" in again.stderr


def test_exporting_an_unfinished_committee_names_the_member(trained_committee, tmp_path):
    import shutil

    run, _ = trained_committee
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    record = json.loads((copy / "committee.json").read_text())
    record["finished"][1] = False
    (copy / "committee.json").write_text(json.dumps(record))
    result = run_mlff_here("export", copy, "-o", tmp_path / "c.pt")
    assert result.returncode != 0
    assert "member-1: committee member 1 has not finished training" in result.stderr
    assert not (tmp_path / "c.pt").exists()


def test_an_overwritten_md_run_leaves_no_stale_deviation_files(tmp_path, committee):
    """deviation.log and deviation.xyz are MD outputs: --overwrite replaces them like the
    other monitors' files, and a directory holding them is an earlier run's."""
    path, _ = committee
    start = tmp_path / "start.xyz"
    named_molecule("ethanol").atoms.write(start)
    out = tmp_path / "md"
    first = run_mlff_here("md", "--engine", "ase", "--model", path, "--structure", start,
                          "--steps", "20", "--report-interval", "10", "--warn-deviation",
                          "1e-6", "-o", out)
    assert first.returncode == 0, first.stderr
    assert (out / "deviation.log").exists() and (out / "deviation.xyz").exists()
    (out / "summary.json").unlink()  # leave only the deviation files
    for name in ("trajectory.traj", "md.log", "collapse.log", "collapse.xyz",
                 "exploration.log", "unexplored.xyz"):
        (out / name).unlink(missing_ok=True)
    refused = run_mlff_here("md", "--engine", "ase", "--model", path, "--structure", start,
                            "--steps", "20", "--report-interval", "10", "-o", out)
    assert refused.returncode != 0 and "already holds an earlier MD run" in refused.stderr
    again = run_mlff_here("md", "--engine", "ase", "--model", path, "--structure", start,
                          "--steps", "20", "--report-interval", "10", "--overwrite", "-o", out)
    assert again.returncode == 0, again.stderr
    assert not (out / "deviation.log").exists() and not (out / "deviation.xyz").exists()


def test_a_committee_on_bad_data_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("not an npz file")
    result = run_mlff_here("train", "--data", bad, "--committee", "2", "-o", tmp_path / "run")
    assert result.returncode != 0 and "bad.npz" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
