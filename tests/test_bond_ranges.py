"""The local half of "unexplored": the bond score by hand on a diatomic and a triatomic, the same
number from the model file's scripted explore() and from the Python detector, and files written
before the bond score still classified by the ratio alone."""

import numpy as np
import pytest
import torch

from mlff_core.data.frames import Frames
from mlff_core.export.exploration import ExplorationModel
from mlff_core.metrics.bond_ranges import BOND_MARGIN, BondRanges
from mlff_core.metrics.clusters import ConformationClusters


def _diatomic(lengths):
    """H2 frames with the given bond lengths (Å) along x."""
    positions = np.zeros((len(lengths), 2, 3))
    positions[:, 1, 0] = lengths
    return Frames(positions=positions, atomic_numbers=[1, 1], source="h2.npz")


def test_bond_score_of_a_diatomic_by_hand():
    # lengths 0.9, 1.0, 1.0, 1.1: mean 1.0, std sqrt(0.02 / 4) = 0.070711, largest z = sqrt(2)
    clusters = ConformationClusters(n_clusters=1).fit(_diatomic([0.9, 1.0, 1.0, 1.1]))
    ranges = clusters.bond_ranges_
    assert ranges.bonds.tolist() == [[0, 1]]
    assert ranges.mean[0] == pytest.approx(1.0)
    assert ranges.std[0] == pytest.approx(np.sqrt(0.005))
    assert ranges.level == pytest.approx(BOND_MARGIN * np.sqrt(2.0))
    # 1.3 Å: z = 0.3 / 0.070711 = 4.2426; score = 4.2426 / (1.25 × 1.4142) = 2.4
    probe = _diatomic([1.3, 1.05, 0.85])
    expected = [2.4, 0.4, 1.2]
    np.testing.assert_allclose(clusters.bond_scores(probe), expected, rtol=1e-12)
    # the model file's scripted classifier gives the same score and names the bond
    scripted = torch.jit.script(ExplorationModel([clusters.to_dict()]))
    for frame, score in zip(probe.positions, expected, strict=True):
        out = scripted(torch.tensor(frame), torch.tensor([1, 1]), torch.zeros(3, 3),
                       torch.zeros(3, dtype=torch.bool))
        assert out.shape == (5,)
        assert float(out[2]) == pytest.approx(score, rel=1e-12)
        assert (int(out[3]), int(out[4])) == (0, 1)
    # a JSON round trip keeps the ranges
    restored = ConformationClusters.from_dict(clusters.to_dict())
    np.testing.assert_allclose(restored.bond_scores(probe), expected, rtol=1e-12)


def test_the_bond_furthest_outside_its_own_range_sets_the_score():
    # O-H bonds of a water-like molecule: bond 0-1 barely varies (std floored at 1e-3 Å),
    # bond 0-2 varies by ±0.05 Å. A 0.01 Å change of the stiff bond is 10 of its std; a 0.05 Å
    # change of the soft one is 1 of its std.
    soft = 0.96 + 0.05 * np.tile([-1.0, 1.0], 20)
    positions = np.zeros((40, 3, 3))
    positions[:, 1, 0] = 0.96
    positions[:, 2, 1] = soft
    frames = Frames(positions=positions, atomic_numbers=[8, 1, 1])
    ranges = BondRanges.fit(frames.positions, np.array([[0, 1], [0, 2]]))
    assert ranges.std[0] == 1e-3 and ranges.std[1] == pytest.approx(0.05)
    assert ranges.level == pytest.approx(BOND_MARGIN)  # every training z is 1 (or 0)
    probe = positions[:1].copy()
    probe[0, 1, 0] = 0.97  # stiff bond +0.01 Å: z = 10
    probe[0, 2, 1] = 0.96 + 0.1  # soft bond +0.1 Å from its mean: z = 2
    score, worst = ranges.scores(probe)
    assert worst.tolist() == [0] and score[0] == pytest.approx(10.0 / BOND_MARGIN)


def test_the_detector_flags_on_the_larger_of_ratio_and_bond_score(tmp_path):
    from models_helpers import bond_scores_by_formula, ethanol_md_frames, save_model_with_clusters

    from mlff_core.monitors import ExplorationDetector

    frames = ethanol_md_frames()
    model = save_model_with_clusters(tmp_path / "m.pt", frames)
    detector = ExplorationDetector(model)
    base = frames.positions[5].copy()
    inside = detector.check(base, frames.atomic_numbers)
    assert inside.status == "explored" and inside.bond is not None
    # the O-H bond (atoms 2 and 8) 0.12 Å longer: still inside the clusters
    stretched = base.copy()
    unit = (stretched[8] - stretched[2]) / np.linalg.norm(stretched[8] - stretched[2])
    stretched[8] += 0.12 * unit
    check = detector.check(stretched, frames.atomic_numbers)
    assert check.ratio < 1.0 < check.bond_score and check.bond == (2, 8)
    assert check.status == "unexplored" and check.flagged and check.score == check.bond_score
    # the bond score from the stored ranges, computed here from the formula
    (system,) = detector.model.metadata["exploration"]["systems"]
    (expected,) = bond_scores_by_formula(stretched[None], system["bond_ranges"])
    assert check.bond_score == pytest.approx(expected, rel=1e-10)
    assert check.describe().endswith(f", bond 2-8 score {check.bond_score:.3f}")


def test_a_file_without_bond_ranges_is_classified_by_the_ratio_alone():
    clusters = ConformationClusters(n_clusters=1).fit(_diatomic([0.9, 1.0, 1.0, 1.1]))
    state = clusters.to_dict()
    state.pop("bond_ranges")  # as written before the bond score
    assert ConformationClusters.from_dict(state).bond_ranges_ is None
    scripted = torch.jit.script(ExplorationModel([state]))
    out = scripted(torch.tensor(_diatomic([1.3]).positions[0]), torch.tensor([1, 1]),
                   torch.zeros(3, 3), torch.zeros(3, dtype=torch.bool))
    assert float(out[2]) == 0.0 and int(out[3]) == -1
    # a system the file does not know: no reference, five elements
    unknown = scripted(torch.zeros(3, 3, dtype=torch.float64), torch.tensor([1, 1, 1]),
                       torch.zeros(3, 3), torch.zeros(3, dtype=torch.bool))
    assert int(unknown[0]) == -1 and int(unknown[3]) == -1 and unknown.shape == (5,)


def test_calibration_scales_the_radius_and_the_bond_level_by_one_factor():
    # H2 at 0.9, 1.0, 1.0, 1.1 Å: one cluster on the 1-D descriptor 1/r (centroid at the mean of
    # 1/r, radius the farthest member), bond mean 1.0 Å, std sqrt(0.005), level 1.25 √2.
    train = np.array([0.9, 1.0, 1.0, 1.1])
    clusters = ConformationClusters(n_clusters=1).fit(_diatomic(train))
    held_out = 1.0 + 0.012 * np.arange(1, 20) * np.where(np.arange(19) % 2, 1.0, -1.0)
    inverse = 1.0 / train
    radius = np.abs(inverse - inverse.mean()).max()
    ratio = np.abs(1.0 / held_out - inverse.mean()) / radius
    bond = np.abs(held_out - 1.0) / np.sqrt(0.005) / (BOND_MARGIN * np.sqrt(2.0))
    scores = np.maximum(ratio, bond)
    assert (bond > ratio).any() and (ratio > bond).any()  # both halves matter here
    scale = np.sort(scores)[17]  # α = 0.1, n = 19: the ⌈20 × 0.9⌉ = 18th smallest
    clusters.calibrate(_diatomic(held_out), 0.1)
    rule = clusters.radius_rule_
    assert rule["scale"] == pytest.approx(scale, rel=1e-6)
    assert clusters.radii_[0] == pytest.approx(radius * scale, rel=1e-6)
    assert clusters.bond_ranges_.level == pytest.approx(BOND_MARGIN * np.sqrt(2.0) * scale)
    assert clusters.bond_ranges_.max_level == pytest.approx(BOND_MARGIN * np.sqrt(2.0))
    assert rule["flagged_rate"] == pytest.approx(1 / 19)  # only the largest score is above
    assert rule["flagged_rate_max_radius"] == pytest.approx(np.mean(scores > 1.0))
    # calibrating again starts from the training level, not from the calibrated one
    clusters.calibrate(_diatomic(held_out), 0.1)
    assert clusters.bond_ranges_.level == pytest.approx(BOND_MARGIN * np.sqrt(2.0) * scale)
