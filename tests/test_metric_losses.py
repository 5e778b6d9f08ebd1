"""Metric-guided losses: each equals its force-metric definition (hand-computed cases and
`force_metrics`), has finite gradients, and trains inside the Trainer."""

import json

import numpy as np
import pytest
import torch

from mlff_core.data.frames import Frames
from mlff_core.errors import MLFFError
from mlff_core.metrics.force import force_metrics
from mlff_core.training import Trainer, TrainingConfig
from mlff_core.training.graphs import batches, frame_graphs
from mlff_core.training.losses import (
    CompositeLoss,
    ForceMetricLoss,
    Predictions,
    cluster_balance,
    parse_loss,
)

WATER = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.24, 0.927, 0.0]])
U_O, U_H = 15.999, 1.008  # ASE's relative atomic masses


def _frames(n_frames: int, atomic_numbers, base, seed: int) -> Frames:
    rng = np.random.default_rng(seed)
    positions = base + 0.05 * rng.standard_normal((n_frames, *np.shape(base)))
    return Frames(positions=positions, atomic_numbers=atomic_numbers,
                  energies=rng.normal(size=n_frames),
                  forces=rng.normal(size=(n_frames, len(atomic_numbers), 3)))


def _batch(frames: Frames, clusters=None, weights=None, system=0):
    graphs = frame_graphs(frames, 3.0, torch.float64, clusters=clusters, weights=weights,
                          system=system)
    (batch,) = batches(graphs, 64, shuffle=False, seed=0)
    return batch


def _predictions(batch, errors: np.ndarray, energy_errors=None) -> Predictions:
    """Predictions = labels + the given per-atom errors [N, 3]."""
    forces = (batch.forces + torch.as_tensor(errors.reshape(-1, 3))).requires_grad_(True)
    energy = batch.energy + (0.0 if energy_errors is None else torch.as_tensor(energy_errors))
    return Predictions(energy, forces)


def test_hand_computed_water_case():
    """Two water frames; frame 1's largest error sits on a hydrogen."""
    frames = _frames(2, [8, 1, 1], WATER, 0)
    errors = np.array([[[0.3, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],     # frame 0
                       [[0.0, 0.1, 0.0], [0.0, 0.0, -0.2], [0.0, 0.0, 0.0]]])   # frame 1
    batch = _batch(frames, clusters=np.array([0, 1]))
    prediction = _predictions(batch, errors)
    value = {kind: float(ForceMetricLoss(kind)(batch, prediction).detach()) for kind in
             ("global", "cluster", "element", "fnm", "maxerr", "cluster-fnm", "element-fnm")}
    # per-frame F_mae: 0.3/9 and 0.3/9; F_max: 0.3 and 0.2
    assert value["global"] == pytest.approx(0.3 / 9)
    assert value["cluster"] == pytest.approx(0.3 / 9)  # two one-frame clusters, equal errors
    assert value["maxerr"] == pytest.approx((0.3 + 0.2) / 2)
    # O: frames 0.3/3 and 0.1/3; H: frames 0 and 0.2/6
    assert value["element"] == pytest.approx(((0.3 / 3 + 0.1 / 3) / 2 + (0.2 / 6) / 2) / 2)
    fnm = ((0.3 / U_O) / 9 + (0.1 / U_O + 0.2 / U_H) / 9) / 2
    assert value["fnm"] == pytest.approx(fnm, rel=1e-4)
    assert value["cluster-fnm"] == pytest.approx(fnm, rel=1e-4)
    element_fnm = ((0.3 / U_O / 3 + 0.1 / U_O / 3) / 2 + (0.2 / U_H / 6) / 2) / 2
    assert value["element-fnm"] == pytest.approx(element_fnm, rel=1e-4)


def test_losses_equal_force_metrics_on_random_errors():
    frames = _frames(12, [6, 8, 1, 1, 1], np.vstack([WATER, [[1.5, 1.0, 0.0], [2.0, -0.5, 0.3]]]),
                     1)
    rng = np.random.default_rng(2)
    labels = np.array([0] * 8 + [1] * 3 + [2])  # a majority cluster and two minority ones
    errors = rng.normal(scale=0.1, size=(12, 5, 3))
    batch = _batch(frames, clusters=labels)
    prediction = _predictions(batch, errors)
    metrics = force_metrics(frames, frames.forces + errors, cluster_labels=labels, unit="eV/A")
    per_cluster = metrics["per_cluster"]

    def loss(kind):
        return float(ForceMetricLoss(kind)(batch, prediction).detach())

    assert loss("global") == pytest.approx(metrics["global"]["F_mae"], rel=1e-10)
    assert loss("fnm") == pytest.approx(metrics["global"]["FNM_mae"], rel=1e-4)
    assert loss("maxerr") == pytest.approx(metrics["global"]["F_max_err"], rel=1e-10)
    assert loss("cluster") == pytest.approx(
        np.mean([c["F_mae"] for c in per_cluster.values()]), rel=1e-10)
    assert loss("cluster-fnm") == pytest.approx(
        np.mean([c["FNM_mae"] for c in per_cluster.values()]), rel=1e-4)
    assert loss("element") == pytest.approx(
        np.mean([e["F_mae"] for e in metrics["per_element"].values()]), rel=1e-10)
    assert loss("element-fnm") == pytest.approx(
        np.mean([e["FNM_mae"] for e in metrics["per_element"].values()]), rel=1e-4)
    # the cluster loss weighs the one-frame cluster as much as the eight-frame one
    assert loss("cluster") != pytest.approx(loss("global"), rel=1e-3)


def test_balanced_cluster_loss_averages_to_the_cluster_metric_over_an_epoch():
    frames = _frames(12, [6, 8, 1, 1, 1], np.vstack([WATER, [[1.5, 1.0, 0.0], [2.0, -0.5, 0.3]]]),
                     1)
    labels = np.array([0] * 8 + [1] * 3 + [2])
    errors = np.random.default_rng(5).normal(scale=0.1, size=(12, 5, 3))
    balance = cluster_balance(labels)
    # hand-computed: 12 frames, 3 clusters of 8, 3 and 1 frames
    assert balance == pytest.approx([12 / 24] * 8 + [12 / 9] * 3 + [12 / 3])
    graphs = frame_graphs(frames, 3.0, torch.float64, clusters=labels)
    for graph, b in zip(graphs, balance, strict=True):
        graph.cluster_balance = torch.tensor([b], dtype=torch.float64)
    per_cluster = force_metrics(frames, frames.forces + errors, cluster_labels=labels,
                                unit="eV/A")["per_cluster"]
    expected = np.mean([c["F_mae"] for c in per_cluster.values()])
    term = ForceMetricLoss("cluster")
    epoch = []
    for batch in batches(graphs, 4, shuffle=True, seed=3):  # three batches of four frames
        rows = batch.frame.numpy()
        epoch.append(float(term(batch, _predictions(batch, errors[rows])).detach()))
    assert np.mean(epoch) == pytest.approx(expected, rel=1e-10)


def test_balanced_sampling_estimates_the_same_losses():
    """Frames drawn ∝ their balance weight b, the other terms corrected by 1 / b: over many
    batches the cluster term averages to the cluster metric and the global term to F_mae."""
    frames = _frames(12, [6, 8, 1, 1, 1], np.vstack([WATER, [[1.5, 1.0, 0.0], [2.0, -0.5, 0.3]]]),
                     2)
    labels = np.array([0] * 8 + [1] * 3 + [2])
    errors = np.random.default_rng(6).normal(scale=0.1, size=(12, 5, 3))
    balance = cluster_balance(labels)
    graphs = frame_graphs(frames, 3.0, torch.float64, clusters=labels)
    for graph, b in zip(graphs, balance, strict=True):  # as the Trainer sets them
        graph.cluster_balance = torch.ones(1, dtype=torch.float64)
        graph.importance = torch.tensor([1.0 / b], dtype=torch.float64)
    metrics = force_metrics(frames, frames.forces + errors, cluster_labels=labels, unit="eV/A")
    expected = {"cluster": np.mean([c["F_mae"] for c in metrics["per_cluster"].values()]),
                "global": metrics["global"]["F_mae"]}
    values = {kind: [] for kind in expected}
    drawn = []
    for epoch in range(300):
        for batch in batches(graphs, 12, True, epoch, balance / balance.sum()):
            rows = batch.frame.numpy()
            drawn.append(rows)
            prediction = _predictions(batch, errors[rows])
            for kind in expected:
                values[kind].append(float(ForceMetricLoss(kind)(batch, prediction).detach()))
    # every cluster, the one-frame cluster too, fills about a third of the draws
    shares = np.bincount(labels[np.concatenate(drawn)]) / (300 * 12)
    assert shares == pytest.approx([1 / 3] * 3, abs=0.02)
    for kind in expected:  # standard errors of the means: about 0.3 %
        assert np.mean(values[kind]) == pytest.approx(expected[kind], rel=0.01)
    assert expected["cluster"] != pytest.approx(expected["global"], rel=0.05)


def test_trainer_balanced_cluster_sampling(tmp_path):
    frames = _frames(16, [8, 1, 1], WATER, 8)
    config = TrainingConfig(architecture="schnet", epochs=1, batch_size=4, dtype="float64",
                            loss={"cluster": 1.0}, n_clusters=3, cluster_sampling="balanced",
                            hyperparameters={"hidden": 8, "num_interactions": 1, "cutoff": 3.0})
    trainer = Trainer(config, [frames[:12]], [frames[12:]], tmp_path)
    labels = np.array([int(g.cluster) for g in trainer.train_graphs])
    counts = np.bincount(labels)
    # every cluster drawn with total probability 1/3; each frame's importance is 1 / its balance
    assert np.bincount(labels, trainer.sampling_probabilities) == pytest.approx([1 / 3] * 3)
    importance = np.array([float(g.importance) for g in trainer.train_graphs])
    assert importance == pytest.approx(3 * counts[labels] / 12)
    assert all(float(g.cluster_balance) == 1.0 for g in trainer.train_graphs)
    assert np.isfinite(trainer.fit().train_loss)
    with pytest.raises(MLFFError, match="cluster_sampling"):
        TrainingConfig(cluster_sampling="oversample")


def test_element_loss_across_systems_and_sample_weights():
    water = _frames(2, [8, 1, 1], WATER, 3)
    h2 = _frames(1, [1, 1], WATER[:2] * 0.8, 4)
    graphs = frame_graphs(water, 3.0, torch.float64, weights=np.array([1.0, 3.0])) + \
        frame_graphs(h2, 3.0, torch.float64, system=1)
    (batch,) = batches(graphs, 8, shuffle=False, seed=0)
    errors = np.zeros((8, 3))
    errors[0, 0] = 0.6   # water frame 0, O
    errors[4, 1] = 0.3   # water frame 1, H
    errors[6, 2] = 0.9   # H2, first H
    prediction = _predictions(batch, errors)
    # Sample weights multiply each frame's term and the sum is divided by the number of frames
    # (ASTEROID eq. 2, Σ w_i ℓ_i over a dataset whose weights the Trainer scales to mean 1),
    # never by the batch's own Σ w.
    # O: frames 0 (error 0.6 / 3 atoms... on O alone: 0.2) and 1 (0), weights 1, 3:
    #    (1 * 0.2 + 3 * 0) / 2 frames = 0.1;
    # H: water frames 0 (0), 1 (0.1 / 2, weight 3) and H2 (0.3 / 2, weight 1):
    #    (0 + 3 * 0.05 + 0.15) / 3 frames = 0.1
    expected = (0.1 + 0.1) / 2
    assert float(ForceMetricLoss("element")(batch, prediction).detach()) == pytest.approx(expected)
    # weighted global F_mae: frames 0.6/9, 0.3/9, 0.9/6 with weights 1, 3, 1, over 3 frames
    expected_global = (0.6 / 9 + 3 * 0.3 / 9 + 0.9 / 6) / 3
    value = float(ForceMetricLoss("global")(batch, prediction).detach())
    assert value == pytest.approx(expected_global)


def test_a_batch_of_down_weighted_frames_keeps_its_small_weight():
    """ASTEROID eq. 2 is Σ_i w_i ℓ_i: a batch made only of high-bias frames (w = 0.1) must
    count a tenth, not be renormalised by its own Σ w back to full weight."""
    frames = _frames(2, [8, 1, 1], WATER, 9)
    batch = _batch(frames, weights=np.array([0.1, 0.1]))
    errors = np.full((6, 3), 0.3)  # |e| = 0.3 on every component of every atom
    prediction = _predictions(batch, errors, energy_errors=np.zeros(2))
    assert float(ForceMetricLoss("global")(batch, prediction).detach()) == pytest.approx(0.03)
    assert float(ForceMetricLoss("maxerr")(batch, prediction).detach()) == pytest.approx(0.03)
    assert float(ForceMetricLoss("element")(batch, prediction).detach()) == pytest.approx(0.03)
    mse = CompositeLoss({"mse": 1.0}, energy_weight=0.0)(batch, prediction)
    assert float(mse.detach()) == pytest.approx(0.1 * 0.09)


def test_trainer_scales_sample_weights_to_a_dataset_mean_of_one(tmp_path):
    """The Trainer divides the sample weights by their mean over the training frames (one
    dataset constant), so an epoch's mean batch loss is Σ w_i ℓ_i / Σ w_i (eq. 2 scaled)."""
    frames = _frames(12, [8, 1, 1], WATER, 10)
    weights = np.linspace(0.05, 1.0, 12)
    config = TrainingConfig(architecture="schnet", epochs=1, batch_size=4, dtype="float64",
                            hyperparameters={"hidden": 8, "num_interactions": 1, "cutoff": 3.0})
    trainer = Trainer(config, [frames[:8]], [frames[8:]], tmp_path,
                      sample_weights=[weights[:8]], val_sample_weights=[weights[8:]])
    stored = np.array([float(g.weight) for g in trainer.train_graphs])
    np.testing.assert_allclose(stored, weights[:8] / weights[:8].mean(), rtol=1e-12)
    stored_val = np.array([float(g.weight) for g in trainer.val_graphs])
    np.testing.assert_allclose(stored_val, weights[8:] / weights[8:].mean(), rtol=1e-12)
    errors = np.random.default_rng(11).normal(scale=0.1, size=(8, 3, 3))
    per_frame = np.abs(errors).mean(axis=(1, 2))
    term = ForceMetricLoss("global")
    epoch = [float(term(batch, _predictions(batch, errors[batch.frame.numpy()])).detach())
             for batch in batches(trainer.train_graphs, 4, shuffle=True, seed=2)]
    w = weights[:8]
    assert np.mean(epoch) == pytest.approx((w * per_frame).sum() / w.sum(), rel=1e-10)


@pytest.mark.parametrize("kind", ["global", "cluster", "element", "fnm", "maxerr", "element-fnm"])
def test_gradients_are_finite(kind):
    frames = _frames(4, [8, 1, 1], WATER, 5)
    batch = _batch(frames, clusters=np.array([0, 0, 1, 1]))
    errors = np.zeros((4, 3, 3))
    errors[1, 2] = [0.1, 0.1, 0.1]  # ties in the max, zeros in |e|: subgradients must stay finite
    prediction = _predictions(batch, errors)
    (gradient,) = torch.autograd.grad(ForceMetricLoss(kind)(batch, prediction),
                                      prediction.forces)
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0


def test_composite_energy_term_follows_force_terms():
    frames = _frames(2, [8, 1, 1], WATER, 6)
    batch = _batch(frames)
    prediction = _predictions(batch, np.zeros((2, 3, 3)), energy_errors=np.array([0.2, -0.4]))
    assert float(CompositeLoss({"mse": 1.0}, 0.5)(batch, prediction).detach()) == \
        pytest.approx(0.5 * (0.04 + 0.16) / 2)
    assert float(CompositeLoss({"global": 1.0, "maxerr": 2.0}, 0.5)(batch, prediction)
                 .detach()) == \
        pytest.approx(0.5 * (0.2 + 0.4) / 2)


def test_parse_loss():
    assert parse_loss("cluster") == {"cluster": 1.0}
    assert parse_loss("cluster=1, maxerr=0.1") == {"cluster": 1.0, "maxerr": 0.1}
    for bad in ("clusters", "cluster=x", "cluster=-1", "global=0", ""):
        with pytest.raises(MLFFError):
            parse_loss(bad)


def test_trainer_with_cluster_loss_fits_and_stores_clusters(tmp_path):
    frames = _frames(16, [8, 1, 1], WATER, 7)
    config = TrainingConfig(architecture="schnet", epochs=2, batch_size=4, seed=0,
                            dtype="float64", loss={"cluster": 1.0, "maxerr": 0.1}, n_clusters=3,
                            hyperparameters={"hidden": 16, "num_interactions": 1,
                                             "cutoff": 3.0})
    trainer = Trainer(config, [frames[:12]], [frames[12:]], tmp_path)
    ids = {int(g.cluster) for g in trainer.train_graphs}
    assert ids == {0, 1, 2}
    labels = np.array([int(g.cluster) for g in trainer.train_graphs])
    balance = np.array([float(g.cluster_balance) for g in trainer.train_graphs])
    counts = np.bincount(labels)
    assert balance == pytest.approx(12 / (3 * counts[labels]))
    record = trainer.fit()
    assert np.isfinite(record.train_loss) and np.isfinite(record.val_loss)
    stored = json.loads((tmp_path / "clusters.json").read_text())
    assert stored[0]["n_clusters"] == 3
