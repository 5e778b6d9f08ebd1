"""`mlff data ...`: generate, relabel, inspect, convert and split datasets."""

from __future__ import annotations

import contextlib
import json
import shutil
import time

import click

from mlff_core.commands.cluster_options import cluster_options
from mlff_core.data.formats import (
    FORMATS,
    check_format,
    output_format,
    read_frames,
    write_frames,
)
from mlff_core.data.frames import Frames
from mlff_core.data.generate import LangevinSampling, generate_frames
from mlff_core.data.molecules import (
    MOLECULES,
    Structure,
    molecule_from_smiles,
    molecule_names,
    named_molecule,
    structure_from_file,
    water_box,
)
from mlff_core.data.partial import PartialRun, partial_path
from mlff_core.data.splits import split_indices
from mlff_core.distributed import cluster_labeller, dask_client, label_frames_on_cluster
from mlff_core.distributed.labelling import (
    ChunkStore,
    chunk_directory,
    default_chunk_size,
    labelling_settings,
)
from mlff_core.errors import DataError
from mlff_core.fileio import check_writable
from mlff_core.labels.dft import PYSCF_INSTALL
from mlff_core.labels.levels import get_level, list_levels
from mlff_core.outputs import SPLIT_OUTPUTS, claim_output_dir, claim_output_file
from mlff_core.progress import progress_bar

FORMAT_CHOICE = click.Choice([*FORMATS], case_sensitive=False)


class FormatName(click.ParamType):
    """A data format: one of `FORMATS`, or ase:NAME for any format ASE can read (write)."""

    name = "format"

    def __init__(self, mode: str):
        self.mode = mode

    def convert(self, value, param, ctx):
        try:
            return check_format(value, self.mode)
        except DataError as exc:
            self.fail(exc.problem, param, ctx)

    def get_metavar(self, param, ctx=None) -> str:
        return "[" + "|".join(FORMATS) + "|ase:NAME]"


class SubsetSize(click.ParamType):
    """A subset size: a whole count (150) or a fraction below 1 (0.8)."""

    name = "count|fraction"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return value
        try:
            number = float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a count nor a fraction", param, ctx)
        if number < 0 or (number >= 1 and not number.is_integer()):
            self.fail(f"{value!r} must be a whole count or a fraction below 1", param, ctx)
        return number if number < 1 else int(number)


@click.group()
def data() -> None:
    """Make, relabel, inspect, convert and split datasets."""


# ------------------------------------------------------------------------------- generate
@data.command()
@click.option("--molecule", help=f"Named molecule: {', '.join(molecule_names())}.")
@click.option("--smiles", help="Any molecule as SMILES (embedded with RDKit, seeded).")
@click.option("--water-box", type=click.IntRange(min=1), metavar="N",
              help="Periodic box of N water molecules at 0.997 g/cm³ (needs gfn1/gfn2).")
@click.option("--structure", "structure_file", type=click.Path(dir_okay=False),
              help="Start from the first frame of a file (xyz, pdb, npz, ...).")
@click.option("--level", required=True,
              help=f"Level of theory driving the MD: {', '.join(list_levels())} or dft:XC/BASIS.")
@click.option("--label-level", help="Label the frames with this level instead (default: --level).")
@click.option("--frames", "n_frames", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=500.0,
              show_default=True, help="Langevin temperature, K.")
@click.option("--timestep", type=click.FloatRange(min=0, min_open=True), default=0.5,
              show_default=True, help="MD time step, fs.")
@click.option("--friction", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Langevin friction, 1/ps (as everywhere in mlff); 0 runs NVE.")
@click.option("--stride", type=click.IntRange(min=1), default=10, show_default=True,
              help="MD steps between saved frames.")
@click.option("--equilibration", type=click.IntRange(min=0), default=200, show_default=True,
              help="MD steps before the first saved frame.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output file (.npz native, .xyz extxyz, .traj).")
@click.option("--to", "fmt", type=FORMAT_CHOICE, help="Output format (default: from the suffix).")
@click.option("--resume", is_flag=True,
              help="Continue a run that was stopped (its frames so far are kept in "
                   "OUTPUT.partial.npz, saved every 25 frames or minute); same options needed.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing output file (and discard a partial run).")
@cluster_options
def generate(molecule, smiles, water_box, structure_file, level, label_level, n_frames,
             temperature, timestep, friction, stride, equilibration, seed, output, fmt,
             resume, overwrite, scheduler, cluster, cluster_config, workers, chunk_size) -> None:
    """Sample configurations by Langevin MD and label them with a level of theory.

    With --label-level, the sampled frames are labelled on a Dask cluster (a local one of this
    machine's cores by default; --scheduler, --cluster), in chunks kept in OUTPUT.chunks/ until
    all are done.

    \b
    Examples:
      mlff data generate --molecule aspirin --level gfn2 --frames 200 --temperature 500 \\
          --seed 0 -o aspirin.npz
      mlff data generate --molecule ethanol --level mmff94 --label-level gfn2 -o ethanol.npz
      mlff data generate --water-box 32 --level gfn1 --frames 20 -o water.npz
      mlff data generate --molecule aspirin --level dft:PBE/def2-SVP --frames 1000 \
          -o aspirin_dft.npz --resume        # after an interruption: continues where it stopped
    """
    fmt = output_format(output, fmt)  # before hours of labelling, not after
    claim_output_file(output, overwrite)
    check_writable(output)
    structure = _structure(molecule, smiles, water_box, structure_file, seed)
    driver = get_level(level)
    labelling_level = get_level(label_level) if label_level else None
    sampling = LangevinSampling(temperature, timestep, friction, stride, equilibration, seed)
    partial = _partial_run(output, resume, overwrite, structure, driver, labelling_level, sampling,
                           n_frames)
    total = sampling.total_steps(n_frames)
    relabel = labelling_level is not None and labelling_level.key != driver.key
    if relabel:
        total += n_frames
    chunks = chunk_directory(output)
    if overwrite:
        shutil.rmtree(chunks, ignore_errors=True)
    start = time.perf_counter()
    try:
        with (dask_client(scheduler, cluster, cluster_config, workers) if relabel
              else contextlib.nullcontext()) as client, \
                progress_bar(f"{structure.name} · {driver.tag}", total) as advance:
            frames = generate_frames(
                structure, driver, n_frames, sampling, labelling_level, advance, partial,
                cluster_labeller(client, chunk_size) if relabel else None, chunks)
    except BaseException:
        if partial.holds_progress and partial.path.exists():
            click.echo(f"mlff: the frames labelled so far are kept in {partial.path}; the same "
                       "command with --resume continues from there", err=True)
        raise
    frames.provenance["command"] = "mlff data generate"
    write_frames(frames, output, fmt)
    partial.remove()
    click.echo(
        f"wrote {frames.n_frames} frames of {frames.formula} ({frames.levels[0]} labels) "
        f"to {output} in {time.perf_counter() - start:.1f} s"
    )


def _partial_run(output, resume, overwrite, structure, driver, labelling_level, sampling,
                 n_frames) -> PartialRun:
    """Where `generate` keeps its progress; refuses to start over a partial run silently."""
    from dataclasses import asdict

    from mlff_core.stage_cache import content_digest

    settings = {"structure": {"name": structure.name,
                              "atomic_numbers": structure.atoms.numbers.tolist(),
                              "positions": content_digest(structure.atoms.positions),
                              "cell": content_digest(structure.atoms.cell.array)},
                "level": driver.tag,
                "label_level": labelling_level.tag if labelling_level else None,
                "sampling": asdict(sampling), "frames": n_frames}
    partial = PartialRun(partial_path(output), settings)
    if resume and overwrite:
        raise click.UsageError("--resume continues a partial run and --overwrite discards it; "
                               "give one of them")
    if partial.path.exists() and overwrite:
        partial.remove()
    elif partial.path.exists() and not resume:
        raise DataError("a stopped run of this command left its frames here; pass --resume to "
                        "continue it, or --overwrite to start over", partial.path)
    elif resume and not partial.path.exists():
        raise DataError("nothing to resume (no partial run beside the output)", output)
    return partial


def _structure(molecule, smiles, n_water, structure_file, seed) -> Structure:
    given = [x is not None for x in (molecule, smiles, n_water, structure_file)]
    if sum(given) != 1:
        raise click.UsageError("give exactly one of --molecule, --smiles, --water-box, --structure")
    if molecule is not None:
        return named_molecule(molecule, seed=seed)
    if smiles is not None:
        return molecule_from_smiles(smiles, seed=seed)
    if n_water is not None:
        return water_box(n_water)
    return structure_from_file(structure_file)


# -------------------------------------------------------------------------------- relabel
@data.command()
@click.argument("input_file", type=click.Path(dir_okay=False))
@click.option("--level", required=True, help="Level of theory for the new labels.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@click.option("--to", "fmt", type=FORMAT_CHOICE, help="Output format (default: from the suffix).")
@cluster_options
def relabel(input_file, level, output, fmt, scheduler, cluster, cluster_config, workers,
            chunk_size) -> None:
    """Label the frames of INPUT_FILE with another level of theory, on a Dask cluster.

    The frames are labelled in chunks by Dask workers: a local cluster of this machine's cores
    by default, a running scheduler (--scheduler), or batch jobs (--cluster slurm|pbs|lsf).
    Finished chunks are saved in OUTPUT.chunks/ as they come; a killed run resumes from them
    when the same command is run again. A frame that fails is retried, then reported by index
    (no output is written until every frame is labelled).

    \b
    Examples:
      mlff data relabel aspirin_gfn2.npz --level mmff94 -o aspirin_mmff.npz
      mlff data relabel frames.npz --level dft -o frames_dft.npz \\
          --cluster slurm --cluster-config slurm.yaml
    """
    frames = read_frames(input_file)
    target = get_level(level).require()
    fmt = output_format(output, fmt)
    check_writable(output)
    chunk_size = chunk_size or default_chunk_size(target)
    store = ChunkStore(chunk_directory(output), labelling_settings(frames, target, chunk_size))
    start = time.perf_counter()
    with dask_client(scheduler, cluster, cluster_config, workers) as client, \
            progress_bar(f"relabel · {target.tag} · {_workers_text(client)}",
                         frames.n_frames) as advance:
        relabelled = label_frames_on_cluster(frames, target, client, store, chunk_size, advance)
    write_frames(relabelled, output, fmt)
    store.remove()
    click.echo(f"wrote {relabelled.n_frames} frames ({target.tag} labels) to {output} "
               f"in {time.perf_counter() - start:.1f} s")


def _workers_text(client) -> str:
    count = len(client.scheduler_info().get("workers", {}))
    return f"{count} Dask worker{'s' if count != 1 else ''} now"


# ----------------------------------------------------------------------------------- info
@data.command()
@click.argument("input_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(input_file, as_json) -> None:
    """Summarise a data file: frames, atoms, elements, level, units, label ranges.

    \b
    Example:
      mlff data info aspirin.npz
    """
    frames = read_frames(input_file)
    summary = frames.summary()
    summary["file"] = str(input_file)
    summary["provenance"] = frames.provenance
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    click.echo(format_summary(frames, str(input_file)))


def format_summary(frames: Frames, name: str) -> str:
    """Human-readable summary of a dataset (what `mlff data info` prints)."""
    s = frames.summary()
    composition = ", ".join(f"{k} {v}" for k, v in s["elements"].items())
    levels = ", ".join(f"{k} ({v})" for k, v in s["levels"].items())
    lines = [
        ("file", name),
        ("frames", str(s["frames"])),
        ("atoms", f"{s['atoms']}  ({s['formula']}: {composition})"),
        ("periodic", "yes" if s["periodic"] else "no"),
        ("levels", levels),
        ("units", "Å, eV, eV/Å, amu"),
    ]
    if "energy_eV" in s:
        e = s["energy_eV"]
        lines.append(("energy", f"{e['min']:.4f} … {e['max']:.4f} eV  "
                                f"(mean {e['mean']:.4f}, std {e['std']:.4f})"))
    else:
        lines.append(("labels", "none (unlabelled configurations)"))
    if "force_eV_per_A" in s:
        f = s["force_eV_per_A"]
        lines.append(("forces", f"components {f['component_min']:.3f} … {f['component_max']:.3f} "
                                f"eV/Å (std {f['component_std']:.3f}), max |F| "
                                f"{f['max_norm']:.3f} eV/Å"))
    sampling = frames.provenance.get("sampling")
    if sampling:
        lines.append(("sampling", f"{sampling.get('method')} MD with "
                                  f"{sampling.get('driver_level')}, "
                                  f"{sampling.get('temperature')} K, "
                                  f"{sampling.get('timestep')} fs, stride "
                                  f"{sampling.get('stride')}, seed {sampling.get('seed')}"))
    source = frames.provenance.get("source")
    if source:
        lines.append(("source", f"{source.get('format')} {source.get('path', '')}"))
    if frames.provenance.get("created"):
        lines.append(("created", str(frames.provenance["created"])))
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in lines)


# -------------------------------------------------------------------------------- convert
@data.command()
@click.argument("input_file", type=click.Path(dir_okay=False))
@click.argument("output_file", type=click.Path(dir_okay=False))
@click.option("--from", "from_fmt", type=FormatName("read"),
              help="Input format (default: guessed); ase:NAME reads any format ASE reads.")
@click.option("--to", "to_fmt", type=FormatName("write"),
              help="Output format (default: from suffix); ase:NAME writes with ASE.")
def convert(input_file, output_file, from_fmt, to_fmt) -> None:
    """Convert between native npz, MD17/MD22/rMD17 npz, extxyz, ASE trajectories and ase:NAME.

    \b
    Examples:
      mlff data convert md17_aspirin.npz aspirin.npz         # MD17 → native (eV, Å)
      mlff data convert aspirin.npz aspirin.xyz              # native → extxyz
      mlff data convert aspirin.npz rmd17.npz --to rmd17
      mlff data convert vasprun.xml si.npz --from ase:vasp-xml  # any format ASE reads
    """
    frames = read_frames(input_file, from_fmt)
    frames.provenance.setdefault("converted_from", str(input_file))
    write_frames(frames, output_file, to_fmt)
    click.echo(f"wrote {frames.n_frames} frames to {output_file}")


# ---------------------------------------------------------------------------------- split
@data.command()
@click.argument("input_file", type=click.Path(dir_okay=False))
@click.option("--train", required=True, type=SubsetSize(),
              help="Training frames (count or fraction).")
@click.option("--val", default=0, show_default=True, type=SubsetSize(), help="Validation frames.")
@click.option("--test", type=SubsetSize(), help="Test frames (default: all the rest).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True,
              help="Replace an earlier split in the output directory (refused otherwise: its "
                   "test frames may be in the new training set).")
def split(input_file, train, val, test, seed, output_dir, overwrite) -> None:
    """Seeded train/val/test split into OUTPUT_DIR/{train,val,test}.npz.

    \b
    Example:
      mlff data split aspirin.npz --train 1000 --val 100 --seed 0 -o splits/
    """
    frames = read_frames(input_file)
    parts = split_indices(frames.n_frames, train, val, test, seed)
    out = claim_output_dir(output_dir, SPLIT_OUTPUTS, overwrite, "split")
    for name, indices in (("train", parts.train), ("val", parts.val), ("test", parts.test)):
        if len(indices) == 0:
            continue
        subset = frames[indices]
        subset.provenance["split"] = {"subset": name, "seed": seed, "of": str(input_file),
                                      "indices": indices.tolist()}
        write_frames(subset, out / f"{name}.npz")
    sizes = ", ".join(f"{k} {v}" for k, v in parts.sizes().items())
    click.echo(f"split {frames.n_frames} frames into {sizes} in {out}/")


# ------------------------------------------------------------------------- molecules, levels
@data.command()
def molecules() -> None:
    """List the named molecules `mlff data generate --molecule` knows."""
    for name in molecule_names():
        click.echo(f"{name:<16} {MOLECULES[name]}")


@data.command()
def levels() -> None:
    """List the levels of theory, cheapest first, and whether each is installed."""
    for name in list_levels():
        level = get_level(name)
        state = "available" if level.available() else f"needs: {PYSCF_INSTALL}"
        click.echo(f"{name:<8} {level.tag:<20} {level.description}  [{state}]")
