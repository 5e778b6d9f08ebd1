"""The ASE calculator: finite-difference forces and stress, per-atom energies, unknown
elements, and MD."""

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.verlet import VelocityVerlet
from models_helpers import save_random_model

from ase_bridge import MLFFCalculator
from mlff_core.data.molecules import named_molecule, water_box
from mlff_core.errors import SpeciesError


@pytest.mark.parametrize("architecture", ["schnet", "painn"])
def test_forces_are_minus_energy_gradient(tmp_path, architecture):
    atoms = named_molecule("aspirin").atoms
    atoms.calc = MLFFCalculator(save_random_model(tmp_path / "m.pt", architecture))
    np.testing.assert_allclose(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-5),
                               atol=1e-7)


@pytest.mark.parametrize("architecture", ["schnet", "painn"])
def test_periodic_stress_and_forces(tmp_path, architecture):
    atoms = water_box(8).atoms
    atoms.set_cell(atoms.cell.array + np.array([[0, 0.4, 0], [0.3, 0, 0], [0, -0.2, 0]]),
                   scale_atoms=True)  # triclinic
    atoms.calc = MLFFCalculator(save_random_model(tmp_path / "w.pt", architecture, species=(1, 8),
                                                  cutoff=4.0, num_interactions=2))
    np.testing.assert_allclose(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-5),
                               atol=1e-7)
    stress = atoms.get_stress()
    np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-6), atol=1e-9)
    assert np.abs(stress).max() > 1e-4
    # Per-atom energies (forward_graph on local + ghost atoms) add up to the total.
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy(),
                                                                 abs=1e-9)


def test_unknown_element_is_a_clear_error(tmp_path):
    atoms = Atoms("NH3", positions=np.eye(4, 3) * 1.0)
    atoms.calc = MLFFCalculator(save_random_model(tmp_path / "m.pt"))
    with pytest.raises(SpeciesError, match="does not know element.s. N .it was trained on H, C, O"):
        atoms.get_potential_energy()


def test_float64_nve_conserves_energy(tmp_path):
    atoms = named_molecule("ethanol").atoms
    atoms.calc = MLFFCalculator(save_random_model(tmp_path / "m.pt", "schnet"))
    atoms.set_velocities(np.random.default_rng(0).normal(0, 0.01, (len(atoms), 3)))
    energies = []
    dynamics = VelocityVerlet(atoms, timestep=0.1 * units.fs)
    dynamics.attach(lambda: energies.append(atoms.get_total_energy()), interval=5)
    dynamics.run(200)
    assert np.ptp(energies) < 1e-4 * max(1.0, atoms.get_kinetic_energy())


def test_mlff_md_with_the_ase_engine(tmp_path):
    import json

    from conftest import run_mlff

    from mlff_core.data.formats import write_frames
    from mlff_core.data.frames import Frames

    model = save_random_model(tmp_path / "m.pt", "schnet")
    write_frames(Frames.from_atoms([named_molecule("ethanol").atoms]), tmp_path / "start.xyz")
    result = run_mlff("md", "--engine", "ase", "--model", model, "--structure",
                      tmp_path / "start.xyz", "--steps", "40", "--report-interval", "10",
                      "--on-collapse", "flag", "-o", tmp_path / "md")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "md" / "summary.json").read_text())
    assert summary["engine"] == "ase" and summary["steps_run"] == 40
    assert {"trajectory.traj", "md.log", "collapse.log", "exploration.log"} <= \
        set(summary["files"])


def test_one_periodicity_rule(tmp_path):
    """A molecular model runs on a periodic cell only when the molecule, made whole, stays a
    cutoff away from its images (then it gets the isolated molecule's energy and forces, also
    across the boundary); a periodic model refuses a molecule."""
    from mlff_core.errors import MLFFError

    molecular = save_random_model(tmp_path / "mol.pt", "schnet", periodic=False)
    aspirin = named_molecule("aspirin").atoms
    aspirin.calc = MLFFCalculator(molecular)
    energy, forces = aspirin.get_potential_energy(), aspirin.get_forces()

    boxed = aspirin.copy()
    boxed.set_cell(np.eye(3) * 20.0)
    boxed.pbc = True
    x = boxed.positions[:, 0]
    boxed.positions += [20.0 - 0.5 * (x.min() + x.max()), 10.0, 10.0]
    boxed.wrap()  # the molecule, centred on the x face, now straddles it
    assert np.ptp(boxed.positions[:, 0]) > 10.0
    boxed.calc = MLFFCalculator(molecular)
    assert boxed.get_potential_energy() == pytest.approx(energy, abs=1e-9)
    np.testing.assert_allclose(boxed.get_forces(), forces, atol=1e-9)

    small = aspirin.copy()
    small.set_cell(np.eye(3) * 6.0)
    small.pbc = True
    small.calc = MLFFCalculator(molecular)
    with pytest.raises(MLFFError, match="trained on molecules, but these atoms come within"):
        small.get_potential_energy()

    periodic = save_random_model(tmp_path / "per.pt", "schnet", species=(1, 8), cutoff=4.0,
                                 periodic=True)
    molecule = water_box(1).atoms
    molecule.pbc = False
    molecule.calc = MLFFCalculator(periodic)
    with pytest.raises(MLFFError, match="trained on periodic cells, but this system is not"):
        molecule.get_potential_energy()


@pytest.mark.parametrize("architecture", ["schnet", "painn"])
def test_non_finite_or_overlapping_input_never_gives_a_finite_energy(tmp_path, architecture):
    calculator = MLFFCalculator(save_random_model(tmp_path / "m.pt", architecture))
    for plant in ("nan", "inf", "overlap"):
        atoms = named_molecule("ethanol").atoms
        if plant == "overlap":
            atoms.positions[5] = atoms.positions[0]
        else:
            atoms.positions[5, 1] = float(plant)
        atoms.calc = calculator
        assert not np.isfinite(atoms.get_potential_energy()), plant
        assert not np.isfinite(atoms.get_forces()).all(), plant


def test_ase_md_example_script_runs_end_to_end(tmp_path):
    """examples/ase_md.py as a user runs it: a model file and a structure file; it runs, writes
    the trajectory and the monitor logs, and stops cleanly on a collapse (a 0.001 Å threshold
    is crossed within the first 10 steps at 500 K)."""
    import subprocess
    import sys
    from pathlib import Path

    import ase.io

    script = Path(__file__).resolve().parents[1] / "examples" / "ase_md.py"
    model = save_random_model(tmp_path / "m.pt", "schnet")
    named_molecule("ethanol").atoms.write(tmp_path / "ethanol.xyz")

    def run(*args):
        return subprocess.run([sys.executable, str(script), "--model", str(model),
                               "--structure", str(tmp_path / "ethanol.xyz"), "--steps", "20",
                               "--interval", "10", *args],
                              capture_output=True, text=True, cwd=tmp_path, timeout=600)

    result = run("--output-dir", "md")
    assert result.returncode == 0, result.stderr
    assert "9 atoms, 20 of 20 steps" in result.stdout
    assert "collapse: 3 frames checked" in result.stdout
    assert "exploration: 3 frames checked" in result.stdout
    assert len(ase.io.read(tmp_path / "md" / "trajectory.traj", index=":")) == 3
    assert {"md.log", "collapse.log", "exploration.log"} <= \
        {p.name for p in (tmp_path / "md").iterdir()}

    stopped = run("--output-dir", "stopped", "--threshold", "0.001")
    assert stopped.returncode == 0, stopped.stderr
    assert "10 of 20 steps" in stopped.stdout and "stopped: bond" in stopped.stdout
    assert (tmp_path / "stopped" / "last_good.xyz").exists()
