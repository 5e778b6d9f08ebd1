"""Force metrics against hand-computed values and an independent loop implementation."""

import json

import numpy as np
import pytest
from conftest import assert_clean_error, run_mlff

from mlff_core.data.formats import write_frames
from mlff_core.data.frames import Frames
from mlff_core.errors import DataError
from mlff_core.metrics.force import force_metrics

O_MASS, H_MASS = 15.999, 1.008


def _water(errors):
    """Frames of one water molecule with zero reference forces and the given errors."""
    errors = np.asarray(errors, dtype=float)
    frames = Frames(positions=np.zeros_like(errors) + [[0, 0, 0], [1, 0, 0], [0, 1, 0]],
                    atomic_numbers=[8, 1, 1], forces=np.zeros_like(errors),
                    energies=np.zeros(len(errors)), masses=[O_MASS, H_MASS, H_MASS])
    return frames, errors


def test_hand_computed_case_with_max_error_on_hydrogen():
    # Frame 0: largest error on O (0.3), but after dividing by mass the largest is H2 (0.2/1.008).
    # Frame 1: largest error on H1 (0.5).
    frames, predicted = _water([
        [[0.3, 0, 0], [0, 0.1, 0], [0, 0, 0.2]],
        [[0, 0, 0], [0.5, 0, 0], [0, 0, 0]],
    ])
    m = force_metrics(frames, predicted, predicted_energies=[0.1, -0.3], unit="eV/A")
    g = m["global"]
    assert g["F_mae"] == pytest.approx(((0.6 / 9) + (0.5 / 9)) / 2)
    assert g["F_max_err"] == pytest.approx((0.3 + 0.5) / 2)
    fnm0 = (0.3 / O_MASS + 0.1 / H_MASS + 0.2 / H_MASS) / 9
    fnm1 = (0.5 / H_MASS) / 9
    assert g["FNM_mae"] == pytest.approx((fnm0 + fnm1) / 2)
    assert g["FNM_max_err"] == pytest.approx((0.2 / H_MASS + 0.5 / H_MASS) / 2)
    assert g["E_mae"] == pytest.approx(0.2) and g["E_rmse"] == pytest.approx(np.sqrt(0.05))
    h, o = m["per_element"]["H"], m["per_element"]["O"]
    assert h["F_mae"] == pytest.approx((0.3 / 6 + 0.5 / 6) / 2)
    assert h["F_max_err"] == pytest.approx((0.2 + 0.5) / 2)
    assert o["F_mae"] == pytest.approx((0.3 / 3 + 0.0) / 2)
    assert o["F_max_err"] == pytest.approx(0.15)
    assert o["FNM_max_err"] == pytest.approx(0.15 / O_MASS)
    kcal = force_metrics(frames, predicted, unit="kcal/mol/A")["global"]
    assert kcal["F_mae"] == pytest.approx(g["F_mae"] * 23.060548, rel=1e-6)
    # JCP Table II's integer masses (O 16, H 1): the same errors divided by 16 and 1
    assert m["fnm_masses"] == "standard"
    integer = force_metrics(frames, predicted, unit="eV/A", fnm_masses="integer")
    assert integer["fnm_masses"] == "integer"
    assert integer["global"]["FNM_mae"] == pytest.approx(
        ((0.3 / 16 + 0.1 + 0.2) / 9 + 0.5 / 9) / 2)
    # frame 0: max(0.3 / 16, 0.1, 0.2) = 0.2 (H2); frame 1: 0.5 (H1)
    assert integer["global"]["FNM_max_err"] == pytest.approx((0.2 + 0.5) / 2)
    assert integer["global"]["F_mae"] == g["F_mae"]  # only FNM changes
    with pytest.raises(DataError, match="unknown FNM masses 'isotopic'"):
        force_metrics(frames, predicted, fnm_masses="isotopic")


def _reference_metrics(abs_err, masses, labels):
    """Plain loops over frames and atoms: the definitions, written independently."""
    def frame_stats(frames):
        maes, maxes, nmaes, nmaxes = [], [], [], []
        for n in frames:
            values = [abs_err[n, i, a] for i in range(abs_err.shape[1]) for a in range(3)]
            scaled = [abs_err[n, i, a] / masses[i] for i in range(abs_err.shape[1])
                      for a in range(3)]
            maes.append(sum(values) / len(values))
            maxes.append(max(values))
            nmaes.append(sum(scaled) / len(scaled))
            nmaxes.append(max(scaled))
        return maes, maxes, nmaes, nmaxes

    everything = frame_stats(range(abs_err.shape[0]))
    global_mae = sum(everything[0]) / len(everything[0])
    clusters = {}
    for k in sorted(set(labels)):
        members = [n for n in range(len(labels)) if labels[n] == k]
        maes, maxes, nmaes, nmaxes = frame_stats(members)
        clusters[str(k)] = {
            "F_mae": sum(maes) / len(maes), "F_max_err": sum(maxes) / len(maxes),
            "FNM_mae": sum(nmaes) / len(nmaes), "FNM_max_err": sum(nmaxes) / len(nmaxes),
            "RBP": sum(1 for v in maes if v > global_mae) / len(maes),
            "n_frames": len(members),
        }
    return clusters


def test_per_cluster_metrics_and_rbp_match_the_definitions():
    rng = np.random.default_rng(3)
    errors = rng.normal(size=(40, 3, 3))
    errors[:10] *= 3.0  # cluster 0 is worse: its RBP must be high
    labels = np.repeat([0, 1, 2, 3], 10)
    frames, predicted = _water(errors)
    got = force_metrics(frames, predicted, cluster_labels=labels, unit="eV/A")["per_cluster"]
    expected = _reference_metrics(np.abs(errors), frames.masses, labels.tolist())
    for k, values in expected.items():
        for key, value in values.items():
            assert got[k][key] == pytest.approx(value), (k, key)
    assert got["0"]["RBP"] == 1.0 and got["1"]["RBP"] < 0.5


def test_unexplored_frames_are_kept_out_of_clusters():
    frames, predicted = _water(np.ones((4, 3, 3)))
    m = force_metrics(frames, predicted, cluster_labels=[0, 0, -1, 1], unit="eV/A")
    assert set(m["per_cluster"]) == {"0", "1"}
    assert m["global"]["n_unexplored"] == 1 and m["unexplored"]["n_frames"] == 1
    assert m["global"]["n_frames"] == 4


def test_shape_mismatch_and_bad_labels():
    frames, predicted = _water(np.ones((4, 3, 3)))
    with pytest.raises(DataError, match=r"predicted forces have shape \(4, 2, 3\)"):
        force_metrics(frames, predicted[:, :2])
    with pytest.raises(DataError, match="3 cluster labels for 4 frames"):
        force_metrics(frames, predicted, cluster_labels=[0, 1, 0])


def test_eval_cli_with_predictions_file(tmp_path):
    frames, predicted = _water(np.random.default_rng(1).normal(size=(6, 3, 3)))
    write_frames(frames, tmp_path / "test.npz")
    np.savez(tmp_path / "pred.npz", forces=predicted, energies=np.ones(6))
    np.save(tmp_path / "labels.npy", np.array([0, 0, 0, 1, 1, 1]))
    result = run_mlff("eval", "--data", tmp_path / "test.npz", "--predictions",
                      tmp_path / "pred.npz", "--cluster-labels", tmp_path / "labels.npy",
                      "-o", tmp_path / "metrics.json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["force_unit"] == "kcal/mol/A"
    assert set(metrics["global"]) >= {"F_mae", "F_max_err", "FNM_mae", "FNM_max_err", "E_mae",
                                      "E_rmse", "n_frames"}
    assert set(metrics["per_element"]) == {"H", "O"}
    assert set(metrics["per_cluster"]) == {"0", "1"} and "RBP" in metrics["per_cluster"]["0"]
    integer = run_mlff("eval", "--data", tmp_path / "test.npz", "--predictions",
                       tmp_path / "pred.npz", "--fnm-masses", "integer", "-o",
                       tmp_path / "integer.json")
    assert integer.returncode == 0, integer.stderr
    assert json.loads((tmp_path / "integer.json").read_text())["fnm_masses"] == "integer"
    assert "cluster 1" in result.stdout  # the terminal table

    np.savez(tmp_path / "bad_pred.npz", forces=predicted[:5])
    np.save(tmp_path / "bad_labels.npy", np.array([0, 1]))
    for extra, needle in (
        (["--predictions", tmp_path / "bad_pred.npz"], "predicted forces have shape (5, 3, 3)"),
        (["--predictions", tmp_path / "pred.npz", "--cluster-labels",
          tmp_path / "bad_labels.npy"], "2 cluster labels for 6 frames"),
    ):
        out = tmp_path / "never.json"
        assert_clean_error(run_mlff("eval", "--data", tmp_path / "test.npz", *extra, "-o", out),
                           needle)
        assert not out.exists()


def test_evaluate_forces_from_model_file_calculator_and_arrays(tmp_path):
    from models_helpers import save_random_model

    from ase_bridge import MLFFCalculator
    from mlff_core.data.molecules import named_molecule
    from mlff_core.metrics import evaluate_forces

    atoms = named_molecule("ethanol").atoms
    rng = np.random.default_rng(0)
    frames = Frames(positions=atoms.positions + 0.05 * rng.standard_normal((5, 9, 3)),
                    atomic_numbers=atoms.numbers, energies=rng.normal(size=5),
                    forces=rng.normal(size=(5, 9, 3)))
    path = save_random_model(tmp_path / "m.pt", "schnet")
    from_file = evaluate_forces(frames, path)
    from_calculator = evaluate_forces(frames, MLFFCalculator(path))
    assert from_file["global"]["F_mae"] == pytest.approx(from_calculator["global"]["F_mae"],
                                                         rel=1e-9)
    from_arrays = evaluate_forces(frames, (None, frames.forces + 0.1), unit="eV/A")
    assert from_arrays["global"]["F_mae"] == pytest.approx(0.1)
