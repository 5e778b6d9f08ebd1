"""Conformation clusters of training data and the "unexplored" test (JCP 159, 035101).

`ConformationClusters` is a scikit-learn-style estimator: descriptor (inverse pairwise
distances for molecules, made invariant to relabelling interchangeable atoms such as a methyl
group's hydrogens; element-pair RDF histograms for periodic cells) → PCA → K-means.
The radius of cluster k is the largest distance from its centroid to a training member (the
paper's rule, `radius_rule = "max"`); a frame is *unexplored* when its distance to the nearest
centroid exceeds that centroid's radius (distance / radius > 1), otherwise it is *explored* and
belongs to that cluster.

`calibrate()` sets the radii instead so that a chosen fraction of held-out in-distribution frames
(a validation split) is flagged (`radius_rule = "calibrated"`). The score of a held-out frame is
its distance to the nearest centroid divided by that cluster's max radius, or, for molecules, its
bond score if larger (`mlff_core.metrics.bond_ranges`: a frame is unexplored when either is
above 1); every radius is the max radius, and the bond level its training value, times one
scale q, the ⌈(n + 1)(1 − α)⌉-th smallest of the n scores (split conformal
prediction: on frames exchangeable with the held-out ones the flagged fraction is at most α, and
at least α − 1/(n + 1)). One scale for all clusters keeps their relative sizes from the training
members; a quantile per cluster would rest on a few held-out frames each.

With `n_clusters=None` the number of clusters is chosen automatically: K-means is fitted for
k = 2 … `max_clusters` and the k with the highest silhouette score (computed on at most 2,000
frames) is kept; the silhouette rewards compact, well-separated clusters and needs no threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mlff_core.data.frames import Frames
from mlff_core.errors import DataError
from mlff_core.metrics.bond_ranges import BondRanges
from mlff_core.metrics.descriptors import (
    equivalent_groups,
    inverse_distances,
    pair_rdf,
    symmetric_blocks,
    symmetrize,
)

#: Relative widening of the farthest-member radius: far above float64 rounding (1e-16), far
#: below any physical distance in descriptor space.
RADIUS_ROUNDING = 1e-9

#: Histogram settings of the periodic descriptor.
RDF_MAX_DISTANCE = 6.0
RDF_BINS = 30


def frame_descriptors(frames: Frames, r_max: float = RDF_MAX_DISTANCE,
                      n_bins: int = RDF_BINS,
                      groups: list[list[int]] | None = None) -> np.ndarray:
    """[F, D] descriptors: inverse distances for molecules (symmetrized over `groups` of
    interchangeable atoms, see `mlff_core.metrics.descriptors`), pair RDFs for periodic
    frames."""
    if not frames.is_periodic:
        values = inverse_distances(torch.as_tensor(frames.positions))
        if groups:
            values = symmetrize(values, *symmetric_blocks(frames.n_atoms, groups))
        return values.numpy()
    species = sorted(set(frames.atomic_numbers.tolist()))
    numbers = torch.as_tensor(frames.atomic_numbers)
    pbc = torch.as_tensor(frames.pbc)
    return np.stack([
        pair_rdf(torch.as_tensor(frames.positions[f]), numbers, torch.as_tensor(frames.cell[f]),
                 pbc, species, r_max, n_bins).numpy()
        for f in range(frames.n_frames)
    ])


class ConformationClusters:
    """Conformation clusters of one system's frames.

    Parameters:
        n_clusters: number of K-means clusters; None chooses it by silhouette score.
        n_components: PCA components kept (at most the descriptor size and frames − 1).
        max_clusters: the largest k tried when choosing automatically.
        random_state: seeds PCA/K-means/subsampling.
        equivalent_atoms: make molecular descriptors invariant to relabelling interchangeable
            atoms (terminal atoms of one element on one atom, from the first frame's covalent
            bonds); False keeps the plain inverse distances.

    Attributes (after `fit`):
        descriptor_: 'inverse_distances' or 'pair_rdf'.
        equivalent_groups_: interchangeable atoms the descriptor is symmetrized over.
        atomic_numbers_: [N] the system's atoms (frames to classify must match, in order).
        species_: elements of the RDF descriptor (periodic only).
        mean_, components_: PCA centring vector [D] and axes [C, D].
        explained_variance_ratio_: [C].
        centroids_: [K, C] cluster centres in PCA space.
        max_radii_: [K] largest member distance per cluster (× (1 + 1e-9), so that no
            training frame is rounded outside its own cluster).
        radii_: [K] the radii frames are classified with: `max_radii_`, or `max_radii_` × the
            calibrated scale after `calibrate()`.
        radius_rule_: {"rule": "max"} or the calibration record (see `calibrate`).
        bond_ranges_: the molecule's bond ranges (`BondRanges`, the local score), or None
            (periodic systems).
        labels_: [F] training-frame clusters.
        n_clusters_: K.
        silhouette_scores_: {k: score} when K was chosen automatically.
    """

    def __init__(self, n_clusters: int | None = None, n_components: int = 10,
                 max_clusters: int = 10, random_state: int = 0, equivalent_atoms: bool = True):
        self.n_clusters = n_clusters
        self.n_components = n_components
        self.max_clusters = max_clusters
        self.random_state = random_state
        self.equivalent_atoms = equivalent_atoms

    # ------------------------------------------------------------------------------- fitting
    def fit(self, frames: Frames) -> ConformationClusters:
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA

        if frames.n_frames < 2:
            raise DataError("clustering needs at least two frames", frames.source)
        self.equivalent_groups_ = []
        self.bond_ranges_ = None
        if not frames.is_periodic:
            from mlff_core.data.molecules import covalent_bonds

            bonds = covalent_bonds(frames.to_atoms(0))
            self.bond_ranges_ = BondRanges.fit(frames.positions, bonds)
            if self.equivalent_atoms:
                self.equivalent_groups_ = equivalent_groups(frames.atomic_numbers, bonds)
        descriptors = frame_descriptors(frames, groups=self.equivalent_groups_)
        self.descriptor_ = "pair_rdf" if frames.is_periodic else "inverse_distances"
        self.atomic_numbers_ = frames.atomic_numbers.copy()
        self.species_ = sorted(set(frames.atomic_numbers.tolist()))
        self.formula_ = frames.formula
        n_components = max(1, min(self.n_components, descriptors.shape[1],
                                  frames.n_frames - 1))
        pca = PCA(n_components=n_components, random_state=self.random_state)
        projected = pca.fit_transform(descriptors)
        self.mean_ = pca.mean_
        self.components_ = pca.components_
        self.explained_variance_ratio_ = pca.explained_variance_ratio_

        k = self.n_clusters if self.n_clusters is not None else self._choose_k(projected)
        if not 1 <= k <= frames.n_frames:
            raise DataError(f"cannot make {k} clusters of {frames.n_frames} frames")
        kmeans = KMeans(n_clusters=k, n_init=10, random_state=self.random_state).fit(projected)
        self.centroids_ = kmeans.cluster_centers_
        self.n_clusters_ = k
        self.labels_ = kmeans.labels_.astype(np.int64)
        distances = np.linalg.norm(projected - self.centroids_[self.labels_], axis=1)
        # widened by RADIUS_ROUNDING so that recomputing a farthest member's distance (in
        # `classify` or in the model file's scripted `explore`) never rounds it outside
        self.max_radii_ = np.array([distances[self.labels_ == c].max(initial=0.0)
                                    for c in range(k)]) * (1.0 + RADIUS_ROUNDING)
        self.radii_ = self.max_radii_.copy()
        self.radius_rule_ = {"rule": "max"}
        return self

    def calibrate(self, frames: Frames, false_flag_rate: float = 0.05) -> ConformationClusters:
        """Set the radii so that `false_flag_rate` of frames like `frames` (held out from
        training, same distribution) are flagged unexplored; see the module docstring. A frame
        is unexplored when its ratio or its bond score (molecules) is above 1, so the score
        calibrated is the larger of the two, and one scale sets both the radii and the bond
        level.

        Records in `radius_rule_`: the target, the number of held-out frames, the scale, and
        the fraction of the held-out frames flagged with the calibrated and with the max radii
        (and bond level).

        Raises:
            DataError: a rate outside (0, 1), or too few frames for it (n < 1/α − 1).
        """
        self._check(frames)
        bonds = self.bond_ranges_
        scores = self._nearest(frames, self.max_radii_)[1]
        if bonds is not None:
            scores = np.fmax(scores, bonds.scores(frames.positions, bonds.max_level)[0])
        scale = conformal_scale(scores, false_flag_rate, frames.source)
        self.radii_ = self.max_radii_ * scale
        if bonds is not None:
            bonds.level = bonds.max_level * scale
        calibrated = self.monitor_scores(frames)
        self.radius_rule_ = {
            "rule": "calibrated",
            "false_flag_rate": float(false_flag_rate),
            "calibration_frames": int(len(scores)),
            "scale": float(scale),
            "flagged_rate": float(np.mean(calibrated > 1.0)),
            "flagged_rate_max_radius": float(np.mean(scores > 1.0)),
            "scores": "the larger of distance/radius and the bond score" if bonds is not None
            else "distance/radius",
        }
        return self

    def _nearest(self, frames: Frames, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest cluster [F] and distance to its centroid / its entry in `radii` [F]."""
        projected = self.transform(frames)
        distances = np.linalg.norm(projected[:, None, :] - self.centroids_[None], axis=-1)
        nearest = distances.argmin(axis=1)
        return nearest, distances[np.arange(len(nearest)), nearest] / \
            np.maximum(radii[nearest], 1e-12)

    def _choose_k(self, projected: np.ndarray) -> int:
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score

        rng = np.random.default_rng(self.random_state)
        sample = projected if len(projected) <= 2000 else \
            projected[rng.choice(len(projected), 2000, replace=False)]
        self.silhouette_scores_ = {}
        for k in range(2, min(self.max_clusters, len(sample) - 1) + 1):
            labels = KMeans(n_clusters=k, n_init=4, random_state=self.random_state) \
                .fit_predict(sample)
            self.silhouette_scores_[k] = float(silhouette_score(sample, labels))
        if not self.silhouette_scores_:
            return 1
        return max(self.silhouette_scores_, key=self.silhouette_scores_.get)

    # ----------------------------------------------------------------------------- inference
    def _check(self, frames: Frames) -> None:
        if not hasattr(self, "centroids_"):
            raise RuntimeError("ConformationClusters is not fitted; call fit() first")
        if not np.array_equal(frames.atomic_numbers, self.atomic_numbers_):
            raise DataError(f"frames of {frames.formula} do not match the clustered system "
                            f"{self.formula_} (same atoms in the same order)", frames.source)

    def transform(self, frames: Frames) -> np.ndarray:
        """[F, C] PCA coordinates of the frames."""
        self._check(frames)
        return (frame_descriptors(frames, groups=self.equivalent_groups_) - self.mean_) \
            @ self.components_.T

    def classify(self, frames: Frames) -> tuple[np.ndarray, np.ndarray]:
        """Nearest cluster [F] and distance / that cluster's radius [F] (> 1: unexplored)."""
        return self._nearest(frames, self.radii_)

    def bond_scores(self, frames: Frames) -> np.ndarray:
        """[F] bond scores (`mlff_core.metrics.bond_ranges`; > 1: a bond outside its training
        range); NaN where the system has no bond ranges (periodic, or fitted before them)."""
        self._check(frames)
        if self.bond_ranges_ is None:
            return np.full(frames.n_frames, np.nan)
        return self.bond_ranges_.scores(frames.positions)[0]

    def monitor_scores(self, frames: Frames) -> np.ndarray:
        """[F] what the exploration monitors grade: the larger of distance/radius and the bond
        score (> 1: unexplored)."""
        return np.fmax(self.classify(frames)[1], self.bond_scores(frames))

    def predict(self, frames: Frames) -> np.ndarray:
        """Cluster of each frame, −1 where it is unexplored."""
        nearest, ratio = self.classify(frames)
        return np.where(ratio > 1.0, -1, nearest)

    # --------------------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fitted state (stored in the model file's `exploration`)."""
        return {
            "descriptor": self.descriptor_,
            "formula": self.formula_,
            "atomic_numbers": self.atomic_numbers_.tolist(),
            "species": self.species_,
            "rdf": {"r_max": RDF_MAX_DISTANCE, "bins": RDF_BINS},
            "equivalent_groups": [list(map(int, g)) for g in self.equivalent_groups_],
            "mean": self.mean_.tolist(),
            "components": self.components_.tolist(),
            "explained_variance_ratio": self.explained_variance_ratio_.tolist(),
            "centroids": self.centroids_.tolist(),
            "radii": self.radii_.tolist(),
            "max_radii": self.max_radii_.tolist(),
            "radius_rule": dict(self.radius_rule_),
            "n_clusters": int(self.n_clusters_),
            "cluster_sizes": np.bincount(self.labels_, minlength=self.n_clusters_).tolist(),
            "silhouette_scores": getattr(self, "silhouette_scores_", None),
            "bond_ranges": None if self.bond_ranges_ is None else self.bond_ranges_.to_dict(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ConformationClusters:
        clusters = cls(n_clusters=state["n_clusters"])
        clusters.descriptor_ = state["descriptor"]
        clusters.formula_ = state["formula"]
        clusters.atomic_numbers_ = np.array(state["atomic_numbers"], dtype=np.int64)
        clusters.species_ = list(state["species"])
        # files written before the symmetrized descriptor hold none: plain inverse distances
        clusters.equivalent_groups_ = [list(g) for g in state.get("equivalent_groups", [])]
        clusters.mean_ = np.array(state["mean"])
        clusters.components_ = np.array(state["components"])
        clusters.explained_variance_ratio_ = np.array(state["explained_variance_ratio"])
        clusters.centroids_ = np.array(state["centroids"])
        clusters.radii_ = np.array(state["radii"])
        # files written before calibration existed hold max radii only
        clusters.max_radii_ = np.array(state.get("max_radii", state["radii"]))
        clusters.radius_rule_ = dict(state.get("radius_rule", {"rule": "max"}))
        clusters.n_clusters_ = int(state["n_clusters"])
        # files written before the local score hold none
        clusters.bond_ranges_ = BondRanges.from_dict(state.get("bond_ranges"))
        clusters.labels_ = np.repeat(np.arange(clusters.n_clusters_),
                                     state.get("cluster_sizes", [0] * clusters.n_clusters_))
        return clusters


def conformal_scale(scores: np.ndarray, false_flag_rate: float, source=None) -> float:
    """The ⌈(n + 1)(1 − α)⌉-th smallest of n held-out scores (split conformal quantile): at
    most α of new exchangeable scores exceed it, in expectation.

    Raises:
        DataError: α outside (0, 1), no scores, or fewer than 1/α − 1 scores (the quantile
            would be infinite: nothing could ever be flagged).
    """
    scores = np.sort(np.asarray(scores, dtype=float).reshape(-1))
    if not 0.0 < false_flag_rate < 1.0:
        raise DataError(f"the false-flag rate must be between 0 and 1, got {false_flag_rate}",
                        source)
    n = len(scores)
    rank = int(np.ceil((n + 1) * (1.0 - false_flag_rate)))
    if rank > n:
        needed = int(np.ceil(1.0 / false_flag_rate - 1.0))
        raise DataError(f"calibrating a false-flag rate of {false_flag_rate:g} needs at least "
                        f"{needed} held-out frames, got {n}", source)
    return float(scores[rank - 1])
