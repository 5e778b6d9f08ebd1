"""Forward + backward (energy and forces) time per atom of the model file, molecule to 32k atoms.

Runs the scripted model file exactly as engines do (`forward` builds its own cell-list neighbour
list every call) for aspirin and periodic water boxes of about 1k, 8k and 32k atoms, for each
architecture, in one process so that the ratios are comparable.

    python benchmarks/model_speed.py [--models painn schnet] [--allocator default jemalloc]

Allocators: 'default' is glibc malloc (what PyTorch uses out of the box: every large tensor is
mmap-ed and returned to the OS when freed, so each step page-faults its memory in again);
'jemalloc' preloads /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 (Debian package libjemalloc2)
with freed pages kept in the process (MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1), as
PyTorch's CPU performance guide recommends.

Peak memory per atom is measured on the way up; a size whose predicted peak exceeds
--max-memory-gb is skipped and reported rather than run into the out-of-memory killer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from timing import median_seconds

from mlff_core.data.formats import read_frames, write_frames
from mlff_core.data.frames import Frames
from mlff_core.data.molecules import named_molecule, water_box
from mlff_core.export import load_model, model_metadata, save_model_file
from mlff_core.models import build_potential, hyperparameters
from mlff_core.models.neighbors import neighbor_list

CACHE = Path(__file__).parent / ".cache"
WATER_MOLECULES = {"water 1k": 333, "water 8k": 2667, "water 32k": 10667}
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def water_structure(n_molecules: int):
    """A relaxed water box, cached on disk (the 32k-atom box takes about 2 min to relax)."""
    path = CACHE / f"water_{n_molecules}.npz"
    if path.exists():
        return read_frames(path).to_atoms(0)
    atoms = water_box(n_molecules).atoms
    CACHE.mkdir(exist_ok=True)
    write_frames(Frames.from_atoms([atoms]), path)
    return atoms


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def parse_model(spec: str) -> tuple[str, dict]:
    """'painn' or 'painn:hidden=32,cutoff=4.5' -> (architecture, overrides)."""
    arch, _, rest = spec.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, value = item.split("=")
        overrides[key] = float(value) if "." in value else int(value)
    return arch, overrides


def measure(spec: str, name: str, dtype_name: str) -> dict:
    """Time one (model, system) pair in this process; returns its row."""
    dtype = getattr(torch, dtype_name)
    atoms = named_molecule("aspirin").atoms if name == "aspirin" else \
        water_structure(WATER_MOLECULES[name])
    arch, overrides = parse_model(spec)
    torch.manual_seed(0)
    potential = build_potential(arch, [1, 6, 8], **overrides).to(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_model_file(potential, Path(tmp) / "model.pt",
                               model_metadata(potential, arch, hyperparameters(arch, **overrides)))
        model = load_model(path).module
    pos = torch.tensor(atoms.positions, dtype=dtype)
    numbers = torch.tensor(atoms.numbers)
    cell = torch.tensor(atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3)), dtype=dtype)
    pbc = torch.tensor(atoms.pbc)

    def step():
        p = pos.clone().requires_grad_(True)
        energy = model(p, numbers, cell, pbc)
        torch.autograd.grad(energy, p)

    def neighbours():
        neighbor_list(pos, cell, pbc, potential.cutoff)

    baseline = peak_rss_gb()
    repeats = 20 if len(atoms) < 100 else 5 if len(atoms) < 10_000 else 3
    seconds = median_seconds(step, repeats)
    peak = peak_rss_gb()
    nl_seconds = median_seconds(neighbours, repeats)
    edges = neighbor_list(pos, cell, pbc, potential.cutoff)[0].shape[1]
    return {"model": spec, "system": name, "atoms": len(atoms), "edges": edges,
            "seconds": seconds, "us_per_atom": seconds / len(atoms) * 1e6,
            "neighbour_list_fraction": nl_seconds / seconds, "peak_rss_gb": peak,
            "step_memory_gb": peak - baseline}


def measure_model(spec: str, allocator: str, environment: dict, args) -> list[dict]:
    """Every system for one model, each in a fresh child process (isolated peak memory)."""
    rows = []
    base_gb, gb_per_atom = 0.0, 0.0  # peak ≈ base (libraries, aspirin) + slope × atoms
    for name in ["aspirin", *WATER_MOLECULES]:
        n_atoms = 21 if name == "aspirin" else 3 * WATER_MOLECULES[name]
        predicted = base_gb + gb_per_atom * n_atoms
        label = f"{allocator:<9}{spec:<16}{name:<11}{n_atoms:>7} atoms"
        if predicted > args.max_memory_gb:
            print(f"{label}  skipped: needs about {predicted:.0f} GB "
                  f"(> {args.max_memory_gb:g} GB)", flush=True)
            rows.append({"model": spec, "allocator": allocator, "system": name,
                         "atoms": n_atoms, "skipped": f"needs about {predicted:.0f} GB"})
            continue
        child = subprocess.run([sys.executable, __file__, "--one", spec, name, "--dtype",
                                args.dtype], capture_output=True, text=True, env=environment)
        if child.returncode != 0:
            raise SystemExit(f"{spec} {name} failed:\n{child.stderr[-2000:]}")
        row = json.loads(child.stdout.strip().splitlines()[-1])
        row["allocator"] = allocator
        rows.append(row)
        if name == "aspirin":
            base_gb = row["peak_rss_gb"]
        else:
            gb_per_atom = (row["peak_rss_gb"] - base_gb) / n_atoms
        print(f"{label} {row['edges']:>9} edges {row['seconds'] * 1e3:>10.2f} ms "
              f"{row['us_per_atom']:>8.1f} µs/atom (neighbour list "
              f"{100 * row['neighbour_list_fraction']:.0f} %, peak {row['peak_rss_gb']:.1f} GB)",
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["painn", "schnet"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--max-memory-gb", type=float, default=20.0)
    parser.add_argument("--allocator", nargs="+", default=["default", "jemalloc"],
                        choices=["default", "jemalloc"])
    parser.add_argument("--json")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "SYSTEM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # child process: one measurement, printed as JSON
        print(json.dumps(measure(*args.one, args.dtype)))
        return

    for n in WATER_MOLECULES.values():
        water_structure(n)  # build (and cache) the boxes before timing anything
    rows = []
    for allocator in args.allocator:
        environment = dict(os.environ)
        if allocator == "jemalloc":
            if not Path(JEMALLOC).exists():
                print(f"jemalloc not found at {JEMALLOC} (apt-get install libjemalloc2); skipped")
                continue
            environment.update(LD_PRELOAD=JEMALLOC,
                               MALLOC_CONF="dirty_decay_ms:-1,muzzy_decay_ms:-1")
        for spec in args.models:
            rows += measure_model(spec, allocator, environment, args)
    print(f"\n{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.dtype}, "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE')}")
    for allocator in args.allocator:
        for spec in args.models:
            done = [r for r in rows if r["model"] == spec and r["allocator"] == allocator
                    and "us_per_atom" in r]
            if not done:
                continue
            largest = max(done, key=lambda r: r["atoms"])
            one_k = next(r for r in done if r["system"] == "water 1k")
            print(f"{allocator:<9}{spec}: time per atom at {largest['system']} / at water 1k = "
                  f"{largest['us_per_atom'] / one_k['us_per_atom']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
