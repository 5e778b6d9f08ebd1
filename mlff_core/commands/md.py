"""`mlff md`: Langevin MD with a model file in OpenMM, LAMMPS or ASE, monitors on."""

from __future__ import annotations

import click

from mlff_core.engines import engine_names, get_engine
from mlff_core.monitors import ratio_levels, trust_levels
from mlff_core.outputs import md_outputs
from mlff_core.progress import progress_bar


@click.command()
@click.option("--engine", type=click.Choice(engine_names()), default="openmm", show_default=True,
              help="MD engine (installed bridges).")
@click.option("--model", required=True, type=click.Path(dir_okay=False), help="Model file.")
@click.option("--structure", required=True, type=click.Path(dir_okay=False),
              help="Starting structure: PDB, xyz/extxyz, npz, traj.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=300.0,
              show_default=True, help="K.")
@click.option("--timestep", type=click.FloatRange(min=0, min_open=True), default=0.5,
              show_default=True, help="fs.")
@click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--report-interval", type=click.IntRange(min=1), default=100, show_default=True,
              help="Steps between trajectory frames and monitor checks.")
@click.option("--friction", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Langevin friction, 1/ps (as everywhere in mlff); 0 runs NVE (velocity "
                   "Verlet).")
@click.option("--bond-threshold", type=click.FloatRange(min=0, min_open=True), default=0.5,
              show_default=True, help="Collapse threshold, Å.")
@click.option("--on-collapse", "action", type=click.Choice(["stop", "flag", "raise"]),
              default="stop", show_default=True)
@click.option("--warn-ratio", type=float, default=1.0, show_default=True,
              help="Exploration monitor: flag frames whose score exceeds this. The score is "
                   "the larger of distance/radius to the nearest training cluster and, for "
                   "molecules, the bond score (a bond outside its training length range); "
                   "1 is the edge of the training data.")
@click.option("--stop-ratio", type=float,
              help="Exploration monitor: stop the run cleanly at the first frame whose "
                   "score exceeds this (at least --warn-ratio; default: never stop).")
@click.option("--warn-deviation", type=float,
              help="Committee model files: flag frames whose force deviation (eV/Å, "
                   "max over atoms of the members' RMS spread around their mean force) exceeds "
                   "this (DeePMD-kit's trust_lo; 0.05-0.15 usual for molecules).")
@click.option("--stop-deviation", type=float,
              help="Committee model files: stop the run cleanly at the first frame whose force "
                   "deviation exceeds this (eV/Å, at least --warn-deviation).")
@click.option("--backend", type=click.Choice(["torch", "python"]), default="torch",
              show_default=True, help="OpenMM: TorchForce or PythonForce.")
@click.option("--platform", help="OpenMM platform (Reference, CPU, CUDA, OpenCL).")
@click.option("--device", default="cpu", show_default=True,
              help="ASE and LAMMPS: torch device (cpu, cuda; LAMMPS uses one GPU per MPI rank).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True,
              help="Replace an earlier run's files in the output directory (refused otherwise).")
def md(engine, model, structure, temperature, timestep, steps, report_interval, friction,
       bond_threshold, action, warn_ratio, stop_ratio, warn_deviation, stop_deviation, backend,
       platform, device, seed, output_dir, overwrite) -> None:
    """Langevin MD with a model file; collapse, exploration and force monitors on (and the
    committee deviation monitor with --warn-deviation).

    \b
    Examples:
      mlff md --engine openmm --model aspirin.pt --structure start.pdb --temperature 500 \\
          --timestep 0.5 --steps 20000 --report-interval 100 -o runs/md1
      mlff md --engine ase --model aspirin.pt --structure start.xyz --steps 2000 -o runs/md2
    """
    ratio_levels(warn_ratio, stop_ratio)  # one clear error before any output
    if stop_deviation is not None and warn_deviation is None:
        raise click.UsageError("--stop-deviation needs --warn-deviation")
    if warn_deviation is not None:
        trust_levels(warn_deviation, stop_deviation, "deviation")
        from mlff_core.export import load_model

        if load_model(model).committee_size < 2:
            raise click.UsageError(f"{model} is not a committee model file, so it has no "
                                   "force deviation to monitor (train one with mlff train "
                                   "--committee M)")
    run = get_engine(engine)
    with md_outputs(output_dir, overwrite, keep=(structure, model)) as run_state, \
            progress_bar(f"{engine} MD", steps) as advance:

        def counted(n: int) -> None:  # every engine calls advance(0) when stepping starts
            run_state.mark()
            advance(n)

        summary = run(model, structure, output_dir, temperature=temperature, timestep=timestep,
                      steps=steps, report_interval=report_interval, friction=friction,
                      bond_threshold=bond_threshold, action=action, seed=seed, advance=counted,
                      warn_ratio=warn_ratio, stop_ratio=stop_ratio,
                      warn_deviation=warn_deviation, stop_deviation=stop_deviation,
                      backend=backend, platform=platform, device=device)
    click.echo(f"{summary['steps_run']} of {steps} steps in {summary['seconds']:.1f} s "
               f"({summary['ns_per_day']:.3g} ns/day)" if summary["ns_per_day"] else "")
    if summary["stopped"]:
        saved = (f"last good frame: {summary['last_good']}" if summary["last_good"] else
                 "no good frame to save (the first check was already flagged)")
        click.echo(f"stopped: {summary['reason']}; {saved}")
    click.echo(summary["collapse"])
    click.echo(summary["exploration"])
    if summary.get("deviation"):
        click.echo(summary["deviation"])
    if summary["exploration_counts"].get("no reference clusters"):
        click.echo("note: the model file has no conformation clusters for this system, so "
                   "frames were not classified as explored/unexplored")
    click.echo(f"output: {output_dir}")
