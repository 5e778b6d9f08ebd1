"""ASTEROID (ICML 2023, "Machine Learning Force Fields with Data Cost Aware Training"): train on
many cheap, biased labels and few accurate ones.

Labelled variant (accurate set A, cheap set C):
    1. bias identification: train θ_A on A (from scratch); for every cheap frame
       B(x) = ‖F_θA(x) − f_cheap(x)‖₁ (sum over atoms and components, eV/Å);
    2. bias-aware training from scratch on C with per-frame weights (eq. 2)
       w(x) = exp(−B(x) / (γ · median_C B)),
       i.e. γ is measured in units of the cheap set's median bias, so γ = 1 gives the median
       frame the weight e⁻¹ whatever the molecule's size or the force unit (the paper's raw
       B/γ depends on both);
    3. fine-tuning on A from stage 2's weights (eq. 1, the energy + force loss). The per-element
       reference energies are refitted on A first: levels of theory have unrelated energy zeros.
    γ comes from a grid (default 0.1, 0.5, 1, 2): stages 2–3 run for each value, and the one with
    the lowest stage-3 validation loss (accurate validation frames) is kept.

Unlabeled variant (accurate set A, unlabeled configurations U sampled at temperature T): score
matching on U (`mlff_core.training.score_matching`, sliced by default) from scratch replaces
stages 1–2, then stage 3 fine-tunes on A.

Label budget: one accurate label costs `cost_ratio` cheap ones (measured by labelling a few
cheap frames with both levels, or given); the run's budget in accurate-label equivalents is
|A| + |C| / cost_ratio. Unlabeled configurations cost no labels (their sampling is not counted).

Run directory:
    stage1_bias/             training run on A; model.pt; bias.npz (B per cheap frame)
    stage2_gamma<γ>/         bias-aware run on C, weights.npz (w per cheap frame); or
                             stage2_uniform/ (no bias weights), stage2_score/ (score matching)
    stage3_gamma<γ>/         fine-tuning run on A (or stage3_score/)
    asteroid.json            settings, budget, bias statistics, every stage's validation figures
    model.pt                 the chosen stage 3, with `training.asteroid` in its metadata
Every stage directory keeps a `settings.json` (`mlff_core.stage_cache`): everything that decides
its result (configuration, content digests of its frames, γ, the stages it builds on, digests of
its sample weights or initial weights). A finished stage is reused, and an interrupted one
continued, only by a run with the same settings; with others the run is refused before anything
is written (or, with `redo_changed`, those stages are emptied and run again).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mlff_core.data.frames import Frames
from mlff_core.errors import LevelOfTheoryError, MLFFError
from mlff_core.export.from_run import best_potential, export_run
from mlff_core.export.loading import LoadedModel, load_model
from mlff_core.fileio import atomic_output
from mlff_core.labels.levels import LevelOfTheory, get_level
from mlff_core.labels.timing import label_seconds
from mlff_core.metrics.predict import predict_with_model
from mlff_core.models.potential import Potential
from mlff_core.progress import ProgressFactory, silent_progress
from mlff_core.stage_cache import (
    claim_stage,
    config_settings,
    content_digest,
    verify_stage,
)
from mlff_core.training.graphs import batches, frame_graphs
from mlff_core.training.run import fit_with_progress, prepare_data, read_systems_from_files
from mlff_core.training.score_matching import ScoreMatching
from mlff_core.training.trainer import (
    Trainer,
    TrainingConfig,
    fit_reference_energies,
    initial_potential,
)

if TYPE_CHECKING:
    from mlff_core.distributed.tasks import TaskMap

#: γ grid, in units of the cheap set's median bias.
GAMMA_GRID = (0.1, 0.5, 1.0, 2.0)




@dataclass
class AsteroidSettings:
    """Settings of an ASTEROID run.

    `config` sets the architecture, optimiser, epochs and time budget of stages 1 and 2;
    `bias_epochs` (default: `config.epochs`) sets stage 1's epochs alone, as the accurate set is
    usually much smaller than the cheap one; stage 3 uses `config` with `finetune_epochs`,
    `finetune_learning_rate`, `finetune_minutes`.
    `gammas`: the grid (γ in units of the median bias; one value = fixed). `bias_weights`
    False trains stage 2 with uniform weights and `finetune` False keeps stage 2 as the final
    model (after refitting the reference energies): the paper's ablations. Score matching:
    `temperature` (K) of the unlabeled configurations, `score_method`, `n_projections`,
    `noise` (Å, denoising). `cost_ratio`: accurate/cheap cost per label (None: measured on
    `cost_frames` cheap frames).
    """

    config: TrainingConfig = field(default_factory=TrainingConfig)
    finetune_epochs: int = 100
    finetune_learning_rate: float = 2e-4
    finetune_minutes: float | None = None
    bias_epochs: int | None = None
    gammas: tuple[float, ...] = GAMMA_GRID
    bias_weights: bool = True
    finetune: bool = True
    n_val: int | float = 0.1
    temperature: float | None = None
    score_method: str = "sliced"
    n_projections: int = 1
    noise: float = 0.05
    cost_ratio: float | None = None
    cost_frames: int = 5

    def __post_init__(self) -> None:
        self.gammas = tuple(float(g) for g in self.gammas)
        if not self.gammas or any(not (g > 0.0 and math.isfinite(g)) for g in self.gammas):
            raise MLFFError(f"γ values must be positive and finite, got {self.gammas}")
        if self.cost_ratio is not None and not self.cost_ratio > 0.0:
            raise MLFFError(f"the cost ratio must be positive, got {self.cost_ratio}")
        if self.finetune_epochs < 1:
            raise MLFFError("fine-tuning needs at least one epoch")
        if self.bias_epochs is not None and self.bias_epochs < 1:
            raise MLFFError("stage 1 (bias identification) needs at least one epoch")

    @property
    def candidate_gammas(self) -> list[float | None]:
        """The γ of each stage-2 candidate (None: uniform weights, without bias weights)."""
        return list(self.gammas) if self.bias_weights else [None]


# ------------------------------------------------------------------------------ bias weights
def bias_weights(bias: np.ndarray, gamma: float, scale: float | None = None) -> np.ndarray:
    """[F] ASTEROID's weights exp(−B / (γ · scale)) of frames with biases `bias` [F] (eV/Å);
    `scale` defaults to the median bias."""
    bias = np.asarray(bias, dtype=float)
    scale = float(np.median(bias)) if scale is None else float(scale)
    if not scale > 0.0:
        raise MLFFError("the bias scale must be positive (are the cheap labels identical to "
                        "the accurate model's forces?)")
    return np.exp(-bias / (gamma * scale))


def frame_bias(model: LoadedModel, cheap: Frames) -> np.ndarray:
    """[F] B(x) = ‖F_model(x) − f_cheap(x)‖₁ over all atoms and components, eV/Å."""
    _, forces = predict_with_model(model, cheap)
    return np.abs(forces - cheap.forces).sum(axis=(1, 2))


# ------------------------------------------------------------------------------- label costs
def level_of(frames: Frames) -> LevelOfTheory:
    """The level of theory that labelled `frames` (from its recorded tag)."""
    tags = sorted(set(frames.levels.tolist())) if frames.levels is not None else []
    if len(tags) != 1:
        raise LevelOfTheoryError(f"{frames.source or frames.formula}: frames record "
                                 f"{len(tags) or 'no'} levels of theory; give --cost-ratio")
    tag = tags[0]
    name = "dft:" + tag[4:] if tag.startswith("DFT ") else tag
    try:
        return get_level(name)
    except LevelOfTheoryError:
        raise LevelOfTheoryError(f"{frames.source or frames.formula}: level {tag!r} is not one "
                                 "this package can run; give --cost-ratio") from None


def seconds_per_label(frames: Frames, level: LevelOfTheory) -> float:
    """Median wall time of labelling one of `frames` with `level` once its calculator is set
    up (the first frame is labelled twice: set-up, then timed), s."""
    return float(np.median(label_seconds(frames[[0, *range(frames.n_frames)]], level)[1:]))


def measure_cost_ratio(accurate: Frames, cheap: Frames, n_frames: int = 5) -> dict[str, Any]:
    """Cost of one accurate label over one cheap label, timed on the first cheap frames."""
    accurate_level, cheap_level = level_of(accurate), level_of(cheap)
    sample = cheap[: min(n_frames, cheap.n_frames)]
    accurate_s = seconds_per_label(sample, accurate_level)
    cheap_s = seconds_per_label(sample, cheap_level)
    return {"cost_ratio": accurate_s / cheap_s, "source": "measured",
            "accurate_level": accurate_level.tag, "cheap_level": cheap_level.tag,
            "accurate_s_per_label": accurate_s, "cheap_s_per_label": cheap_s,
            "frames_timed": sample.n_frames}


def label_budget(n_accurate: int, n_cheap: int, cost: dict[str, Any] | None,
                 n_unlabeled: int = 0) -> dict[str, Any]:
    """The run's labels and their cost in accurate-label equivalents."""
    budget: dict[str, Any] = {"accurate_labels": n_accurate, "cheap_labels": n_cheap,
                              "unlabeled_frames": n_unlabeled}
    if cost is not None:
        budget.update(cost)
        budget["accurate_label_equivalents"] = n_accurate + n_cheap / cost["cost_ratio"]
    else:
        budget["accurate_label_equivalents"] = float(n_accurate)
    return budget


# ---------------------------------------------------------------------------- stage helpers
def refit_reference_energies(potential: Potential, frames: Sequence[Frames]) -> np.ndarray:
    """Shift the per-element reference energies so the model's energies fit `frames` (least
    squares on the residual energies, `fit_reference_energies`; the network is untouched).
    Returns the shift [S], eV."""
    dtype = potential.atomic_reference.dtype
    residual_frames = []
    with torch.no_grad():
        for part in frames:
            energies = []
            for batch in batches(frame_graphs(part, potential.cutoff, dtype), 64, False, 0):
                vectors = batch.pos[batch.edge_index[1]] - batch.pos[batch.edge_index[0]] + \
                    batch.shift
                energies.append(potential.batch_energies(batch.z, batch.edge_index, vectors,
                                                         batch.batch, batch.num_graphs))
            model = torch.cat(energies).double().numpy()
            residual_frames.append(part.with_labels(part.energies - model, part.forces,
                                                    "residual"))
    shift = fit_reference_energies(residual_frames, potential.species.tolist())
    potential.atomic_reference.add_(torch.as_tensor(shift, dtype=dtype))
    return shift


def _gamma_name(gamma: float | None) -> str:
    return "uniform" if gamma is None else f"gamma{gamma:g}"


@dataclass
class StageResult:
    """One stage's run: where it is, its best validation loss and force MAE (eV/Å)."""

    name: str
    run_dir: str
    best_epoch: int
    epochs: int
    val_loss: float
    val_force_mae: float
    stop_reason: str
    seconds: float


#: claim_stage with the run's policy (refuse or redo) and hint bound: (stage dir, settings).
Claim = Callable[[Path, dict[str, Any]], bool]


def _run_stage(name: str, make_trainer: Callable[[], Trainer], run_dir: Path,
               progress: ProgressFactory, record: dict[str, Any], claim: Claim) -> StageResult:
    """Train one stage, or read its result when an earlier run with the same settings
    (`record`) finished it (stage.json); an interrupted stage continues from its checkpoint.
    A stage made with other settings is refused (or redone) by `claim`."""
    claim(run_dir, record)
    done = run_dir / "stage.json"
    if done.exists():
        return StageResult(**json.loads(done.read_text()))
    started = time.monotonic()
    trainer = make_trainer()
    if trainer.checkpoint_path.exists():
        trainer.resume()
    fit_with_progress(trainer, name, progress)
    best = torch.load(trainer.best_path, map_location="cpu", weights_only=True)
    result = StageResult(name, str(run_dir), trainer.best_epoch, trainer.epoch,
                         trainer.best_val_loss, float(best["val_metrics"]["force_mae"]),
                         trainer.stop_reason, time.monotonic() - started)
    with atomic_output(done, "w") as fh:
        json.dump(asdict(result), fh, indent=2)
    return result


# ---------------------------------------------------------------------------- stage records
def _bias_config(settings: AsteroidSettings) -> TrainingConfig:
    """Stage 1's configuration: `config`, with `bias_epochs` when given."""
    if settings.bias_epochs is None:
        return settings.config
    return replace(settings.config, epochs=settings.bias_epochs)


def _finetune_config(settings: AsteroidSettings) -> TrainingConfig:
    config = replace(settings.config, epochs=settings.finetune_epochs,
                     learning_rate=settings.finetune_learning_rate,
                     max_minutes=settings.finetune_minutes)
    if not settings.finetune:  # stage 2's weights saved as a one-epoch run at learning rate 0
        config = replace(config, epochs=1, learning_rate=0.0, max_minutes=None)
    return config


def _stage_records(sets: _Sets, settings: AsteroidSettings, labelled: bool
                   ) -> dict[str, dict[str, Any]]:
    """Every stage's settings record by directory name, known before any stage runs: the
    configuration, content digests of the frames (so of the files and the split), γ and the
    records of the stages it builds on. Inputs computed by an earlier stage (sample weights,
    initial weights) are added under "inputs" when the stage starts."""
    config = config_settings(settings.config)
    accurate = {"accurate_train": content_digest(sets.acc_train[0]),
                "accurate_val": content_digest(sets.acc_val[0])}
    records: dict[str, dict[str, Any]] = {}
    stage2: dict[str, dict[str, Any]] = {}
    if labelled:
        stage1 = {"stage": "bias identification",
                  "config": config_settings(_bias_config(settings)), "data": accurate}
        records["stage1_bias"] = stage1
        cheap = {"cheap_train": content_digest(sets.extra_train),
                 "cheap_val": content_digest(sets.extra_val)}
        for gamma in settings.candidate_gammas:
            record: dict[str, Any] = {"stage": "bias-aware training", "config": config,
                                      "data": cheap, "gamma": gamma}
            if gamma is None:
                record["weights"] = "uniform"
            else:
                record.update(weights="exp(-B / (gamma * median B)), B from stage 1",
                              stage1=stage1)
            stage2[_gamma_name(gamma)] = records[f"stage2_{_gamma_name(gamma)}"] = record
    else:
        objective = ScoreMatching(settings.temperature, settings.score_method,
                                  settings.n_projections, noise=settings.noise)
        unused = {"sliced": ("noise_A",),  # the parameters the method does not read
                  "denoising": ("n_projections", "projection", "variance_reduced")}
        described = {k: v for k, v in objective.describe().items()
                     if k not in unused.get(objective.method, ())}
        stage2["score"] = records["stage2_score"] = {
            "stage": "score matching", "config": config, "objective": described,
            "data": {"unlabeled_train": content_digest(sets.extra_train),
                     "unlabeled_val": content_digest(sets.extra_val),
                     "accurate_train": accurate["accurate_train"]}}
    for name, record in stage2.items():
        records[f"stage3_{name}"] = {
            "stage": "fine-tuning" if settings.finetune else "no fine-tuning",
            "config": config_settings(_finetune_config(settings)), "data": accurate,
            "stage2": record}
    return records


def _with_inputs(record: dict[str, Any], **inputs: Any) -> dict[str, Any]:
    """`record` with digests (float32 precision) of inputs an earlier stage computed."""
    return {**record, "inputs": {key: content_digest(value, rounded=True)
                                 for key, value in inputs.items()}}


# ------------------------------------------------------------------------------------ driver
@dataclass
class _Sets:
    """The frames of a run: accurate train/val (one system) and the cheap or unlabeled ones."""

    acc_train: list[Frames]
    acc_val: list[Frames]
    acc_provenance: dict[str, Any]
    extra_train: Frames
    extra_val: Frames

    @property
    def n_accurate(self) -> int:
        return self.acc_train[0].n_frames + self.acc_val[0].n_frames

    @property
    def n_extra(self) -> int:
        return self.extra_train.n_frames + self.extra_val.n_frames


def _read_sets(accurate: Sequence[str | os.PathLike], extra_files: Sequence[str | os.PathLike],
               labelled: bool, settings: AsteroidSettings) -> _Sets:
    seed = settings.config.seed
    acc_train, acc_val, acc_provenance = prepare_data(accurate, (), None, settings.n_val, seed)
    if len(acc_train) != 1:
        raise MLFFError("ASTEROID here trains one system at a time; the accurate files hold "
                        f"{len(acc_train)} different systems")
    extra = read_systems_from_files(extra_files)
    if len(extra) != 1 or not np.array_equal(extra[0].atomic_numbers,
                                             acc_train[0].atomic_numbers):
        raise MLFFError("the cheap/unlabeled frames must hold the accurate set's system "
                        "(same atoms in the same order)")
    frames = extra[0]
    if labelled and not frames.has_labels:
        raise MLFFError(f"{', '.join(map(str, extra_files))}: cheap frames need energies and "
                        "forces")
    if not labelled:  # whatever labels the files carry are not used
        frames = Frames(positions=frames.positions, atomic_numbers=frames.atomic_numbers,
                        cell=frames.cell, pbc=frames.pbc, masses=frames.masses,
                        source=frames.source)
    n_val = settings.n_val if not isinstance(settings.n_val, float) else \
        max(1, round(settings.n_val * frames.n_frames))
    order = np.random.default_rng(seed).permutation(frames.n_frames)
    return _Sets(acc_train, acc_val, acc_provenance, frames[np.sort(order[n_val:])],
                 frames[np.sort(order[:n_val])])


def _bias_aware_stages(sets: _Sets, cheap: Sequence[str | os.PathLike], run_dir: Path,
                       settings: AsteroidSettings, progress: ProgressFactory,
                       summary: dict[str, Any], records: dict[str, dict[str, Any]],
                       claim: Claim, task_map: TaskMap | None = None) -> list[dict[str, Any]]:
    """Stage 1, then stages 2 and 3 of each γ (`task_map`: as tasks, e.g. on a Dask cluster;
    default: one γ after the other here); returns the candidates, stage 3 done."""
    config = settings.config
    stage1_dir = run_dir / "stage1_bias"
    torch.manual_seed(config.seed)
    stage1 = _run_stage("stage 1 · bias identification (accurate labels)",
                        partial(Trainer, _bias_config(settings), sets.acc_train, sets.acc_val,
                                stage1_dir,
                                provenance=sets.acc_provenance),
                        stage1_dir, progress, records["stage1_bias"], claim)
    model_path = stage1_dir / "model.pt"
    if not model_path.exists():  # a reused stage keeps its files untouched
        export_run(stage1_dir, model_path, clusters=False)
    stage1_model = load_model(model_path)
    bias_train = frame_bias(stage1_model, sets.extra_train)
    bias_val = frame_bias(stage1_model, sets.extra_val)
    scale = float(np.median(bias_train))
    if not (stage1_dir / "bias.npz").exists():
        with atomic_output(stage1_dir / "bias.npz") as fh:
            np.savez(fh, train=bias_train, val=bias_val, median=scale)
    summary["stages"]["stage1"] = asdict(stage1)
    summary["bias"] = {"unit": "eV/A (L1 over all components)", "median": scale,
                       "mean": float(bias_train.mean()), "max": float(bias_train.max()),
                       "median_per_component": scale / (3 * sets.extra_train.atomic_numbers.size)}
    calls = [(gamma, sets, [str(p) for p in cheap], run_dir, settings, (bias_train, bias_val),
              scale, records, claim) for gamma in settings.candidate_gammas]
    if task_map is None:
        candidates = [_gamma_candidate(*call, progress=progress) for call in calls]
    else:
        with progress(f"stages 2–3 · {len(calls)} γ candidates as tasks", len(calls)) as advance:
            candidates = task_map(_gamma_candidate, calls, None, advance)
    for candidate in candidates:
        summary["stages"][f"stage2_{candidate['name']}"] = candidate.pop("stage2_summary")
    return candidates


def _gamma_candidate(gamma: float | None, sets: _Sets, cheap: Sequence[str], run_dir: Path,
                     settings: AsteroidSettings, bias: tuple[np.ndarray, np.ndarray],
                     scale: float, records: dict[str, dict[str, Any]], claim: Claim,
                     progress: ProgressFactory = silent_progress) -> dict[str, Any]:
    """Stage 2 (bias-aware training on the cheap labels with weights exp(−B / (γ · scale)),
    uniform for γ None) and stage 3 of one γ: a candidate, with its stage-2 summary."""
    name = _gamma_name(gamma)
    bias_train, bias_val = bias
    if gamma is None:
        w_train, w_val = np.ones(sets.extra_train.n_frames), np.ones(sets.extra_val.n_frames)
    else:
        w_train = bias_weights(bias_train, gamma, scale)
        w_val = bias_weights(bias_val, gamma, scale)
    stage2_dir = run_dir / f"stage2_{name}"
    provenance = {"files": list(cheap), "asteroid_stage": 2, "gamma": gamma,
                  "level_of_theory": sorted(set(sets.extra_train.levels.tolist()))}
    torch.manual_seed(settings.config.seed)  # from scratch: the same initial weights for every γ
    stage2 = _run_stage(f"stage 2 · bias-aware training on cheap labels ({name})",
                        partial(Trainer, settings.config, [sets.extra_train], [sets.extra_val],
                                stage2_dir, sample_weights=[w_train],
                                val_sample_weights=[w_val], provenance=provenance),
                        stage2_dir, progress, records[f"stage2_{name}"], claim)
    if not (stage2_dir / "weights.npz").exists():
        with atomic_output(stage2_dir / "weights.npz") as fh:
            np.savez(fh, train=w_train, val=w_val)
    effective = float(w_train.sum() ** 2 / (w_train ** 2).sum())
    candidate: dict[str, Any] = {"name": name, "gamma": gamma, "stage2": stage2_dir,
                                 "stage2_summary": {
                                     **asdict(stage2), "gamma": gamma,
                                     "weights": {"mean": float(w_train.mean()),
                                                 "min": float(w_train.min()),
                                                 "effective_frames": effective}}}
    candidate["stage3"] = _finetune_stage(candidate, sets, run_dir, settings, progress, records,
                                          claim)
    return candidate


def _score_stage(sets: _Sets, unlabeled: Sequence[str | os.PathLike], run_dir: Path,
                 settings: AsteroidSettings, progress: ProgressFactory,
                 summary: dict[str, Any], records: dict[str, dict[str, Any]],
                 claim: Claim) -> list[dict[str, Any]]:
    """Score matching from scratch on the unlabeled configurations (replaces stages 1–2)."""
    config = settings.config
    objective = ScoreMatching(settings.temperature, settings.score_method,
                              settings.n_projections, noise=settings.noise)
    torch.manual_seed(config.seed)
    species = sorted({int(z) for z in sets.acc_train[0].atomic_numbers})
    start = initial_potential(config, species, sets.acc_train)
    provenance = {"files": [str(p) for p in unlabeled], "asteroid_stage": 2,
                  "score_matching": objective.describe()}
    stage2_dir = run_dir / "stage2_score"
    stage2 = _run_stage(f"stage 2 · {objective.name} on unlabeled configurations",
                        partial(Trainer, config, [sets.extra_train], [sets.extra_val],
                                stage2_dir, init_potential=start, objective=objective,
                                provenance=provenance),
                        stage2_dir, progress,
                        _with_inputs(records["stage2_score"],
                                     initial_weights=start.state_dict()), claim)
    summary["stages"]["stage2_score"] = {**asdict(stage2), **objective.describe()}
    return [{"name": "score", "gamma": None, "stage2": stage2_dir}]


def _finetune_stage(candidate: dict[str, Any], sets: _Sets, run_dir: Path,
                    settings: AsteroidSettings, progress: ProgressFactory,
                    records: dict[str, dict[str, Any]], claim: Claim) -> StageResult:
    """Stage 3 from a stage-2 run: reference energies refitted, then fine-tuned on A."""
    config = _finetune_config(settings)
    stage3_dir = run_dir / f"stage3_{candidate['name']}"
    start, _ = best_potential(candidate["stage2"])
    record = _with_inputs(records[stage3_dir.name], initial_weights=start.state_dict())
    shift = refit_reference_energies(start, sets.acc_train)
    provenance = {**sets.acc_provenance, "asteroid_stage": 3,
                  "init_run": str(candidate["stage2"]), "reference_shift": shift.tolist()}
    if not settings.finetune:
        claim(stage3_dir, record)
        return _evaluate_only(config, sets.acc_train, sets.acc_val, stage3_dir, start,
                              provenance)
    torch.manual_seed(config.seed)
    return _run_stage(f"stage 3 · fine-tuning on accurate labels ({candidate['name']})",
                      partial(Trainer, config, sets.acc_train, sets.acc_val, stage3_dir,
                              init_potential=start, provenance=provenance),
                      stage3_dir, progress, record, claim)


def asteroid(accurate: Sequence[str | os.PathLike], run_dir: str | os.PathLike,
             settings: AsteroidSettings, *, cheap: Sequence[str | os.PathLike] = (),
             unlabeled: Sequence[str | os.PathLike] = (),
             progress: ProgressFactory = silent_progress,
             redo_changed: bool = False, task_map: TaskMap | None = None) -> dict[str, Any]:
    """Run ASTEROID; returns the summary also written to `run_dir/asteroid.json`.

    `task_map` runs stages 2 and 3 of each γ of the grid as independent tasks (e.g.
    `mlff_core.distributed.cluster_map` on a Dask cluster); default: one γ after the other.

    Exactly one of `cheap` (labelled, biased) and `unlabeled` (configurations sampled at
    `settings.temperature`) is given. A run directory left by an earlier run is continued
    stage by stage: a stage made with the same settings is kept (finished) or continued
    (interrupted). A stage made with other settings (configuration, data content, γ, an earlier
    stage's result) raises a `TrainingError` naming its directory and the differences, before
    anything is written; with `redo_changed` such stages are emptied and run again instead.
    Bad input raises before anything is written.
    """
    if bool(cheap) == bool(unlabeled):
        raise MLFFError("give either cheap labelled frames or unlabeled configurations "
                        "(not both, not neither)")
    if unlabeled and settings.temperature is None:
        raise MLFFError("score matching on unlabeled configurations needs their sampling "
                        "temperature (--temperature)")
    run_dir = Path(run_dir)
    sets = _read_sets(accurate, cheap or unlabeled, bool(cheap), settings)
    if cheap:
        cost = {"cost_ratio": settings.cost_ratio, "source": "given"} \
            if settings.cost_ratio is not None else \
            measure_cost_ratio(sets.acc_train[0], sets.extra_train, settings.cost_frames)
        budget = label_budget(sets.n_accurate, sets.n_extra, cost)
    else:
        budget = label_budget(sets.n_accurate, 0, None, sets.n_extra)
    records = _stage_records(sets, settings, bool(cheap))
    hint = f"use another output directory or delete {run_dir}"
    if not redo_changed:  # every stage whose settings are known now, before anything runs
        for name, record in records.items():
            verify_stage(run_dir / name, record, hint=hint, only_given=True)
    claim = partial(claim_stage, redo=redo_changed, hint=hint)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "variant": "cheap labels" if cheap else "score matching",
        "accurate_files": [str(p) for p in accurate],
        "extra_files": [str(p) for p in (cheap or unlabeled)],
        "frames": {"accurate_train": sets.acc_train[0].n_frames,
                   "accurate_val": sets.acc_val[0].n_frames,
                   "extra_train": sets.extra_train.n_frames,
                   "extra_val": sets.extra_val.n_frames},
        "settings": {k: v for k, v in asdict(settings).items() if k != "config"},
        "config": asdict(settings.config),
        "budget": budget,
        "stages": {},
    }
    if cheap:
        candidates = _bias_aware_stages(sets, cheap, run_dir, settings, progress, summary,
                                        records, claim, task_map)
    else:
        candidates = _score_stage(sets, unlabeled, run_dir, settings, progress, summary,
                                  records, claim)
        for candidate in candidates:
            candidate["stage3"] = _finetune_stage(candidate, sets, run_dir, settings, progress,
                                                  records, claim)
    for candidate in candidates:
        summary["stages"][f"stage3_{candidate['name']}"] = asdict(candidate["stage3"])

    chosen = min(candidates, key=lambda c: c["stage3"].val_loss)
    summary["gamma"] = chosen["gamma"]
    summary["chosen"] = chosen["name"]
    summary["gamma_selection"] = {c["name"]: c["stage3"].val_loss for c in candidates}
    record = {"variant": summary["variant"], "gamma": chosen["gamma"],
              "gamma_unit": "median bias of the cheap set",
              "gamma_selection": summary["gamma_selection"], "budget": budget,
              "stages": {key: {k: v for k, v in stage.items() if k != "run_dir"}
                         for key, stage in summary["stages"].items()
                         if key in ("stage1", f"stage2_{chosen['name']}",
                                    f"stage3_{chosen['name']}")}}
    output = export_run(chosen["stage3"].run_dir, run_dir / "model.pt",
                        training_extra={"asteroid": record})
    summary["model"] = str(output)
    with atomic_output(run_dir / "asteroid.json", "w") as fh:
        json.dump(summary, fh, indent=2, default=str)
    return summary


def _evaluate_only(config: TrainingConfig, train: Sequence[Frames], val: Sequence[Frames],
                   run_dir: Path, potential: Potential, provenance: dict[str, Any]
                   ) -> StageResult:
    """No fine-tuning (ablation): stage 2's weights with refitted reference energies, saved as
    a one-epoch run at learning rate 0 (`config`, see `_finetune_config`) so it exports like
    any other."""
    trainer = Trainer(config, train, val, run_dir, init_potential=potential,
                      provenance={**provenance, "finetuned": False})
    started = time.monotonic()
    if not trainer.best_path.exists():
        trainer.fit()
    best = torch.load(trainer.best_path, map_location="cpu", weights_only=True)
    return StageResult("stage 3 · skipped (no fine-tuning)", str(run_dir), 0, 0,
                       float(best["val_metrics"]["loss"]), float(best["val_metrics"]["force_mae"]),
                       "no fine-tuning", time.monotonic() - started)
