"""TorchScript-ready architectures (SchNet, PaiNN, MACE) and the `Potential` that wraps them.

`build_potential(architecture, species, **hyperparameters)` makes a fresh model; the
hyperparameters are exactly what the model file records, so the same call rebuilds it.
MACE is built from `mace-torch`'s own modules (`mlff_core.models.mace`, imported only when a
MACE model is built).
"""

from __future__ import annotations

from typing import Any

from mlff_core.models.committee import Committee
from mlff_core.models.painn import PaiNN
from mlff_core.models.potential import Potential
from mlff_core.models.schnet import SchNet

#: Default hyperparameters of each architecture (every one can be overridden).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "schnet": {"hidden": 64, "num_interactions": 3, "cutoff": 5.0, "num_rbf": 32,
               "radial": "gaussian", "cutoff_fn": "cosine"},
    "painn": {"hidden": 64, "num_interactions": 3, "cutoff": 5.0, "num_rbf": 20,
              "radial": "bessel", "cutoff_fn": "cosine"},
    # mace_run_train's names: hidden = num_channels, cutoff = r_max, num_rbf = num_bessel,
    # radial_mlp = radial_MLP. Small for CPU: 32x0e+32x1o, 2 layers. avg_num_neighbors None
    # is measured on the training frames when the model is first built.
    "mace": {"hidden": 32, "num_interactions": 2, "cutoff": 5.0, "num_rbf": 8, "max_L": 1,
             "max_ell": 3, "correlation": 3, "radial_mlp": [32, 32, 32],
             "num_polynomial_cutoff": 5, "avg_num_neighbors": None},
}
_CLASSES = {"schnet": SchNet, "painn": PaiNN}


def hyperparameters(architecture: str, **overrides: Any) -> dict[str, Any]:
    """The full hyperparameter set of `architecture`: defaults updated with `overrides`."""
    if overrides.get("imported"):  # recorded by `mlff import`; no recipe to rebuild it
        raise ValueError(f"a model imported from {overrides['imported']} runs in every engine "
                         "but cannot be trained further here (train it where it was made, "
                         "then import it again)")
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {architecture!r}; use one of {', '.join(ARCHITECTURES)}"
        )
    unknown = set(overrides) - set(ARCHITECTURES[architecture])
    if unknown:
        raise ValueError(f"{architecture} has no hyperparameter(s) {', '.join(sorted(unknown))}")
    return {**ARCHITECTURES[architecture], **{k: v for k, v in overrides.items() if v is not None}}


def build_potential(architecture: str, species: list[int], **overrides: Any) -> Potential:
    """A fresh, untrained `Potential` for the given species (atomic numbers), in torch's
    default dtype (MACE: float64)."""
    params = hyperparameters(architecture, **overrides)
    species = sorted(species)
    if architecture == "mace":
        from mlff_core.models.mace import MaceRepresentation, build_mace

        representation = MaceRepresentation(build_mace(species, **params), species)
        # float64 throughout: MACE's Clebsch-Gordan constants, built in float32 and converted
        # up, would keep float32 precision in a float64 model; `.to(dtype)` to convert down.
        return Potential(representation, species, params["cutoff"],
                         params["num_interactions"]).double()
    representation = _CLASSES[architecture](num_species=len(species), **params)
    return Potential(representation, species, params["cutoff"], params["num_interactions"])


def scriptable(potential: Potential) -> Potential:
    """`potential` ready for `torch.jit.script`: itself, or a copy whose representation
    compiled what plain TorchScript cannot (MACE's e3nn blocks). Imported TorchScript energy
    models (`mlff_core.models.external`) have no representation and are already scripted.
    A `Committee` gets a copy whose members are each made scriptable."""
    if isinstance(potential, Committee):
        return Committee([scriptable(member) for member in potential.members])
    prepare = getattr(getattr(potential, "representation", None), "scriptable", None)
    if prepare is None:
        return potential
    import copy

    ready = copy.copy(potential)  # shares every buffer; only the representation is replaced
    ready._modules = dict(potential._modules)
    ready._modules["representation"] = prepare()
    return ready


__all__ = ["ARCHITECTURES", "Committee", "PaiNN", "Potential", "SchNet", "build_potential",
           "hyperparameters", "scriptable"]
