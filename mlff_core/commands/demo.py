"""`mlff demo`: the end-to-end main job on an embedded default (aspirin at 500 K)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import click
import numpy as np

from mlff_core.commands.active_learn import format_rounds
from mlff_core.commands.data import format_summary
from mlff_core.commands.report import format_comparison
from mlff_core.data.formats import write_frames
from mlff_core.data.frames import Frames
from mlff_core.data.generate import LangevinSampling, generate_frames, relabel_frames
from mlff_core.data.molecules import named_molecule
from mlff_core.engines import get_engine
from mlff_core.export import export_run, load_model
from mlff_core.fileio import atomic_output
from mlff_core.labels.levels import get_level
from mlff_core.metrics.predict import predict_with_model
from mlff_core.progress import progress_bar
from mlff_core.report.build import build_report
from mlff_core.report.html import render_html
from mlff_core.training import TrainingConfig, make_trainer
from mlff_core.training.active import ActiveLearningSettings, active_learn
from mlff_core.training.asteroid import AsteroidSettings, asteroid
from mlff_core.training.run import fit_with_progress
from mlff_core.units import force_conversion


@click.command()
@click.option("-o", "--output-dir", default="demo-output", show_default=True,
              type=click.Path(file_okay=False), help="Where the demo writes its files.")
@click.option("--frames", "n_frames", default=300, show_default=True,
              type=click.IntRange(min=20), help="Frames of demo data.")
@click.option("--epochs", default=150, show_default=True, type=click.IntRange(min=1),
              help="Training epochs (the demo also stops after --train-minutes).")
@click.option("--train-minutes", default=4.0, show_default=True, type=float)
@click.option("--md-steps", default=2000, show_default=True, type=click.IntRange(min=1),
              help="ASE Langevin steps of 0.5 fs (2000 = 1 ps).")
@click.option("--seed", default=0, show_default=True, type=int)
def demo(output_dir, n_frames, epochs, train_minutes, md_steps, seed) -> None:
    """Run the pipeline on a small default: aspirin sampled at 500 K with GFN2-xTB.

    \b
    Steps:
      1. data: Langevin MD at 500 K driven and labelled by GFN2-xTB
      2. cheap labels: the same frames relabelled with MMFF94 (a cheap/accurate pair)
      3. train an equivariant PaiNN model on the GFN2-xTB frames, export the model file
         (with the conformation clusters of its training frames)
      4. 1 ps of ASE Langevin MD with the model file, collapse and exploration monitors on
      5. 1 ps of OpenMM Langevin MD (TorchForce) with the collapse/exploration/force reporters
      6. 1 ps of LAMMPS Langevin MD (the plugin, built on first use) with fix mlff/monitor
      7. a report (HTML + JSON) on held-out frames and the three MD trajectories
      8. one short round of continued learning at 700 K: MD, GFN2-xTB labels for the
         unexplored and pre-collapse frames, more training, MD again (its own report page)
      9. ASTEROID next to standard training on the same label budget: 40 GFN2-xTB frames +
         the other frames' MMFF94 labels, against GFN2-xTB frames costing as much

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
    with progress_bar("aspirin · GFN2-xTB MD", sampling.total_steps(n_frames)) as advance:
        accurate = generate_frames(structure, get_level("gfn2"), n_frames, sampling,
                                   advance=advance)
    accurate.provenance["command"] = "mlff demo"
    data_path = write_frames(accurate, out / "aspirin_gfn2.npz")
    click.echo(format_summary(accurate, str(data_path)))

    click.echo("\n== 2. cheap labels: the same frames relabelled with MMFF94")
    with progress_bar("aspirin · MMFF94 labels", accurate.n_frames) as advance:
        cheap = relabel_frames(accurate, get_level("mmff94"), advance)
    cheap_path = write_frames(cheap, out / "aspirin_mmff94.npz")
    click.echo(f"wrote {cheap_path} (force RMS difference to GFN2-xTB "
               f"{np.sqrt(((cheap.forces - accurate.forces) ** 2).mean()):.3f} eV/Å)")

    click.echo("\n== 3. training: PaiNN on the GFN2-xTB frames (10 % validation)")
    run_dir = out / "runs" / "aspirin_painn"
    shutil.rmtree(run_dir, ignore_errors=True)
    config = TrainingConfig(architecture="painn", epochs=epochs, batch_size=8,
                            learning_rate=1e-3, lr_patience=8, seed=seed,
                            max_minutes=train_minutes)
    trainer = make_trainer(config, run_dir, [data_path])
    with progress_bar("training PaiNN", config.epochs) as advance:
        trainer.fit(lambda record: advance(1))
    model_path = export_run(run_dir, out / "aspirin.pt")
    metrics = load_model(model_path).metadata["training"]["val_metrics"]
    click.echo(f"{trainer.stop_reason} after epoch {trainer.epoch}; best epoch "
               f"{trainer.best_epoch}: validation force MAE {metrics['force_mae']:.3f} eV/Å, "
               f"energy MAE {metrics['energy_mae']:.3f} eV")
    click.echo(f"model file: {model_path}")

    start = write_frames(Frames.from_atoms([structure.atoms]), out / "aspirin_start.xyz")
    engines = ((4, "ase", "ASE (calculator + observers)"),
               (5, "openmm", "OpenMM (TorchForce + reporters)"),
               (6, "lammps", "LAMMPS (plugin: pair_style mlff + fix mlff/monitor)"))
    for number, engine, label in engines:
        click.echo(f"\n== {number}. {label}: {md_steps * 0.5 / 1000:g} ps of Langevin MD at "
                   "500 K with the collapse and exploration monitors")
        with progress_bar(f"{engine} Langevin MD", md_steps) as advance:
            summary = get_engine(engine)(model_path, start, str(out / f"md_{engine}"),
                                         temperature=500.0, timestep=0.5, steps=md_steps,
                                         report_interval=20, seed=seed, advance=advance)
        click.echo(f"{summary['steps_run']} steps, {summary['ns_per_day']:.2f} ns/day\n"
                   f"{summary['collapse']}\n{summary['exploration']}")

    click.echo("\n== 7. report: held-out GFN2-xTB frames (another trajectory) and the MD runs")
    test_sampling = LangevinSampling(temperature=500.0, stride=10, equilibration=200,
                                     seed=seed + 1)
    with progress_bar("test data · GFN2-xTB", test_sampling.total_steps(60)) as advance:
        test = generate_frames(structure, get_level("gfn2"), 60, test_sampling, advance=advance)
    test_path = write_frames(test, out / "aspirin_gfn2_test.npz")
    report = build_report([model_path], test_path,
                          [f"ase={out / 'md_ase' / 'trajectory.traj'}",
                           f"openmm={out / 'md_openmm' / 'trajectory.dcd'}",
                           f"lammps={out / 'md_lammps' / 'trajectory.lammpstrj'}"],
                          topology=out / "md_openmm" / "start.pdb")
    with atomic_output(out / "report.json", "w") as fh:
        json.dump(report.document, fh, indent=2)
    with atomic_output(out / "report.html", "w") as fh:
        fh.write(render_html(report, "mlff-plugins demo: aspirin at 500 K"))
    click.echo(format_comparison(report.document))
    click.echo(f"report: {(out / 'report.html').resolve()}")

    click.echo("\n== 8. continued learning: one round at 700 K (ASE), GFN2-xTB labels")
    al_dir = out / "active_learning"
    shutil.rmtree(al_dir, ignore_errors=True)
    settings = ActiveLearningSettings(
        engine="ase", level="gfn2", rounds=1, runs_per_structure=2, temperature=700.0,
        steps=max(md_steps // 2, 20), report_interval=20, max_new_frames=40, epochs=10,
        learning_rate=2e-4, batch_size=8, max_minutes=1.0, seed=seed)
    summary = active_learn(model_path, start, al_dir, settings, data=[data_path],
                           progress=progress_bar)
    click.echo(format_rounds(summary))
    click.echo(f"report: {(al_dir / 'report.html').resolve()}")

    click.echo("\n== 9. ASTEROID: 40 GFN2-xTB labels + MMFF94 labels vs GFN2-xTB labels only, "
               "same label budget")
    asteroid_demo(out, accurate, cheap, test, seed)
    click.echo(f"\ndemo finished in {time.perf_counter() - started:.0f} s; files in {out}/")


def asteroid_demo(out: Path, accurate: Frames, cheap: Frames, test: Frames, seed: int,
                  n_accurate: int = 40, minutes: float = 0.35) -> None:
    """Step 9: a small ASTEROID run (γ = 1) and standard training on GFN2-xTB frames of the
    same label cost (measured), each stage and the standard run given `minutes`-based budgets;
    both scored on the held-out test frames."""
    root = out / "asteroid"
    shutil.rmtree(root, ignore_errors=True)
    acc_path = write_frames(accurate[:n_accurate], root / "accurate.npz")
    cheap_path = write_frames(cheap[n_accurate:], root / "cheap.npz")
    config = TrainingConfig(architecture="painn", hyperparameters={"hidden": 32,
                            "num_interactions": 2}, epochs=1000, batch_size=8,
                            learning_rate=1e-3, lr_patience=8, seed=seed, max_minutes=minutes)
    settings = AsteroidSettings(config=config, gammas=(1.0,), finetune_epochs=1000,
                                finetune_learning_rate=5e-4, finetune_minutes=minutes)
    summary = asteroid([acc_path], root / "run", settings, cheap=[cheap_path],
                       progress=progress_bar)
    budget = summary["budget"]
    n_standard = min(accurate.n_frames, round(budget["accurate_label_equivalents"]))
    standard_path = write_frames(accurate[:n_standard], root / "standard.npz")
    standard_dir = root / "standard"
    standard_config = replace(config, max_minutes=3 * minutes)  # the three stages' time
    fit_with_progress(make_trainer(standard_config, standard_dir, [standard_path]),
                      "standard training (GFN2-xTB only)")
    standard_model = export_run(standard_dir, root / "standard.pt", clusters=False)
    kcal = force_conversion("kcal/mol/A")
    click.echo(f"label budget: {budget['accurate_labels']} GFN2-xTB + {budget['cheap_labels']} "
               f"MMFF94 labels; one GFN2-xTB label costs {budget['cost_ratio']:.0f} MMFF94 "
               f"labels (measured) → {budget['accurate_label_equivalents']:.1f} GFN2-xTB "
               f"label equivalents; standard training gets {n_standard} GFN2-xTB frames")
    for name, path in (("ASTEROID", summary["model"]), ("standard", standard_model)):
        energies, forces = predict_with_model(load_model(path), test)
        f_mae = float(np.abs(forces - test.forces).mean()) * kcal
        click.echo(f"{name:>9}: test F_mae {f_mae:.3f} kcal/mol/Å ({path})")
