"""RBP reweighting for fine-tuning (JCP 159, 035101, section III: reweighting the samples of the
original dataset by the ratio of bad points).

With the current model's per-frame force MAE m_f, the global F_mae m̄ = mean_f m_f, and each
training frame's conformation cluster k(f):

    RBP_k = |{f ∈ k : m_f > m̄}| / |k|                       (the share of k's frames worse than
                                                              the model's average)
    w_f   ∝ 1 + s · RBP_k(f) / mean_j RBP_j                  (s = strength, default 1)

normalised so the mean weight over the frames is 1 (the effective learning rate is unchanged).
A cluster with the average RBP gets 1 + s before normalisation, one with no bad points keeps 1, so
every cluster stays in the loss while the bad ones count more. When no frame is worse than the
average (all RBP 0) every weight is 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlff_core.errors import MLFFError


@dataclass
class RBPReweighting:
    """The outcome of `rbp_weights`.

    Attributes:
        weights: [F] sample weights (mean 1).
        rbp: {cluster: RBP} for the clusters present.
        cluster_weight: {cluster: weight of each of its frames}.
        sizes: {cluster: frames}.
        global_mae: m̄ in the unit of the given errors.
    """

    weights: np.ndarray
    rbp: dict[int, float]
    cluster_weight: dict[int, float]
    sizes: dict[int, int]
    global_mae: float

    def table(self) -> list[dict]:
        """One row per cluster: cluster, frames, RBP, weight."""
        return [{"cluster": k, "frames": self.sizes[k], "RBP": self.rbp[k],
                 "weight": self.cluster_weight[k]} for k in sorted(self.rbp)]


def ratio_of_bad_points(frame_mae: np.ndarray, clusters: np.ndarray) -> dict[int, float]:
    """RBP_k for each cluster k present ([F] per-frame F_mae, [F] cluster labels ≥ 0)."""
    frame_mae, clusters = _check(frame_mae, clusters)
    bad = frame_mae > frame_mae.mean()
    return {int(k): float(bad[clusters == k].mean()) for k in np.unique(clusters)}


def rbp_weights(frame_mae: np.ndarray, clusters: np.ndarray,
                strength: float = 1.0) -> RBPReweighting:
    """Sample weights by the rule in the module docstring.

    Args:
        frame_mae: [F] per-frame force MAE of the current model (any force unit).
        clusters: [F] conformation cluster of each frame (integers ≥ 0).
        strength: s ≥ 0; 0 gives uniform weights.
    """
    if not strength >= 0.0:
        raise MLFFError(f"reweighting strength must be >= 0, got {strength}")
    frame_mae, clusters = _check(frame_mae, clusters)
    rbp = ratio_of_bad_points(frame_mae, clusters)
    mean_rbp = float(np.mean(list(rbp.values())))
    raw = {k: 1.0 + (strength * r / mean_rbp if mean_rbp > 0.0 else 0.0) for k, r in rbp.items()}
    per_frame = np.array([raw[int(k)] for k in clusters])
    scale = 1.0 / per_frame.mean()
    return RBPReweighting(
        weights=per_frame * scale, rbp=rbp,
        cluster_weight={k: w * scale for k, w in raw.items()},
        sizes={int(k): int((clusters == k).sum()) for k in np.unique(clusters)},
        global_mae=float(frame_mae.mean()),
    )


def _check(frame_mae, clusters) -> tuple[np.ndarray, np.ndarray]:
    frame_mae = np.asarray(frame_mae, dtype=float).reshape(-1)
    clusters = np.asarray(clusters).reshape(-1)
    if frame_mae.shape != clusters.shape or frame_mae.size == 0:
        raise MLFFError(f"{frame_mae.size} frame errors for {clusters.size} cluster labels")
    if not np.all(np.isfinite(frame_mae)):
        raise MLFFError("frame errors contain NaN or infinity")
    if not np.issubdtype(clusters.dtype, np.integer) or np.any(clusters < 0):
        raise MLFFError("cluster labels must be integers >= 0")
    return frame_mae, clusters
