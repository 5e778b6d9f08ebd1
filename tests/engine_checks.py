"""Engine-equality checks shared by the tests of imported and MACE models: the same model file
in ASE, LAMMPS (1 and 2 MPI ranks) and OpenMM, on a periodic box cut by the domain boundary."""

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from ase_bridge import MLFFCalculator
from mlff_core.data.molecules import named_molecule

KJ_PER_EV = 96.48533212331002  # kJ/mol per eV


def ethanol_box() -> Atoms:
    """Two ethanol molecules in a 9 Å periodic cube, 6 pairs of their atoms within 4 Å. Split
    in two MPI domains along z (`processors 1 1 *`), one molecule straddles z = 0 (the periodic
    face both domains touch), the other z = 4.5 Å; both are also cut by x or y faces."""
    ethanol = named_molecule("ethanol").atoms
    first, second = ethanol.copy(), ethanol.copy()
    first.positions += np.array([8.3, 2.0, 8.6]) - first.positions.mean(axis=0)
    second.rotate(90, "z")
    second.positions += np.array([4.5, 8.5, 4.5]) - second.positions.mean(axis=0)
    box = first + second
    box.cell = np.eye(3) * 9.0
    box.pbc = True
    box.wrap()
    return box


def energy_forces(atoms, calculator):
    atoms = atoms.copy()
    atoms.calc = calculator
    return atoms.get_potential_energy(), atoms.get_forces()


def assert_same(ours, theirs, rel=1e-6):
    (e, f), (e_ref, f_ref) = ours, theirs
    assert e == pytest.approx(e_ref, rel=rel)
    assert np.abs(f - f_ref).max() <= rel * max(np.abs(f_ref).max(), 1.0)


def deviation(ours, theirs):
    (e, f), (e_ref, f_ref) = ours, theirs
    return abs(e - e_ref) / abs(e_ref), np.abs(f - f_ref).max()


def lammps_equals_ase(tmp_path, model, atoms, label) -> str:
    """1 and 2 ranks equal ASE, and each other; returns the 2-rank run's screen output."""
    from mlff_lammps import plugin_path
    from test_lammps_plugin import _run_lmp

    write(tmp_path / "box.data", atoms, format="lammps-data", specorder=["H", "C", "O"],
          masses=True, units="metal")
    (tmp_path / "in.box").write_text(f"""
units metal
atom_style atomic
atom_modify map yes
boundary p p p
processors 1 1 *
read_data box.data
plugin load {plugin_path()}
pair_style mlff dtype float64
pair_coeff * * {model} H C O
thermo_style custom step pe
thermo_modify format float %.15g
dump d all custom 1 forces.${{n}}.txt id fx fy fz
dump_modify d format float %.17g sort id
run 0
""")
    energy, forces = energy_forces(atoms, MLFFCalculator(model))
    results = {}
    for n in (1, 2):
        result = _run_lmp(n, "in.box", tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert f"on {n} procs" in result.stdout
        lines = result.stdout.splitlines()
        print(next(line.strip() for line in lines if "MPI processor grid" in line))
        header = next(k for k, line in enumerate(lines) if line.split()[:2] == ["Step", "PotEng"])
        dump = np.loadtxt(tmp_path / f"forces.{n}.txt", skiprows=9)
        results[n] = (float(lines[header + 1].split()[1]), dump[np.argsort(dump[:, 0]), 1:])
    for n in (1, 2):
        print(f"{label} LAMMPS {n} rank(s) vs ASE: ΔE = {abs(results[n][0] - energy):.1e} eV, "
              f"max ΔF = {np.abs(results[n][1] - forces).max():.1e} eV/Å")
        assert results[n][0] == pytest.approx(energy, abs=1e-8)
        np.testing.assert_allclose(results[n][1], forces, atol=1e-8)
    print(f"{label} LAMMPS 2 vs 1 rank: max ΔF = "
          f"{np.abs(results[2][1] - results[1][1]).max():.1e} eV/Å")
    np.testing.assert_allclose(results[2][1], results[1][1], atol=1e-10)
    return result.stdout


def openmm_equals_ase(path, structures, label):
    """TorchForce and PythonForce (Reference platform) give ASE's energy and forces."""
    import openmm
    import openmm.unit as unit

    from openmm_bridge import create_python_force, create_torch_force

    for name, atoms in structures.items():
        energy, forces = energy_forces(atoms, MLFFCalculator(path))
        periodic = bool(atoms.pbc.any())
        for create in (create_torch_force, create_python_force):
            system = openmm.System()
            for mass in atoms.get_masses():
                system.addParticle(mass)
            if periodic:
                system.setDefaultPeriodicBoxVectors(*(atoms.cell.array * 0.1))
            system.addForce(create(path, atomic_numbers=atoms.numbers.tolist(),
                                   periodic=periodic))
            context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                                     openmm.Platform.getPlatformByName("Reference"))
            context.setPositions(atoms.positions * 0.1)
            state = context.getState(getEnergy=True, getForces=True)
            e = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_EV
            f = state.getForces(asNumpy=True).value_in_unit(
                unit.kilojoule_per_mole / unit.nanometer) / KJ_PER_EV / 10.0
            de, df = deviation((e, f), (energy, forces))
            print(f"{label} OpenMM {create.__name__} vs ASE, {name}: ΔE/E = {de:.1e}, "
                  f"max ΔF = {df:.1e}")
            assert_same((e, f), (energy, forces))
