"""`mlff import --from torchscript` (any scripted energy model) and `--from nequip`
(`nequip-compile`d models): load the file, check it against its contract, and wrap it as the
model file's potential (`mlff_core.models.external`, `mlff_core.models.nequip`).

Each loader evaluates the wrapped model once on a small test structure, so a file that loads
but does not compute what its contract says is refused at import, not in an engine.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mlff_core.errors import ModelFileError
from mlff_core.export.archives import (
    error_line,
    file_sha256,
    is_model_file,
    load_scripted,
    method_signature,
    model_dtype,
)
from mlff_core.export.model_file import METADATA_NAME
from mlff_core.models.potential import Potential


def _atomic_numbers(symbols: Sequence[str], what: str, path: Path | None) -> list[int]:
    """Atomic numbers of element symbols; a ModelFileError for anything else or a repeat."""
    from ase.data import chemical_symbols

    where = f"{path}: " if path is not None else ""
    numbers = []
    for symbol in symbols:
        if symbol not in chemical_symbols[1:]:
            raise ModelFileError(f"{where}{what} {symbol!r} is not an element symbol "
                                 "(e.g. H, C, O)")
        numbers.append(chemical_symbols.index(symbol))
    repeated = sorted({s for s in symbols if list(symbols).count(s) > 1})
    if repeated:
        raise ModelFileError(f"{where}{what} {', '.join(repeated)} given more than once")
    return numbers


def _test_structure(species: list[int], spacing: float) -> tuple[Tensor, Tensor]:
    """A small cluster (float64 positions [N, 3] Å, atomic numbers [N]) holding every species
    twice on a jittered cubic grid: what imports evaluate once to check the wrapped model."""
    numbers = [z for z in species for _ in range(2)]
    side = math.ceil(len(numbers) ** (1 / 3) - 1e-9)
    grid = [(i, j, k) for i in range(side) for j in range(side) for k in range(side)]
    grid = grid[:len(numbers)]
    rng = np.random.default_rng(0)
    positions = np.array(grid, dtype=float) * spacing + rng.uniform(-0.1, 0.1, (len(grid), 3))
    return torch.tensor(positions), torch.tensor(numbers, dtype=torch.long)


def _close(a: float, b: float, dtype: torch.dtype) -> bool:
    tolerance = 1e-8 if dtype == torch.float64 else 1e-4
    return abs(a - b) <= tolerance * max(abs(a), abs(b), 1.0)


#: The call contract of `--from torchscript` (error messages and the command's help).
TORCHSCRIPT_CONTRACT = ("forward(positions [N,3] Å, atomic_numbers [N] long, cell [3,3] Å, "
                        "pbc [3] bool) -> energy (eV, one value)")


def load_torchscript(path: str | os.PathLike, species: Sequence[str], cutoff: float,
                     layers: int, dtype: torch.dtype | None = None
                     ) -> tuple[Potential, dict[str, Any]]:
    """A potential around the scripted energy model in `path` (`TORCHSCRIPT_CONTRACT`, and
    optionally `atomic_energies(positions, atomic_numbers, cell, pbc) -> [N]` eV), and what the
    model file records of it. `species` are element symbols, `cutoff` Å, `layers` the
    message-passing depth (receptive field cutoff × layers): facts the module cannot state.
    `dtype` converts the module's floating-point parameters and buffers (default: as they are).

    Raises:
        ModelFileError: missing file, not TorchScript, an mlff model file, a `forward` or
            `atomic_energies` of another signature, a bad species, cutoff or layer count, a
            model that fails or does not differentiate on a test structure, per-atom energies
            that do not sum to the energy.
    """
    from mlff_core.models.external import (
        ATOMIC_ENERGIES_METHOD,
        ExternalAtomicPotential,
        ExternalPotential,
    )

    path = Path(path)
    numbers = sorted(_atomic_numbers(species, "--species", None))
    if not numbers:
        raise ModelFileError("--species lists no element (give the model's elements, e.g. "
                             "C,H,O)")
    if not cutoff > 0 or int(layers) < 1:
        raise ModelFileError(f"--cutoff must be > 0 Å and --layers at least 1 (got {cutoff} "
                             f"and {layers})")
    module, _ = load_scripted(path, (), "a TorchScript module")
    if is_model_file(path):
        raise ModelFileError(f"{path}: already an mlff model file (it holds {METADATA_NAME}); "
                             "engines load it as it is")
    expected = (["Tensor"] * 4, ["Tensor"])
    arguments, returns = method_signature(module, "forward")
    if (arguments, returns) != expected:
        raise ModelFileError(f"{path}: its forward is ({', '.join(arguments)}) -> "
                             f"{', '.join(returns)}; --from torchscript needs "
                             f"{TORCHSCRIPT_CONTRACT}")
    per_atom = module._c._has_method(ATOMIC_ENERGIES_METHOD)
    if per_atom and method_signature(module, ATOMIC_ENERGIES_METHOD) != expected:
        arguments, returns = method_signature(module, ATOMIC_ENERGIES_METHOD)
        raise ModelFileError(f"{path}: its {ATOMIC_ENERGIES_METHOD} is ({', '.join(arguments)}) "
                             f"-> {', '.join(returns)}; it must take the arguments of forward "
                             "and return [N] per-atom energies (eV)")
    wrapper = ExternalAtomicPotential if per_atom else ExternalPotential
    potential = wrapper(module, numbers, cutoff, layers, model_dtype(module))
    potential = potential.to(dtype or model_dtype(module)).eval()
    _check_torchscript(potential, path)  # in the dtype it will run in
    source = {
        "format": "torchscript",
        "file": str(path.resolve()),
        "sha256": file_sha256(path),
        "species_symbols": list(species),
        "cutoff": float(cutoff),
        "layers": int(layers),
        "atomic_energies": per_atom,
    }
    return potential, source


def _check_torchscript(potential: Potential, path: Path) -> None:
    """Evaluate the wrapped module once: one energy that autograd can differentiate, and
    per-atom energies (when offered) that sum to it."""
    positions, numbers = _test_structure(potential.species.tolist(),
                                         min(1.2, 0.5 * potential.cutoff))
    positions.requires_grad_(True)
    no_cell, no_pbc = torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.bool)
    n = len(numbers)
    try:
        energy = potential(positions, numbers, no_cell, no_pbc)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: its forward failed on a test structure of {n} atoms "
                             f"({error_line(exc)}); it must be {TORCHSCRIPT_CONTRACT}") from None
    (gradient,) = torch.autograd.grad(energy, positions, allow_unused=True)
    if gradient is None:
        raise ModelFileError(f"{path}: its energy does not depend on the positions through "
                             "autograd (forces are its gradient); do not detach them")
    if not potential.per_atom_energies:
        return
    i, j = torch.triu_indices(n, n, 1)
    edges = torch.cat([torch.stack([i, j]), torch.stack([j, i])], dim=1)
    try:
        atomic = potential.forward_graph(positions.detach(), numbers, edges, torch.tensor(n))
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: its atomic_energies failed on a test structure of {n} "
                             f"atoms ({error_line(exc)})") from None
    total, summed = float(energy.detach()), float(atomic.sum())
    dtype = potential.energy_scale.dtype
    if math.isfinite(total) and math.isfinite(summed) and not _close(total, summed, dtype):
        raise ModelFileError(f"{path}: its atomic_energies sum to {summed:.10g} eV but its "
                             f"forward gives {total:.10g} eV on a test structure of {n} atoms")


#: Extra files of a `nequip-compile`d archive this importer reads.
NEQUIP_METADATA = ("r_max", "type_names", "num_types", "model_dtype", "allow_tf32",
                   "per_edge_type_cutoff")


def load_nequip(path: str | os.PathLike, dtype: torch.dtype | None = None
                ) -> tuple[Potential, dict[str, Any]]:
    """A `Potential` around the `nequip-compile`d TorchScript model in `path`, and what the
    model file records of it. A compiled model computes in its own `model_dtype`; `dtype`
    may only repeat it.

    Raises:
        ModelFileError: missing file, not a nequip-compile'd TorchScript model, type names
            that are not element symbols, per-edge-type cutoffs, another `dtype`, a layout
            whose energy network cannot be found or does not reproduce the model's own energy.
    """
    from mlff_core.models.nequip import NequipRepresentation

    path = Path(path)
    expected = "a nequip-compile'd TorchScript model"
    module, extra = load_scripted(path, NEQUIP_METADATA, expected)
    if not extra["r_max"] or not extra["type_names"]:
        what = ("an mlff model file (use it as it is)" if is_model_file(path)
                else "it lacks the r_max and type_names that nequip-compile stores")
        raise ModelFileError(f"{path}: not {expected}: {what}")
    if extra["per_edge_type_cutoff"].strip():
        raise ModelFileError(f"{path}: a NequIP model with per-edge-type cutoffs "
                             f"({extra['per_edge_type_cutoff'].strip()}) is not supported")
    type_names = extra["type_names"].split()
    numbers = _atomic_numbers(type_names, "type name", path)
    stated = extra["model_dtype"].strip() or str(model_dtype(module)).removeprefix("torch.")
    own = {"float32": torch.float32, "float64": torch.float64}.get(stated)
    if own is None:
        raise ModelFileError(f"{path}: model_dtype {extra['model_dtype']!r} is not supported "
                             "(float32 or float64)")
    if dtype is not None and dtype != own:
        raise ModelFileError(f"{path}: a nequip-compile'd model computes in its model_dtype "
                             f"{stated} (its code fixes it); --dtype "
                             f"{str(dtype).removeprefix('torch.')} needs a model compiled in "
                             "that precision")
    dtype = own
    try:
        r_max = float(extra["r_max"])
        network = module.model.func
    except (ValueError, AttributeError, RuntimeError):
        raise ModelFileError(f"{path}: not {expected} of a layout this importer knows (r_max "
                             "a number, an energy network at model.func)") from None
    layers = sum(1 for name, _ in network.named_children()
                 if re.fullmatch(r"layer\d+_convnet", name))
    if layers == 0:
        raise ModelFileError(f"{path}: its energy network has no layer<k>_convnet blocks, so "
                             "its receptive field is unknown (only NequIP models are supported)")
    species = sorted(numbers)
    representation = NequipRepresentation(network, [numbers.index(z) for z in species])
    potential = Potential(representation, species, r_max, layers).to(dtype).eval()
    _check_nequip(potential, module, numbers, path)
    source = {
        "format": "nequip",
        "file": str(path.resolve()),
        "sha256": file_sha256(path),
        "form": "torchscript (nequip-compile)",
        "r_max": r_max,
        "type_names": type_names,
        "layers": layers,
        "model_dtype": str(dtype).removeprefix("torch."),
        "allow_tf32": extra["allow_tf32"].strip() or None,
    }
    return potential, source


def _check_nequip(potential: Potential, module: torch.jit.ScriptModule, type_numbers: list[int],
                  path: Path) -> None:
    """The wrapped energy network must give the compiled model's own total energy (its whole
    forward, with its own edge vectors and force output) on a test structure."""
    from mlff_core.models.neighbors import neighbor_list

    dtype = potential.energy_scale.dtype
    positions, numbers = _test_structure(potential.species.tolist(), 1.3)
    no_cell, no_pbc = torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.bool)
    edge_index, _ = neighbor_list(positions, no_cell, no_pbc, potential.cutoff)
    data = {"pos": positions.to(dtype),
            "atom_types": torch.tensor([type_numbers.index(int(z)) for z in numbers]),
            "edge_index": edge_index}
    try:
        theirs = float(module(data)["total_energy"].detach().sum())
        ours = float(potential(positions, numbers, no_cell, no_pbc).detach())
    except (RuntimeError, KeyError) as exc:
        raise ModelFileError(f"{path}: evaluating it on a test structure failed "
                             f"({error_line(exc)})") from None
    if not _close(ours, theirs, dtype):
        raise ModelFileError(f"{path}: its energy network gives {ours:.10g} eV where the "
                             f"compiled model gives {theirs:.10g} eV on a test structure; this "
                             "layout of a nequip-compile'd model is not supported")


__all__ = ["NEQUIP_METADATA", "TORCHSCRIPT_CONTRACT", "load_nequip", "load_torchscript"]
