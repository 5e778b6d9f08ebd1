"""Small random models and structures shared by the model tests."""

from __future__ import annotations

import numpy as np
import torch

from mlff_core.export import model_metadata, save_model_file
from mlff_core.models import build_potential, hyperparameters


def random_potential(architecture: str, species=(1, 6, 8), dtype=torch.float64, seed: int = 0,
                     **overrides):
    """An untrained potential with weights perturbed away from their initialisation, so that
    every layer (including PaiNN's zero-initialised vector features) contributes."""
    torch.manual_seed(seed)
    potential = build_potential(architecture, list(species), **overrides).double()
    with torch.no_grad():
        for parameter in potential.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        potential.atomic_reference.copy_(torch.linspace(-10.0, -3.0, len(species)))
    return potential.to(dtype).eval()  # float32: the float64 weights, rounded


def save_random_model(path, architecture: str = "painn", species=(1, 6, 8),
                      dtype=torch.float64, periodic=None, **overrides):
    """A random model file; `periodic` is what its metadata says of the training data."""
    potential = random_potential(architecture, species, dtype, **overrides)
    params = hyperparameters(architecture, **overrides)
    return save_model_file(potential, path, model_metadata(potential, architecture, params,
                                                           periodic=periodic))


def save_random_committee(path, architecture: str = "schnet", size: int = 3,
                          species=(1, 6, 8), periodic=False, **overrides):
    """A committee model file of `size` random members (seeds 0, 1, ...), and its members."""
    from mlff_core.models import Committee

    members = [random_potential(architecture, species, seed=seed, **overrides)
               for seed in range(size)]
    committee = Committee(members)
    params = hyperparameters(architecture, **overrides)
    save_model_file(committee, path, model_metadata(committee, architecture, params,
                                                    periodic=periodic))
    return path, members


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def save_model_with_clusters(path, frames, n_clusters: int = 2, periodic=None):
    """A random SchNet model file whose exploration clusters are fitted on `frames`."""
    from mlff_core.export.exploration import ExplorationModel
    from mlff_core.metrics.clusters import ConformationClusters

    clusters = ConformationClusters(n_clusters=n_clusters).fit(frames)
    potential = random_potential("schnet", species=(1, 6, 8))
    metadata = model_metadata(potential, "schnet", hyperparameters("schnet"),
                              exploration={"systems": [clusters.to_dict()]}, periodic=periodic)
    return save_model_file(potential, path, metadata, ExplorationModel([clusters.to_dict()]))


def ethanol_md_frames(n_frames: int = 60, seed: int = 0):
    """300 K MMFF94 frames of ethanol (the monitors' test trajectory)."""
    from mlff_core.data.generate import LangevinSampling, generate_frames
    from mlff_core.data.molecules import named_molecule
    from mlff_core.labels import get_level

    return generate_frames(named_molecule("ethanol"), get_level("mmff94"), n_frames,
                           LangevinSampling(temperature=300.0, stride=5, equilibration=20,
                                            seed=seed))


def with_edited_metadata(model, out, **changes):
    """A copy of a model file whose mlff.json was edited by hand (`changes` replace keys)."""
    import json

    extra = {"mlff.json": ""}
    module = torch.jit.load(str(model), _extra_files=extra)
    metadata = {**json.loads(extra["mlff.json"]), **changes}
    torch.jit.save(module, str(out), _extra_files={"mlff.json": json.dumps(metadata)})
    return out


def bond_scores_by_formula(positions: np.ndarray, ranges: dict) -> np.ndarray:
    """[F] bond scores of positions [F, N, 3] from a model file's stored `bond_ranges`, written
    out from the formula (max_b |l_b − mean_b| / std_b ÷ level) independently of the code."""
    bonds = np.array(ranges["bonds"])
    lengths = np.linalg.norm(positions[:, bonds[:, 1]] - positions[:, bonds[:, 0]], axis=-1)
    z = np.abs(lengths - np.array(ranges["mean"])) / np.array(ranges["std"])
    return z.max(axis=1) / ranges["level"]
