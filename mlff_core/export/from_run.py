"""`export_run`: turn a training run directory into a model file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from mlff_core.errors import ModelFileError
from mlff_core.export.model_file import model_metadata, save_model_file
from mlff_core.models import build_potential


def export_run(run_dir: str | os.PathLike, output: str | os.PathLike,
               dtype: str | None = None) -> Path:
    """Write the best (EMA) weights of a run as a model file.

    Args:
        run_dir: a directory written by the trainer (run.json, best.pt).
        output: the model file to write (atomically).
        dtype: 'float32' or 'float64'; default: the training dtype.
    """
    run_dir = Path(run_dir)
    run_json, best = run_dir / "run.json", run_dir / "best.pt"
    for needed in (run_json, best):
        if not needed.exists():
            raise ModelFileError(f"{run_dir}: not a finished training run ({needed.name} missing)")
    run = json.loads(run_json.read_text())
    config = run["config"]
    state = torch.load(best, map_location="cpu", weights_only=True)
    dtype = dtype or config["dtype"]
    if dtype not in ("float32", "float64"):
        raise ModelFileError(f"dtype must be float32 or float64, got {dtype!r}")
    potential = build_potential(config["architecture"], run["species"],
                                **config["hyperparameters"])
    # Load at the training precision (loading into a float32 model would round float64
    # weights), then convert.
    potential = potential.to(getattr(torch, config["dtype"]))
    potential.load_state_dict(state["model"])
    potential = potential.to(getattr(torch, dtype))
    training = {
        **run.get("data", {}),
        "sizes": run.get("sizes", {}),
        "best_epoch": state.get("epoch"),
        "val_metrics": state.get("val_metrics"),
        "config": {k: v for k, v in config.items() if k != "hyperparameters"},
        "run_dir": str(run_dir.resolve()),
    }
    metadata = model_metadata(potential, config["architecture"], config["hyperparameters"],
                              training=training)
    return save_model_file(potential, output, metadata)
