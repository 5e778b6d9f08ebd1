"""Continued learning on unexplored and pre-collapse frames (`mlff active-learn`; JCP 159,
035101, section III: "continued training by recruiting additional unexplored data").

Round r (r = 1..R) with model M_{r-1} (M_0 is the given model file):
  1. MD: from every starting structure, `runs_per_structure` Langevin runs with different seeds
     in the chosen engine, collapse monitor on (a run stops at its first collapsed frame). With
     `starts_per_round` N, each pass (every round and the final one) takes N structures of the
     file not used by an earlier pass (a seeded random draw), so a model is never measured on
     the starts whose frames it was trained on.
  2. Analysis of each trajectory, engine-independent: frames before collapse (bond criterion of
     `metrics.simulation.stability`), each frame before the collapse classified by M_{r-1}'s
     exploration model (explored / unexplored).
  3. Candidates: the unexplored frames before the collapse, plus the `pre_collapse_frames` frames
     just before it (where the model went wrong); at most `max_new_frames` per round, taken
     evenly over the candidates.
  4. Labels: the chosen level of theory (the level of the training data).
  5. Training: M_{r-1}'s weights continue on the training frames plus every frame added so far;
     the validation frames stay fixed over the rounds. M_r is exported with conformation clusters
     fitted on its enlarged training set, so the newly covered region counts as explored.
A last MD pass with M_R (no labelling) measures the final model the same way.

Output directory:
    round_<r>/md/<structure>_<run>/   the engine's files (trajectory, monitors, summary.json)
    round_<r>/new_frames.npz          the labelled frames added in round r
    round_<r>/train/                  the training run; round_<r>/model.pt is M_r
    final/md/...                      the last MD pass
    summary.json, report.html         per-round figures and plots
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlff_core.data.formats import read_frames, write_frames
from mlff_core.data.frames import Frames
from mlff_core.data.generate import relabel_frames
from mlff_core.data.molecules import covalent_bonds
from mlff_core.data.trajectories import read_trajectory
from mlff_core.engines import get_engine
from mlff_core.errors import DataError, MLFFError
from mlff_core.export.from_run import export_run
from mlff_core.export.loading import LoadedModel, load_model
from mlff_core.fileio import atomic_output
from mlff_core.labels import get_level
from mlff_core.metrics.predict import predict_with_model
from mlff_core.metrics.simulation import stability
from mlff_core.monitors.detectors import NON_FINITE, ExplorationDetector
from mlff_core.progress import ProgressFactory, silent_progress
from mlff_core.training.run import prepare_data, training_frames
from mlff_core.training.trainer import Trainer, TrainingConfig

if TYPE_CHECKING:
    from mlff_core.distributed.exploration import MDRunner
    from mlff_core.distributed.labelling import Labeller


@dataclass
class ActiveLearningSettings:
    """Settings of a continued-learning run (units: K, fs, Å, steps).

    MD: engine, temperature, timestep, steps per run, report_interval (steps between the frames
    analysed), friction (1/ps), bond_threshold (collapse, Å), runs_per_structure.
    Starts: starts_per_round (None: every structure of the file in every pass).
    Selection: pre_collapse_frames, max_new_frames per round. Labels: level.
    Training per round: epochs, learning_rate, batch_size, energy_weight, loss, max_minutes.
    """

    engine: str = "ase"
    level: str = "gfn2"
    rounds: int = 3
    runs_per_structure: int = 2
    starts_per_round: int | None = None
    temperature: float = 500.0
    timestep: float = 0.5
    steps: int = 2000
    report_interval: int = 20
    friction: float = 1.0
    bond_threshold: float = 0.5
    pre_collapse_frames: int = 5
    max_new_frames: int = 100
    epochs: int = 50
    learning_rate: float = 1e-4
    batch_size: int = 16
    energy_weight: float = 0.01
    loss: dict[str, float] = field(default_factory=lambda: {"mse": 1.0})
    max_minutes: float | None = None
    n_val: float | int = 0.1
    final_md: bool = True
    seed: int = 0
    engine_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.runs_per_structure < 1 or self.steps < 1:
            raise MLFFError("rounds, runs per structure and steps must be at least 1")
        if self.report_interval < 1 or self.report_interval > self.steps:
            raise MLFFError("the report interval must be between 1 and the number of steps")
        if self.max_new_frames < 1 or self.pre_collapse_frames < 0:
            raise MLFFError("max_new_frames must be >= 1 and pre_collapse_frames >= 0")
        if self.starts_per_round is not None and self.starts_per_round < 1:
            raise MLFFError("starts_per_round must be at least 1")

    @property
    def passes(self) -> int:
        """MD passes: one per round, plus the final one."""
        return self.rounds + int(self.final_md)


@dataclass
class RunAnalysis:
    """One MD run seen through the collapse criterion and the model's exploration model.

    Attributes:
        name: run directory name; summary: the engine's summary.
        frames: [T] analysed trajectory frames (unlabelled).
        frames_before_collapse: stability figure (T when it never collapsed).
        collapsed: whether any frame collapsed.
        unexplored: [T] bool, True for frames outside every training cluster.
        candidates: frame indices proposed for labelling.
    """

    name: str
    summary: dict[str, Any]
    frames: Frames
    frames_before_collapse: int
    collapsed: bool
    unexplored: np.ndarray
    candidates: np.ndarray

    @property
    def unexplored_ratio(self) -> float:
        """Share of the frames before collapse that are unexplored."""
        upto = max(self.frames_before_collapse, 1)
        return float(self.unexplored[:upto].mean()) if len(self.unexplored) else 0.0

    def row(self) -> dict[str, Any]:
        return {"run": self.name, "frames": self.frames.n_frames,
                "frames_before_collapse": self.frames_before_collapse,
                "collapsed": self.collapsed, "unexplored_ratio": self.unexplored_ratio,
                "candidates": int(len(self.candidates)),
                "steps_run": self.summary.get("steps_run")}


def analyse_run(name: str, summary: dict[str, Any], start: Frames, detector: ExplorationDetector,
                settings: ActiveLearningSettings) -> RunAnalysis:
    """Stability, exploration and labelling candidates of one finished MD run."""
    frames = read_trajectory(summary["trajectory"], topology=summary.get("topology"))
    if frames.n_atoms != start.n_atoms or \
            not np.array_equal(frames.atomic_numbers, start.atomic_numbers):
        raise DataError(f"the trajectory of {name} does not hold the starting structure's atoms",
                        summary["trajectory"])
    if frames.is_periodic and not start.is_periodic:  # a molecule in an engine's box
        frames = frames.without_cell()
    stable = run_stability(summary, frames, start, settings.bond_threshold)
    before = stable["frames_before_collapse"]
    unexplored = np.zeros(frames.n_frames, dtype=bool)
    for f in range(before):
        check = detector.check(frames.positions[f], frames.atomic_numbers,
                               None if frames.cell is None else frames.cell[f], frames.pbc)
        unexplored[f] = check.status == "unexplored"
    chosen = set(np.flatnonzero(unexplored[:before]).tolist())
    if stable["collapsed"]:
        chosen |= set(range(max(0, before - settings.pre_collapse_frames), before))
    return RunAnalysis(name, summary, frames, before, bool(stable["collapsed"]), unexplored,
                       np.array(sorted(chosen), dtype=np.int64))


def run_stability(summary: dict[str, Any], frames: Frames, start: Frames,
                  threshold: float) -> dict[str, Any]:
    """`metrics.simulation.stability` of one engine run's frames against its start, with the
    start's covalent bonds. A run the engine stopped for non-finite positions collapsed at the
    frame after its last stored one: no engine stores that frame, so the stored frames alone
    would read as a stable run."""
    stable = stability(frames, threshold, bonds=covalent_bonds(start.to_atoms(0)),
                       reference=start)
    blew_up = NON_FINITE in str(summary.get("reason") or "")
    if blew_up and not stable["collapsed"]:
        stable.update(collapsed=True, first_collapse_frame=frames.n_frames,
                      frames_before_collapse=frames.n_frames)
    return stable


def select_candidates(runs: Sequence[RunAnalysis], limit: int) -> Frames | None:
    """The candidate frames of all runs, at most `limit` of them taken evenly (None if none)."""
    picked = [run.frames[run.candidates] for run in runs if len(run.candidates)]
    if not picked:
        return None
    pool = Frames.concatenate(picked) if len(picked) > 1 else picked[0]
    if pool.n_frames > limit:
        pool = pool[np.unique(np.linspace(0, pool.n_frames - 1, limit).round().astype(int))]
    return pool


def _starts(structures: str | os.PathLike) -> list[Frames]:
    """Starting structures: every frame of the file (xyz/extxyz, npz, traj, PDB)."""
    frames = read_frames(structures)
    return [frames[[f]] for f in range(frames.n_frames)]


def starts_of_passes(n_structures: int, settings: ActiveLearningSettings,
                     structures: str | os.PathLike = "the structures file") -> list[np.ndarray]:
    """[passes] indices of the starting structures of each MD pass (rounds, then the final
    pass): all of them every time, or with `starts_per_round` N disjoint blocks of N from one
    seeded permutation."""
    every = np.arange(n_structures)
    n = settings.starts_per_round
    if n is None:
        return [every] * settings.passes
    needed = n * settings.passes
    if n_structures < needed:
        raise DataError(f"{n_structures} structures, but {settings.passes} MD passes of "
                        f"{n} new starts each need {needed}", structures)
    order = np.random.default_rng(settings.seed).permutation(n_structures)
    return [np.sort(order[k * n:(k + 1) * n]) for k in range(settings.passes)]


def round_training_config(model: LoadedModel, settings: ActiveLearningSettings,
                          round_: int) -> TrainingConfig:
    """The training configuration of round `round_`, continuing `model` (its architecture,
    size and precision) with the settings' epochs, learning rate and loss."""
    return TrainingConfig(
        architecture=model.metadata["architecture"],
        hyperparameters=model.metadata["hyperparameters"], epochs=settings.epochs,
        batch_size=settings.batch_size, learning_rate=settings.learning_rate,
        energy_weight=settings.energy_weight, loss=settings.loss,
        early_stopping_patience=max(10, settings.epochs // 3),
        lr_patience=max(3, settings.epochs // 10), seed=settings.seed + round_,
        max_minutes=settings.max_minutes, dtype=model.metadata["dtype"])


def original_data(model: LoadedModel, data: Sequence[str | os.PathLike],
                   n_val: float | int, seed: int) -> tuple[list[Frames], list[Frames]]:
    """Training and validation frames: from `data` (split with the seed), or the ones the model
    file's provenance records."""
    if data:
        # levels: checked against --level by `continued_learning` (one rule, not two)
        train, val, _ = prepare_data(data, (), None, n_val, seed, allow_mixed_levels=True)
        return train, val
    provenance = model.metadata.get("training", {})
    try:
        train = training_frames(provenance)
        val = training_frames(provenance, "val")
        if provenance.get("val_files"):
            val += [read_frames(p) for p in provenance["val_files"]]
    except (DataError, KeyError) as exc:
        raise MLFFError(f"{model.path}: cannot rebuild the model's training data ({exc}); give "
                        "the labelled frames with --data") from None
    return train, val


def _add_frames(train: list[Frames], new: Frames) -> list[Frames]:
    """Training systems with `new` appended to the matching system (same atoms, same order)."""
    out, added = [], False
    for part in train:
        if not added and np.array_equal(part.atomic_numbers, new.atomic_numbers) and \
                part.is_periodic == new.is_periodic:
            out.append(Frames.concatenate([part, new]))
            added = True
        else:
            out.append(part)
    return out if added else out + [new]


def _force_mae(model: LoadedModel, frames: Sequence[Frames]) -> float:
    """Force MAE (eV/Å) of the model over all frames."""
    errors = [np.abs(predict_with_model(model, part)[1] - part.forces).ravel()
              for part in frames if part.n_frames]
    return float(np.concatenate(errors).mean()) if errors else float("nan")


def _run_md_pass(model_path: Path, model: LoadedModel, starts: list[Frames], out: Path,
                 settings: ActiveLearningSettings, seed_base: int, progress: ProgressFactory,
                 md_runner: MDRunner | None = None) -> list[RunAnalysis]:
    """Every MD run of one pass with the model file (`model`: it loaded), run by `md_runner`
    (default: one after the other in this process), analysed with its exploration model."""
    from mlff_core.distributed.exploration import MDRun, serial_md_runner

    detector = ExplorationDetector(model)
    out.mkdir(parents=True, exist_ok=True)
    runs, start_of_run = [], []
    for s, start in enumerate(starts):
        start_file = write_frames(start, out / f"start_{s}.xyz")
        for j in range(settings.runs_per_structure):
            name = f"s{s}_run{j}"
            runs.append(MDRun(name, str(model_path), str(start_file), str(out / name), {
                "temperature": settings.temperature, "timestep": settings.timestep,
                "steps": settings.steps, "report_interval": settings.report_interval,
                "friction": settings.friction, "bond_threshold": settings.bond_threshold,
                "action": "stop", "seed": seed_base + 1000 * s + j, **settings.engine_options}))
            start_of_run.append(start)
    total = len(runs) * settings.steps
    with progress(f"MD ({settings.engine}, {out.parent.name})", total) as advance:
        summaries = (md_runner or serial_md_runner)(settings.engine, runs, advance)
    return [analyse_run(run.name, summary, start, detector, settings)
            for run, summary, start in zip(runs, summaries, start_of_run, strict=True)]


def _pass_statistics(runs: Sequence[RunAnalysis]) -> dict[str, Any]:
    before = [run.frames_before_collapse for run in runs]
    return {
        "runs": [run.row() for run in runs],
        "frames_before_collapse": before,
        "median_frames_before_collapse": float(np.median(before)),
        "collapsed_runs": int(sum(run.collapsed for run in runs)),
        "unexplored_ratio": float(np.mean([run.unexplored_ratio for run in runs])),
    }


def active_learn(model_path: str | os.PathLike, structures: str | os.PathLike,
                 output_dir: str | os.PathLike, settings: ActiveLearningSettings, *,
                 data: Sequence[str | os.PathLike] = (),
                 progress: ProgressFactory = silent_progress,
                 labeller: Labeller | None = None,
                 md_runner: MDRunner | None = None) -> dict[str, Any]:
    """Run the rounds described in the module docstring; returns the summary (also written to
    summary.json, with report.html beside it). `labeller` labels each round's new frames and
    `md_runner` runs each pass's MD (e.g. `mlff_core.distributed.cluster_labeller` and
    `cluster_md_runner` on a Dask cluster); default: in this process."""
    from mlff_core.report.active import write_active_learning_report

    out = Path(output_dir)
    if (out / "summary.json").exists() or any(out.glob("round_*")):
        raise MLFFError(f"{out}: already holds a continued-learning run; choose another "
                        "output directory")
    level = get_level(settings.level).require()
    get_engine(settings.engine)  # unknown engine: fail before any work
    model_path = Path(model_path)
    model = load_model(model_path)
    starts = _starts(structures)
    passes = starts_of_passes(len(starts), settings, structures)
    for start in starts:
        model.check_species(start.atomic_numbers)
    train, val = original_data(model, data, settings.n_val, settings.seed)
    data_levels = sorted({lv for part in train for lv in part.levels.tolist()})
    if data_levels != [level.tag]:
        raise MLFFError(f"the training data are labelled with {', '.join(data_levels)} but "
                        f"--level is {level.tag}; continued learning must not mix levels")
    out.mkdir(parents=True, exist_ok=True)

    rounds: list[dict[str, Any]] = []
    current, loaded = model_path, model  # the model file of this round, and it loaded
    for r in range(1, settings.rounds + 1):
        round_dir = out / f"round_{r}"
        runs = _run_md_pass(current, loaded, [starts[i] for i in passes[r - 1]],
                            round_dir / "md", settings, settings.seed + 100_000 * r, progress,
                            md_runner)
        record = {"round": r, "model": str(current), "starts": passes[r - 1].tolist(),
                  **_pass_statistics(runs)}
        selected = select_candidates(runs, settings.max_new_frames)
        record["new_frames"] = 0 if selected is None else selected.n_frames
        if selected is not None:
            template = next((p for p in train if np.array_equal(p.atomic_numbers,
                                                                selected.atomic_numbers)), None)
            selected.provenance = {
                "system": {} if template is None else template.provenance.get("system", {}),
                "selected_by": "continued learning (unexplored and pre-collapse frames)",
                "round": r, "model": str(current), "engine": settings.engine}
            with progress(f"labelling ({level.tag}, round {r})", selected.n_frames) as advance:
                labelled = (labeller(selected, level, advance, round_dir / "new_frames.chunks")
                            if labeller is not None else relabel_frames(selected, level, advance))
            write_frames(labelled, round_dir / "new_frames.npz")
            record["new_frames_F_mae_before"] = _force_mae(loaded, [labelled])
            train = _add_frames(train, labelled)
            trainer = Trainer(round_training_config(loaded, settings, r), train, val,
                              round_dir / "train",
                              init_potential=loaded.to_potential(),
                              provenance={"continued_learning_round": r,
                                          "init_model": str(current),
                                          "level_of_theory": level.tag,
                                          "systems": [{"formula": p.formula,
                                                       "frames": p.n_frames} for p in train]})
            with progress(f"training (round {r})", settings.epochs) as advance:
                trainer.fit(lambda _record: advance(1))
            current = export_run(round_dir / "train", round_dir / "model.pt",
                                 cluster_data=train)
            loaded = load_model(current)
            record["new_frames_F_mae_after"] = _force_mae(loaded, [labelled])
        record["val_F_mae"] = _force_mae(loaded, val)
        record["model_after"] = str(current)
        record["training_frames"] = int(sum(p.n_frames for p in train))
        rounds.append(record)
        _write_summary(out, model_path, structures, settings, rounds, None)

    final = None
    if settings.final_md:
        runs = _run_md_pass(current, loaded, [starts[i] for i in passes[-1]],
                            out / "final" / "md", settings,
                            settings.seed + 100_000 * (settings.rounds + 1), progress,
                            md_runner)
        final = {"model": str(current), "starts": passes[-1].tolist(),
                 **_pass_statistics(runs)}
    summary = _write_summary(out, model_path, structures, settings, rounds, final)
    write_active_learning_report(summary, out / "report.html")
    return summary


def _write_summary(out: Path, model_path: Path, structures, settings: ActiveLearningSettings,
                   rounds: list[dict[str, Any]], final: dict[str, Any] | None) -> dict[str, Any]:
    summary = {"model": str(model_path), "structures": str(structures),
               "settings": asdict(settings), "force_unit": "eV/A", "rounds": rounds,
               "final": final, "final_model": rounds[-1]["model_after"] if rounds else None}
    with atomic_output(out / "summary.json", "w") as fh:
        json.dump(summary, fh, indent=2, default=str)
    return summary
