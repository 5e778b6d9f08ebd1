"""RBP fine-tuning: the reweighting rule on hand-made clusters, RBP against `force_metrics`, and
`mlff finetune` end to end (real model file, real training, real export)."""

import json

import numpy as np
import pytest
from conftest import assert_clean_error, run_mlff

from mlff_core.data.formats import read_frames, write_frames
from mlff_core.data.frames import Frames
from mlff_core.data.generate import LangevinSampling, generate_frames
from mlff_core.data.molecules import named_molecule
from mlff_core.errors import MLFFError
from mlff_core.export import export_run, load_model
from mlff_core.fileio import load_weights
from mlff_core.labels import get_level
from mlff_core.metrics.force import force_metrics
from mlff_core.metrics.predict import predict_with_model
from mlff_core.training import Trainer, TrainingConfig
from mlff_core.training.reweight import ratio_of_bad_points, rbp_weights


def test_rbp_rule_on_hand_made_clusters():
    frame_mae = np.array([1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 0.5, 5.0])
    clusters = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    # global mean 1.9375: cluster 0 has no bad frame, cluster 1 two of two, cluster 2 one of two
    outcome = rbp_weights(frame_mae, clusters)
    assert outcome.rbp == {0: 0.0, 1: 1.0, 2: 0.5}
    # raw weights 1 + RBP / 0.5 = 1, 3, 2; mean over frames (4 + 6 + 4) / 8 = 1.75
    expected = {0: 1 / 1.75, 1: 3 / 1.75, 2: 2 / 1.75}
    assert outcome.cluster_weight == pytest.approx(expected)
    np.testing.assert_allclose(outcome.weights, [expected[k] for k in clusters])
    assert outcome.weights.mean() == pytest.approx(1.0)
    assert rbp_weights(frame_mae, clusters, strength=2.0).cluster_weight[1] == \
        pytest.approx(5 / 2.5)  # raw 1, 5, 3: mean (4 + 10 + 6) / 8 = 2.5
    np.testing.assert_allclose(rbp_weights(frame_mae, clusters, strength=0.0).weights, 1.0)
    np.testing.assert_allclose(rbp_weights(np.full(8, 0.7), clusters).weights, 1.0)


@pytest.mark.parametrize("frame_mae, clusters", [
    ([1.0, 2.0], [0]), ([1.0, np.nan], [0, 1]), ([1.0, 2.0], [0, -1]), ([1.0, 2.0], [0.5, 1]),
])
def test_rbp_rejects_bad_input(frame_mae, clusters):
    with pytest.raises(MLFFError):
        rbp_weights(np.array(frame_mae), np.array(clusters))


def test_ratio_of_bad_points_matches_force_metrics(water_frames):
    frames = water_frames[[0, 1, 2, 0, 1, 2, 0]]
    rng = np.random.default_rng(1)
    predicted = frames.forces + rng.normal(scale=0.2, size=frames.forces.shape)
    labels = np.array([0, 0, 1, 1, 1, 2, 2])
    metrics = force_metrics(frames, predicted, cluster_labels=labels)
    frame_mae = np.abs(predicted - frames.forces).mean(axis=(1, 2))
    assert ratio_of_bad_points(frame_mae, labels) == \
        {int(k): v["RBP"] for k, v in metrics["per_cluster"].items()}


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    """A SchNet trained for a few epochs on 90 MMFF94 aspirin frames, with 3 clusters."""
    root = tmp_path_factory.mktemp("finetune")
    frames = generate_frames(named_molecule("aspirin"), get_level("mmff94"), 90,
                             LangevinSampling(temperature=500.0, stride=5, equilibration=50))
    data = write_frames(frames, root / "aspirin.npz")
    config = TrainingConfig(architecture="schnet", epochs=4, batch_size=8, learning_rate=1e-3,
                            hyperparameters={"hidden": 32, "num_interactions": 2})
    trainer = Trainer(config, [frames[:80]], [frames[80:]], root / "run")
    trainer.fit()
    model = export_run(root / "run", root / "model.pt", n_clusters=3,
                       cluster_data=[frames[:80]])
    return data, model


def test_finetune_command_reweights_by_rbp_and_keeps_clusters(trained_model, tmp_path):
    data, model = trained_model
    result = run_mlff("finetune", "--model", model, "--data", data, "--epochs", "3",
                      "--batch-size", "8", "-o", tmp_path / "ft")
    assert result.returncode == 0, result.stderr
    assert "RBP before → after" in result.stdout
    summary = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    (system,) = summary["systems"]
    assert system["clusters_from"] == "model file"

    # Rebuild the training split and check the reweighting against an independent computation.
    run = json.loads((tmp_path / "ft" / "run.json").read_text())
    train = read_frames(data)[np.array(run["data"]["systems"][0]["train_indices"])]
    original = load_model(model)
    labels, _ = original.clusters_for(train.atomic_numbers, False).classify(train)
    _, forces = predict_with_model(original, train)
    frame_mae = np.abs(forces - train.forces).mean(axis=(1, 2))
    expected = rbp_weights(frame_mae, labels)
    table = {row["cluster"]: row for row in system["reweighting"]}
    for k, rbp in expected.rbp.items():
        assert table[k]["RBP"] == pytest.approx(rbp)
        assert table[k]["weight"] == pytest.approx(expected.cluster_weight[k])
        assert system["before"]["per_cluster"][str(k)]["RBP"] == pytest.approx(rbp)

    # The fine-tuned file keeps the original clusters, and its "after" numbers are its own.
    tuned = load_model(tmp_path / "ft" / "model.pt")
    np.testing.assert_allclose(tuned.clusters_for(train.atomic_numbers, False).centroids_,
                               original.clusters_for(train.atomic_numbers, False).centroids_)
    energies, forces = predict_with_model(tuned, train)
    after = force_metrics(train, forces, energies, cluster_labels=labels, unit="eV/A")
    assert system["after"]["global"]["F_mae"] == pytest.approx(after["global"]["F_mae"], rel=1e-6)
    assert tuned.metadata["training"]["init_model"]["path"] == str(model)

    # The kept epoch is chosen on the loss being minimised: the validation frames carry their
    # cluster's RBP weight too (a plain validation loss keeps the epoch closest to the original
    # model, so RBP fine-tuning would never move it). Recomputed from the loss formula.
    val = read_frames(data)[np.array(run["data"]["systems"][0]["val_indices"])]
    val_labels, _ = original.clusters_for(val.atomic_numbers, False).classify(val)
    weights = np.array([expected.cluster_weight.get(int(k), 1.0) for k in val_labels])
    weights /= weights.mean()
    assert np.ptp(weights) > 0.1  # the check below tells the two validation losses apart
    energies, forces = predict_with_model(tuned, val)
    per_frame = (run["config"]["energy_weight"] * (energies - val.energies) ** 2
                 + ((forces - val.forces) ** 2).mean(axis=(1, 2)))
    best = load_weights(tmp_path / "ft" / "best.pt")
    assert best["val_metrics"]["loss"] == pytest.approx(float((weights * per_frame).mean()),
                                                        rel=1e-4)
    assert best["val_metrics"]["loss"] != pytest.approx(float(per_frame.mean()), rel=1e-3)


def test_finetune_rejects_unknown_elements(trained_model, tmp_path, water_frames):
    _, model = trained_model
    hydrogen_sulfide = Frames(positions=water_frames.positions[[0, 1, 2, 0, 1, 2]],
                              atomic_numbers=[16, 1, 1],
                              energies=water_frames.energies[[0, 1, 2, 0, 1, 2]],
                              forces=water_frames.forces[[0, 1, 2, 0, 1, 2]])
    data = write_frames(hydrogen_sulfide, tmp_path / "h2s.npz")
    result = run_mlff("finetune", "--model", model, "--data", data, "-o", tmp_path / "ft")
    assert_clean_error(result, "does not know element(s) S")
    assert not (tmp_path / "ft").exists()
