"""ASTEROID: the weight formula, the stage wiring, budgets and errors, with real MMFF94 / GFN2-xTB
labels of ethanol."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_clean_error, run_mlff

from mlff_core.data.formats import read_frames, write_frames
from mlff_core.data.generate import LangevinSampling, generate_frames, relabel_frames
from mlff_core.data.molecules import named_molecule
from mlff_core.errors import MLFFError
from mlff_core.export import load_model
from mlff_core.export.from_run import best_potential
from mlff_core.labels.levels import get_level
from mlff_core.training import TrainingConfig
from mlff_core.training.asteroid import (
    AsteroidSettings,
    asteroid,
    bias_weights,
    label_budget,
    measure_cost_ratio,
)

TINY = {"hidden": 8, "num_interactions": 1, "cutoff": 4.0}


@pytest.fixture(scope="module")
def ethanol_sets(tmp_path_factory):
    """24 GFN2-labelled and 40 MMFF94-labelled ethanol frames (MMFF94 Langevin, 500 K)."""
    root = tmp_path_factory.mktemp("asteroid_data")
    structure = named_molecule("ethanol")
    sampling = LangevinSampling(stride=5, equilibration=50, seed=0)
    frames = generate_frames(structure, get_level("mmff94"), 64, sampling)
    accurate = relabel_frames(frames[:24], get_level("gfn2"))
    paths = {"accurate": write_frames(accurate, root / "acc.npz"),
             "cheap": write_frames(frames[24:], root / "cheap.npz"),
             "accurate_b": write_frames(relabel_frames(frames[40:64], get_level("gfn2")),
                                        root / "acc_b.npz")}
    return paths


def _forces(model_file, frames) -> np.ndarray:
    """[F, N, 3] forces of the scripted model, frame by frame, by autograd (eV/Å)."""
    module = model_file.module
    out = []
    for positions in frames.positions:
        x = torch.tensor(positions, dtype=torch.float64, requires_grad=True)
        energy = module(x, torch.as_tensor(frames.atomic_numbers), torch.zeros(3, 3,
                        dtype=torch.float64), torch.zeros(3, dtype=torch.bool))
        (gradient,) = torch.autograd.grad(energy, x)
        out.append(-gradient.numpy())
    return np.array(out)


def test_bias_weight_formula():
    bias = np.array([1.0, 2.0, 4.0, 3.0])  # median 2.5
    assert bias_weights(bias, 0.5) == pytest.approx(np.exp(-bias / 1.25))
    assert bias_weights(bias, 2.0, scale=1.0) == pytest.approx(np.exp([-0.5, -1.0, -2.0, -1.5]))
    assert bias_weights(bias, 1.0)[2] < bias_weights(bias, 1.0)[0]  # larger bias, smaller weight
    with pytest.raises(MLFFError, match="bias scale"):
        bias_weights(np.zeros(3), 1.0)
    budget = label_budget(200, 3000, {"cost_ratio": 30.0, "source": "given"})
    assert budget["accurate_label_equivalents"] == pytest.approx(300.0)
    with pytest.raises(MLFFError):
        AsteroidSettings(gammas=(0.0,))


def test_stage_wiring(ethanol_sets, tmp_path):
    """Stage 2 starts from scratch (it does not see stage 1's weights, only its bias through the
    weights); stage 3 starts from stage 2's weights (at learning rate 0 it ends there)."""
    config = TrainingConfig(architecture="schnet", hyperparameters=TINY, epochs=3, batch_size=8,
                            learning_rate=2e-3, dtype="float64", seed=3)
    settings = AsteroidSettings(config=config, finetune_epochs=1, finetune_learning_rate=0.0,
                                gammas=(0.5,), cost_ratio=10.0, n_val=4, bias_epochs=5)
    summary = asteroid([ethanol_sets["accurate"]], tmp_path / "a", settings,
                       cheap=[ethanol_sets["cheap"]])
    run = tmp_path / "a"
    # stage 1 has its own epoch count; stage 2 keeps the configuration's
    assert summary["stages"]["stage1"]["epochs"] == 5
    assert summary["stages"]["stage2_gamma0.5"]["epochs"] == 3
    # the weights of stage 2 are exp(−B/(γ·median B)) with B from the stage-1 model file
    cheap = read_frames(ethanol_sets["cheap"])
    bias_file = np.load(run / "stage1_bias" / "bias.npz")
    forces = _forces(load_model(run / "stage1_bias" / "model.pt"), cheap)
    bias_all = np.abs(forces - cheap.forces).sum(axis=(1, 2))
    stored = np.sort(np.concatenate([bias_file["train"], bias_file["val"]]))
    assert stored == pytest.approx(np.sort(bias_all), rel=1e-8)
    weights = np.load(run / "stage2_gamma0.5" / "weights.npz")
    expected = np.exp(-bias_file["train"] / (0.5 * np.median(bias_file["train"])))
    assert weights["train"] == pytest.approx(expected, rel=1e-12)

    # stage 3 at learning rate 0 keeps stage 2's network; only the reference energies moved
    stage2 = best_potential(run / "stage2_gamma0.5")[0].state_dict()
    final = load_model(run / "model.pt").to_potential().state_dict()
    for key, value in stage2.items():
        if key == "atomic_reference":
            assert not torch.allclose(final[key], value)
        else:
            assert torch.allclose(final[key].to(value.dtype), value, rtol=0, atol=1e-12), key
    # the refitted reference energies put the mean energy residual on the accurate training
    # frames at zero (least squares over one composition)
    model = load_model(run / "model.pt")
    train = read_frames(ethanol_sets["accurate"])[
        np.array(model.metadata["training"]["systems"][0]["train_indices"])]
    energies = np.array([float(model.module(torch.tensor(p), torch.as_tensor(
        train.atomic_numbers), torch.zeros(3, 3, dtype=torch.float64),
        torch.zeros(3, dtype=torch.bool)).detach()) for p in train.positions])
    assert abs((train.energies - energies).mean()) < 1e-8

    # stage 2 from scratch: a run whose stage 1 saw other accurate frames (uniform weights, so
    # stage 1 cannot reach stage 2 through the weights) gives the same stage-2 weights
    uniform = AsteroidSettings(config=config, finetune_epochs=1, finetune_learning_rate=0.0,
                               bias_weights=False, cost_ratio=10.0, n_val=4)
    asteroid([ethanol_sets["accurate"]], tmp_path / "b", uniform, cheap=[ethanol_sets["cheap"]])
    asteroid([ethanol_sets["accurate_b"]], tmp_path / "c", uniform,
             cheap=[ethanol_sets["cheap"]])
    stage1_b = best_potential(tmp_path / "b" / "stage1_bias")[0].state_dict()
    stage1_c = best_potential(tmp_path / "c" / "stage1_bias")[0].state_dict()
    assert not torch.allclose(stage1_b["representation.embedding.weight"],
                              stage1_c["representation.embedding.weight"])
    b = best_potential(tmp_path / "b" / "stage2_uniform")[0].state_dict()
    c = best_potential(tmp_path / "c" / "stage2_uniform")[0].state_dict()
    for key in b:
        assert torch.allclose(b[key], c[key], rtol=1e-9, atol=1e-12), key

    # the model file records the stages, γ and the budget
    record = model.metadata["training"]["asteroid"]
    assert record["gamma"] == 0.5 and summary["gamma"] == 0.5
    assert record["budget"]["accurate_label_equivalents"] == pytest.approx(24 + 40 / 10.0)
    assert set(record["stages"]) == {"stage1", "stage2_gamma0.5", "stage3_gamma0.5"}


def test_measured_cost_ratio_and_errors(ethanol_sets, tmp_path):
    accurate, cheap = read_frames(ethanol_sets["accurate"]), read_frames(ethanol_sets["cheap"])
    cost = measure_cost_ratio(accurate, cheap, 3)
    assert cost["accurate_level"] == "GFN2-xTB" and cost["cheap_level"] == "MMFF94"
    assert cost["cost_ratio"] == pytest.approx(cost["accurate_s_per_label"] /
                                               cost["cheap_s_per_label"])
    assert cost["cost_ratio"] > 1.0  # GFN2-xTB costs more than MMFF94
    settings = AsteroidSettings(config=TrainingConfig(architecture="schnet",
                                                      hyperparameters=TINY, epochs=1))
    with pytest.raises(MLFFError, match="not both"):
        asteroid([ethanol_sets["accurate"]], tmp_path / "x", settings,
                 cheap=[ethanol_sets["cheap"]], unlabeled=[ethanol_sets["cheap"]])
    with pytest.raises(MLFFError, match="temperature"):
        asteroid([ethanol_sets["accurate"]], tmp_path / "x", settings,
                 unlabeled=[ethanol_sets["cheap"]])
    water = tmp_path / "water.npz"
    write_frames(relabel_frames(generate_frames(named_molecule("water"), get_level("mmff94"), 3,
                                                LangevinSampling(equilibration=0)),
                                get_level("mmff94")), water)
    with pytest.raises(MLFFError, match="same atoms"):
        asteroid([ethanol_sets["accurate"]], tmp_path / "x", settings, cheap=[water])
    assert not (tmp_path / "x").exists()


def test_cli_score_matching_variant(ethanol_sets, tmp_path):
    out = tmp_path / "sm"
    result = run_mlff("asteroid", "--accurate", ethanol_sets["accurate"], "--unlabeled",
                      ethanol_sets["cheap"], "--temperature", "500", "--model", "schnet",
                      "--hidden", "8", "--layers", "1", "--epochs", "2", "--finetune-epochs",
                      "2", "--n-val", "4", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "chosen: score matching" in result.stdout
    summary = json.loads((out / "asteroid.json").read_text())
    assert summary["variant"] == "score matching"
    assert summary["budget"]["cheap_labels"] == 0
    log = (out / "stage2_score" / "log.csv").read_text().splitlines()
    assert len(log) == 3 and "nan" in log[1]  # unlabeled: no force errors in stage 2
    metadata = load_model(out / "model.pt").metadata["training"]["asteroid"]
    assert metadata["stages"]["stage2_score"]["method"] == "sliced"
    again = run_mlff("asteroid", "--accurate", ethanol_sets["accurate"], "--cheap",
                     ethanol_sets["cheap"], "-o", out)
    assert_clean_error(again, "not empty")
    missing = run_mlff("asteroid", "--accurate", ethanol_sets["accurate"], "--unlabeled",
                       ethanol_sets["cheap"], "-o", tmp_path / "t")
    assert_clean_error(missing, "--temperature")


# ------------------------------------------------------- settings stored with every stage
def _stage_files(run) -> dict[str, tuple[int, int]]:
    """(mtime ns, size) of every file in the run's stage directories."""
    return {str(p.relative_to(run)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(run.rglob("*")) if p.is_file() and
            p.relative_to(run).parts[0].startswith("stage")}


def _all_files(run) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(run)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(run.rglob("*"))}


def _tiny_settings(epochs: int = 2, finetune_lr: float = 1e-3) -> AsteroidSettings:
    config = TrainingConfig(architecture="schnet", hyperparameters=TINY, epochs=epochs,
                            batch_size=8, learning_rate=2e-3, dtype="float64", seed=3)
    return AsteroidSettings(config=config, finetune_epochs=1, finetune_learning_rate=finetune_lr,
                            gammas=(0.5,), cost_ratio=10.0, n_val=4)


def test_rerun_reuses_stages_only_with_their_settings(ethanol_sets, tmp_path):
    """A stage is reused only with the settings that made it: the same settings reuse every
    stage untouched; other epochs, another fine-tuning rate or other data content are refused
    with one error naming the stage directory and the differences, writing nothing."""
    from mlff_core.training import TrainingError

    accurate = tmp_path / "acc.npz"
    write_frames(read_frames(ethanol_sets["accurate"]), accurate)
    cheap, run = [ethanol_sets["cheap"]], tmp_path / "run"
    first = asteroid([accurate], run, _tiny_settings(), cheap=cheap)
    stages = _stage_files(run)

    # other epochs of stages 1-2: refused before anything is written
    before = _all_files(run)
    with pytest.raises(TrainingError) as refused:
        asteroid([accurate], run, _tiny_settings(epochs=3), cheap=cheap)
    message = str(refused.value)
    assert str(run / "stage1_bias") in message and "config.epochs: 2 → 3" in message
    assert f"use another output directory or delete {run}" in message
    assert "\n" not in message
    assert _all_files(run) == before

    # another fine-tuning learning rate: stages 1-2 would match, stage 3 does not
    with pytest.raises(TrainingError) as refused:
        asteroid([accurate], run, _tiny_settings(finetune_lr=5e-4), cheap=cheap)
    message = str(refused.value)
    assert str(run / "stage3_gamma0.5") in message
    assert "config.learning_rate: 0.001 → 0.0005" in message
    assert "stage1" not in message.split(":")[0] and "config.epochs" not in message
    assert _all_files(run) == before

    # the same settings: every stage is reused, none of its files is written again
    again = asteroid([accurate], run, _tiny_settings(), cheap=cheap)
    assert _stage_files(run) == stages
    assert again["gamma_selection"] == first["gamma_selection"]
    before = _all_files(run)

    # the same file name with other content (forces changed)
    frames = read_frames(accurate)
    write_frames(frames.with_labels(frames.energies, frames.forces * 1.01,
                                    str(frames.levels[0])), accurate)
    with pytest.raises(TrainingError) as refused:
        asteroid([accurate], run, _tiny_settings(), cheap=cheap)
    message = str(refused.value)
    assert str(run / "stage1_bias") in message and "data.accurate_train" in message
    assert _all_files(run) == before


def test_cli_resume_with_other_settings_is_one_error(ethanol_sets, tmp_path):
    run = tmp_path / "run"
    asteroid([ethanol_sets["accurate"]], run, _tiny_settings(), cheap=[ethanol_sets["cheap"]])
    before = _all_files(run)
    result = run_mlff("asteroid", "--accurate", ethanol_sets["accurate"], "--cheap",
                      ethanol_sets["cheap"], "--model", "schnet", "--hidden", "8", "--layers",
                      "1", "--cutoff", "4", "--epochs", "3", "--cost-ratio", "10", "--n-val",
                      "4", "--gamma", "0.5", "--resume", "-o", run)
    assert_clean_error(result, "stage1_bias", "config.epochs: 2 → 3",
                       "use another output directory or delete")
    assert _all_files(run) == before


def test_stage_settings_helper(tmp_path):
    """The shared rule: a stage's directory keeps the settings that made it; the same settings
    reuse it, others are refused (naming old → new) or, with redo, cleared and redone."""
    from mlff_core.stage_cache import (
        claim_stage,
        content_digest,
        read_stage_settings,
        stage_differences,
    )
    from mlff_core.training import TrainingError

    weights = np.array([0.5, 1.0, 2.0])
    assert content_digest(weights) == content_digest(weights.copy())
    assert content_digest(weights) != content_digest(weights * 1.001)
    assert content_digest(weights + 1e-15, rounded=True) == content_digest(weights, rounded=True)
    assert content_digest({"a": 1, "b": weights}) == content_digest({"b": weights, "a": 1})
    assert content_digest(torch.tensor(weights)) == content_digest(weights)

    stage = tmp_path / "stage"
    settings = {"config": {"epochs": 2, "lr": 1e-3}, "gammas": (0.5, 1.0),
                "weights": content_digest(weights)}
    assert stage_differences(stage, settings) is None          # nothing there yet
    assert claim_stage(stage, settings) is False               # fresh: the record is written
    assert read_stage_settings(stage) == {**settings, "gammas": [0.5, 1.0]}
    (stage / "result.txt").write_text("done")
    assert stage_differences(stage, settings) == []
    assert claim_stage(stage, settings) is True                # same settings: reuse

    changed = {**settings, "config": {"epochs": 3, "lr": 1e-3}, "extra": True,
               "weights": content_digest(weights * 2)}
    assert stage_differences(stage, changed) == [
        "config.epochs: 2 → 3",
        f"weights: {content_digest(weights)} → {content_digest(weights * 2)}",
        "extra: (absent) → true"]
    with pytest.raises(TrainingError, match=r"stage: made with other settings "
                       r"\(config\.epochs: 2 → 3; .*\); use another output directory or "
                       r"delete .*stage"):
        claim_stage(stage, changed)
    assert (stage / "result.txt").exists() and read_stage_settings(stage)["config"]["epochs"] == 2
    with pytest.raises(TrainingError, match="pass --overwrite"):
        claim_stage(stage, changed, hint="pass --overwrite")
    # only the keys asked for (e.g. before inputs computed later are known)
    assert stage_differences(stage, {"gammas": [0.5, 1.0]}, only_given=True) == []

    notes: list[str] = []
    assert claim_stage(stage, changed, redo=True, log=notes.append) is False
    assert not (stage / "result.txt").exists()
    assert read_stage_settings(stage)["config"]["epochs"] == 3
    assert len(notes) == 1 and "config.epochs: 2 → 3" in notes[0] and "redoing" in notes[0]

    legacy = tmp_path / "legacy"                               # results without a record
    legacy.mkdir()
    (legacy / "result.txt").write_text("old")
    with pytest.raises(TrainingError, match="no record of the settings"):
        claim_stage(legacy, settings)
    assert claim_stage(legacy, settings, redo=True, log=notes.append) is False
    assert not (legacy / "result.txt").exists()


def test_gamma_candidates_as_dask_tasks_equal_the_serial_run(ethanol_sets, tmp_path):
    """Stages 2–3 of two γ as tasks on a local Dask cluster of 2 workers (1 thread each)
    against the same run one γ after the other here, float64: the same stage results, the
    same choice of γ and the same final model, to the order of floating-point sums."""
    from mlff_core.distributed import cluster_map, dask_client

    config = TrainingConfig(architecture="schnet", hyperparameters=TINY, epochs=2, batch_size=8,
                            dtype="float64", seed=5)
    settings = AsteroidSettings(config=config, finetune_epochs=2, gammas=(0.5, 2.0),
                                cost_ratio=10.0, n_val=4)
    here = asteroid([ethanol_sets["accurate"]], tmp_path / "serial", settings,
                    cheap=[ethanol_sets["cheap"]])
    reports = []

    def progress(_description, _total):
        import contextlib

        return contextlib.nullcontext(reports.append)

    with dask_client(workers=2) as client:
        tasks = asteroid([ethanol_sets["accurate"]], tmp_path / "tasks", settings,
                         cheap=[ethanol_sets["cheap"]], task_map=cluster_map(client),
                         progress=progress)
    assert reports.count(1) >= 2  # each γ candidate reported as its task finished
    assert list(tasks["stages"]) == list(here["stages"]) == [
        "stage1", "stage2_gamma0.5", "stage2_gamma2", "stage3_gamma0.5", "stage3_gamma2"]
    for name, stage in here["stages"].items():
        assert tasks["stages"][name]["val_loss"] == pytest.approx(stage["val_loss"], rel=1e-9)
        assert tasks["stages"][name]["best_epoch"] == stage["best_epoch"]
    assert tasks["chosen"] == here["chosen"]
    mine = load_model(tmp_path / "tasks" / "model.pt").to_potential().state_dict()
    theirs = load_model(tmp_path / "serial" / "model.pt").to_potential().state_dict()
    for key, value in theirs.items():
        torch.testing.assert_close(mine[key], value, rtol=1e-9, atol=1e-12, msg=key)
