"""MACE through the model file: trained here (`mlff train --model mace`) and imported from a real
`mace_run_train` run (`mlff import --from mace`, TorchScript and pickled forms), checked against
MACE's own ASE calculator, finite differences, LAMMPS on 1 and 2 MPI ranks and OpenMM."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces
from ase.io import write
from conftest import assert_clean_error, run_mlff, run_mlff_here
from engine_checks import (
    KJ_PER_EV,
    assert_same,
    energy_forces,
    ethanol_box,
    lammps_equals_ase,
    openmm_equals_ase,
)
from models_helpers import ethanol_md_frames

from ase_bridge import MLFFCalculator
from mlff_core.data import write_frames
from mlff_core.data.molecules import named_molecule
from mlff_core.errors import SpeciesError
from mlff_core.export import load_model
from mlff_core.export.importers import import_model

#: Å: edge of the periodic cube the training molecules sit in.
BOX = 20.0

#: A MACE small enough for tests (mace_run_train's option names).
TINY = {"num_channels": 8, "max_L": 1, "max_ell": 2, "correlation": 2, "r_max": 4.0,
        "num_interactions": 2}


@pytest.fixture(scope="module")
def mace_files(tmp_path_factory):
    """Ethanol MMFF94 frames (npz and extxyz), a MACE trained here and exported in float64,
    and the files of a real `mace_run_train` run on the same frames."""
    root = tmp_path_factory.mktemp("mace")
    molecules = ethanol_md_frames(40)
    frames = dataclasses.replace(  # in a periodic cube: the models may run on periodic cells
        molecules, cell=np.repeat(np.eye(3)[None] * BOX, molecules.n_frames, axis=0),
        pbc=np.ones(3, dtype=bool))
    data = write_frames(frames, root / "ethanol.npz")
    structures = [frames.to_atoms(k) for k in range(frames.n_frames)]
    for atoms, energy, forces in zip(structures, frames.energies, frames.forces, strict=True):
        atoms.calc = None
        atoms.info["REF_energy"] = float(energy)
        atoms.arrays["REF_forces"] = forces
    write(root / "train.xyz", structures, format="extxyz")
    args = [sys.executable, "-m", "mace.cli.run_train", "--name", "tiny", "--model",
            "ScaleShiftMACE", "--train_file", "train.xyz", "--valid_fraction", "0.2",
            "--E0s", "average", "--energy_key", "REF_energy", "--forces_key", "REF_forces",
            "--batch_size", "8", "--max_num_epochs", "2", "--default_dtype", "float64",
            "--device", "cpu", "--seed", "1"]
    args += [f"--{key}={value}" for key, value in TINY.items()]
    result = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trained = run_mlff("train", "--data", data, "--model", "mace", "--hidden", "8", "--max-ell",
                       "2", "--correlation", "2", "--cutoff", "4", "--epochs", "3",
                       "--batch-size", "8", "--dtype", "float64", "-o", root / "run")
    assert trained.returncode == 0, trained.stderr
    exported = run_mlff("export", root / "run", "-o", root / "trained.pt")
    assert exported.returncode == 0, exported.stderr
    return {"root": root, "data": data, "pickled": root / "tiny.model",
            "compiled": root / "tiny_compiled.model", "trained": root / "trained.pt"}


@pytest.fixture(scope="module")
def imported(mace_files):
    """The run's TorchScript model imported with clusters, and its pickled twin."""
    root = mace_files["root"]
    compiled = run_mlff("import", "--from", "mace", mace_files["compiled"], "-o",
                        root / "compiled.pt", "--data", mace_files["data"])
    assert compiled.returncode == 0, compiled.stderr
    import_model("mace", mace_files["pickled"], root / "pickled.pt", trust_pickle=True)
    return {"compiled": root / "compiled.pt", "pickled": root / "pickled.pt"}


def _mace_calculator(**kwargs):
    from mace.calculators import MACECalculator

    return MACECalculator(device="cpu", default_dtype="float64", **kwargs)


def _structures():
    """Ethanol alone in the training data's cube, and two ethanol molecules cut by the faces
    of a 9 Å cube (the models were trained on periodic cells)."""
    alone = named_molecule("ethanol").atoms
    alone.cell, alone.pbc = np.eye(3) * BOX, True
    alone.center()
    return {"molecule": alone, "periodic box": ethanol_box()}


@pytest.mark.parametrize("form", ["compiled", "pickled"])
def test_imported_mace_equals_maces_own_calculator(mace_files, imported, form):
    theirs = _mace_calculator(model_paths=str(mace_files["pickled"]))
    ours = MLFFCalculator(imported[form])
    for atoms in _structures().values():
        assert_same(energy_forces(atoms, ours), energy_forces(atoms, theirs))
    meta = load_model(imported[form]).metadata
    source = meta["training"]["imported_from"]
    assert source["form"] == ("torchscript" if form == "compiled" else "pickle")
    assert meta["cutoff"] == TINY["r_max"] and meta["num_interactions"] == 2
    assert (meta["exploration"] is not None) == (form == "compiled")  # --data given
    # Halo methods (issue 13) where our loop drives MACE's blocks (the pickled form); the
    # compiled form is driven whole, so LAMMPS gives it ghosts to cutoff × layers
    halo = hasattr(load_model(imported[form]).module, "halo_graph")
    assert halo == (meta["halo"] is not None) == (form == "pickled")


def _mace_from_trained(loaded):
    """MACE's own ScaleShiftMACE rebuilt from the model file's hyperparameters, carrying its
    weights, reference energies (E0s) and force scale: what MACE itself computes with them."""
    from e3nn import o3
    from mace import modules

    hp = loaded.metadata["hyperparameters"]
    potential = loaded.module.potential
    residual = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    torch.set_default_dtype(torch.float64)
    try:
        model = modules.ScaleShiftMACE(
            atomic_inter_scale=float(potential.energy_scale), atomic_inter_shift=0.0,
            r_max=hp["cutoff"], num_bessel=hp["num_rbf"],
            num_polynomial_cutoff=hp["num_polynomial_cutoff"], max_ell=hp["max_ell"],
            interaction_cls=residual, interaction_cls_first=residual,
            num_interactions=hp["num_interactions"], num_elements=3,
            hidden_irreps=o3.Irreps(f"{hp['hidden']}x0e+{hp['hidden']}x1o"),
            MLP_irreps=o3.Irreps("16x0e"),
            atomic_energies=potential.atomic_reference.numpy(),
            avg_num_neighbors=hp["avg_num_neighbors"], atomic_numbers=[1, 6, 8],
            correlation=hp["correlation"], gate=torch.nn.functional.silu,
            radial_MLP=hp["radial_mlp"])
    finally:
        torch.set_default_dtype(torch.float32)
    prefix = "potential.representation.mace."
    weights = {key[len(prefix):]: value for key, value in loaded.module.state_dict().items()
               if key.startswith(prefix) and "atomic_energies" not in key}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and set(missing) <= {"atomic_energies_fn.atomic_energies",
                                               "scale_shift.scale", "scale_shift.shift"}
    return model


def test_mace_trained_here_equals_maces_own_calculator(mace_files):
    loaded = load_model(mace_files["trained"])
    assert loaded.metadata["architecture"] == "mace"
    assert loaded.metadata["hyperparameters"]["avg_num_neighbors"] == pytest.approx(8.0)
    theirs = _mace_calculator(models=_mace_from_trained(loaded))
    ours = MLFFCalculator(mace_files["trained"])
    for atoms in _structures().values():
        assert_same(energy_forces(atoms, ours), energy_forces(atoms, theirs))


@pytest.mark.parametrize("which", ["trained", "compiled"])
def test_mace_forces_are_finite_differences(mace_files, imported, which):
    path = mace_files["trained"] if which == "trained" else imported["compiled"]
    atoms = ethanol_box()
    atoms.calc = MLFFCalculator(path)
    np.testing.assert_allclose(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-5),
                               atol=1e-7)
    # Per-atom energies (forward_graph on local + ghost atoms) add up to the total.
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy(),
                                                                 abs=1e-9)


@pytest.mark.parametrize("which", ["trained", "compiled"])
def test_mace_in_lammps_one_and_two_ranks(tmp_path, mace_files, imported, which):
    """A 9 Å box split in two domains, with both molecules cut by the box faces: 1 rank = ASE
    and 2 ranks = 1 rank. The MACE trained here runs in halo mode (ghosts to cutoff + skin,
    features exchanged per layer); the compiled import runs whole (ghosts to cutoff × layers
    + skin = 10 Å)."""
    model = mace_files["trained"] if which == "trained" else imported["compiled"]
    screen = lammps_equals_ase(tmp_path, model, ethanol_box(), f"MACE {which}")
    assert ("pair mlff: halo exchange" in screen) == (which == "trained"), screen[-1500:]
    assert ("runs whole" in screen) == (which == "compiled")


@pytest.mark.parametrize("which", ["trained", "compiled"])
def test_mace_in_openmm_equals_ase(mace_files, imported, which):
    path = mace_files["trained"] if which == "trained" else imported["compiled"]
    openmm_equals_ase(path, _structures(), f"MACE {which}")


def test_bad_imports_are_one_clear_error_and_leave_no_file(tmp_path, mace_files):
    from models_helpers import save_random_model

    out = tmp_path / "out.pt"
    pickled = run_mlff_here("import", "--from", "mace", mace_files["pickled"], "-o", out)
    assert_clean_error(pickled, "pickled MACE model", "--trust-pickle")
    painn = save_random_model(tmp_path / "painn.pt", "painn")
    wrong_kind = run_mlff_here("import", "--from", "mace", painn, "-o", out)
    assert_clean_error(wrong_kind, "not a MACE model", "--from torchscript")
    npz = run_mlff_here("import", "--from", "mace", mace_files["data"], "-o", out)
    assert_clean_error(npz, "not a MACE model file")
    water = write_frames(_water_frames(), tmp_path / "water_n.npz")
    unknown = run_mlff_here("import", "--from", "mace", mace_files["compiled"], "-o", out, "--data",
                       water)
    assert_clean_error(unknown, "water_n.npz", "N", "does not know")
    head = run_mlff_here("import", "--from", "mace", mace_files["compiled"], "-o", out, "--head",
                    "nope")
    assert_clean_error(head, "has no head 'nope'", "Default")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["painn.pt", "water_n.npz"]


def _water_frames():
    """Two frames of NH3 (nitrogen: an element the MACE models do not know)."""
    from mlff_core.data.frames import Frames

    positions = np.array([[0.0, 0.0, 0.0], [0.94, 0.0, -0.38], [-0.47, 0.81, -0.38],
                          [-0.47, -0.81, -0.38]])
    return Frames(atomic_numbers=np.array([7, 1, 1, 1]),
                  positions=np.stack([positions, positions + 0.01]),
                  energies=np.zeros(2), forces=np.zeros((2, 4, 3)))


def test_engines_refuse_an_element_the_imported_model_lacks(imported):
    atoms = Atoms("NH3", positions=[[0, 0, 0], [0.94, 0, -0.38], [-0.47, 0.81, -0.38],
                                    [-0.47, -0.81, -0.38]])
    atoms.calc = MLFFCalculator(imported["compiled"])
    with pytest.raises(SpeciesError, match="does not know element.*N"):
        atoms.get_potential_energy()


def test_imported_model_cannot_be_fine_tuned_but_evaluates(tmp_path, mace_files, imported):
    finetune = run_mlff_here("finetune", "--model", imported["compiled"], "--data",
                        mace_files["data"], "--epochs", "1", "-o", tmp_path / "ft")
    assert_clean_error(finetune, "imported from mace", "cannot be trained further")
    evaluated = run_mlff_here("eval", "--model", imported["compiled"], "--data", mace_files["data"],
                         "--unit", "eV/A", "-o", tmp_path / "eval.json")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads((tmp_path / "eval.json").read_text())
    from mlff_core.data import read_frames

    frames = read_frames(mace_files["data"])
    theirs = _mace_calculator(model_paths=str(mace_files["pickled"]))
    errors = [np.abs(energy_forces(frames.to_atoms(k), theirs)[1] - frames.forces[k])
              for k in range(frames.n_frames)]
    assert metrics["global"]["F_mae"] == pytest.approx(np.mean(errors), rel=1e-6)


def test_a_checkpoint_holding_code_is_refused_after_import_mace(tmp_path):
    """mace sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 at import; our loads pass weights_only=True
    explicitly, so a checkpoint whose unpickling would run code is still refused."""
    marker = tmp_path / "ran"
    script = f"""
import os, torch
class Evil:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))
torch.save({{"model": Evil()}}, "{tmp_path / 'evil.pt'}")
import mlff_core.models.mace  # imports mace
assert os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") == "1"
from mlff_core.errors import DataError
from mlff_core.fileio import load_weights
try:
    load_weights("{tmp_path / 'evil.pt'}")
except DataError as exc:
    print("refused:", exc)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout and "evil.pt" in result.stdout
    assert not marker.exists()


# ------------------------------------------------ every training method on a MACE model
@pytest.fixture(scope="module")
def molecular_mace(tmp_path_factory):
    """A tiny MACE trained here with the cluster loss on ethanol molecules, exported."""
    root = tmp_path_factory.mktemp("mace_methods")
    frames = ethanol_md_frames(40)
    data = write_frames(frames, root / "ethanol.npz")
    trained = run_mlff("train", "--data", data, "--model", "mace", "--hidden", "8", "--max-ell",
                       "2", "--correlation", "2", "--cutoff", "4", "--loss", "cluster=1",
                       "--loss-clusters", "2", "--epochs", "2", "--batch-size", "8",
                       "-o", root / "run")
    assert trained.returncode == 0, trained.stderr
    exported = run_mlff("export", root / "run", "-o", root / "model.pt")
    assert exported.returncode == 0, exported.stderr
    return {"root": root, "frames": frames, "data": data, "model": root / "model.pt"}


def test_cluster_loss_and_rbp_finetuning_train_a_mace(tmp_path, molecular_mace):
    run = json.loads((molecular_mace["root"] / "run" / "run.json").read_text())
    assert run["config"]["loss"] == {"cluster": 1.0}
    loaded = load_model(molecular_mace["model"])
    assert loaded.metadata["exploration"]["systems"][0]["n_clusters"] == 2  # the loss's clusters
    result = run_mlff("finetune", "--model", molecular_mace["model"], "--data",
                      molecular_mace["data"], "--reweight", "rbp", "--epochs", "2",
                      "--batch-size", "8", "-o", tmp_path / "ft")
    assert result.returncode == 0, result.stderr
    tuned = load_model(tmp_path / "ft" / "model.pt")
    assert tuned.metadata["architecture"] == "mace"
    before, after = loaded.module.state_dict(), tuned.module.state_dict()
    changed = [k for k in before if k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert changed  # the MACE blocks' weights moved


@pytest.mark.slow  # active learning keeps its fast test on SchNet (test_active_learning.py)
def test_active_learning_on_a_mace(tmp_path, molecular_mace):
    starts = write_frames(molecular_mace["frames"][[0, 20]], tmp_path / "starts.xyz")
    result = run_mlff("active-learn", "--model", molecular_mace["model"], "--structures", starts,
                      "--engine", "ase", "--level", "mmff94", "--rounds", "1", "--runs", "1",
                      "--steps", "100", "--report-interval", "10", "--temperature", "800",
                      "--epochs", "1", "--batch-size", "8", "-o", tmp_path / "al")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "al" / "summary.json").read_text())
    (round_,) = summary["rounds"]
    assert round_["new_frames"] > 0 and np.isfinite(round_["new_frames_F_mae_after"])
    assert load_model(summary["final_model"]).metadata["architecture"] == "mace"


@pytest.mark.slow  # ASTEROID keeps its fast tests on SchNet (test_asteroid.py)
def test_asteroid_on_a_mace(tmp_path, molecular_mace):
    from mlff_core.data.generate import relabel_frames
    from mlff_core.labels import get_level

    frames = molecular_mace["frames"]
    accurate = write_frames(relabel_frames(frames[:12], get_level("gfn2")), tmp_path / "acc.npz")
    cheap = write_frames(frames[12:], tmp_path / "cheap.npz")
    result = run_mlff("asteroid", "--accurate", accurate, "--cheap", cheap, "--model", "mace",
                      "--hidden", "8", "--layers", "1", "--cutoff", "4", "--epochs", "2",
                      "--finetune-epochs", "2", "--n-val", "3", "--gamma", "0.5",
                      "--cost-ratio", "10", "-o", tmp_path / "ast")
    assert result.returncode == 0, result.stderr
    model = load_model(tmp_path / "ast" / "model.pt")
    assert model.metadata["architecture"] == "mace"
    assert model.metadata["hyperparameters"]["avg_num_neighbors"] > 0


def test_mace_as_openmm_ml_potential_and_in_mlff_md_with_monitors(tmp_path, molecular_mace):
    import openmm
    import openmm.unit as unit
    from openmmml import MLPotential

    from mlff_core.data.frames import Frames
    from openmm_bridge.md import topology_from_atoms

    model = molecular_mace["model"]
    atoms = named_molecule("ethanol").atoms
    system = MLPotential("mlff", modelPath=str(model)).createSystem(topology_from_atoms(atoms))
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(atoms.positions * 0.1)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
        unit.kilojoule_per_mole) / KJ_PER_EV
    assert energy == pytest.approx(energy_forces(atoms, MLFFCalculator(model))[0], rel=1e-6)

    write_frames(Frames.from_atoms([atoms]), tmp_path / "start.xyz")
    result = run_mlff("md", "--engine", "openmm", "--model", model, "--structure",
                      tmp_path / "start.xyz", "--steps", "20", "--report-interval", "5",
                      "-o", tmp_path / "md")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "md" / "summary.json").read_text())
    assert summary["steps_run"] == 20
    log = (tmp_path / "md" / "exploration.log").read_text().splitlines()
    assert len([line for line in log if line and not line.startswith("#")]) >= 4


def test_a_fresh_mace_potential_has_one_dtype_and_runs_in_float32():
    """build_potential('mace') once mixed a float32 Potential with float64 MACE blocks, which
    failed in `forward` ("both inputs should have same dtype")."""
    from mlff_core.models import build_potential

    potential = build_potential("mace", [1, 8], hidden=8, max_ell=2, correlation=2,
                                avg_num_neighbors=10.0)
    dtypes = {t.dtype for t in potential.state_dict().values() if t.is_floating_point()}
    assert dtypes == {torch.float64}
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    potential = potential.float()
    energy = potential(torch.tensor(water.positions, dtype=torch.float32),
                       torch.tensor(water.numbers), torch.zeros(3, 3), torch.zeros(3, dtype=bool))
    assert energy.dtype == torch.float32 and torch.isfinite(energy)
