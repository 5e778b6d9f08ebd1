"""Data-parallel training (DDP under torchrun): the shares of a batch's loss add up to the whole
batch's loss and gradient for every loss term, and `torchrun --nproc-per-node 2 mlff train`
ends with the weights of one process trained on the same global batches."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MLFF, run_mlff_here
from torch_geometric.data import Batch

from mlff_core.data.formats import write_frames
from mlff_core.data.frames import Frames
from mlff_core.training.graphs import frame_graphs
from mlff_core.training.losses import BatchTotals, CompositeLoss, Predictions, cluster_balance
from mlff_core.training.score_matching import ScoreMatching

TORCHRUN = Path(sys.executable).with_name("torchrun")
WATER = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.24, 0.927, 0.0]])
METHANOL = np.array([[0.0, 0.0, 0.0], [1.43, 0.0, 0.0], [-0.36, 1.03, 0.0], [-0.36, -0.51, 0.89],
                     [-0.36, -0.51, -0.89], [1.75, 0.0, 0.9]])


def _frames(n: int, numbers, base, seed: int) -> Frames:
    rng = np.random.default_rng(seed)
    return Frames(positions=base + 0.05 * rng.standard_normal((n, *np.shape(base))),
                  atomic_numbers=numbers, energies=rng.normal(size=n),
                  forces=rng.normal(size=(n, len(numbers), 3)))


def _graphs(balanced: bool, with_balance: bool) -> list:
    """A batch of 7 graphs of two systems (water: O, H; methanol: C, O, H) with sample weights
    and conformation clusters; as the Trainer marks them for a cluster loss when asked."""
    water, methanol = _frames(4, [8, 1, 1], WATER, 1), _frames(3, [6, 8, 1, 1, 1, 1],
                                                               METHANOL, 2)
    rng = np.random.default_rng(3)
    clusters = [np.array([0, 0, 0, 1]), np.array([2, 2, 3])]
    graphs = [g for k, part in enumerate((water, methanol))
              for g in frame_graphs(part, 3.0, torch.float64, system=k, clusters=clusters[k],
                                    weights=rng.uniform(0.2, 2.0, part.n_frames))]
    balance = cluster_balance(np.concatenate(clusters))
    for graph, b in zip(graphs, balance, strict=True):
        if with_balance:
            graph.cluster_balance = torch.tensor([1.0 if balanced else b], dtype=torch.float64)
        if balanced:
            graph.importance = torch.tensor([1.0 / b], dtype=torch.float64)
    return graphs


def _loss_and_gradient(loss, graphs, errors, totals=None):
    """The loss of `graphs` with predictions = labels + `errors` (a leaf [N, 3] and [G]) and
    the gradients with respect to those errors."""
    batch = Batch.from_data_list(graphs)
    force_errors, energy_errors = errors
    predictions = Predictions(batch.energy + energy_errors, batch.forces + force_errors)
    value = loss(batch, predictions, totals)
    gradients = torch.autograd.grad(value, [force_errors, energy_errors], allow_unused=True)
    return value, [torch.zeros_like(e) if g is None else g
                   for g, e in zip(gradients, errors, strict=True)]


TERMS = [{"mse": 1.0}, {"global": 1.0}, {"fnm": 1.0}, {"maxerr": 1.0}, {"element": 1.0},
         {"element-fnm": 1.0}, {"cluster": 1.0}, {"cluster-fnm": 1.0},
         {"cluster": 1.0, "maxerr": 0.1}]


@pytest.mark.parametrize(("terms", "sampling"), [
    (terms, sampling) for terms in TERMS for sampling in ("uniform", "balance-weights", "balanced")
    if sampling != "balance-weights" or any(name.startswith("cluster") for name in terms)])
def test_shares_of_a_batch_add_up_to_its_loss_and_gradient(terms, sampling):
    """Shards [water ×2], [water ×2, methanol], [methanol ×2]: the first lacks carbon and the
    methanol clusters, the last the water clusters. The shards' losses with the whole batch's
    totals sum to the whole batch's loss, and their gradients to its gradient (an independent
    computation: the loss of the whole batch, as one process computes it). Sampling:
    "uniform" (cluster terms then take the mean over the batch's clusters, as in validation),
    "balance-weights" (training's N / (K n_k) weights, which only the cluster terms read),
    "balanced" (importance-corrected)."""
    graphs = _graphs(balanced=sampling == "balanced", with_balance=sampling != "uniform")
    loss = CompositeLoss(terms, energy_weight=0.3)
    rng = np.random.default_rng(5)
    n_atoms = sum(g.num_nodes for g in graphs)
    force_errors = torch.tensor(rng.normal(size=(n_atoms, 3)), requires_grad=True)
    energy_errors = torch.tensor(rng.normal(size=len(graphs)), requires_grad=True)
    whole, whole_gradient = _loss_and_gradient(loss, graphs, (force_errors, energy_errors))

    totals = BatchTotals.of(graphs)
    shares, gradients, atom, frame = [], [], 0, 0
    for shard in ([0, 1], [2, 3, 4], [5, 6]):
        mine = [graphs[k] for k in shard]
        atoms = sum(g.num_nodes for g in mine)
        errors = (force_errors.detach()[atom : atom + atoms].clone().requires_grad_(True),
                  energy_errors.detach()[frame : frame + len(mine)].clone().requires_grad_(True))
        share, gradient = _loss_and_gradient(loss, mine, errors, totals)
        shares.append(float(share.detach()))
        gradients.append(gradient)
        atom, frame = atom + atoms, frame + len(mine)
    assert sum(shares) == pytest.approx(float(whole.detach()), rel=1e-12, abs=1e-14)
    for k in range(2):
        joined = torch.cat([g[k] for g in gradients])
        torch.testing.assert_close(joined, whole_gradient[k], rtol=1e-12, atol=1e-14)
    assert min(abs(s) for s in shares) > 0.0  # every shard contributes


def test_score_matching_share_divides_by_the_whole_batch():
    """ScoreMatching's Σ w ℓ / G: with totals, each shard divides by the whole batch's G."""
    graphs = _graphs(False, False)
    objective = ScoreMatching(300.0, method="denoising")
    batch = Batch.from_data_list(graphs[:3])
    # ℓ_f = f + 1 for the shard's frames, so the share is computed by hand below
    objective.per_frame = lambda _potential, b: torch.arange(1.0, b.num_graphs + 1,
                                                            dtype=torch.float64)
    share = objective(None, batch, BatchTotals.of(graphs))
    expected = sum(float(graphs[k].weight) * (k + 1) for k in range(3)) / len(graphs)
    assert float(share) == pytest.approx(expected, rel=1e-14)


# ------------------------------------------------------------------------- torchrun, end to end
def _weights(run: Path, name: str = "checkpoint.pt") -> dict[str, torch.Tensor]:
    return torch.load(run / name, weights_only=True)["model"]


def _log(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _torchrun(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2",
                           str(MLFF), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


@pytest.fixture(scope="module")
def water_data(tmp_path_factory) -> Path:
    """41 labelled water frames: 37 train (batches of 6: the last holds one frame, so one of
    the two processes has no shard of it), 4 validate."""
    root = tmp_path_factory.mktemp("ddp")
    frames = _frames(41, [8, 1, 1], WATER, 0)
    write_frames(frames, root / "water.npz")
    return root / "water.npz"


MODEL = ("--model", "schnet", "--hidden", "16", "--layers", "2", "--cutoff", "4",
         "--batch-size", "6", "--dtype", "float64")


@pytest.mark.parametrize("loss", ["mse", "cluster"])
def test_torchrun_two_processes_end_with_the_weights_of_one(loss, water_data, tmp_path):
    """torchrun --nproc-per-node 2 (gloo, CPU) against one process, 3 epochs, float64. The
    plain loss runs 2 epochs, then --resume to 3, under torchrun; the cluster loss (balance
    weights over the whole training set, 3 clusters) runs 3 straight. Weights agree to 1e-12
    (measured: ~1e-16, the order of the floating-point sums)."""
    options = (*MODEL, "--loss", loss)
    if loss == "cluster":
        options += ("--loss-clusters", "3")
    one = run_mlff_here("train", "--data", water_data, *options, "--epochs", "3",
                        "-o", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    if loss == "mse":
        first = _torchrun("train", "--data", water_data, *options, "--epochs", "2",
                          "-o", tmp_path / "two", cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        assert [row["epoch"] for row in _log(tmp_path / "two")] == ["1", "2"]
        ran = _torchrun("train", "--data", water_data, "--resume", "--epochs", "3",
                        "-o", tmp_path / "two", cwd=tmp_path)
    else:
        ran = _torchrun("train", "--data", water_data, *options, "--epochs", "3",
                        "-o", tmp_path / "two", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.count("run directory:") == 1  # rank 0 alone prints
    assert "training · 2 processes" in ran.stderr
    for name in ("checkpoint.pt", "best.pt"):
        mine, theirs = _weights(tmp_path / "two", name), _weights(tmp_path / "one", name)
        for key, value in theirs.items():
            torch.testing.assert_close(mine[key], value, rtol=0, atol=1e-12, msg=key)
    rows, expected = _log(tmp_path / "two"), _log(tmp_path / "one")
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]  # one writer, no repeated rows
    for row, reference in zip(rows, expected, strict=True):
        for key in ("train_loss", "val_loss", "val_force_mae"):
            assert float(row[key]) == pytest.approx(float(reference[key]), rel=1e-12)
    moved = max(float((_weights(tmp_path / "two")[k] - _weights(tmp_path / "two", "best.pt")[k])
                      .abs().max()) for k in theirs if theirs[k].dtype.is_floating_point)
    assert moved > 0.0  # trained: the EMA weights trail the raw ones
    if loss == "cluster":
        assert (tmp_path / "two" / "clusters.json").read_text() == \
            (tmp_path / "one" / "clusters.json").read_text()


@pytest.mark.slow
def test_torchrun_with_bad_data_prints_one_plain_error(tmp_path):
    """Under torchrun a bad --data gives rank 0's plain error line (rank 1's is tagged) and
    leaves no run directory."""
    result = _torchrun("train", "--data", tmp_path / "missing.npz", "-o", tmp_path / "run",
                       cwd=tmp_path)
    _assert_one_error(result, "missing.npz", "not found")
    assert "mlff (rank 1): error:" in result.stderr
    assert not (tmp_path / "run").exists()


def test_commands_other_than_train_refuse_to_run_under_torchrun(water_data, monkeypatch):
    """WORLD_SIZE > 1 (as torchrun sets it): every process would run the whole command and
    write the same files, so the command refuses."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = run_mlff_here("data", "info", water_data)
    _assert_one_error(result, "mlff data runs in one process",
                      "only mlff train runs data-parallel")
    monkeypatch.setenv("RANK", "1")  # the other processes tag their line with their rank
    result = run_mlff_here("data", "info", water_data)
    assert result.stderr.startswith("mlff (rank 1): error: mlff data runs in one process")


def _assert_one_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """One `mlff: error:` line naming `needles` and no traceback of ours (torchrun prints its
    own report of the failed processes)."""
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("mlff: error:")]
    assert len(errors) == 1, result.stderr
    assert all(needle in errors[0] for needle in needles), errors[0]
    assert "mlff_core" not in result.stderr, result.stderr
