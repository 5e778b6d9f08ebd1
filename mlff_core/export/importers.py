"""`mlff import`: wrap a model trained elsewhere into this suite's model file.

The model file keeps its contract (forward, forward_graph with ghost atoms, explore, mlff.json),
so every engine, monitor, `mlff eval` and `mlff report` take an imported model unchanged.

MACE (`--from mace`) comes in two forms, both written by `mace_run_train`:
- `NAME_compiled.model`: TorchScript; read with `torch.jit.load`, which never unpickles Python
  objects. Runs through `MaceModelRepresentation` (MACE's own forward).
- `NAME.model` (and checkpoints' models): a pickled `torch.save` of the Python module. Loading
  it can run any code stored in the file, so it needs `trust_pickle=True`. Runs through
  `MaceRepresentation` (MACE's blocks, with per-layer ghost pruning).
The MACE model carries its own E0s and scale/shift: the wrapping `Potential` adds nothing
(scale 1, reference energies 0). Units: MACE works in eV and Å, as model files do.

Any TorchScript energy model (`--from torchscript`, with `--species`, `--cutoff`, `--layers`):
a scripted module with `forward(positions [N,3] Å, atomic_numbers [N] long, cell [3,3] Å,
pbc [3] bool) -> energy` (eV, 0-d or 1 element), and optionally the method
`atomic_energies(positions, atomic_numbers, cell, pbc) -> [N]` eV. Runs through
`ExternalAtomicPotential` when it has `atomic_energies` (every engine) and `ExternalPotential`
when not (OpenMM and ASE energies and forces; mlff.json says `"per_atom_energies": false` and
LAMMPS and per-atom energies refuse it).

NequIP (`--from nequip`): a `nequip-compile --mode torchscript` file. Species come from its
`type_names`, the cutoff from `r_max`, the layers from its `layer<k>_convnet` blocks; runs
through `NequipRepresentation` (the compiled energy network) inside a `Potential`.

Both are loaded in `mlff_core.export.scripted_imports`, which evaluates the wrapped model once
on a small test structure: a file that loads but does not compute what its contract says is
refused at import, not in an engine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from mlff_core.data.frames import Frames
from mlff_core.errors import ModelFileError
from mlff_core.export.archives import archive_kind, file_sha256, model_dtype, text
from mlff_core.export.from_run import fit_exploration
from mlff_core.export.model_file import model_metadata, save_model_file
from mlff_core.export.scripted_imports import TORCHSCRIPT_CONTRACT, load_nequip, load_torchscript
from mlff_core.models.potential import Potential

#: What `mlff import --from` accepts.
SOURCES = ("mace", "torchscript", "nequip")

CLUSTER_METHOD = ("PCA + K-means on inverse pairwise distances (molecules) or element-pair RDF "
                  "histograms (periodic) of the --data frames; radius per system's radius_rule: "
                  "'max' = largest member distance, 'calibrated' = max × the conformal quantile "
                  "of the --calibration-data frames")


def _mace_facts(model: Any, path: Path) -> tuple[list[int], float, int, list[str]]:
    """(atomic numbers, r_max Å, interactions, heads) of a MACE model, or a ModelFileError
    saying the file is no MACE model."""
    try:
        numbers = [int(z) for z in model.atomic_numbers.tolist()]
        r_max = float(model.r_max)
        layers = int(model.num_interactions)
    except (AttributeError, RuntimeError, TypeError):
        raise ModelFileError(f"{path}: not a MACE model (it has no atomic_numbers, r_max and "
                             "num_interactions); for a nequip-compile'd model use --from nequip, "
                             "for another TorchScript energy model --from torchscript") from None
    heads = [str(h) for h in getattr(model, "heads", None) or ["Default"]]
    return numbers, r_max, layers, heads


def load_mace(path: str | os.PathLike, trust_pickle: bool = False,
              head: str | None = None) -> tuple[Potential, dict[str, Any]]:
    """A `Potential` around the MACE model in `path`, and what the model file records of it.

    Raises:
        ModelFileError: missing file, not a MACE model, a pickled model without
            `trust_pickle`, an unknown head.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    kind = archive_kind(path)
    from mlff_core.models import mace

    extra = {"config.yaml": "", "commit.txt": ""}
    if kind == "torchscript":
        try:
            model = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
            raise ModelFileError(f"{path}: not a readable TorchScript file ({first})") from None
    elif kind == "pickle":
        if not trust_pickle:
            raise ModelFileError(
                f"{path}: a pickled MACE model (torch.save); loading it runs code stored in the "
                "file. Import its TorchScript form (NAME_compiled.model, never unpickled), or "
                "pass --trust-pickle if you trust where the file came from")
        try:
            model = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001  (anything an untrusted pickle raises)
            raise ModelFileError(f"{path}: cannot be unpickled ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        if not isinstance(model, torch.nn.Module):
            raise ModelFileError(f"{path}: holds a {type(model).__name__}, not a MACE model "
                                 "(a checkpoint's state dict cannot be imported; use the "
                                 ".model file mace_run_train writes)")
    else:
        raise ModelFileError(f"{path}: not a MACE model file (neither TorchScript nor a "
                             "torch.save archive)")
    numbers, r_max, layers, heads = _mace_facts(model, path)
    head_index = len(heads) - 1
    if head is not None:
        if head not in heads:
            raise ModelFileError(f"{path}: has no head {head!r} (it has {', '.join(heads)})")
        head_index = heads.index(head)
    species = sorted(numbers)
    model.eval()
    if kind == "torchscript":
        representation = mace.MaceModelRepresentation(model, species, head_index)
    else:
        try:
            representation = mace.MaceRepresentation(model, species, head_index)
        except ValueError as exc:
            raise ModelFileError(f"{path}: {exc}") from None
    dtype = model_dtype(model)
    potential = Potential(representation, species, r_max, layers).to(dtype).eval()
    source = {
        "format": "mace",
        "file": str(path.resolve()),
        "sha256": file_sha256(path),
        "form": "torchscript" if kind == "torchscript" else "pickle",
        "head": heads[head_index],
        "heads": heads,
        "mace_version": version("mace-torch"),
    }
    config, commit = (text(extra[name]) for name in ("config.yaml", "commit.txt"))
    if config:
        try:  # mace writes JSON (every value a string)
            source["config"] = json.loads(config)
        except json.JSONDecodeError:
            source["config"] = config
    if commit:
        source["commit"] = commit.strip()
    return potential, source


def import_model(source_format: str, path: str | os.PathLike, output: str | os.PathLike, *,
                 data: Sequence[Frames] = (), trust_pickle: bool = False,
                 head: str | None = None, dtype: str | None = None,
                 n_clusters: int | None = None, species: Sequence[str] | None = None,
                 cutoff: float | None = None, layers: int | None = None,
                 calibration: Sequence[Frames] | None = None,
                 false_flag_rate: float = 0.05) -> Path:
    """Write the model in `path` (of `source_format`, one of `SOURCES`) as a model file.

    `data` (training frames of the model, one `Frames` per system) gives the conformation
    clusters the exploration monitor flags against; without it engines report no reference
    clusters; `calibration` (held-out frames) calibrates their radii to flag `false_flag_rate`
    of such frames (`fit_exploration`). Frames of elements the model does not know are
    refused. `trust_pickle` and `head` apply to MACE; `species` (element symbols), `cutoff`
    (Å) and `layers` to TorchScript models, which need all three.
    """
    if source_format not in SOURCES:
        raise ModelFileError(f"unknown import format {source_format!r}; use one of "
                             f"{', '.join(SOURCES)}")
    options = {"--trust-pickle": trust_pickle or None, "--head": head, "--species": species,
               "--cutoff": cutoff, "--layers": layers}
    applies = {"mace": ("--trust-pickle", "--head"),
               "torchscript": ("--species", "--cutoff", "--layers"), "nequip": ()}
    stray = [name for name, value in options.items()
             if value is not None and name not in applies[source_format]]
    if stray:
        raise ModelFileError(f"{', '.join(stray)} {'does' if len(stray) == 1 else 'do'} not "
                             f"apply to --from {source_format}")
    if dtype is not None and dtype not in ("float32", "float64"):
        raise ModelFileError(f"dtype must be float32 or float64, got {dtype!r}")
    precision = None if dtype is None else getattr(torch, dtype)
    if source_format == "mace":
        potential, source = load_mace(path, trust_pickle=trust_pickle, head=head)
        hyperparameters = {"imported": source_format, "head": source["head"]}
        if precision is not None:
            potential = potential.to(precision)
    elif source_format == "torchscript":
        missing = [name for name in applies["torchscript"] if options[name] is None]
        if missing:
            raise ModelFileError(f"--from torchscript needs {', '.join(missing)}: a scripted "
                                 "module cannot say which elements it knows, how far atoms "
                                 "interact and over how many message-passing layers")
        potential, source = load_torchscript(path, species, cutoff, layers, precision)
        hyperparameters = {"imported": source_format}
    else:
        potential, source = load_nequip(path, precision)
        hyperparameters = {"imported": source_format}
    known = set(potential.species.tolist())
    for part in data:
        unknown = sorted({int(z) for z in part.atomic_numbers} - known)
        if unknown:
            from ase.data import chemical_symbols

            raise ModelFileError(
                f"{part.source or part.formula}: holds element(s) "
                f"{', '.join(chemical_symbols[z] for z in unknown)} that {Path(path).name} "
                f"does not know")
    exploration_state, exploration = (
        fit_exploration(data, n_clusters, CLUSTER_METHOD, calibration, false_flag_rate) if data
        else (None, None))
    periodic = any(part.is_periodic for part in data) if data else None
    metadata = model_metadata(potential, source_format, hyperparameters,
                              training={"imported_from": source}, exploration=exploration_state,
                              periodic=periodic)
    # engines that need per-atom energies (LAMMPS) refuse a file without them up front
    metadata["per_atom_energies"] = bool(getattr(potential, "per_atom_energies", True))
    return save_model_file(potential, output, metadata, exploration)


__all__ = ["SOURCES", "TORCHSCRIPT_CONTRACT", "import_model", "load_mace", "load_nequip",
           "load_torchscript"]
