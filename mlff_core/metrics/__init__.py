"""Fine-grained force metrics, conformation clusters, and simulation metrics.

    from mlff_core.metrics import evaluate_forces
    metrics = evaluate_forces(test_frames, "aspirin.pt")                  # a model file
    metrics = evaluate_forces(test_frames, ase_calculator)                # any ASE calculator
    metrics = evaluate_forces(test_frames, (energies, forces))            # predictions (eV, eV/Å)
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from mlff_core.data.frames import Frames
from mlff_core.metrics.clusters import ConformationClusters
from mlff_core.metrics.force import force_metrics


def evaluate_forces(reference: Frames, source: Any, cluster_labels: np.ndarray | None = None,
                    unit: str = "kcal/mol/A", batch_size: int = 64) -> dict[str, Any]:
    """Force metrics of predictions from a model file, an ASE calculator, or arrays.

    Args:
        reference: labelled frames.
        source: model file path or `LoadedModel`; an ASE calculator; or a tuple
            (energies [F] eV or None, forces [F, N, 3] eV/Å).
        cluster_labels: [F] cluster per frame (negative: unexplored); with a model file that
            stores conformation clusters for this system, they are used when this is None.
        unit: force unit of the result.
    """
    from ase.calculators.calculator import Calculator

    from mlff_core.export.loading import LoadedModel, load_model
    from mlff_core.metrics.predict import predict_with_calculator, predict_with_model

    if isinstance(source, (str, os.PathLike)):
        source = load_model(source)
    if isinstance(source, LoadedModel):
        energies, forces = predict_with_model(source, reference, batch_size)
        if cluster_labels is None:
            for state in (source.metadata.get("exploration") or {}).get("systems", []):
                if state["atomic_numbers"] == reference.atomic_numbers.tolist():
                    cluster_labels = ConformationClusters.from_dict(state).predict(reference)
    elif isinstance(source, Calculator):
        energies, forces = predict_with_calculator(source, reference)
    else:
        energies, forces = source
    return force_metrics(reference, forces, energies, cluster_labels, unit)


__all__ = ["ConformationClusters", "evaluate_forces", "force_metrics"]
