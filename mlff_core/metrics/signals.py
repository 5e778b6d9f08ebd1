"""How well a per-frame monitor signal predicts a model's per-frame force error (issue 11's
measures): the frames of "high error" are those whose F_mae exceeds `factor` × the median F_mae
of the frames scored, and the score of a signal is its ROC AUC for them (0.5: no better than
chance; 1: every high-error frame has a higher signal than every other frame) and its Spearman
rank correlation with the F_mae.
"""

from __future__ import annotations

import numpy as np

#: The issue's definition: a frame is a high-error frame above twice the median F_mae.
HIGH_ERROR_FACTOR = 2.0


def frame_force_mae(predicted: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-frame F_mae [F]: mean |F̂ − F| over atoms and components; [F, N, 3] each."""
    return np.abs(np.asarray(predicted) - np.asarray(reference)).mean(axis=(1, 2))


def committee_deviations(model, frames) -> np.ndarray:
    """Per-frame committee force deviation [F] eV/Å (`mlff_core.monitors.DeviationDetector`) of
    a committee model file (`LoadedModel`) on `frames`, as the engines' monitors see them."""
    from mlff_core.monitors import DeviationDetector

    detector = DeviationDetector(model, 1.0)
    periodic = frames.is_periodic
    return np.array([detector.check(frames.positions[f], frames.atomic_numbers,
                                    frames.cell[f] if periodic else None,
                                    frames.pbc if periodic else None).deviation
                     for f in range(frames.n_frames)])


def signal_scores(signal: np.ndarray, frame_errors: np.ndarray,
                  factor: float = HIGH_ERROR_FACTOR) -> dict:
    """{"auc_high_error", "spearman", "high_error_frames", "threshold"} of one signal [F]
    against per-frame errors [F]. The AUC is None when no frame (or every frame) is a
    high-error one, the correlation None when either is constant; frames whose signal is not
    finite are left out."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    signal = np.asarray(signal, dtype=float)
    frame_errors = np.asarray(frame_errors, dtype=float)
    finite = np.isfinite(signal) & np.isfinite(frame_errors)
    signal, frame_errors = signal[finite], frame_errors[finite]
    threshold = factor * float(np.median(frame_errors)) if len(frame_errors) else float("nan")
    high = frame_errors > threshold
    auc = float(roc_auc_score(high, signal)) if 0 < high.sum() < len(high) else None
    varies = len(signal) > 2 and np.ptp(signal) > 0 and np.ptp(frame_errors) > 0
    rho = float(spearmanr(signal, frame_errors).statistic) if varies else None
    return {"auc_high_error": auc, "spearman": rho, "high_error_frames": int(high.sum()),
            "frames": int(len(signal)), "threshold": threshold}
