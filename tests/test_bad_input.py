"""Issue 9 (bad input): each gets one clear error naming the file or option and the problem —
never a traceback or a wrong diagnosis. (Further bullets of the issue are still open.)"""

import re

import numpy as np
import pytest
import torch
from conftest import assert_clean_error, run_mlff, run_mlff_here
from models_helpers import save_random_model, with_edited_metadata

from mlff_core.errors import MLFFError
from mlff_core.export import load_model
from mlff_core.training.trainer import TrainingConfig, TrainingError

NO_GPU = not torch.cuda.is_available()


@pytest.mark.parametrize(("option", "needle"), [
    ({"learning_rate": -1.0}, "learning rate must not be negative, got -1.0"),
    ({"energy_weight": -1.0}, "energy weight must be zero or positive"),
    ({"lr_factor": 1.5}, "0 < lr-factor < 1"),
    ({"device": "bogus"}, "device 'bogus' is not a torch device"),
    pytest.param({"device": "cuda"}, "torch sees no CUDA device",
                 marks=pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")),
])
def test_training_options_are_checked(option, needle):
    with pytest.raises(TrainingError, match=needle):
        TrainingConfig(**option)


def test_a_device_the_machine_lacks_is_not_called_a_bad_model_file(tmp_path):
    from ase_bridge import MLFFCalculator

    model = save_random_model(tmp_path / "m.pt", "schnet")
    cases = [("bogus", "device 'bogus' is not a torch device")]
    if NO_GPU:
        cases.append(("cuda", "device 'cuda': torch sees no CUDA device"))
    for device, needle in cases:
        for load in (lambda d: load_model(model, d), lambda d: MLFFCalculator(model, device=d)):
            with pytest.raises(MLFFError, match=needle) as info:
                load(device)
            assert "TorchScript" not in str(info.value)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A one-epoch training run (tiny SchNet on 12 MMFF94 water frames)."""
    from mlff_core.data.formats import write_frames
    from mlff_core.data.generate import LangevinSampling, generate_frames
    from mlff_core.data.molecules import named_molecule
    from mlff_core.labels import get_level
    from mlff_core.training.run import train_from_files

    root = tmp_path_factory.mktemp("run")
    frames = generate_frames(named_molecule("water"), get_level("mmff94"), 12,
                             LangevinSampling(stride=2, equilibration=2))
    data = write_frames(frames, root / "w.npz")
    config = TrainingConfig(architecture="schnet", epochs=1, batch_size=4,
                            hyperparameters={"hidden": 8, "num_interactions": 1})
    train_from_files(config, root / "run", [data])
    return root


def _damaged_copy(tmp_path, finished_run, name, content):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run / "run", run)
    (run / name).write_bytes(content(run / name))
    return run


@pytest.mark.parametrize(("command", "name", "damage", "needle"), [
    ("export", "best.pt", lambda p: p.read_bytes()[:200],
     "best.pt: is not a readable torch checkpoint, truncated or damaged"),
    ("export", "run.json", lambda p: p.read_bytes()[:40],
     "run.json: the run's record is not valid JSON"),
    ("resume", "run.json", lambda p: b"{not json",
     "run.json: the run's record is not valid JSON"),
    ("resume", "checkpoint.pt", lambda p: b"",
     "checkpoint.pt: is empty"),
    ("resume", "checkpoint.pt", lambda p: p.read_bytes()[:300],
     "checkpoint.pt: is not a readable torch checkpoint"),
])
def test_damaged_run_files_are_named(tmp_path, finished_run, command, name, damage, needle):
    run = _damaged_copy(tmp_path, finished_run, name, damage)
    if command == "export":
        result = run_mlff("export", run, "-o", tmp_path / "m.pt")
        assert not (tmp_path / "m.pt").exists()
    else:
        result = run_mlff("train", "--data", finished_run / "w.npz", "--model", "schnet",
                          "-o", run, "--resume")
    assert_clean_error(result, needle)
    assert result.returncode == 1  # not "interrupted" (130)


def test_bad_cli_options_are_one_line(tmp_path, finished_run):
    for lr in ("-1", "0"):  # the API allows 0 (a stage that must not move); a user never means it
        assert_clean_error(run_mlff_here("train", "--data", finished_run / "w.npz", "--lr", lr,
                                    "-o", tmp_path / "r"), "Invalid value for '--lr'")
    assert_clean_error(run_mlff_here("finetune", "--model", "m.pt", "--data", "d.npz",
                                "--energy-weight", "-1", "-o", tmp_path / "r"),
                       "Invalid value for '--energy-weight'")
    assert not (tmp_path / "r").exists()
    from mlff_core.data.formats import write_frames
    from mlff_core.data.frames import Frames
    from mlff_core.data.molecules import named_molecule

    start = write_frames(Frames.from_atoms([named_molecule("water").atoms]), tmp_path / "s.xyz")
    model = save_random_model(tmp_path / "m.pt", "schnet")
    assert_clean_error(run_mlff_here("md", "--engine", "openmm", "--platform", "Bogus", "--model",
                                model, "--structure", start, "--steps", "10",
                                "-o", tmp_path / "md"),
                       "OpenMM platform 'Bogus' is not available here")


def test_an_npz_of_other_things_says_which_keys_it_lacks(tmp_path):
    """A foreign npz whose arrays need pickle: the missing keys are the problem to report
    (its values are never loaded)."""
    import numpy as np

    from mlff_core.data.formats import read_frames
    from mlff_core.errors import DataError

    np.savez(tmp_path / "random.npz", junk=np.array([{"a": 1}], dtype=object),
             noise=np.random.default_rng(0).random(3))
    with pytest.raises(DataError, match=r"random.npz: npz without the expected keys \(found "
                                        r"junk, noise\)"):
        read_frames(tmp_path / "random.npz")


def test_a_single_atom_is_not_reported_as_nan_positions(tmp_path):
    """`--smiles '[Fe+2]'` used to end in "positions contains NaN" (ASE's ZeroRotation of one
    atom); a lone atom has nothing to sample."""
    assert_clean_error(run_mlff("data", "generate", "--smiles", "[Fe+2]", "--level", "mmff94",
                                "--frames", "2", "-o", tmp_path / "fe.npz"),
                       "is a single atom: it has no geometry to sample")
    assert not (tmp_path / "fe.npz").exists()


def test_eval_of_overlapping_atoms_names_the_file_frame_and_atoms(tmp_path):
    from mlff_core.data.formats import write_frames
    from mlff_core.data.frames import Frames
    from mlff_core.data.molecules import named_molecule

    atoms = [named_molecule("ethanol").atoms for _ in range(3)]
    atoms[2].positions[5] = atoms[2].positions[0]
    frames = Frames(positions=[a.positions for a in atoms], atomic_numbers=atoms[0].numbers,
                    energies=[-10.0] * 3, forces=[a.positions * 0.0 for a in atoms])
    data = write_frames(frames, tmp_path / "test.npz")
    model = save_random_model(tmp_path / "m.pt", "schnet")
    assert_clean_error(run_mlff("eval", "--model", model, "--data", data, "-o",
                                tmp_path / "m.json"),
                       f"{data}: predicted forces are NaN or infinite at frame 2, where atoms "
                       "0 and 5 are 0.000 Å apart")
    assert not (tmp_path / "m.json").exists()


def test_an_unwritable_output_is_named_not_its_temporary_file(tmp_path, monkeypatch):
    """A read-only output directory (simulated: the tests run as root, who may write
    anywhere) is reported with the user's path."""
    import errno
    import tempfile

    from mlff_core.fileio import atomic_output

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied",
                              str(tmp_path / ".out.tmp-x1y2.json"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(OSError) as info, atomic_output(tmp_path / "out.json", "w"):
        pass
    assert info.value.filename == str(tmp_path / "out.json")
    assert "cannot write here (Permission denied)" in str(info.value)


def test_finetune_keeps_the_model_kind(tmp_path, finished_run):
    """A molecular model fine-tuned on periodic cells used to come out `periodic: true`."""
    from mlff_core.data.formats import write_frames
    from mlff_core.data.generate import LangevinSampling, generate_frames
    from mlff_core.data.molecules import water_box
    from mlff_core.export.from_run import export_run
    from mlff_core.labels import get_level
    from mlff_core.training.finetune import finetune

    model = export_run(finished_run / "run", tmp_path / "water.pt")
    assert load_model(model).metadata["periodic"] is False
    cells = generate_frames(water_box(2), get_level("gfn1"), 4, LangevinSampling(
        stride=1, equilibration=1))
    data = write_frames(cells, tmp_path / "box.npz")
    with pytest.raises(TrainingError, match="trained on molecules but the fine-tuning data "
                                            "are periodic cells"):
        finetune(model, [data], tmp_path / "ft", TrainingConfig(epochs=1),
                 allow_mixed_levels=True)  # GFN1-xTB cells for an MMFF94 model
    assert not (tmp_path / "ft").exists()


def _relevelled(frames_path, level, out):
    """A copy of a data file whose frames claim another level of theory."""
    from mlff_core.data.formats import read_frames, write_frames

    frames = read_frames(frames_path)
    frames.levels = np.full(frames.n_frames, level)
    return write_frames(frames, out)


def test_mixed_levels_of_theory_are_refused_unless_allowed(tmp_path, finished_run):
    water = finished_run / "w.npz"
    other = _relevelled(water, "gfn2", tmp_path / "w_gfn2.npz")
    result = run_mlff_here("train", "--data", water, "--data", other, "--model", "schnet",
                           "--epochs", "1", "-o", tmp_path / "mixed")
    assert_clean_error(result, "the data mix levels of theory", "w.npz: MMFF94",
                       "w_gfn2.npz: gfn2", "--allow-mixed-levels")
    assert not (tmp_path / "mixed").exists()
    result = run_mlff_here("train", "--data", water, "--val-data", other, "--model", "schnet",
                           "--epochs", "1", "-o", tmp_path / "mixed")
    assert_clean_error(result, "the data mix levels of theory")
    result = run_mlff("train", "--data", water, "--data", other, "--model", "schnet",
                      "--hidden", "8", "--layers", "1", "--epochs", "1", "--allow-mixed-levels",
                      "-o", tmp_path / "mixed")
    assert result.returncode == 0, result.stderr

    from mlff_core.export.from_run import export_run

    model = export_run(finished_run / "run", tmp_path / "water.pt", clusters=False)
    result = run_mlff_here("finetune", "--model", model, "--data", other, "--epochs", "1",
                           "-o", tmp_path / "ft")
    assert_clean_error(result, "water.pt was trained on MMFF94 labels",
                       "w_gfn2.npz: gfn2", "--allow-mixed-levels")
    assert not (tmp_path / "ft").exists()


def test_level_rule_unit():
    """Data of a level the model knows are fine, even when the model knows more than one."""
    from mlff_core.data.frames import Frames
    from mlff_core.training.run import check_levels

    def frames(level, name):
        return Frames(positions=np.zeros((1, 2, 3)) + np.arange(2)[:, None], atomic_numbers=[1, 1],
                      energies=[-1.0], forces=np.zeros((1, 2, 3)), levels=[level], source=name)

    check_levels([frames("gfn2", "a.npz")], ["gfn2", "MMFF94"], "m.pt")
    check_levels([frames("unknown", "a.npz"), frames("gfn2", "b.npz")])
    with pytest.raises(TrainingError, match="m.pt was trained on gfn2 labels but the data are "
                                            "a.npz: MMFF94"):
        check_levels([frames("MMFF94", "a.npz")], ["gfn2"], "m.pt")
    with pytest.raises(TrainingError, match=r"mix levels of theory \(a.npz: MMFF94; b.npz: gfn2"):
        check_levels([frames("MMFF94", "a.npz"), frames("gfn2", "b.npz")])


def test_a_cutoff_that_leaves_atoms_alone_is_refused(tmp_path, finished_run):
    result = run_mlff("train", "--data", finished_run / "w.npz", "--model", "schnet",
                      "--cutoff", "0.1", "-o", tmp_path / "r")
    assert_clean_error(result, "cutoff 0.1 Å leaves atom 0 (O) of frame ",
                       "w.npz without a neighbour (the nearest is 0.9")
    assert not (tmp_path / "r").exists()


def test_a_non_finite_loss_stops_the_run_naming_the_frames(tmp_path, finished_run):
    """Before: the loss turned NaN, the run exited 0, and `export` said "best.pt missing"."""
    from mlff_core.data.formats import read_frames, write_frames

    frames = read_frames(finished_run / "w.npz")
    frames.energies[5] = 1e30  # squared in float32: inf
    bad = write_frames(frames, tmp_path / "bad.npz")
    result = run_mlff("train", "--data", bad, "--model", "schnet", "--hidden", "8", "--layers",
                      "1", "--n-val", "2", "--batch-size", "12", "--epochs", "2",
                      "-o", tmp_path / "r")
    assert_clean_error(result, "training loss is not finite (inf) at epoch 1",
                       "the largest label is", "bad.npz frame 5's: energy 1e+30 eV",
                       "check their labels", "no epoch finished")
    assert not (tmp_path / "r" / "best.pt").exists()
    result = run_mlff("train", "--data", finished_run / "w.npz", "--model", "schnet", "--hidden",
                      "8", "--layers", "1", "--lr", "1e6", "--clip", "0", "--epochs", "2",
                      "-o", tmp_path / "diverged")  # the weights diverge
    assert_clean_error(result, "loss is not finite", "at epoch 1", "lower --lr")


def test_resume_with_other_settings_names_the_differences(tmp_path, finished_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run / "run", run)
    result = run_mlff("train", "--data", finished_run / "w.npz", "--model", "painn", "--hidden",
                      "128", "--lr", "0.01", "-o", run, "--resume")
    assert_clean_error(result, "cannot resume with other settings", "--model schnet → painn",
                       "--hidden 8 → 128", "--lr 0.0005 → 0.01")
    result = run_mlff("train", "--data", finished_run / "w.npz", "--n-val", "3", "-o", run,
                      "--resume")  # a validation frame would move into training
    assert_clean_error(result, "cannot resume with another --n-val (the run's split: 11 "
                               "training, 1 validation frames)")
    result = run_mlff("train", "--data", finished_run / "w.npz", "--model", "schnet",
                      "--hidden", "8", "--epochs", "2", "-o", run, "--resume")
    assert result.returncode == 0, result.stderr
    assert "epoch 2" in result.stdout


@pytest.mark.parametrize(("changes", "needle"), [
    ({"cutoff": 2.0}, "mlff.json says cutoff 2.0 but the scripted model's is 5.0"),
    ({"energy_unit": "kcal/mol"}, "mlff.json says energy_unit kcal/mol"),
    ({"species": [1, 6, 7]}, "mlff.json says species [1, 6, 7] but the scripted model's is "
                             "[1, 6, 8]"),
    ({"num_interactions": 2}, "mlff.json says num_interactions 2 but the scripted model's is 3"),
    ({"dtype": "float32"}, "mlff.json says dtype float32 but the scripted model's is float64"),
])
def test_hand_edited_metadata_is_checked_against_the_module(tmp_path, changes, needle):
    model = save_random_model(tmp_path / "m.pt", "schnet")
    load_model(model)
    with pytest.raises(MLFFError, match=re.escape(needle)):
        load_model(with_edited_metadata(model, tmp_path / "edited.pt", **changes))


def test_a_used_split_directory_is_refused_unless_overwrite(tmp_path, finished_run):
    """Before: a new split without a test set kept the earlier split's test.npz, whose frames
    were partly in the new train.npz (leakage)."""
    from mlff_core.data.formats import read_frames

    data, out = finished_run / "w.npz", tmp_path / "s"
    (tmp_path / "s").mkdir()
    (out / "notes.txt").write_text("mine")
    assert run_mlff("data", "split", data, "--train", "6", "--val", "3", "-o", out).returncode == 0
    assert (out / "test.npz").exists()
    assert_clean_error(run_mlff_here("data", "split", data, "--train", "9", "--val", "3",
                                     "--test", "0", "-o", out),
                       f"{out}: already holds an earlier split (test.npz, train.npz, val.npz)",
                       "--overwrite")
    result = run_mlff("data", "split", data, "--train", "9", "--val", "3", "--test", "0",
                      "--overwrite", "-o", out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "train.npz", "val.npz"]
    assert read_frames(out / "train.npz").n_frames == 9


def test_export_does_not_replace_a_file_unless_overwrite(tmp_path, finished_run):
    target = tmp_path / "data.npz"
    target.write_bytes((finished_run / "w.npz").read_bytes())
    assert_clean_error(run_mlff("export", finished_run / "run", "-o", target),
                       f"{target}: already exists; pass --overwrite")
    assert target.read_bytes() == (finished_run / "w.npz").read_bytes()
    assert run_mlff("export", finished_run / "run", "-o", target, "--no-clusters",
                    "--overwrite").returncode == 0
    assert load_model(target).metadata["architecture"] == "schnet"


def test_md_refuses_an_earlier_run_and_leaves_nothing_when_it_fails(tmp_path):
    """Before: an earlier run's collapse.npz and last_good.* stayed beside the new run's files,
    and a run that failed at its start left an empty or partial directory."""
    import json

    from mlff_core.data.formats import write_frames
    from mlff_core.data.frames import Frames
    from mlff_core.data.molecules import named_molecule

    model = save_random_model(tmp_path / "m.pt", "schnet")
    start = write_frames(Frames.from_atoms([named_molecule("ethanol").atoms]),
                         tmp_path / "start.xyz")
    out = tmp_path / "md"
    out.mkdir()
    for stale in ("collapse.npz", "last_good.xyz"):
        (out / stale).write_text("from an earlier run")
    args = ("md", "--engine", "ase", "--model", model, "--structure", start, "--steps", "4",
            "--report-interval", "2", "--on-collapse", "flag", "-o", out)
    assert_clean_error(run_mlff(*args), f"{out}: already holds an earlier MD run "
                                        "(collapse.npz, last_good.xyz); pass --overwrite")
    result = run_mlff(*args, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert not (out / "collapse.npz").exists() and not (out / "last_good.xyz").exists()
    assert "last_good.xyz" not in json.dumps(json.loads((out / "summary.json").read_text()))

    unknown_atoms = named_molecule("ethanol").atoms
    unknown_atoms.numbers[0] = 7  # nitrogen: the model knows H, C, O
    bad = write_frames(Frames.from_atoms([unknown_atoms]), tmp_path / "bad.xyz")
    for engine in ("ase", "openmm", "lammps"):
        failed = tmp_path / f"failed_{engine}"
        result = run_mlff("md", "--engine", engine, "--model", model, "--structure", bad,
                          "--steps", "4", "-o", failed)
        assert_clean_error(result, "does not know element(s) N")
        assert not failed.exists(), sorted(p.name for p in failed.iterdir())


def test_generate_checks_its_output_before_the_work(tmp_path):
    """Before: the output's format and writability were checked after labelling (hours for
    DFT). The structure here does not exist: the output's problem must be the one reported."""
    missing = tmp_path / "missing.xyz"
    assert_clean_error(run_mlff("data", "generate", "--structure", missing, "--level", "mmff94",
                                "-o", tmp_path / "out.pdb"), "unknown output format")
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    assert_clean_error(run_mlff("data", "generate", "--structure", missing, "--level", "mmff94",
                                "-o", blocker / "out.npz"), str(blocker / "out.npz"))
    existing = tmp_path / "done.npz"
    existing.write_text("earlier results")
    assert_clean_error(run_mlff("data", "generate", "--structure", missing, "--level", "mmff94",
                                "-o", existing), f"{existing}: already exists; pass --overwrite")
    assert existing.read_text() == "earlier results"


def test_generate_resumes_only_what_it_was_asked_to(tmp_path):
    from mlff_core.data.formats import read_frames
    from mlff_core.data.partial import PartialRun, partial_path

    out = tmp_path / "w.npz"
    args = ("data", "generate", "--molecule", "water", "--level", "mmff94", "--frames", "3",
            "--stride", "2", "--equilibration", "2", "-o", out)
    # the refusals in this process (no interpreter start-up); the run itself as users run it
    assert_clean_error(run_mlff_here(*args, "--resume"), "nothing to resume")
    assert_clean_error(run_mlff_here(*args, "--resume", "--overwrite"), "give one of them")
    PartialRun(partial_path(out), {"made": "by hand"}).save({}, 1, "sample")
    assert_clean_error(run_mlff_here(*args), "w.npz.partial.npz: a stopped run of this command "
                                             "left its frames here; pass --resume")
    assert_clean_error(run_mlff_here(*args, "--resume"), "the partial run was made with other "
                                                         "settings")
    result = run_mlff(*args, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert read_frames(out).n_frames == 3 and not partial_path(out).exists()


def test_md_overwrite_keeps_its_inputs_and_a_failed_run_keeps_its_evidence(tmp_path):
    """A restart from the last good frame into the same directory must not delete that frame;
    a run that fails after it started stepping (here: `--on-collapse raise`) keeps its
    trajectory and monitor logs."""
    import ase.io

    from mlff_core.data.molecules import named_molecule

    model = save_random_model(tmp_path / "m.pt", "schnet")
    out = tmp_path / "md"
    out.mkdir()
    restart = out / "last_good.xyz"
    ase.io.write(restart, named_molecule("ethanol").atoms)
    (out / "summary.json").write_text("{}")
    result = run_mlff("md", "--engine", "ase", "--model", model, "--structure", restart,
                      "--steps", "4", "--report-interval", "2", "--on-collapse", "flag",
                      "--overwrite", "-o", out)
    assert result.returncode == 0, result.stderr
    assert ase.io.read(restart).get_chemical_formula() == "C2H6O"

    failed = tmp_path / "failed"
    result = run_mlff("md", "--engine", "ase", "--model", model, "--structure", restart,
                      "--steps", "4", "--report-interval", "2", "--on-collapse", "raise",
                      "--bond-threshold", "0.000001", "-o", failed)
    assert result.returncode != 0
    assert {"collapse.log", "collapse.xyz", "md.log"} <= {p.name for p in failed.iterdir()}
