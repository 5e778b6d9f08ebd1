"""`mlff demo`: the end-to-end main job on an embedded default (aspirin at 500 K)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from mlff_core.commands.data import format_summary
from mlff_core.data.formats import write_frames
from mlff_core.data.generate import LangevinSampling, generate_frames, relabel_frames
from mlff_core.data.molecules import named_molecule
from mlff_core.labels.levels import get_level
from mlff_core.progress import progress_bar


@click.command()
@click.option("-o", "--output-dir", default="demo-output", show_default=True,
              type=click.Path(file_okay=False), help="Where the demo writes its files.")
@click.option("--frames", "n_frames", default=120, show_default=True,
              type=click.IntRange(min=10), help="Frames of demo data.")
@click.option("--seed", default=0, show_default=True, type=int)
def demo(output_dir, n_frames, seed) -> None:
    """Run the pipeline on a small default: aspirin sampled at 500 K with GFN2-xTB.

    \b
    Steps: generate GFN2-xTB data by Langevin MD, relabel the same frames with MMFF94
    (a cheap/accurate pair), and print each set's summary.

    \b
    Example:
      mlff demo -o demo-output
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    click.echo("== 1. data: aspirin, Langevin MD at 500 K driven and labelled by GFN2-xTB")
    structure = named_molecule("aspirin", seed=seed)
    sampling = LangevinSampling(temperature=500.0, timestep=0.5, stride=10, equilibration=200,
                                seed=seed)
    gfn2 = get_level("gfn2")
    with progress_bar("aspirin · GFN2-xTB MD", sampling.total_steps(n_frames)) as advance:
        accurate = generate_frames(structure, gfn2, n_frames, sampling, advance=advance)
    accurate.provenance["command"] = "mlff demo"
    accurate_path = write_frames(accurate, out / "aspirin_gfn2.npz")
    click.echo(format_summary(accurate, str(accurate_path)))

    click.echo("\n== 2. cheap labels: the same frames relabelled with MMFF94")
    mmff = get_level("mmff94")
    with progress_bar("aspirin · MMFF94 labels", accurate.n_frames) as advance:
        cheap = relabel_frames(accurate, mmff, advance)
    cheap_path = write_frames(cheap, out / "aspirin_mmff94.npz")
    click.echo(format_summary(cheap, str(cheap_path)))

    click.echo(f"\ndemo finished in {time.perf_counter() - started:.0f} s; files in {out}/")
