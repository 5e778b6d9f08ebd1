"""Calibrated cluster radii ("--radius calibrated"): the conformal quantile by hand, a diatomic
whose one-dimensional descriptor (1/r) makes every radius hand-computable, the target rate hit
on fresh frames of the training distribution, and the model file carrying the rule."""

import numpy as np
import pytest
import torch

from mlff_core.data.frames import Frames
from mlff_core.errors import DataError
from mlff_core.export.exploration import ExplorationModel
from mlff_core.metrics.clusters import ConformationClusters, conformal_scale


def _diatomic(inverse_lengths):
    """H2 frames whose descriptor (the one inverse distance) is each value given (1/Å)."""
    r = 1.0 / np.asarray(inverse_lengths, dtype=float)
    positions = np.zeros((len(r), 2, 3))
    positions[:, 1, 0] = r
    return Frames(positions=positions, atomic_numbers=[1, 1], source="h2.npz")


def test_conformal_scale_is_the_ceil_n_plus_1_quantile():
    scores = np.arange(1, 20) / 10.0  # n = 19, shuffled order must not matter
    shuffled = np.random.default_rng(0).permutation(scores)
    # alpha 0.1: rank ceil(20 × 0.9) = 18 → 1.8; alpha 0.05: rank ceil(20 × 0.95) = 19 → 1.9
    assert conformal_scale(shuffled, 0.1) == pytest.approx(1.8)
    assert conformal_scale(shuffled, 0.05) == pytest.approx(1.9)
    # 18 scores cannot calibrate 5 %: rank ceil(19 × 0.95) = 19 > 18
    with pytest.raises(DataError, match="needs at least 19 held-out frames, got 18"):
        conformal_scale(scores[:18], 0.05, "val.npz")
    with pytest.raises(DataError, match="between 0 and 1"):
        conformal_scale(scores, 1.5)


def test_calibrated_radius_of_a_diatomic_by_hand():
    # Training 1/r values: one cluster centred at 1.0 with max radius 0.2.
    clusters = ConformationClusters(n_clusters=1).fit(_diatomic([0.8, 0.9, 1.0, 1.1, 1.2]))
    assert clusters.max_radii_[0] == pytest.approx(0.2)
    assert clusters.radius_rule_ == {"rule": "max"}
    # 19 held-out frames at |1/r − 1| = 0.01 k: scores 0.05 k; α = 0.1 → scale 0.9, radius 0.18
    held_out = _diatomic(1.0 + 0.01 * np.arange(1, 20) * np.where(np.arange(19) % 2, 1, -1))
    clusters.calibrate(held_out, 0.1)
    assert clusters.radii_[0] == pytest.approx(0.18)
    rule = clusters.radius_rule_
    assert rule["rule"] == "calibrated" and rule["scale"] == pytest.approx(0.9)
    assert rule["calibration_frames"] == 19 and rule["false_flag_rate"] == 0.1
    assert rule["flagged_rate"] == pytest.approx(1 / 19)  # only the frame at 0.19 is outside
    assert rule["flagged_rate_max_radius"] == 0.0  # every held-out frame is inside 0.2
    probe = _diatomic([1.175, 1.185, 0.81])
    np.testing.assert_allclose(clusters.classify(probe)[1], [0.175 / 0.18, 0.185 / 0.18,
                                                            0.19 / 0.18])
    assert clusters.predict(probe).tolist() == [0, -1, -1]
    # The scripted classifier of the model file and a JSON round trip use the calibrated radius.
    state = clusters.to_dict()
    restored = ConformationClusters.from_dict(state)
    assert restored.radius_rule_ == rule
    np.testing.assert_allclose(restored.max_radii_, [0.2])
    scripted = torch.jit.script(ExplorationModel([state]))
    out = scripted(torch.tensor(probe.positions[1]), torch.tensor([1, 1]), torch.zeros(3, 3),
                   torch.zeros(3, dtype=torch.bool))
    assert float(out[1]) == pytest.approx(0.185 / 0.18)


def test_too_few_held_out_frames_name_the_file():
    clusters = ConformationClusters(n_clusters=1).fit(_diatomic([0.8, 0.9, 1.0, 1.1, 1.2]))
    with pytest.raises(DataError, match=r"h2\.npz.*needs at least 19 held-out frames, got 5"):
        clusters.calibrate(_diatomic([0.95, 1.0, 1.05, 1.1, 0.9]), 0.05)


def test_calibration_hits_its_target_on_fresh_frames():
    # A bent triatomic whose two bonds and angle fluctuate (3-D descriptor, several clusters):
    # fit on 300 frames, calibrate on 400 held-out ones, count the flags on 4,000 fresh ones.
    rng = np.random.default_rng(7)

    def sample(n):
        r1, r2 = 1.0 + 0.05 * rng.standard_normal((2, n))
        angle = np.where(rng.random(n) < 0.5, 1.9, 2.3) + 0.08 * rng.standard_normal(n)
        positions = np.zeros((n, 3, 3))
        positions[:, 0, 0] = r1
        positions[:, 2, 0] = r2 * np.cos(angle)
        positions[:, 2, 1] = r2 * np.sin(angle)
        return Frames(positions=positions, atomic_numbers=[8, 1, 1])

    clusters = ConformationClusters().fit(sample(300))
    fresh = sample(4000)
    for target in (0.05, 0.2):
        clusters.calibrate(sample(400), target)
        rate = float(np.mean(clusters.predict(fresh) < 0))
        assert abs(rate - target) < 0.02 + 0.1 * target, (target, rate)
