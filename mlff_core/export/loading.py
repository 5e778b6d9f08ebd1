"""`load_model`: open and validate a model file, with one clear `ModelFileError` per problem."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mlff_core.errors import ModelFileError, SpeciesError
from mlff_core.export.model_file import METADATA_NAME, REQUIRED_METADATA, SUPPORTED_FORMAT_VERSIONS

#: Scripted methods and the number of tensor arguments each takes (besides self).
REQUIRED_METHODS = {"forward": 4, "forward_graph": 4, "explore": 2, "explore_periodic": 4}


@dataclass
class LoadedModel:
    """A validated model file.

    Attributes:
        module: the TorchScript module (methods forward, forward_graph, explore).
        metadata: the parsed `mlff.json`.
        path: where it was loaded from.
        device: torch device the module lives on.
    """

    module: torch.jit.ScriptModule
    metadata: dict[str, Any]
    path: Path
    device: torch.device

    @property
    def species(self) -> list[int]:
        return list(self.metadata["species"])

    @property
    def cutoff(self) -> float:
        return float(self.metadata["cutoff"])

    @property
    def num_interactions(self) -> int:
        return int(self.metadata["num_interactions"])

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.metadata["dtype"])

    @property
    def per_atom_energies(self) -> bool:
        """Whether `forward_graph` gives per-atom energies (False only for a model imported
        from a TorchScript module without `atomic_energies`)."""
        return self.metadata.get("per_atom_energies", True) is not False

    @property
    def committee_size(self) -> int:
        """Members of the file's committee (`mlff train --committee`); 1 for a single model."""
        return int(self.metadata.get("committee_size", 1))

    def to_potential(self):
        """A trainable Python `Potential` with this file's architecture and weights (for
        fine-tuning: warm starts keep species, reference energies and scale)."""
        from mlff_core.models import build_potential

        if self.committee_size > 1:
            raise ModelFileError(f"{self.path}: a committee of {self.committee_size} models "
                                 "cannot be trained further as one; fine-tune from one "
                                 "member's run (export it alone: mlff export RUN/member-0)")
        try:
            potential = build_potential(self.metadata["architecture"], self.species,
                                        **self.metadata["hyperparameters"]).to(self.dtype)
        except ValueError as exc:
            raise ModelFileError(f"{self.path}: {exc}") from None
        prefix = "potential."
        state = {k[len(prefix):]: v for k, v in self.module.state_dict().items()
                 if k.startswith(prefix)}
        try:
            potential.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelFileError(f"{self.path}: weights do not fit its own metadata "
                                 f"({str(exc).splitlines()[0]})") from None
        return potential

    def clusters_for(self, atomic_numbers, periodic: bool):
        """The training conformation clusters stored for this system (same atoms in the same
        order, same periodicity), as a `ConformationClusters`; None when the file has none."""
        from mlff_core.metrics.clusters import ConformationClusters

        numbers = [int(z) for z in atomic_numbers]
        for state in (self.metadata.get("exploration") or {}).get("systems", []):
            if state["atomic_numbers"] == numbers and \
                    (state["descriptor"] == "pair_rdf") == bool(periodic):
                return ConformationClusters.from_dict(state)
        return None

    def check_species(self, atomic_numbers) -> None:
        """Raise SpeciesError naming the first element the model does not know."""
        from ase.data import chemical_symbols

        known = set(self.species)
        unknown = sorted({int(z) for z in atomic_numbers} - known)
        if unknown:
            names = ", ".join(chemical_symbols[z] for z in unknown)
            knows = ", ".join(chemical_symbols[z] for z in sorted(known))
            raise SpeciesError(f"model {self.path.name} does not know element(s) {names} "
                               f"(it was trained on {knows})")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Load and validate a model file.

    Raises:
        ModelFileError: missing file, not TorchScript, missing or invalid `mlff.json`, missing
            metadata keys, unsupported `format_version`, a missing or wrongly-typed method.
    """
    from mlff_core.runtime import torch_device

    device = torch_device(device)  # a device this machine lacks is not a bad model file
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a TorchScript model file (not a zip archive)")
    extra = {METADATA_NAME: ""}
    try:
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise ModelFileError(f"{path}: not a TorchScript model file ({first})") from None
    raw = extra[METADATA_NAME]
    if not raw:
        raise ModelFileError(f"{path}: missing {METADATA_NAME} metadata; "
                             "export models with `mlff export`")
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: {METADATA_NAME} is not valid JSON ({exc})") from None
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{path}: {METADATA_NAME} must hold a JSON object")
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ModelFileError(f"{path}: {METADATA_NAME} lacks {', '.join(missing)}")
    if metadata["format_version"] not in SUPPORTED_FORMAT_VERSIONS:
        raise ModelFileError(
            f"{path}: unsupported format_version {metadata['format_version']!r} (this version "
            f"reads {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})"
        )
    for name, n_tensors in REQUIRED_METHODS.items():
        _check_method(module, name, n_tensors, path)
    _check_metadata_against_module(module, metadata, path)
    _check_halo(module, metadata, path)
    module.eval()
    return LoadedModel(module=module, metadata=metadata, path=path, device=device)


#: Units every engine bridge assumes (they convert at their boundary from these).
MODEL_UNITS = {"energy_unit": "eV", "length_unit": "Angstrom"}


def _scripted_values(module: torch.jit.ScriptModule) -> dict[str, Any]:
    """What the scripted potential itself says of the metadata's key facts (empty for a
    module without this suite's `potential` submodule)."""
    potential = getattr(module, "potential", None)
    if potential is None:
        return {}
    values: dict[str, Any] = {}
    if hasattr(potential, "species"):
        values["species"] = [int(z) for z in potential.species.tolist()]
    for key, kind in (("cutoff", float), ("num_interactions", int)):
        if hasattr(potential, key):
            values[key] = kind(getattr(potential, key))
    if hasattr(potential, "energy_scale"):
        values["dtype"] = str(potential.energy_scale.dtype).removeprefix("torch.")
    if hasattr(potential, "per_atom_energies"):  # imported TorchScript energy models
        values["per_atom_energies"] = bool(potential.per_atom_energies)
    return values


def _check_metadata_against_module(module: torch.jit.ScriptModule, metadata: dict[str, Any],
                                   path: Path) -> None:
    """A hand-edited mlff.json must not contradict the weights it travels with: engines take
    the cutoff, species and units from the metadata."""
    for key, unit in MODEL_UNITS.items():
        if metadata[key] != unit:
            raise ModelFileError(f"{path}: {METADATA_NAME} says {key} {metadata[key]} but model "
                                 f"files hold {unit} (the engines convert from {unit}); was "
                                 f"{METADATA_NAME} edited by hand?")
    for key, value in _scripted_values(module).items():
        stated = metadata.get(key)
        if key == "cutoff":
            same = isinstance(stated, (int, float)) and abs(float(stated) - value) <= 1e-9
        else:
            same = stated == value
        if not same:
            raise ModelFileError(f"{path}: {METADATA_NAME} says {key} {stated} but the scripted "
                                 f"model's is {value}; was {METADATA_NAME} edited by hand?")


def _check_halo(module: torch.jit.ScriptModule, metadata: dict[str, Any], path: Path) -> None:
    """mlff.json's "halo" (format 2): null, or one positive source width per interaction layer
    and the scripted halo_* methods (`mlff_core.models.halo`) to go with them."""
    from mlff_core.models.halo import HALO_METHODS

    halo = metadata.get("halo")
    if halo is None or metadata["format_version"] < 2:
        return
    widths = halo.get("source_widths") if isinstance(halo, dict) else None
    if (not isinstance(widths, list) or len(widths) != metadata["num_interactions"]
            or not all(isinstance(w, int) and w > 0 for w in widths)):
        raise ModelFileError(f"{path}: {METADATA_NAME} \"halo\" must be null or hold "
                             f"\"source_widths\", one positive integer per interaction layer "
                             f"({metadata['num_interactions']}), not {json.dumps(halo)}")
    missing = [name for name in HALO_METHODS if not hasattr(module, name)]
    if missing:
        raise ModelFileError(f"{path}: {METADATA_NAME} has \"halo\" but the model lacks the "
                             f"scripted method(s) {', '.join(missing)}; was {METADATA_NAME} "
                             f"edited by hand?")


def _check_method(module: torch.jit.ScriptModule, name: str, n_tensors: int, path: Path) -> None:
    try:
        method = module._c._get_method(name)
    except RuntimeError:
        raise ModelFileError(f"{path}: the model has no scripted method {name}()") from None
    arguments = method.schema.arguments[1:]  # drop self
    types = [str(arg.type) for arg in arguments]
    returns = [str(ret.type) for ret in method.schema.returns]
    if types != ["Tensor"] * n_tensors or returns != ["Tensor"]:
        raise ModelFileError(
            f"{path}: method {name}() has signature ({', '.join(types)}) -> "
            f"{', '.join(returns)}; expected ({', '.join(['Tensor'] * n_tensors)}) -> Tensor"
        )
