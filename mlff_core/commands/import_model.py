"""`mlff import`: a model trained elsewhere (MACE, NequIP, any TorchScript energy model) as a
model file for every engine."""

from __future__ import annotations

import click

from mlff_core.commands.exploration_options import (
    check_radius_options,
    echo_exploration,
    radius_options,
    read_calibration_data,
)
from mlff_core.export import load_model
from mlff_core.export.importers import SOURCES, TORCHSCRIPT_CONTRACT, import_model
from mlff_core.outputs import claim_output_file


@click.command("import")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--from", "source_format", type=click.Choice(SOURCES), required=True,
              help="What MODEL is: mace (a mace_run_train .model or _compiled.model file), "
                   "nequip (a nequip-compile --mode torchscript file), or torchscript (any "
                   f"scripted module with {TORCHSCRIPT_CONTRACT}; with --species, --cutoff "
                   "and --layers).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Model file to write (.pt).")
@click.option("--data", multiple=True, type=click.Path(dir_okay=False),
              help="Frames the model was trained on (repeatable): fits the conformation "
                   "clusters, so the exploration monitor works.")
@click.option("--clusters", "n_clusters", type=click.IntRange(min=1),
              help="Conformation clusters per system of --data (default: by silhouette).")
@click.option("--species",
              help="torchscript: the elements the model knows, comma-separated (e.g. C,H,O).")
@click.option("--cutoff", type=float,
              help="torchscript: the distance (Å) beyond which two atoms do not interact "
                   "directly.")
@click.option("--layers", type=int,
              help="torchscript: message-passing layers; an atom's energy depends on atoms up "
                   "to cutoff × layers away (1 for a model that sees only its neighbours "
                   "within the cutoff).")
@click.option("--trust-pickle", is_flag=True,
              help="mace: allow a pickled model (torch.save of the Python module). Loading it "
                   "runs code stored in the file: only for files from a source you trust.")
@click.option("--head", help="mace: readout head of a multi-head model (default: the last).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]),
              help="Precision of the model file (default: the model's own).")
@radius_options(default_calibration="none: --radius calibrated needs them")
@click.option("--overwrite", is_flag=True, help="Replace an existing file at -o.")
def import_command(model, source_format, output, data, n_clusters, species, cutoff, layers,
                   trust_pickle, head, dtype, radius, false_flag_rate, calibration_data,
                   overwrite) -> None:
    """Wrap a model trained elsewhere into a model file (TorchScript + mlff.json) that runs in
    OpenMM, LAMMPS and ASE with every monitor.

    A torchscript module may also offer per-atom energies as the scripted method
    atomic_energies(positions, atomic_numbers, cell, pbc) -> [N] eV. Without it the model file
    gives energies and forces in OpenMM and ASE, but no per-atom energies, and LAMMPS (which
    sums the energies of each rank's local atoms) refuses it.

    \b
    Examples:
      mlff import --from mace run/MACE_model_compiled.model -o mace.pt --data train.npz
      mlff import --from mace run/MACE_model.model --trust-pickle -o mace.pt
      mlff import --from nequip model.nequip.pth -o nequip.pt --data train.npz
      mlff import --from torchscript energy.pt --species C,H,O --cutoff 5 --layers 2 \\
          -o model.pt
    """
    from mlff_core.data import read_systems

    if radius == "calibrated" and not (data and calibration_data):
        raise click.UsageError("--radius calibrated needs --data (the frames the clusters are "
                               "fitted on) and --calibration-data (held-out frames)")
    check_radius_options(radius, calibration_data)
    claim_output_file(output, overwrite)
    symbols = None if species is None else [s.strip() for s in species.split(",") if s.strip()]
    frames = [part for path in data for part in read_systems(path)]
    path = import_model(source_format, model, output, data=frames,
                        trust_pickle=trust_pickle, head=head, dtype=dtype,
                        n_clusters=n_clusters, species=symbols, cutoff=cutoff, layers=layers,
                        calibration=read_calibration_data(calibration_data),
                        false_flag_rate=false_flag_rate)
    meta = load_model(path).metadata
    click.echo(f"wrote {path}: {meta['architecture']} (imported), species "
               f"{', '.join(meta['species_symbols'])}, cutoff {meta['cutoff']} Å × "
               f"{meta['num_interactions']} layers, {meta['dtype']}")
    echo_exploration(meta)
    if not data:
        click.echo("  no --data: engines will report no reference clusters for this model")
    if not meta.get("per_atom_energies", True):
        click.echo("  no atomic_energies method: energies and forces in OpenMM and ASE; no "
                   "per-atom energies and no LAMMPS")
