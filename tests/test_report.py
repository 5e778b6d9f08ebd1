"""`mlff report`: a real model file, reference data and trajectories; the HTML rendered in a
headless Chromium with no console errors and every figure loaded; bad trajectories refused."""

import json
import os

import numpy as np
import pytest
from browser import CHROMIUM, inspect_page
from conftest import assert_clean_error, run_mlff
from models_helpers import bond_scores_by_formula, random_potential

from mlff_core.data.formats import write_frames
from mlff_core.data.generate import LangevinSampling, generate_frames
from mlff_core.data.molecules import named_molecule
from mlff_core.export import model_metadata, save_model_file
from mlff_core.export.exploration import ExplorationModel
from mlff_core.labels import get_level
from mlff_core.metrics.clusters import ConformationClusters
from mlff_core.models import hyperparameters

EXPECTED_FIGURES = {"signals", "clusters_F_mae", "clusters_F_max_err", "rbp", "elements_F_mae",
                    "elements_FNM_mae", "pca_map", "error_histogram", "stability", "hr", "rmsd",
                    "rmsf", "contacts", "max_force", "energy"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two model files (with training clusters), MMFF94 reference data, three trajectories."""
    root = tmp_path_factory.mktemp("report")
    sampling = LangevinSampling(temperature=400.0, stride=4, equilibration=20)
    data = generate_frames(named_molecule("ethanol"), get_level("mmff94"), 60, sampling)
    write_frames(data, root / "test.npz")
    clusters = ConformationClusters(n_clusters=3).fit(data)
    models = []
    for k, arch in enumerate(["schnet", "painn"]):
        potential = random_potential(arch, species=(1, 6, 8), seed=k)
        meta = model_metadata(potential, arch, hyperparameters(arch),
                              exploration={"systems": [clusters.to_dict()]})
        models.append(save_model_file(potential, root / f"{arch}.pt", meta,
                                      ExplorationModel([clusters.to_dict()])))
    runs = []
    for seed in (1, 2):
        run = generate_frames(named_molecule("ethanol"), get_level("mmff94"), 30,
                              LangevinSampling(temperature=600.0, stride=4, seed=seed))
        runs.append(write_frames(run, root / f"run{seed}.traj"))
    broken = run[:]
    broken.positions[20:, 4] += 1.2  # a hydrogen leaves: collapse at frame 20
    runs.append(write_frames(broken, root / "broken.xyz"))
    return root, models, runs


def test_report_json_and_html_in_headless_chromium(inputs):
    root, models, runs = inputs
    result = run_mlff("report", "--model", models[0], "--model", models[1], "--data",
                      root / "test.npz", "--trajectory", f"mmff={runs[0]}", "--trajectory",
                      f"mmff={runs[1]}", "--trajectory", f"broken={runs[2]}",
                      "-o", root / "report.html")
    assert result.returncode == 0, result.stderr
    assert "schnet" in result.stdout and "painn" in result.stdout
    document = json.loads((root / "report.json").read_text())
    assert [m["name"] for m in document["models"]] == ["schnet", "painn"]
    assert document["clusters"]["source"] == "training clusters of schnet.pt"
    assert set(document["models"][0]["metrics"]["per_cluster"]) <= {"0", "1", "2"}
    broken = next(t for t in document["trajectories"] if t["label"] == "broken")
    assert broken["collapsed"] and broken["frames_before_collapse"] == 20
    stable = [t for t in document["trajectories"] if t["label"] == "mmff"]
    assert all(not t["collapsed"] and t["hr_mae"] < 0.5 for t in stable)
    _check_signal_scores(document, models, root / "test.npz")
    html = (root / "report.html").read_text()
    assert "Monitor signals against the force error" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html

    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: `make test` installs it (Debian package chromium)")
        pytest.skip("chromium is not installed (make test installs it)")
    page = inspect_page((root / "report.html").as_uri())
    assert page["console_errors"] == [] and page["exceptions"] == []
    assert all(ok for _, ok in page["images"]), page["images"]
    assert {i.removeprefix("fig-") for i in page["ids"]} == EXPECTED_FIGURES


def test_trajectory_of_another_system_is_refused(inputs, tmp_path):
    root, models, _ = inputs
    other = generate_frames(named_molecule("malonaldehyde"), get_level("mmff94"), 3,
                            LangevinSampling(stride=2, equilibration=2))
    bad = write_frames(other, tmp_path / "other.traj")
    out = tmp_path / "report.html"
    assert_clean_error(run_mlff("report", "--model", models[0], "--data", root / "test.npz",
                                "--trajectory", bad, "-o", out),
                       "trajectory has 9 atoms (C3H4O2)")
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert np.all([p.name == "other.traj" for p in tmp_path.iterdir()])


def _mann_whitney_auc(scores, positive):
    """P(score of a positive > score of a negative) + ½ P(tie), by counting every pair."""
    pos, neg = scores[positive], scores[~positive]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (len(pos) * len(neg))


def _check_signal_scores(document, models, data_path):
    """The report's signal AUCs and rank correlations, recomputed here from the models' own
    predictions and the clusters, with pair counting and ranks of our own."""
    from mlff_core.data.formats import read_frames
    from mlff_core.export import load_model
    from mlff_core.metrics.predict import predict_with_model
    from mlff_core.units import force_conversion

    frames = read_frames(data_path)
    model = load_model(models[0])
    _, forces = predict_with_model(model, frames)
    errors = np.abs(forces - frames.forces).mean(axis=(1, 2)) * force_conversion("kcal/mol/A")
    high = errors > 2 * np.median(errors)
    ratios = model.clusters_for(frames.atomic_numbers, False).classify(frames)[1]
    scored = document["signals"]["schnet"]
    assert scored["exploration_ratio"]["high_error_frames"] == int(high.sum())
    if high.any():  # a random model's errors rarely reach twice their median
        assert scored["exploration_ratio"]["auc_high_error"] == pytest.approx(
            _mann_whitney_auc(ratios, high))
        largest = np.linalg.norm(forces, axis=-1).max(axis=1)
        assert scored["max_force"]["auc_high_error"] == pytest.approx(
            _mann_whitney_auc(largest, high))
    else:
        assert scored["exploration_ratio"]["auc_high_error"] is None
    rank = lambda x: np.argsort(np.argsort(x)).astype(float)  # noqa: E731 (no ties here)
    expected_rho = np.corrcoef(rank(ratios), rank(errors))[0, 1]
    assert scored["exploration_ratio"]["spearman"] == pytest.approx(expected_rho)
    # the bond score from the file's stored ranges, by the formula, and the larger of the two
    (system,) = model.metadata["exploration"]["systems"]
    bond_scores = bond_scores_by_formula(frames.positions, system["bond_ranges"])
    for key, values in (("bond_score", bond_scores),
                        ("exploration_score", np.maximum(ratios, bond_scores))):
        assert scored[key]["spearman"] == pytest.approx(
            np.corrcoef(rank(values), rank(errors))[0, 1]), key
        if high.any():
            assert scored[key]["auc_high_error"] == pytest.approx(
                _mann_whitney_auc(values, high)), key


def test_signal_auc_and_rank_correlation_by_hand():
    from mlff_core.metrics.signals import signal_scores

    rng = np.random.default_rng(3)
    errors = rng.gamma(2.0, 1.0, 400)
    signal = errors + rng.normal(0.0, 1.0, 400)  # informative, not perfect
    scored = signal_scores(signal, errors)
    high = errors > 2 * np.median(errors)
    assert scored["high_error_frames"] == int(high.sum()) > 10
    assert scored["auc_high_error"] == pytest.approx(_mann_whitney_auc(signal, high))
    assert 0.75 < scored["auc_high_error"] < 1.0
    rank = lambda x: np.argsort(np.argsort(x)).astype(float)  # noqa: E731 (no ties here)
    assert scored["spearman"] == pytest.approx(np.corrcoef(rank(signal), rank(errors))[0, 1])
    # a signal that says nothing: AUC about one half; no high-error frame: no AUC
    assert abs(signal_scores(rng.random(400), errors)["auc_high_error"] - 0.5) < 0.1
    constant = signal_scores(signal, np.ones(400))
    assert constant["auc_high_error"] is None and constant["spearman"] is None


def test_a_committee_model_adds_its_force_deviation_to_the_signals(tmp_path):
    """The committee signal's rank correlation with the error, recomputed from each member's
    own forces (autograd on the Python members, not the model file)."""
    import torch
    from models_helpers import ethanol_md_frames, save_random_committee

    from mlff_core.data.formats import write_frames
    from mlff_core.report.build import build_report

    frames = ethanol_md_frames(12)
    data = write_frames(frames, tmp_path / "test.npz")
    path, members = save_random_committee(tmp_path / "committee.pt", size=3)
    report = build_report([path], data, unit="eV/A")
    scored = report.document["signals"]["committee"]
    no_cell, no_pbc = torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.bool)
    deviation, mean_forces = [], []
    for positions in frames.positions:
        forces = []
        for member in members:
            x = torch.tensor(positions, requires_grad=True)
            (gradient,) = torch.autograd.grad(
                member(x, torch.tensor(frames.atomic_numbers), no_cell, no_pbc), x)
            forces.append(-gradient.numpy())
        forces = np.array(forces)
        spread = forces - forces.mean(axis=0)
        deviation.append(np.sqrt((spread ** 2).sum(axis=2).mean(axis=0)).max())
        mean_forces.append(forces.mean(axis=0))
    errors = np.abs(np.array(mean_forces) - frames.forces).mean(axis=(1, 2))
    rank = lambda x: np.argsort(np.argsort(x)).astype(float)  # noqa: E731 (no ties here)
    assert scored["committee_deviation"]["spearman"] == pytest.approx(
        np.corrcoef(rank(np.array(deviation)), rank(errors))[0, 1])
    assert scored["committee_deviation"]["frames"] == 12
    from mlff_core.report.html import render_html

    html = render_html(report)
    assert "<td>committee deviation</td>" in html or ">committee deviation<" in html


def test_a_periodic_liquid_gets_the_mdsim_rdf_metrics_and_stability(tmp_path):
    """Water: the RDF criterion replaces bond perception, the frame interval and speed come
    from the summary.json that `mlff md` writes beside a trajectory, and the RDF MAE per pair
    and the diffusivity per element are reported."""
    from mlff_core.data.frames import Frames
    from mlff_core.data.molecules import water_box

    atoms = water_box(32).atoms
    rng = np.random.default_rng(0)

    def jittered(n, scale=0.02):
        positions = atoms.positions[None] + rng.normal(0.0, scale, (n, len(atoms), 3))
        return Frames(positions=positions, atomic_numbers=atoms.numbers,
                      cell=np.repeat(atoms.cell.array[None], n, axis=0), pbc=True)

    write_frames(jittered(20), tmp_path / "reference.npz")
    for name in ("calm", "broken"):
        run = jittered(30)
        if name == "broken":  # from frame 12 on the atoms are scattered at random
            run.positions[12:] = rng.uniform(0, atoms.cell[0, 0], (18, len(atoms), 3))
        (tmp_path / name).mkdir()
        write_frames(run, tmp_path / name / "trajectory.traj")
        (tmp_path / name / "summary.json").write_text(json.dumps(
            {"trajectory": str(tmp_path / name / "trajectory.traj"),
             "frame_interval_ps": 0.1, "ns_per_day": 12.5,
             # "broken" as OpenMM writes it: no frame at step 0, the first one 0.1 ps in
             **({"first_frame_ps": 0.1} if name == "broken" else {})}))
    result = run_mlff("report", "--data", tmp_path / "reference.npz",
                      "--trajectory", f"calm={tmp_path / 'calm' / 'trajectory.traj'}",
                      "--trajectory", f"broken={tmp_path / 'broken' / 'trajectory.traj'}",
                      "-o", tmp_path / "report.html")
    assert result.returncode == 0, result.stderr
    calm, broken = json.loads((tmp_path / "report.json").read_text())["trajectories"]
    for entry in (calm, broken):
        assert entry["stability_criterion"]["kind"] == "rdf"
        assert entry["stability_criterion"]["window_frames"] == 10  # 1 ps of 0.1 ps frames
        assert entry["ns_per_day"] == 12.5 and entry["frame_interval_ps"] == 0.1
    # stability in ps: the time of the last frame (frames 0 … 29 at 0 … 2.9 ps), or of the first
    # collapsed frame (frame k at 0.1 + 0.1 k ps when the first frame is 0.1 ps in)
    assert not calm["collapsed"] and calm["stability_ps"] == pytest.approx(2.9)
    # windows of 10 frames reach the scattered frames from window 3 on
    assert broken["collapsed"] and 3 <= broken["frames_before_collapse"] <= 12
    assert broken["stability_ps"] == pytest.approx(0.1 + 0.1 * broken["frames_before_collapse"])
    # the RDF MAE of the stable part: below the criterion's threshold, as every window was
    assert set(calm["rdf_mae"]) == {"H-H", "H-O", "O-O"}
    assert 0 < max(calm["rdf_mae"].values()) < calm["stability_criterion"]["threshold"]
    assert set(calm["diffusivity"]["per_element"]) == {"H", "O"}
    assert "(2.9 ps)" in result.stdout


def test_relabel_gives_the_force_error_before_a_collapse(inputs, tmp_path):
    """JCP Fig. 7: `--relabel mmff94` labels the frames before the broken run's collapse (at
    frame 20); each model's error along them is recomputed here from MMFF94 labels and the
    model's own predictions."""
    from mlff_core.data.formats import read_frames
    from mlff_core.export import load_model
    from mlff_core.metrics.predict import predict_with_model
    from mlff_core.units import force_conversion

    root, models, runs = inputs
    result = run_mlff("report", "--model", models[0], "--data", root / "test.npz",
                      "--trajectory", f"broken={runs[2]}", "--relabel", "mmff94",
                      "--relabel-frames", "4", "-o", tmp_path / "r.html")
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads((tmp_path / "r.json").read_text())["trajectories"]
    curve = entry["pre_collapse_errors"]
    assert curve["frames"] == [16, 17, 18, 19] and curve["frames_to_collapse"] == [4, 3, 2, 1]
    assert curve["level"] == "MMFF94" and curve["labelled"] == 4
    window = read_frames(runs[2])[16:20]
    data = read_frames(root / "test.npz")
    level = get_level("mmff94")
    calculator = level.calculator(smiles=data.provenance["system"]["smiles"])
    reference = []
    for f in range(4):
        atoms = window.to_atoms(f)
        atoms.calc = calculator
        reference.append(atoms.get_forces())
    _, predicted = predict_with_model(load_model(models[0]), window)
    expected = np.abs(predicted - np.array(reference)).mean(axis=(1, 2)) * \
        force_conversion("kcal/mol/A")
    np.testing.assert_allclose(curve["F_mae"]["schnet"], expected, rtol=1e-8)
    assert 'id="fig-pre_collapse"' in (tmp_path / "r.html").read_text()
    # without a model there is nothing to compare: one clear error
    refused = run_mlff("report", "--data", root / "test.npz", "--trajectory", str(runs[2]),
                       "--relabel", "mmff94", "-o", tmp_path / "none.html")
    assert_clean_error(refused, "--relabel compares models with reference labels")
    assert not (tmp_path / "none.html").exists()
