"""TorchScript-ready architectures (SchNet, PaiNN) and the `Potential` that wraps them.

`build_potential(architecture, species, **hyperparameters)` makes a fresh model; the
hyperparameters are exactly what the model file records, so the same call rebuilds it.
"""

from __future__ import annotations

from typing import Any

from mlff_core.models.painn import PaiNN
from mlff_core.models.potential import Potential
from mlff_core.models.schnet import SchNet

#: Default hyperparameters of each architecture (every one can be overridden).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "schnet": {"hidden": 64, "num_interactions": 3, "cutoff": 5.0, "num_rbf": 32,
               "radial": "gaussian", "cutoff_fn": "cosine"},
    "painn": {"hidden": 64, "num_interactions": 3, "cutoff": 5.0, "num_rbf": 20,
              "radial": "bessel", "cutoff_fn": "cosine"},
}
_CLASSES = {"schnet": SchNet, "painn": PaiNN}


def hyperparameters(architecture: str, **overrides: Any) -> dict[str, Any]:
    """The full hyperparameter set of `architecture`: defaults updated with `overrides`."""
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {architecture!r}; use one of {', '.join(ARCHITECTURES)}"
        )
    unknown = set(overrides) - set(ARCHITECTURES[architecture])
    if unknown:
        raise ValueError(f"{architecture} has no hyperparameter(s) {', '.join(sorted(unknown))}")
    return {**ARCHITECTURES[architecture], **{k: v for k, v in overrides.items() if v is not None}}


def build_potential(architecture: str, species: list[int], **overrides: Any) -> Potential:
    """A fresh, untrained `Potential` for the given species (atomic numbers)."""
    params = hyperparameters(architecture, **overrides)
    representation = _CLASSES[architecture](num_species=len(species), **params)
    return Potential(representation, sorted(species), params["cutoff"],
                     params["num_interactions"])


__all__ = ["ARCHITECTURES", "PaiNN", "Potential", "SchNet", "build_potential", "hyperparameters"]
