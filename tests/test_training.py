"""Training: reference energies, losses and weights, a real run that learns, kill and resume,
warm starts, and export."""

import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from conftest import MLFF

from mlff_core.data.formats import write_frames
from mlff_core.data.frames import Frames
from mlff_core.data.generate import LangevinSampling, generate_frames
from mlff_core.data.molecules import named_molecule
from mlff_core.export import export_run, load_model
from mlff_core.labels import get_level
from mlff_core.training import Trainer, TrainingConfig, make_trainer
from mlff_core.training.graphs import batches, frame_graphs
from mlff_core.training.losses import Predictions, energy_force_loss
from mlff_core.training.trainer import fit_reference_energies, predict


@pytest.fixture(scope="module")
def aspirin_file(tmp_path_factory):
    """120 GFN2-xTB aspirin frames at 500 K (about 10 s to generate)."""
    frames = generate_frames(named_molecule("aspirin"), get_level("gfn2"), 120,
                             LangevinSampling(temperature=500.0, stride=5, equilibration=50))
    return write_frames(frames, tmp_path_factory.mktemp("data") / "aspirin.npz")


def test_reference_energies_are_least_squares():
    # Two compositions with known per-element energies: H = -0.5, O = -75 eV.
    water = Frames(positions=np.zeros((2, 3, 3)) + np.arange(3)[:, None], atomic_numbers=[8, 1, 1],
                   energies=[-76.0, -76.0], forces=np.zeros((2, 3, 3)))
    h2 = Frames(positions=np.zeros((1, 2, 3)) + np.arange(2)[:, None], atomic_numbers=[1, 1],
                energies=[-1.0], forces=np.zeros((1, 2, 3)))
    np.testing.assert_allclose(fit_reference_energies([water, h2], [1, 8]), [-0.5, -75.0])


def test_loss_formula_and_sample_weights(water_frames):
    graphs = frame_graphs(water_frames, 5.0, torch.float64, weights=np.array([1.0, 0.0, 3.0]))
    (batch,) = batches(graphs, 8, shuffle=False, seed=0)
    rng = np.random.default_rng(0)
    energy = batch.energy + torch.tensor(rng.normal(size=3))
    forces = batch.forces + torch.tensor(rng.normal(size=(9, 3)))
    loss = energy_force_loss(batch, Predictions(energy, forces), energy_weight=0.1)
    per_frame = [0.1 * float((energy - batch.energy)[f]) ** 2
                 + float(((forces - batch.forces)[3 * f:3 * f + 3] ** 2).mean()) for f in range(3)]
    # Σ_f w_f ℓ_f over the batch's 3 frames (ASTEROID eq. 2), not renormalised by Σ w = 4
    assert float(loss) == pytest.approx((per_frame[0] + 3 * per_frame[2]) / 3.0, rel=1e-12)


def test_training_cuts_force_error_fivefold_and_exports(aspirin_file, tmp_path):
    config = TrainingConfig(architecture="painn", epochs=40, batch_size=8, learning_rate=1e-3,
                            seed=0, max_minutes=1.5)
    trainer = make_trainer(config, tmp_path / "run", [aspirin_file])
    with trainer.ema.applied(trainer.potential):
        untrained = trainer.evaluate(trainer.val_graphs)["force_mae"]
    trainer.fit()
    best = torch.load(trainer.best_path, weights_only=True)
    trained = best["val_metrics"]["force_mae"]
    assert trained < untrained / 5.0, (untrained, trained)

    model = export_run(tmp_path / "run", tmp_path / "model.pt")
    loaded = load_model(model)
    assert loaded.metadata["training"]["val_metrics"]["force_mae"] == pytest.approx(trained)
    assert loaded.metadata["training"]["level_of_theory"] == "GFN2-xTB"
    assert loaded.metadata["training"]["sizes"] == {"train": 108, "val": 12}
    # the file reproduces the validation error the trainer measured
    val = trainer.val_frames[0]
    errors = []
    for f in range(val.n_frames):
        pos = torch.tensor(val.positions[f], dtype=torch.float32, requires_grad=True)
        energy = loaded.module(pos, torch.tensor(val.atomic_numbers), torch.zeros(3, 3),
                               torch.zeros(3, dtype=torch.bool))
        (gradient,) = torch.autograd.grad(energy, pos)
        errors.append(np.abs(-gradient.numpy() - val.forces[f]))
    assert np.mean(errors) == pytest.approx(trained, rel=1e-4)


def _train_command(data, run_dir, epochs, *extra):
    # float64: multithreaded scatter sums add in a varying order, which float32 turns into
    # ~1e-6 differences after a few epochs; in float64 a correct resume agrees to ~1e-12.
    return [str(MLFF), "train", "--data", str(data), "--model", "schnet", "--hidden", "32",
            "--epochs", str(epochs), "--batch-size", "4", "--dtype", "float64",
            "-o", str(run_dir), *extra]


def _logged_epochs(run_dir):
    log = run_dir / "log.csv"
    return max(0, len(log.read_text().splitlines()) - 1) if log.exists() else 0


def test_killed_run_resumes_from_its_checkpoint(aspirin_file, tmp_path):
    epochs = 8
    reference = tmp_path / "uninterrupted"
    subprocess.run(_train_command(aspirin_file, reference, epochs), check=True,
                   capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_train_command(aspirin_file, killed, epochs),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _logged_epochs(killed) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    # The log row of an epoch is written just before its checkpoint, so the kill may land
    # between the two; resuming must then drop that row and redo the epoch.
    stopped_at = torch.load(killed / "checkpoint.pt", weights_only=True)["epoch"]
    assert 2 <= stopped_at < epochs

    resumed = subprocess.run(_train_command(aspirin_file, killed, epochs, "--resume"),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    final = torch.load(killed / "checkpoint.pt", weights_only=True)
    expected = torch.load(reference / "checkpoint.pt", weights_only=True)
    assert final["epoch"] == expected["epoch"] == epochs
    for name, value in expected["model"].items():
        torch.testing.assert_close(final["model"][name], value, rtol=1e-9, atol=1e-10)
    assert _logged_epochs(killed) == epochs  # one row per epoch, none twice


def test_refuses_to_overwrite_and_resume_needs_same_data(aspirin_file, tmp_path, water_frames):
    config = TrainingConfig(architecture="schnet", epochs=1, hyperparameters={"hidden": 16})
    make_trainer(config, tmp_path / "run", [aspirin_file]).fit()
    with pytest.raises(Exception, match="already holds a training run"):
        make_trainer(config, tmp_path / "run", [aspirin_file])
    other = write_frames(water_frames, tmp_path / "water.npz")
    with pytest.raises(Exception, match="data differ"):
        make_trainer(config, tmp_path / "run", [other], resume=True)


def test_warm_start_begins_from_the_model(aspirin_file, tmp_path):
    config = TrainingConfig(architecture="schnet", epochs=3, hyperparameters={"hidden": 16})
    make_trainer(config, tmp_path / "base", [aspirin_file]).fit()
    model = export_run(tmp_path / "base", tmp_path / "base.pt")
    tuned = make_trainer(TrainingConfig(epochs=1), tmp_path / "tuned", [aspirin_file],
                         init_model=model)
    assert tuned.config.architecture == "schnet"
    reference = load_model(model).to_potential().state_dict()
    for name, value in tuned.potential.state_dict().items():
        assert torch.equal(value, reference[name])


def test_cli_train_and_export(aspirin_file, tmp_path):
    result = subprocess.run(_train_command(aspirin_file, tmp_path / "run", 2), capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert "epoch limit reached after epoch 2" in result.stdout
    exported = subprocess.run([str(MLFF), "export", str(tmp_path / "run"), "-o",
                               str(tmp_path / "m.pt"), "--dtype", "float64"],
                              capture_output=True, text=True)
    assert exported.returncode == 0, exported.stderr
    assert load_model(tmp_path / "m.pt").metadata["dtype"] == "float64"
    _check_calibrated_export(tmp_path / "run", tmp_path / "m.pt", aspirin_file, tmp_path)


def _check_calibrated_export(run_dir, max_file, data, tmp_path):
    """`--radius calibrated` on the run's 12 validation frames, against a hand computation from
    the max-radius file: with α = 0.1 the conformal rank is ⌈13 × 0.9⌉ = 12, the largest
    validation score, so every radius is the max radius × that score."""
    import json

    from conftest import assert_clean_error, run_mlff_here
    from models_helpers import bond_scores_by_formula

    from mlff_core.metrics.clusters import ConformationClusters
    from mlff_core.training.run import training_frames

    result = run_mlff_here("export", run_dir, "-o", tmp_path / "cal.pt", "--radius",
                           "calibrated", "--false-flag-rate", "0.1")
    assert result.returncode == 0, result.stderr
    assert "radius: calibrated to flag 10.0% of 12 held-out frames" in result.stdout
    run = json.loads((run_dir / "run.json").read_text())
    (val,) = training_frames(run["data"], "val")
    (by_max,) = load_model(max_file).metadata["exploration"]["systems"]
    (calibrated,) = load_model(tmp_path / "cal.pt").metadata["exploration"]["systems"]
    # the score calibrated is the larger of distance/radius and the bond score, here computed
    # from the max-radius file's stored bond ranges by the formula
    ratios = ConformationClusters.from_dict(by_max).classify(val)[1]
    ranges = by_max["bond_ranges"]
    scores = np.maximum(ratios, bond_scores_by_formula(val.positions, ranges))
    assert calibrated["radius_rule"]["scale"] == pytest.approx(scores.max(), rel=1e-12)
    np.testing.assert_allclose(calibrated["radii"], np.array(by_max["radii"]) * scores.max(),
                               rtol=1e-12)
    assert calibrated["bond_ranges"]["level"] == pytest.approx(ranges["level"] * scores.max(),
                                                               rel=1e-12)
    assert calibrated["bond_ranges"]["max_level"] == pytest.approx(ranges["level"])
    assert calibrated["radius_rule"]["flagged_rate"] == 0.0
    assert calibrated["radius_rule"]["flagged_rate_max_radius"] == pytest.approx(
        np.mean(scores > 1.0))
    # `mlff eval` reports the rule and the fraction of its frames that the clusters flag
    evaluated = run_mlff_here("eval", "--model", tmp_path / "cal.pt", "--data", data, "-o",
                              tmp_path / "metrics.json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "unexplored by the model file's clusters:" in evaluated.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["exploration"]["radius_rule"]["rule"] == "calibrated"
    # ... and the fraction with a bond outside its training range, here from the stored ranges
    from mlff_core.data.formats import read_frames

    bond_scores = bond_scores_by_formula(read_frames(data).positions,
                                         calibrated["bond_ranges"])
    assert metrics["exploration"]["bond_flagged_fraction"] == pytest.approx(
        np.mean(bond_scores > 1.0))
    assert "bond outside its training range:" in evaluated.stdout
    # 12 held-out frames cannot calibrate 5 %: one clear error, no file
    refused = run_mlff_here("export", run_dir, "-o", tmp_path / "five.pt", "--radius",
                            "calibrated")
    assert_clean_error(refused, "needs at least 19 held-out frames, got 12")
    assert not (tmp_path / "five.pt").exists()
    # held-out frames without the calibrated rule would be silently unused: refused
    stray = run_mlff_here("export", run_dir, "-o", tmp_path / "stray.pt", "--calibration-data",
                          data)
    assert_clean_error(stray, "--calibration-data applies to --radius calibrated")
    assert not (tmp_path / "stray.pt").exists()


class _MeanForceNorm:
    """A made-up extra loss term: mean |F̂| (eV/Å), to check the plumbing."""

    name = "mean_force_norm"

    def __init__(self):
        self.calls = 0

    def __call__(self, batch, predictions):
        self.calls += 1
        return predictions.forces.norm(dim=-1).mean()


def test_extra_loss_terms_are_added_with_their_weight(water_frames, tmp_path):
    term = _MeanForceNorm()
    config = TrainingConfig(architecture="schnet", epochs=1, hyperparameters={"hidden": 8})
    trainer = Trainer(config, [water_frames], [water_frames], tmp_path, extra_losses=[(2.5, term)])
    (batch,) = batches(trainer.train_graphs, 8, shuffle=False, seed=0)
    predictions = predict(trainer.potential, batch)
    base = energy_force_loss(batch, predictions, config.energy_weight)
    total = trainer._loss(batch, predictions)
    extra = float(term(batch, predictions).detach())
    assert float(total.detach()) == pytest.approx(float(base.detach()) + 2.5 * extra)
    trainer.fit()
    assert term.calls >= 3  # used in training and validation batches
