"""Conformation clusters: hand-made conformations, radii, unexplored frames, and the scripted
classifier in the model file agreeing with the Python estimator."""

import numpy as np
import pytest
import torch

from mlff_core.data.frames import Frames
from mlff_core.data.molecules import water_box
from mlff_core.export.exploration import ExplorationModel
from mlff_core.metrics.clusters import ConformationClusters, frame_descriptors


def _triatomic(bond_lengths):
    """Linear-ish A-B-C molecules with given first bond lengths (Å); the rest is fixed."""
    positions = [[[0, 0, 0], [r, 0, 0], [r + 1.2, 0.3, 0]] for r in bond_lengths]
    return Frames(positions=np.array(positions, dtype=float), atomic_numbers=[6, 6, 8])


def test_two_separated_conformations_are_two_clusters():
    rng = np.random.default_rng(0)
    short = 1.2 + 0.02 * rng.standard_normal(30)
    long = 1.6 + 0.02 * rng.standard_normal(30)
    frames = _triatomic(np.concatenate([short, long]))
    clusters = ConformationClusters().fit(frames)
    assert clusters.n_clusters_ == 2  # chosen by silhouette
    assert len(set(clusters.labels_[:30])) == 1 and len(set(clusters.labels_[30:])) == 1
    assert clusters.labels_[0] != clusters.labels_[30]

    # Radii: the largest distance from each centroid to its members, recomputed here.
    projected = clusters.transform(frames)
    for k in range(2):
        members = projected[clusters.labels_ == k]
        assert clusters.radii_[k] == pytest.approx(
            np.linalg.norm(members - clusters.centroids_[k], axis=1).max())

    _, ratio = clusters.classify(frames)
    assert ratio.max() == pytest.approx(1.0) and (ratio <= 1.0 + 1e-12).all()
    far = _triatomic([2.4, 1.4])  # a stretched bond, and one between the two groups
    assert clusters.predict(far).tolist()[0] == -1
    nearest, far_ratio = clusters.classify(far)
    assert far_ratio[0] > 1.0


def test_scripted_classifier_matches_estimator_and_survives_round_trip():
    rng = np.random.default_rng(1)
    frames = _triatomic(np.concatenate([1.2 + 0.05 * rng.standard_normal(20),
                                        1.5 + 0.05 * rng.standard_normal(20)]))
    clusters = ConformationClusters(n_clusters=3).fit(frames)
    restored = ConformationClusters.from_dict(clusters.to_dict())
    probe = _triatomic(1.0 + rng.random(15))
    np.testing.assert_array_equal(restored.predict(probe), clusters.predict(probe))
    model = torch.jit.script(ExplorationModel([clusters.to_dict()]))
    nearest, ratio = clusters.classify(probe)
    for f in range(probe.n_frames):
        out = model(torch.tensor(probe.positions[f]), torch.tensor([6, 6, 8]),
                    torch.zeros(3, 3), torch.zeros(3, dtype=torch.bool))
        assert int(out[0]) == nearest[f]
        assert float(out[1]) == pytest.approx(ratio[f], rel=1e-10)
    # A system the file has no clusters for: "no reference clusters".
    other = model(torch.zeros(2, 3), torch.tensor([1, 1]), torch.zeros(3, 3),
                  torch.zeros(3, dtype=torch.bool))
    assert int(other[0]) == -1 and torch.isnan(other[1])


def test_periodic_descriptor_is_permutation_invariant_and_normalised():
    atoms = water_box(16).atoms
    frames = Frames.from_atoms([atoms])
    order = np.arange(len(atoms)).reshape(-1, 3)[::-1].reshape(-1)  # reverse the molecules
    permuted = Frames.from_atoms([atoms[order]])
    np.testing.assert_allclose(frame_descriptors(frames), frame_descriptors(permuted),
                               atol=1e-12)
    # An ideal gas has g(r) = 1: random points in a big box average close to it.
    rng = np.random.default_rng(0)
    gas = Frames(positions=rng.uniform(0, 20, (1, 400, 3)), atomic_numbers=[8] * 400,
                 cell=np.eye(3) * 20, pbc=True)
    g = frame_descriptors(gas)[0]
    assert np.mean(g[10:]) == pytest.approx(1.0, abs=0.1)


def test_water_pairs_are_sorted_within_their_block_by_hand():
    from mlff_core.metrics.descriptors import symmetric_blocks, symmetrize

    # O = 0, H = 1, 2; pairs (0,1), (0,2), (1,2): blocks {(0,1), (0,2)} and {(1,2)}
    index, keep = symmetric_blocks(3, [[1, 2]])
    values = torch.tensor([[0.5, 0.2, 0.9], [0.2, 0.5, 0.9]], dtype=torch.float64)
    np.testing.assert_array_equal(symmetrize(values, index, keep).numpy(),
                                  [[0.2, 0.5, 0.9], [0.2, 0.5, 0.9]])
    # no groups: the identity
    index, keep = symmetric_blocks(3, [])
    np.testing.assert_array_equal(symmetrize(values, index, keep).numpy(), values.numpy())


def test_relabelled_methyl_hydrogens_are_the_same_conformation():
    """A methyl group rotated by 120° relabels its hydrogens: the descriptor, the estimator and
    the scripted classifier must not tell the two apart (the plain descriptor does)."""
    from models_helpers import ethanol_md_frames

    from mlff_core.data.molecules import covalent_bonds
    from mlff_core.metrics.descriptors import equivalent_groups

    frames = ethanol_md_frames(40)
    numbers = frames.atomic_numbers
    groups = equivalent_groups(numbers, covalent_bonds(frames.to_atoms(0)))
    carbon_of = {h: int(next(c for c in (0, 1) if np.linalg.norm(
        frames.positions[0, h] - frames.positions[0, c]) < 1.2)) for g in groups for h in g}
    assert sorted(len(g) for g in groups) == [2, 3]  # CH2 and CH3 hydrogens of ethanol
    assert all(numbers[h] == 1 and len({carbon_of[x] for x in g}) == 1 for g in groups
               for h in g)
    methyl = next(g for g in groups if len(g) == 3)
    order = np.arange(len(numbers))
    order[methyl] = np.roll(methyl, 1)
    relabelled = Frames(positions=frames.positions[:, order], atomic_numbers=numbers)
    clusters = ConformationClusters(n_clusters=2).fit(frames)
    assert clusters.equivalent_groups_ == groups
    np.testing.assert_allclose(clusters.transform(relabelled), clusters.transform(frames),
                               atol=1e-12)
    plain = ConformationClusters(n_clusters=2, equivalent_atoms=False).fit(frames)
    assert np.abs(plain.transform(relabelled) - plain.transform(frames)).max() > 1e-2
    state = clusters.to_dict()
    scripted = torch.jit.script(ExplorationModel([state]))
    _, ratio = clusters.classify(relabelled)
    for f in (0, 17):
        out = scripted(torch.tensor(relabelled.positions[f]), torch.tensor(numbers),
                       torch.zeros(3, 3), torch.zeros(3, dtype=torch.bool))
        assert float(out[1]) == pytest.approx(ratio[f], rel=1e-10)
    # files written before the symmetrized descriptor (no equivalent_groups) keep their meaning
    old = {k: v for k, v in plain.to_dict().items() if k != "equivalent_groups"}
    np.testing.assert_allclose(ConformationClusters.from_dict(old).classify(frames)[1],
                               plain.classify(frames)[1])


def test_no_training_frame_is_flagged_by_its_own_clusters():
    """Frames at the farthest member's distance sit exactly on the radius; recomputing their
    distance (here, and in the model file's scripted classifier) must not round them outside."""
    from models_helpers import ethanol_md_frames

    for seed in (0, 1):
        frames = ethanol_md_frames(60, seed=seed)
        clusters = ConformationClusters(n_clusters=3).fit(frames)
        assert (clusters.classify(frames)[1] <= 1.0).all()
        scripted = torch.jit.script(ExplorationModel([clusters.to_dict()]))
        numbers = torch.tensor(frames.atomic_numbers)
        ratios = [float(scripted(torch.tensor(p), numbers, torch.zeros(3, 3),
                                 torch.zeros(3, dtype=torch.bool))[1])
                  for p in frames.positions]
        assert max(ratios) <= 1.0
