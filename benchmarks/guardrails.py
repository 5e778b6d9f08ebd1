"""Do the monitors predict failure? Issue 11's benchmark: each signal against the force error and
against collapse, on frames the model was not trained on.

    python benchmarks/guardrails.py [--molecules aspirin ethanol] [--seeds 0 1 2]
                                    [--committee 4] [--minutes 2] [--json out.json]

Per molecule:
- data (GFN2-xTB Langevin MD, 0.5 fs, a frame every 10 steps): the training run at 500 K
  (`--train-frames`, 10 % validation split off it), `--calibration-runs` independent
  calibration runs at 500 K (pooled), and held-out
  runs at 300, 500, 800 and 1200 K (`--test-frames` each; other seeds: independent runs);
- per seed s: a committee of `--committee` PaiNN members (`mlff train --committee`, seeds
  100 s + k, `--minutes` each, one split). Its member 0 is "the model": the single-model signals
  watch it, and its error is the error to predict. Exported three ways: member 0 with the
  paper's radius (max), member 0 calibrated on the pooled calibration runs (5 %), and the
  committee;
- the model's own MD (ASE, Langevin, 0.5 fs, frames every 10 steps): one healthy run at 500 K
  (`--md-steps`), and `--collapse-runs` runs at `--collapse-temperature` that end at the first
  frame with a bond `--threshold` Å off its start length (or at `--collapse-steps`); every frame
  labelled with GFN2-xTB (frames xTB cannot converge are dropped and counted).

Signals per frame: ratio (max) = distance to the nearest training cluster ÷ its radius;
exploration (calibrated) = the monitor score of the file exported with `--radius calibrated`
(radii and bond level scaled by one conformal factor); bond score = the model file's local
score (max over bonds of |l − mean_b| / std_b ÷ 1.25 × the largest training value,
`mlff_core.metrics.bond_ranges`); exploration = the larger of ratio (max) and bond score,
what the monitors flag by default; committee = force deviation
max_i sqrt((1/M) Σ_k |F_i^k − F̄_i|²); max |F̂| of the model (the naive baseline).
Measures, per seed, then mean ± std over seeds:
- flag rate on held-out 500 K frames, on the model's healthy 500 K MD, and per temperature.
  The ratios, the bond score and exploration flag above 1 (their rules); the committee and
  max |F̂| at the level that flags 5 % of the calibration frames (the same conformal quantile as
  `--radius calibrated`);
- ROC AUC for "frame F_mae above twice the median F_mae of the held-out 500 K frames" over
  every labelled frame (held-out runs, healthy MD, collapse runs before their collapse);
- ROC AUC for "within the last `--pre-collapse` steps before a collapse" over the collapse
  runs' frames before their collapse and the healthy MD frames;
- cost per frame ÷ one model call (energy + forces of member 0), medians of timed calls.


Stages are cached under `--cache` (data by their settings, each seed's models and runs in their
own directory); a killed run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from timing import median_seconds  # noqa: E402

from mlff_core import units  # noqa: E402
from mlff_core.data.formats import read_frames, write_frames  # noqa: E402
from mlff_core.data.frames import Frames  # noqa: E402
from mlff_core.data.generate import LangevinSampling, generate_frames  # noqa: E402
from mlff_core.data.molecules import covalent_bonds, named_molecule  # noqa: E402
from mlff_core.errors import LevelOfTheoryError  # noqa: E402
from mlff_core.export import load_model  # noqa: E402
from mlff_core.labels import get_level  # noqa: E402
from mlff_core.metrics.predict import predict_with_model  # noqa: E402
from mlff_core.metrics.signals import frame_force_mae  # noqa: E402
from mlff_core.monitors import (  # noqa: E402
    CollapseDetector,
    DeviationDetector,
    ExplorationDetector,
)
from mlff_core.progress import progress_bar  # noqa: E402

CACHE = Path(__file__).parent / ".cache" / "guardrails"
FIGURES = Path(__file__).parent / "figures"
MLFF = Path(sys.executable).with_name("mlff")
TEMPERATURES = (300, 500, 800, 1200)
SIGNALS = ("exploration", "ratio_max", "ratio_calibrated", "bond_score", "committee",
           "max_force")
FLAG_ABOVE_ONE = ("exploration", "ratio_max", "ratio_calibrated", "bond_score")
KCAL = 1.0 / units.KCAL_PER_MOL  # eV/Å → kcal/mol/Å


def gfn2_run(molecule: str, temperature: float, n_frames: int, seed: int) -> Frames:
    """A GFN2-xTB Langevin run (cached): `n_frames` frames, one every 10 steps of 0.5 fs."""
    path = CACHE / "data" / f"{molecule}_{temperature:g}K_{n_frames}_seed{seed}.npz"
    if not path.exists():
        sampling = LangevinSampling(temperature=temperature, timestep=0.5, stride=10,
                                    equilibration=200, seed=seed)
        with progress_bar(f"{molecule} GFN2-xTB {temperature:g} K",
                          sampling.total_steps(n_frames)) as advance:
            frames = generate_frames(named_molecule(molecule), get_level("gfn2"), n_frames,
                                     sampling, advance=advance)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_frames(frames, path)
    return read_frames(path)


def mlff(*args) -> None:
    result = subprocess.run([str(MLFF), *map(str, args)], text=True)
    if result.returncode != 0:
        sys.exit(f"mlff {' '.join(map(str, args[:2]))} failed")


def _has_bond_ranges(model: Path) -> bool:
    """Whether a cached model file carries the local bond score (files exported before it do
    not: export them again)."""
    if not model.exists():
        return False
    systems = load_model(model).metadata["exploration"]["systems"]
    # max_level: written since calibration scales the bond level too
    return all("max_level" in (system.get("bond_ranges") or {}) for system in systems)


def train_models(args, molecule: str, seed: int, data: Path, calibration: list[Path]) -> dict:
    """The committee run of one seed and its three model files (cached)."""
    root = CACHE / molecule / f"seed{seed}"
    run = root / "committee"
    runs = len(calibration)
    files = {"single": root / "single.pt",
             "calibrated": root / ("single_calibrated.pt" if runs == 1 else
                                   f"single_calibrated_{runs}runs.pt"),
             "committee": root / "committee.pt"}
    record = run / "committee.json"
    if not (record.exists() and all(json.loads(record.read_text())["finished"])):
        mlff("train", "--data", data, "--model", "painn", "--hidden", args.hidden,
             "--dtype", "float32", "--committee", args.committee, "--seed", 100 * seed,
             "--max-minutes", args.minutes, "--epochs", 10000, "-o", run,
             *(["--resume"] if record.exists() else []))
    if not files["committee"].exists() or not _has_bond_ranges(files["single"]):
        mlff("export", run / "member-0", "-o", files["single"], "--overwrite")
        mlff("export", run, "-o", files["committee"], "--overwrite")
    if not _has_bond_ranges(files["calibrated"]):
        pooled = [item for path in calibration for item in ("--calibration-data", path)]
        mlff("export", run / "member-0", "-o", files["calibrated"], "--radius", "calibrated",
             "--false-flag-rate", args.false_flag_rate, *pooled, "--overwrite")
    return files


def model_md(model: Path, start: Frames, temperature: float, steps: int, seed: int,
             threshold: float, stop_on_collapse: bool) -> tuple[Frames, int | None]:
    """The model's own Langevin MD in ASE (0.5 fs, 1/ps): frames every 10 steps and the step of
    the first collapsed frame (None: none), the run ending there when `stop_on_collapse`."""
    from ase import units as ase_units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta

    from ase_bridge import MLFFCalculator

    atoms = start.to_atoms(0)
    atoms.calc = MLFFCalculator(model)
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    atoms.set_constraint(FixCom())
    dynamics = Langevin(atoms, timestep=0.5 * ase_units.fs, temperature_K=temperature,
                        friction=1.0 / (1000.0 * ase_units.fs), fixcm=False, rng=rng)
    detector = CollapseDetector.from_atoms(atoms, threshold)
    positions, collapse = [], None
    for step in range(0, steps + 1, 10):
        if step:
            try:
                dynamics.run(10)
            except Exception:  # NaN forces: a collapse between two frames
                collapse = step
                break
        if not np.isfinite(atoms.positions).all():
            collapse = step
            break
        positions.append(atoms.positions.copy())
        if detector.check(atoms.positions).collapsed:
            collapse = step
            if stop_on_collapse:
                break
    frames = Frames(positions=np.array(positions), atomic_numbers=start.atomic_numbers)
    frames.provenance = dict(start.provenance)
    return frames, collapse


def gfn2_labels(frames: Frames, description: str) -> tuple[Frames, np.ndarray]:
    """The frames labelled with GFN2-xTB, and a mask of the frames it could label."""
    level = get_level("gfn2")
    system = frames.provenance.get("system", {})
    calculator = level.calculator(smiles=system.get("smiles"), charge=int(system.get("charge", 0)))
    energies = np.full(frames.n_frames, np.nan)
    forces = np.full_like(frames.positions, np.nan)
    with progress_bar(description, frames.n_frames) as advance:
        for i in range(frames.n_frames):
            atoms = frames.to_atoms(i)
            atoms.calc = calculator
            try:
                energies[i], forces[i] = atoms.get_potential_energy(), atoms.get_forces()
            except (LevelOfTheoryError, Exception):  # SCF not converged far from equilibrium
                pass
            advance(1)
    labelled = np.isfinite(energies) & np.isfinite(forces).all(axis=(1, 2))
    return frames.with_labels(np.where(labelled, energies, 0.0),
                              np.where(labelled[:, None, None], forces, 0.0), "GFN2-xTB"), labelled


def model_runs(args, molecule: str, seed: int, model: Path, start: Frames) -> dict:
    """The model's healthy 500 K run and its collapse runs, labelled (cached as npz)."""
    path = CACHE / molecule / f"seed{seed}" / "md_frames.npz"
    if path.exists():
        stored = np.load(path)
        return {key: stored[key] for key in stored.files}
    runs = {"healthy": model_md(model, start, 500.0, args.md_steps, seed, args.threshold,
                                False)}
    for r in range(args.collapse_runs):
        runs[f"collapse{r}"] = model_md(model, start, args.collapse_temperature,
                                        args.collapse_steps, 1000 * seed + r, args.threshold,
                                        True)
    out: dict[str, np.ndarray] = {}
    for name, (frames, collapse) in runs.items():
        labelled, ok = gfn2_labels(frames, f"{molecule} seed {seed}: GFN2-xTB labels, {name}")
        out[f"{name}_positions"] = labelled.positions
        out[f"{name}_forces"] = labelled.forces
        out[f"{name}_labelled"] = ok
        out[f"{name}_collapse"] = np.array(-1 if collapse is None else collapse)
    np.savez(path, **out)
    return out


LOCAL_KINDS = ("stretch", "twist", "proton")


def _side(bonds: np.ndarray, n_atoms: int, a: int, b: int) -> list[int]:
    """Atoms on b's side of bond a-b (connected to b without crossing it); contains a when the
    bond is in a ring."""
    neighbours: dict[int, set[int]] = {k: set() for k in range(n_atoms)}
    for i, j in bonds:
        if {int(i), int(j)} != {a, b}:
            neighbours[int(i)].add(int(j))
            neighbours[int(j)].add(int(i))
    seen, frontier = {b}, [b]
    while frontier:
        frontier = [m for k in frontier for m in neighbours[k] if m not in seen]
        seen.update(frontier)
    return sorted(seen)


def perturbed(frames: Frames, kind: str, seed: int) -> Frames | None:
    """Local failures planted in held-out frames, one per frame (None: the molecule has none
    of this kind): 'stretch' lengthens a random X-H bond by 0.3 Å; 'twist' turns the smaller
    side of a random acyclic single bond between heavy atoms by 90°; 'proton' moves an H bonded
    to O or N to 1.0 Å from the nearest other O or N (a proton transfer)."""
    rng = np.random.default_rng(seed)
    z = frames.atomic_numbers
    bonds = covalent_bonds(frames.to_atoms(0))
    n = len(z)
    if kind == "stretch":
        choices = [(int(i), int(j)) if z[i] == 1 else (int(j), int(i))
                   for i, j in bonds if (z[i] == 1) != (z[j] == 1)]
    elif kind == "twist":
        choices = []
        for i, j in bonds:
            if z[i] == 1 or z[j] == 1:
                continue
            sides = [_side(bonds, n, int(i), int(j)), _side(bonds, n, int(j), int(i))]
            if int(i) in sides[0]:  # in a ring
                continue
            small = min(sides, key=len)
            if len(small) > 1:
                pivot = int(j) if small is sides[0] else int(i)
                anchor = int(i) if pivot == int(j) else int(j)
                choices.append((anchor, pivot, small))
    else:
        choices = [(int(h), int(x), int(y)) for h, x in
                   [(i, j) if z[i] == 1 else (j, i) for i, j in bonds if 1 in (z[i], z[j])]
                   if z[x] in (7, 8) for y in range(n) if y != x and z[y] in (7, 8)]
    if not choices:
        return None
    out = frames.positions.copy()
    for p in out:  # views: changed in place
        choice = choices[rng.integers(len(choices))]
        if kind == "stretch":
            h, x = choice
            u = p[h] - p[x]
            p[h] = p[x] + u * (1.0 + 0.3 / np.linalg.norm(u))
        elif kind == "twist":
            anchor, pivot, side = choice
            axis = (p[pivot] - p[anchor]) / np.linalg.norm(p[pivot] - p[anchor])
            for k in side:
                v = p[k] - p[pivot]
                # Rodrigues, 90°: v cos + (axis × v) sin + axis (axis·v)(1 − cos)
                p[k] = p[pivot] + np.cross(axis, v) + axis * axis.dot(v)
        else:
            h, x, _ = choice
            acceptors = [c for c in choices if c[0] == h and c[1] == x]
            y = min((c[2] for c in acceptors), key=lambda k: np.linalg.norm(p[k] - p[h]))
            u = p[h] - p[y]
            p[h] = p[y] + u / np.linalg.norm(u)
    moved = Frames(positions=out, atomic_numbers=z)
    moved.provenance = dict(frames.provenance)
    return moved


def frame_signals(files: dict, frames: Frames) -> dict[str, np.ndarray]:
    """Every signal [F] and the model's and the committee's per-frame F_mae [F] (eV/Å)."""
    single, committee = load_model(files["single"]), load_model(files["committee"])
    ratio_max = ExplorationDetector(single)
    ratio_cal = ExplorationDetector(load_model(files["calibrated"]))
    deviation = DeviationDetector(committee, 1.0)
    _, predicted = predict_with_model(single, frames)
    _, mean_predicted = predict_with_model(committee, frames)
    z = frames.atomic_numbers
    out = {name: np.empty(frames.n_frames) for name in SIGNALS}
    for f, positions in enumerate(frames.positions):
        check = ratio_max.check(positions, z)
        out["ratio_max"][f], out["bond_score"][f] = check.ratio, check.bond_score
        out["exploration"][f] = check.score
        # the calibrated file's monitor score: radii and bond level scaled by one factor
        out["ratio_calibrated"][f] = ratio_cal.check(positions, z).score
        out["committee"][f] = deviation.check(positions, z).deviation
    out["max_force"] = np.linalg.norm(predicted, axis=2).max(axis=1)
    out["error"] = frame_force_mae(predicted, frames.forces)
    out["committee_error"] = frame_force_mae(mean_predicted, frames.forces)
    return out


def signal_costs(files: dict, frame: np.ndarray, z: np.ndarray) -> dict:
    """Seconds per frame of each signal ÷ one model call (energy + forces of the model)."""
    single = load_model(files["single"])
    detectors = {"ratio_max": ExplorationDetector(single),
                 "committee": DeviationDetector(load_model(files["committee"]), 1.0)}
    positions = torch.tensor(frame)
    numbers = torch.tensor(z)
    no_cell, no_pbc = torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.bool)

    def model_call():
        x = positions.clone().requires_grad_(True)
        torch.autograd.grad(single.module(x, numbers, no_cell, no_pbc), x)

    call = median_seconds(model_call, 30, 5)
    explore = median_seconds(lambda: detectors["ratio_max"].check(frame, z), 30, 5) / call
    return {"model_call_ms": 1000 * call,
            "exploration": explore,  # one explore() call gives the ratio and the bond score
            "ratio_max": explore,
            "ratio_calibrated": None,  # the same call
            "bond_score": None,  # the same call
            "committee": median_seconds(lambda: detectors["committee"].check(frame, z), 30, 5)
            / call,
            "max_force": 0.0}  # the forces of the step itself


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    keep = np.isfinite(score)
    positive, score = positive[keep], score[keep]
    if not 0 < positive.sum() < len(positive):
        return None
    return float(roc_auc_score(positive, score))


def conformal_level(scores: np.ndarray, rate: float) -> float:
    """The ⌈(n+1)(1−rate)⌉-th smallest score: flags at most `rate` of frames like these."""
    ordered = np.sort(scores[np.isfinite(scores)])
    k = int(np.ceil((len(ordered) + 1) * (1 - rate)))
    return float(ordered[min(k, len(ordered)) - 1])


def evaluate_seed(args, molecule: str, seed: int, sets: dict[str, Frames]) -> dict:
    files = train_models(args, molecule, seed, sets["train_path"], sets["calibration_path"])
    train = sets["train"]
    start = train[[0]]
    runs = model_runs(args, molecule, seed, files["single"], start)
    z = train.atomic_numbers
    scored: dict[str, dict] = {}
    with progress_bar(f"{molecule} seed {seed}: signals",
                      3 + len(TEMPERATURES) + args.collapse_runs) as advance:
        scored["calibration"] = frame_signals(files, sets["calibration"])
        advance(1)
        for t in TEMPERATURES:
            scored[f"heldout_{t}K"] = frame_signals(files, sets[f"test_{t}"])
            advance(1)
        for name in ["healthy"] + [f"collapse{r}" for r in range(args.collapse_runs)]:
            ok = runs[f"{name}_labelled"]
            frames = Frames(positions=runs[f"{name}_positions"][ok], atomic_numbers=z,
                            forces=runs[f"{name}_forces"][ok],
                            energies=np.zeros(int(ok.sum())))
            signals = frame_signals(files, frames)
            steps = 10 * np.flatnonzero(ok)
            collapse = int(runs[f"{name}_collapse"])
            signals["steps"], signals["collapse"] = steps, collapse
            signals["unlabelled"] = int((~ok).sum())
            scored[name] = signals
            advance(1)
        advance(1)
    # the levels: ratios flag above 1, the others at the calibration run's conformal quantile
    levels = dict.fromkeys(FLAG_ABOVE_ONE, 1.0)
    for name in ("committee", "max_force"):
        levels[name] = conformal_level(scored["calibration"][name], args.false_flag_rate)
    flag_rates = {name: {f"{t}K": float(np.mean(scored[f"heldout_{t}K"][name] > levels[name]))
                         for t in TEMPERATURES} for name in SIGNALS}
    for name in SIGNALS:
        flag_rates[name]["healthy_md"] = float(np.mean(scored["healthy"][name] > levels[name]))
    # high error: above twice the held-out 500 K median F_mae of the model
    threshold = 2.0 * float(np.median(scored["heldout_500K"]["error"]))
    collapse_runs = [scored[f"collapse{r}"] for r in range(args.collapse_runs)]
    before = [run for run in collapse_runs]
    pools = [scored[f"heldout_{t}K"] for t in TEMPERATURES] + [scored["healthy"]]
    pre_masks = []
    for run in before:
        end = run["collapse"] if run["collapse"] >= 0 else np.inf
        pre_masks.append(run["steps"] < end)
    pooled = {key: np.concatenate([p[key] for p in pools] +
                                  [run[key][mask] for run, mask in zip(before, pre_masks,
                                                                       strict=True)])
              for key in (*SIGNALS, "error", "committee_error")}
    high = pooled["error"] > threshold
    # pre-collapse: frames of runs that collapsed, within the last N steps before it
    near, scores = [], {name: [] for name in SIGNALS}
    for run, mask in zip(before, pre_masks, strict=True):
        if run["collapse"] < 0:
            continue
        near.append(run["steps"][mask] >= run["collapse"] - args.pre_collapse)
        for name in SIGNALS:
            scores[name].append(run[name][mask])
    near.append(np.zeros(len(scored["healthy"]["error"]), dtype=bool))
    for name in SIGNALS:
        scores[name].append(scored["healthy"][name])
    near_all = np.concatenate(near)
    collapsed = [run["collapse"] for run in collapse_runs if run["collapse"] >= 0]
    result = {
        "levels": levels,
        "flag_rate": flag_rates,
        "high_error_threshold_kcal": threshold * KCAL,
        "heldout_500K_F_mae_kcal": float(np.mean(scored["heldout_500K"]["error"])) * KCAL,
        "committee_heldout_500K_F_mae_kcal":
            float(np.mean(scored["heldout_500K"]["committee_error"])) * KCAL,
        "frames_pooled": int(len(high)), "high_error_frames": int(high.sum()),
        "auc_high_error": {name: roc_auc(high, pooled[name]) for name in SIGNALS},
        "auc_committee_own_error": roc_auc(
            pooled["committee_error"] > 2.0 * float(np.median(
                scored["heldout_500K"]["committee_error"])), pooled["committee"]),
        "collapses": f"{len(collapsed)} of {args.collapse_runs} runs",
        "collapse_steps": collapsed,
        "pre_collapse_frames": int(near_all.sum()),
        "auc_pre_collapse": {name: roc_auc(near_all, np.concatenate(scores[name]))
                             for name in SIGNALS},
        "unlabelled_frames": int(sum(scored[n]["unlabelled"] for n in scored
                                     if "unlabelled" in scored[n])),
        "cost": signal_costs(files, sets["test_500"].positions[0], z),
        "local": local_failures(args, molecule, seed, files, sets, levels, threshold),
    }
    return result


def local_failures(args, molecule: str, seed: int, files: dict, sets: dict, levels: dict,
                   threshold: float) -> dict:
    """Each kind of planted local failure on `--local-frames` held-out 500 K frames: the
    fraction each signal flags (at the levels above), among all of them and among those whose
    error is high (F_mae above `threshold`, eV/Å), and the model's error relative to the
    held-out median."""
    base = sets["test_500"][list(range(min(args.local_frames, sets["test_500"].n_frames)))]
    out: dict = {}
    for kind in LOCAL_KINDS:
        moved = perturbed(base, kind, 7 * seed + LOCAL_KINDS.index(kind))
        if moved is None:
            out[kind] = None
            continue
        path = CACHE / molecule / f"seed{seed}" / f"local_{kind}.npz"
        if path.exists():
            stored = np.load(path)
            labelled, ok = moved.with_labels(np.zeros(moved.n_frames), stored["forces"],
                                             "GFN2-xTB"), stored["ok"]
        else:
            labelled, ok = gfn2_labels(moved, f"{molecule} seed {seed}: GFN2-xTB, {kind}")
            np.savez(path, forces=labelled.forces, ok=ok)
        frames = labelled[list(np.flatnonzero(ok))]
        signals = frame_signals(files, frames)
        high = signals["error"] > threshold
        out[kind] = {
            "frames": int(frames.n_frames),
            "error_vs_heldout_median": float(np.median(signals["error"]) / (threshold / 2)),
            "high_error_frames": int(high.sum()),
            "flagged": {name: float(np.mean(signals[name] > levels[name])) for name in SIGNALS},
            "flagged_high_error": {name: float(np.mean(signals[name][high] > levels[name]))
                                   if high.any() else None for name in SIGNALS},
        }
    return out


def mean_std(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}" if len(values) > 1 else \
        f"{values[0]:.2f}"


def table(molecule: str, results: list[dict]) -> str:
    names = {"ratio_max": "ratio (max radius)",
             "ratio_calibrated": "exploration (calibrated 5 %)",
             "committee": "committee deviation", "max_force": "largest predicted force",
             "bond_score": "bond score (local)", "exploration": "exploration (ratio or bond)"}
    lines = [f"{molecule} ({len(results)} seeds, mean ± std)", "",
             "| signal | flagged: held-out 500 K | healthy MD 500 K | 300 K | 800 K | 1200 K "
             "| AUC high error | AUC pre-collapse | cost ÷ model call |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in SIGNALS:
        def rate(key, name=name):
            return mean_std([100 * r["flag_rate"][name][key] for r in results])

        cost = mean_std([r["cost"][name] for r in results])
        lines.append(f"| {names[name]} | {rate('500K')} % | {rate('healthy_md')} % | "
                     f"{rate('300K')} % | {rate('800K')} % | {rate('1200K')} % | "
                     f"{mean_std([r['auc_high_error'][name] for r in results])} | "
                     f"{mean_std([r['auc_pre_collapse'][name] for r in results])} | {cost} |")
    lines.append("")
    lines.append(
        f"model F_mae on held-out 500 K: "
        f"{mean_std([r['heldout_500K_F_mae_kcal'] for r in results])} kcal/mol/Å (committee "
        f"mean {mean_std([r['committee_heldout_500K_F_mae_kcal'] for r in results])}); "
        f"high-error frames {[r['high_error_frames'] for r in results]} of "
        f"{[r['frames_pooled'] for r in results]}; collapses "
        f"{[r['collapses'] for r in results]}, pre-collapse frames "
        f"{[r['pre_collapse_frames'] for r in results]}; committee AUC for its own mean's "
        f"error {mean_std([r['auc_committee_own_error'] for r in results])}; one model call "
        f"{mean_std([r['cost']['model_call_ms'] for r in results])} ms")
    if all("local" in r for r in results):
        lines += ["", "planted local failures on held-out 500 K frames: % flagged (of the "
                  "high-error ones)", "",
                  "| failure | frames | error ÷ 500 K median | "
                  + " | ".join(names[n] for n in SIGNALS) + " |",
                  "|---|---|---|" + "---|" * len(SIGNALS)]
        for kind in LOCAL_KINDS:
            found = [r["local"][kind] for r in results if r["local"].get(kind)]
            if not found:
                lines.append(f"| {kind} | none in this molecule |" + " |" * (len(SIGNALS) + 1))
                continue
            cells = []
            for name in SIGNALS:
                every = mean_std([100 * f["flagged"][name] for f in found])
                high = mean_std([100 * f["flagged_high_error"][name] for f in found
                                 if f["flagged_high_error"][name] is not None])
                cells.append(f"{every} ({high})")
            lines.append(f"| {kind} | {found[0]['frames']} | "
                         f"{mean_std([f['error_vs_heldout_median'] for f in found])} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


LABELS = {"ratio_max": "ratio (max)", "ratio_calibrated": "exploration (calibrated)",
          "committee": "committee", "max_force": "max |F|", "bond_score": "bond score",
          "exploration": "exploration"}


def plot(report: dict, path: Path) -> None:
    """Per molecule: flag rate against temperature (held-out runs) per signal, and each
    signal's AUCs; mean ± std over seeds."""
    from mlff_core.report.plots import plt

    molecules = list(report["molecules"])
    figure, axes = plt.subplots(len(molecules), 2, figsize=(10, 3.4 * len(molecules)),
                                squeeze=False)
    for row, molecule in enumerate(molecules):
        results = report["molecules"][molecule]
        left, right = axes[row]
        for name in SIGNALS:
            rates = np.array([[100 * r["flag_rate"][name][f"{t}K"] for t in TEMPERATURES]
                              for r in results])
            left.errorbar(TEMPERATURES, rates.mean(axis=0), yerr=rates.std(axis=0),
                          marker="o", capsize=3, label=LABELS[name])
        left.set_xlabel("temperature of the held-out GFN2-xTB run (K)")
        left.set_ylabel("frames flagged (%)")
        left.set_title(f"{molecule}: flag rate (model trained at 500 K)")
        left.legend(fontsize=7)
        width = 0.38
        for k, key in enumerate(("auc_high_error", "auc_pre_collapse")):
            values = [[r[key][name] for r in results if r[key][name] is not None]
                      for name in SIGNALS]
            means = [np.mean(v) if v else np.nan for v in values]
            stds = [np.std(v) if v else 0.0 for v in values]
            right.bar(np.arange(len(SIGNALS)) + (k - 0.5) * width, means, width, yerr=stds,
                      capsize=3, label="high error" if k == 0 else "pre-collapse")
        right.axhline(0.5, color="grey", linewidth=1, linestyle=":")
        right.set_xticks(range(len(SIGNALS)))
        right.set_xticklabels([LABELS[n] for n in SIGNALS], rotation=20, fontsize=8)
        right.set_ylim(0, 1)
        right.set_ylabel("ROC AUC")
        right.set_title(f"{molecule}: AUC ({len(results)} seeds)")
        right.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> None:
    global CACHE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", nargs="+", default=["aspirin", "ethanol"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--committee", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=2.0, help="training per member")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--train-frames", type=int, default=330)
    parser.add_argument("--test-frames", type=int, default=100)
    parser.add_argument("--false-flag-rate", type=float, default=0.05)
    parser.add_argument("--calibration-runs", type=int, default=3,
                        help="independent 500 K GFN2-xTB runs pooled to calibrate on")
    parser.add_argument("--md-steps", type=int, default=2000)
    parser.add_argument("--collapse-runs", type=int, default=3)
    parser.add_argument("--collapse-temperature", type=float, default=1500.0)
    parser.add_argument("--collapse-steps", type=int, default=4000)
    parser.add_argument("--pre-collapse", type=int, default=100, help="steps")
    parser.add_argument("--threshold", type=float, default=0.5, help="collapse, Å")
    parser.add_argument("--local-frames", type=int, default=40,
                        help="held-out frames given each planted local failure")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "guardrails.json")
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw the figure and tables from --json")
    parser.add_argument("--cache", type=Path, default=None,
                        help="stage cache (default benchmarks/.cache/guardrails)")
    args = parser.parse_args()
    CACHE = args.cache = args.cache or CACHE
    figure = FIGURES / "guardrails.png"
    if args.plot_only:
        report = json.loads(args.json.read_text())
        for molecule, results in report["molecules"].items():
            print(table(molecule, results))
        plot(report, figure)
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    report = {"settings": vars(args) | {"json": str(args.json), "cache": str(args.cache)},
              "molecules": {}}
    started = time.perf_counter()
    for molecule in args.molecules:
        calibration = [gfn2_run(molecule, 500.0, args.test_frames, 1 + k)
                       for k in range(args.calibration_runs)]
        sets: dict = {"train": gfn2_run(molecule, 500.0, args.train_frames, 0),
                      "calibration": Frames.concatenate(calibration)}
        sets["train_path"] = CACHE / "data" / f"{molecule}_500K_{args.train_frames}_seed0.npz"
        sets["calibration_path"] = [
            CACHE / "data" / f"{molecule}_500K_{args.test_frames}_seed{1 + k}.npz"
            for k in range(args.calibration_runs)]
        for t in TEMPERATURES:
            sets[f"test_{t}"] = gfn2_run(molecule, float(t), args.test_frames, 10 + t)
        results = [evaluate_seed(args, molecule, seed, sets) for seed in args.seeds]
        report["molecules"][molecule] = results
        print(table(molecule, results), flush=True)
        args.json.write_text(json.dumps(report, indent=1, default=float))
        plot(report, figure)
    print(f"{time.perf_counter() - started:.0f} s; results in {args.json}")


if __name__ == "__main__":
    main()
