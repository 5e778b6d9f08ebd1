"""`mlff report`: a real model file, reference data and trajectories; the HTML rendered in a
headless Chromium with no console errors and every figure loaded; bad trajectories refused."""

import json
import os

import numpy as np
import pytest
from browser import CHROMIUM, inspect_page
from conftest import assert_clean_error, run_mlff
from models_helpers import random_potential

from mlff_core.data.formats import write_frames
from mlff_core.data.generate import LangevinSampling, generate_frames
from mlff_core.data.molecules import named_molecule
from mlff_core.export import model_metadata, save_model_file
from mlff_core.export.exploration import ExplorationModel
from mlff_core.labels import get_level
from mlff_core.metrics.clusters import ConformationClusters
from mlff_core.models import hyperparameters

EXPECTED_FIGURES = {"clusters_F_mae", "clusters_F_max_err", "rbp", "elements_F_mae",
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
    assert all(not t["collapsed"] and t["hr_mae"] < 0.05 for t in stable)
    html = (root / "report.html").read_text()
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
