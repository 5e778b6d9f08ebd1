"""OpenMM bridge: TorchForce and PythonForce against the Python model (Reference and CPU
platforms, molecule and periodic water), ML/MM through openmm-ml, NVE energy conservation,
reporters on a planted collapse, and errors before a simulation starts."""

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch
from models_helpers import random_potential, save_random_model

from mlff_core.data.molecules import named_molecule, water_box
from mlff_core.errors import MLFFError, SpeciesError
from mlff_core.export import load_model, model_metadata, save_model_file
from mlff_core.models import hyperparameters
from openmm_bridge import add_mlff_force, create_python_force, create_torch_force
from openmm_bridge.md import topology_from_atoms
from openmm_bridge.reporters import CollapseReporter, MaxForceReporter, run_simulation

KJ = 96.48533212331002  # kJ/mol per eV (CODATA, independent of the package)


def _reference(path, atoms):
    """Energy (kJ/mol) and forces (kJ/mol/nm) straight from the model file, in float64."""
    model = load_model(path)
    pos = torch.tensor(atoms.positions, requires_grad=True)
    periodic = bool(atoms.pbc.any())
    energy = model.module(pos, torch.tensor(atoms.numbers),
                          torch.tensor(atoms.cell.array if periodic else np.zeros((3, 3))),
                          torch.tensor([periodic] * 3))
    (gradient,) = torch.autograd.grad(energy, pos)
    return float(energy.detach()) * KJ, -gradient.numpy() * KJ * 10.0


def _openmm(system, atoms, platform):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName(platform))
    if atoms.pbc.any():
        context.setPeriodicBoxVectors(*(atoms.cell.array * 0.1))
    context.setPositions(atoms.positions * 0.1)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def _system(atoms, force):
    system = openmm.System()
    for mass in atoms.get_masses():
        system.addParticle(mass)
    if atoms.pbc.any():
        system.setDefaultPeriodicBoxVectors(*(atoms.cell.array * 0.1))
    system.addForce(force)
    return system


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
@pytest.mark.parametrize("case", ["aspirin", "water"])
def test_torch_and_python_forces_equal_the_model(tmp_path, platform, case):
    if case == "aspirin":
        atoms = named_molecule("aspirin").atoms
        path = save_random_model(tmp_path / "m.pt", "painn")
    else:
        atoms = water_box(16).atoms
        path = save_random_model(tmp_path / "m.pt", "painn", species=(1, 8), cutoff=4.0,
                                 num_interactions=2)
    energy, forces = _reference(path, atoms)
    periodic = bool(atoms.pbc.any())
    for create in (create_torch_force, create_python_force):
        force = create(path, atomic_numbers=atoms.numbers.tolist(), periodic=periodic)
        e, f = _openmm(_system(atoms, force), atoms, platform)
        assert e == pytest.approx(energy, rel=1e-6)
        assert np.abs(f - forces).max() <= 1e-6 * np.abs(forces).max()


def _water_topology(atoms):
    """One HOH residue per molecule (O, H1, H2), as force fields expect."""
    topology = app.Topology()
    chain = topology.addChain()
    for _ in range(len(atoms) // 3):
        residue = topology.addResidue("HOH", chain)
        o = topology.addAtom("O", app.Element.getBySymbol("O"), residue)
        for name in ("H1", "H2"):
            topology.addBond(o, topology.addAtom(name, app.Element.getBySymbol("H"), residue))
    topology.setPeriodicBoxVectors(atoms.cell.array * 0.1)
    return topology


def test_openmm_ml_potential_and_mixed_system(tmp_path):
    from openmmml import MLPotential

    water = water_box(64)
    topology = _water_topology(water.atoms)
    path = save_random_model(tmp_path / "w.pt", "schnet", species=(1, 8), cutoff=4.0)
    potential = MLPotential("mlff", modelPath=str(path))

    # All-ML system: same energy as the model file.
    system = potential.createSystem(topology)
    energy, _ = _reference(path, water.atoms)
    assert _openmm(system, water.atoms, "Reference")[0] == pytest.approx(energy, rel=1e-6)

    # ML/MM: one water is ML, the rest flexible TIP3P-FB.
    forcefield = app.ForceField("amber14/tip3pfb.xml")
    mm = forcefield.createSystem(topology, nonbondedMethod=app.CutoffPeriodic,
                                 nonbondedCutoff=0.6 * unit.nanometer, rigidWater=False)
    ml_atoms = [0, 1, 2]
    mixed = potential.createMixedSystem(topology, mm, ml_atoms)
    forces = {type(f).__name__: f for f in mixed.getForces()}
    bonds = forces["HarmonicBondForce"]
    assert all(not {bonds.getBondParameters(k)[0], bonds.getBondParameters(k)[1]} <= set(ml_atoms)
               for k in range(bonds.getNumBonds()))  # ML-region bonds replaced ...
    assert bonds.getNumBonds() == 2 * 63  # ... the other waters' bonds kept
    torch_forces = [f for f in mixed.getForces() if f.getName() == "TorchForce"
                    or type(f).__name__ == "TorchForce"]
    assert len(torch_forces) == 1
    nonbonded = forces["NonbondedForce"]
    excluded = {tuple(sorted(nonbonded.getExceptionParameters(k)[:2]))
                for k in range(nonbonded.getNumExceptions())}
    assert not any(i in ml_atoms and j not in ml_atoms for i, j in excluded)  # ML-MM kept
    # The ML force sees exactly the ML water: energy of that group = model on that molecule.
    torch_forces[0].setForceGroup(1)
    context = openmm.Context(mixed, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(water.atoms.positions * 0.1)
    ml_energy = context.getState(getEnergy=True, groups={1}).getPotentialEnergy()
    molecule = water.atoms[ml_atoms]
    molecule.pbc = False
    assert ml_energy.value_in_unit(unit.kilojoule_per_mole) == \
        pytest.approx(_reference(path, molecule)[0], rel=1e-6)


def test_nve_conserves_energy(tmp_path):
    """Velocity Verlet, 0.1 fs, float64 model, Reference platform.

    Bound: Verlet conserves a shadow Hamiltonian, so the total energy oscillates with
    amplitude O((ωΔt)²)·E_kin and does not drift. With Δt = 0.1 fs and the fastest motion of
    this model (periods > 10 fs), (ωΔt)² < (2π·0.1/10)² ≈ 4e-3; we allow 1 % of the kinetic
    energy for the spread and 0.1 % per ps for a linear drift.
    """
    atoms = named_molecule("aspirin").atoms
    path = save_random_model(tmp_path / "m.pt", "painn")
    system = _system(atoms, create_torch_force(path, atomic_numbers=atoms.numbers.tolist(),
                                               periodic=False))
    integrator = openmm.VerletIntegrator(0.1 * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(atoms.positions * 0.1)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    total, kinetic = [], []
    for _ in range(100):
        integrator.step(10)
        state = context.getState(getEnergy=True)
        ke = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        total.append(ke + state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        kinetic.append(ke)
    mean_kinetic = np.mean(kinetic)
    assert np.ptp(total) < 0.01 * mean_kinetic
    slope_per_ps = np.polyfit(np.arange(100) * 1e-3, total, 1)[0]  # 10 steps = 1 fs
    assert abs(slope_per_ps) < 1e-3 * mean_kinetic


def test_collapse_reporter_flags_planted_collapse_and_stop_writes_last_good(tmp_path):
    molecule = named_molecule("ethanol")
    topology = topology_from_atoms(molecule.atoms, molecule.bonds)
    path = save_random_model(tmp_path / "m.pt", "schnet")
    system = openmm.System()
    for mass in molecule.atoms.get_masses():
        system.addParticle(mass)
    add_mlff_force(system, topology, path)
    simulation = app.Simulation(topology, system, openmm.VerletIntegrator(0.0001),
                                openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(molecule.atoms.positions * 0.1 * unit.nanometer)
    reporter = CollapseReporter(tmp_path / "collapse.log", 10, threshold=0.5, action="stop",
                                flagged_path=tmp_path / "collapse.xyz",
                                last_good_path=tmp_path / "last_good.pdb")
    forces = MaxForceReporter(tmp_path / "forces.log", 10)
    simulation.reporters += [reporter, forces]
    assert not run_simulation(simulation, 40)["stopped"]
    state = simulation.context.getState(getPositions=True)
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    positions[5] += 0.1 * (positions[5] - positions[0]) / np.linalg.norm(positions[5] -
                                                                         positions[0])
    simulation.context.setPositions(positions)  # plant: a C-H bond 1 Å too long
    outcome = run_simulation(simulation, 100)
    assert outcome["stopped"] and simulation.currentStep == 50
    assert reporter.monitor.first_flagged_step == 50
    pdb = app.PDBFile(str(tmp_path / "last_good.pdb"))
    assert pdb.topology.getNumAtoms() == 9
    log = (tmp_path / "collapse.log").read_text().splitlines()[1:]
    assert [line.split("\t")[0] for line in log] == ["10", "20", "30", "40", "50"]
    assert log[-1].split("\t")[1] == "FLAGGED" and "bond 0-5" in log[-1]
    assert len((tmp_path / "forces.log").read_text().splitlines()) == 1 + 5


def test_errors_before_the_simulation_starts(tmp_path):
    water = water_box(16)
    topology = topology_from_atoms(water.atoms, water.bonds)
    system = openmm.System()
    for mass in water.atoms.get_masses():
        system.addParticle(mass)
    no_oxygen = save_random_model(tmp_path / "ch.pt", "schnet", species=(1, 6))
    with pytest.raises(SpeciesError, match="does not know element.s. O"):
        add_mlff_force(system, topology, no_oxygen)

    def with_periodicity(name, periodic):
        potential = random_potential("schnet", species=(1, 8))
        meta = model_metadata(potential, "schnet", hyperparameters("schnet"), periodic=periodic)
        return save_model_file(potential, tmp_path / name, meta)

    molecular_model = with_periodicity("mol.pt", False)
    with pytest.raises(MLFFError, match="trained on molecules .* but this system is periodic"):
        add_mlff_force(system, topology, molecular_model)
    single = water_box(1).atoms
    single.pbc = False
    gas = topology_from_atoms(single)
    gas_system = openmm.System()
    for mass in single.get_masses():
        gas_system.addParticle(mass)
    with pytest.raises(MLFFError, match="trained on periodic systems but this system is not"):
        add_mlff_force(gas_system, gas, with_periodicity("per.pt", True))


def test_example_script_and_mlff_md_cli(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from conftest import run_mlff

    from mlff_core.data.formats import write_frames
    from mlff_core.data.frames import Frames

    model = save_random_model(tmp_path / "m.pt", "schnet")
    example = Path(__file__).parents[1] / "examples" / "openmm_aspirin.py"
    result = subprocess.run([sys.executable, str(example), "--model", str(model), "--steps",
                             "200", "--platform", "Reference", "--seed", "1", "--output-dir",
                             str(tmp_path / "ex")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    # a random model binds nothing: with this seed a hydrogen has left by step 100, the first
    # check, and the collapse reporter stops the run there (no good frame to save)
    assert "ran 100 steps; stopped: collapse: bond 12-20 is " in result.stdout, result.stdout
    assert not (tmp_path / "ex" / "last_good.pdb").exists()
    assert (tmp_path / "ex" / "trajectory.dcd").stat().st_size > 0

    atoms = named_molecule("ethanol").atoms
    write_frames(Frames.from_atoms([atoms]), tmp_path / "start.xyz")
    md = run_mlff("md", "--engine", "openmm", "--model", model, "--structure",
                  tmp_path / "start.xyz", "--steps", "100", "--report-interval", "20",
                  "--platform", "Reference", "--on-collapse", "flag", "-o", tmp_path / "md")
    assert md.returncode == 0, md.stderr
    assert "100 of 100 steps" in md.stdout
    for name in ("trajectory.dcd", "state.csv", "collapse.log", "exploration.log", "forces.log",
                 "start.pdb", "summary.json"):
        assert (tmp_path / "md" / name).exists(), name


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_nan_coordinates_stop_the_run_cleanly(tmp_path, platform):
    """Hydrogen 5 put on top of its carbon: the model returns NaN forces, the coordinates turn
    NaN, and the run ends as a collapse with the last good frame saved (no traceback)."""
    molecule = named_molecule("ethanol")
    topology = topology_from_atoms(molecule.atoms, molecule.bonds)
    system = openmm.System()
    for mass in molecule.atoms.get_masses():
        system.addParticle(mass)
    add_mlff_force(system, topology, save_random_model(tmp_path / "m.pt", "schnet"))
    simulation = app.Simulation(topology, system, openmm.VerletIntegrator(0.0001),
                                openmm.Platform.getPlatformByName(platform))
    simulation.context.setPositions(molecule.atoms.positions * 0.1)
    reporter = CollapseReporter(tmp_path / "collapse.log", 10, action="stop",
                                flagged_path=tmp_path / "collapse.xyz",
                                last_good_path=tmp_path / "last_good.pdb")
    simulation.reporters.append(reporter)
    assert not run_simulation(simulation, 30)["stopped"]
    positions = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
    positions[5] = positions[0]
    simulation.context.setPositions(positions)
    outcome = run_simulation(simulation, 100)
    reporter.close()
    assert outcome["stopped"] and outcome["reason"].startswith("collapse: ")
    assert "non-finite" in outcome["reason"] and simulation.currentStep <= 40
    assert outcome["last_good"] == str(tmp_path / "last_good.pdb")
    last_good = app.PDBFile(outcome["last_good"]).getPositions(asNumpy=True)
    assert np.isfinite(np.asarray(last_good.value_in_unit(unit.angstrom))).all()
    log = (tmp_path / "collapse.log").read_text().splitlines()[1:]
    assert [line.split("\t")[1] for line in log] == ["ok"] * 3 + ["FLAGGED"]


def test_inconsistent_api_input_is_one_clear_error(tmp_path):
    aspirin = named_molecule("aspirin")
    topology = topology_from_atoms(aspirin.atoms, aspirin.bonds)
    model = save_random_model(tmp_path / "m.pt", "schnet")

    def system_of(n):
        system = openmm.System()
        for _ in range(n):
            system.addParticle(12.0)
        return system

    with pytest.raises(MLFFError, match="Topology has 21 atoms but the System has 10"):
        add_mlff_force(system_of(10), topology, model)
    for atoms, needle in (([0, 0, 1, 2], "lists particle 0 more than once"),
                          ([-1, 0, 1], "holds -1, outside the System's particle indices"),
                          ([0, 1, 21], "holds 21, outside"), ([0.5, 1], "whole particle"),
                          ([], "is empty")):
        system = system_of(21)
        with pytest.raises(MLFFError, match=needle):
            add_mlff_force(system, topology, model, atoms=atoms)
        assert system.getNumForces() == 0
    with pytest.raises(MLFFError, match="reportInterval must be a positive whole number"):
        CollapseReporter(None, 0)
    with pytest.raises(MLFFError, match="threshold must be a positive length"):
        CollapseReporter(None, 10, threshold=0.0)
    with pytest.raises(MLFFError, match="reportInterval must be a positive whole number"):
        MaxForceReporter(tmp_path / "forces.log", -5)


@pytest.mark.parametrize("straddling", [False, True])
def test_molecular_model_on_the_ml_subset_of_a_water_box(exported_water_model, straddling):
    """ML/MM with a model from `mlff train` + `mlff export` (periodic: false): the ML water of
    a periodic TIP3P-FB box gets the energy and forces of the isolated molecule (ASE
    calculator, float64), also when it straddles the box edge; through add_mlff_force and
    through openmm-ml's createMixedSystem."""
    from openmmml import MLPotential

    from ase_bridge import MLFFCalculator

    assert load_model(exported_water_model).metadata["periodic"] is False
    water = water_box(64)
    atoms = water.atoms.copy()
    edge = atoms.cell.array[0, 0]
    if straddling:  # the ML water's x extent centred on the x face: part of it wraps over
        extent = atoms.positions[:3, 0]
        atoms.positions += [edge - 0.5 * (extent.min() + extent.max()), 0.0, 0.0]
        atoms.wrap()
        assert np.ptp(atoms.positions[:3, 0]) > edge / 2
    ml_atoms = [0, 1, 2]
    isolated = water.atoms[ml_atoms]
    isolated.pbc = False
    isolated.calc = MLFFCalculator(exported_water_model)
    energy = isolated.get_potential_energy() * KJ
    forces = isolated.get_forces() * KJ * 10.0
    topology = _water_topology(atoms)

    direct = openmm.System()
    for mass in atoms.get_masses():
        direct.addParticle(mass)
    direct.setDefaultPeriodicBoxVectors(*(atoms.cell.array * 0.1))
    add_mlff_force(direct, topology, exported_water_model, atoms=ml_atoms)
    e, f = _openmm(direct, atoms, "Reference")
    assert e == pytest.approx(energy, abs=1e-6)
    np.testing.assert_allclose(f[:3], forces, atol=1e-6)
    np.testing.assert_allclose(f[3:], 0.0, atol=1e-12)

    forcefield = app.ForceField("amber14/tip3pfb.xml")
    mm = forcefield.createSystem(topology, nonbondedMethod=app.CutoffPeriodic,
                                 nonbondedCutoff=0.6 * unit.nanometer, rigidWater=False)
    potential = MLPotential("mlff", modelPath=str(exported_water_model))
    mixed = potential.createMixedSystem(topology, mm, ml_atoms)
    ml_force = next(f for f in mixed.getForces()
                    if f.getName() == "TorchForce" or type(f).__name__ == "TorchForce")
    ml_force.setForceGroup(1)
    context = openmm.Context(mixed, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(atoms.positions * 0.1)
    ml_energy = context.getState(getEnergy=True, groups={1}).getPotentialEnergy()
    assert ml_energy.value_in_unit(unit.kilojoule_per_mole) == pytest.approx(energy, abs=1e-6)


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_link_atom_moves_with_a_cut_ml_region_straddling_the_box_edge(tmp_path, backend):
    """openmm-ml's createMixedSystem on ethanol in a periodic box with the ML subset CH3-CH2
    (the C1-O2 bond cut: one link atom, a virtual site on C1-O2): with the ML region across
    the x face, in the positions OpenMM itself wraps molecule by molecule (C0 alone, since the
    ML-internal bonds are gone; C1 with O2, H8 and the link atom), the ML force gives the
    energy and forces of the same configuration translated inside the box (translation
    invariance), in float64: the link atom is made whole with its ML atom."""
    from openmmml import MLPotential

    ethanol = named_molecule("ethanol")
    edge = 20.0  # Å
    box = np.eye(3) * edge * 0.1
    topology = topology_from_atoms(ethanol.atoms, ethanol.bonds)
    topology.setPeriodicBoxVectors(box)
    mm = openmm.System()
    mm.setDefaultPeriodicBoxVectors(*box)
    for mass in ethanol.atoms.get_masses():
        mm.addParticle(mass)
    bonds = openmm.HarmonicBondForce()
    bonds.setUsesPeriodicBoundaryConditions(True)
    for i, j in ethanol.bonds.tolist():
        bonds.addBond(i, j, 0.15, 1000.0)
    mm.addForce(bonds)
    path = save_random_model(tmp_path / "m.pt", "schnet", periodic=False)
    ml_atoms = [0, 1, 3, 4, 5, 6, 7]
    info = MLPotential("mlff", modelPath=str(path)).createMixedSystem(
        topology, mm, ml_atoms, returnInfo=True, backend=backend)
    mixed = info["system"]
    assert mixed.getNumParticles() == 10 and mixed.isVirtualSite(9)  # the link atom
    ml_force = next(f for f in mixed.getForces() if f.getName() in ("TorchForce", "PythonForce")
                    or type(f).__name__ in ("TorchForce", "PythonForce"))
    ml_force.setForceGroup(1)
    context = openmm.Context(mixed, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))

    def energy_forces(positions, wrap):
        context.setPositions(np.vstack([positions, [[0.0, 0.0, 0.0]]]) * 0.1)
        context.computeVirtualSites()
        if wrap:  # as OpenMM wraps: each molecule of the mixed System into the box
            wrapped = context.getState(getPositions=True, enforcePeriodicBox=True)
            context.setPositions(wrapped.getPositions())
        state = context.getState(getEnergy=True, getForces=True, getPositions=True, groups={1})
        return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole
                                                            / unit.nanometer)[:9],
                state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))

    start = ethanol.atoms.positions - ethanol.atoms.positions[0] + [edge + 0.7, 10.0, 10.0]
    e, f, seen = energy_forces(start, wrap=True)
    assert seen[0, 0] < 2.0 and seen[1, 0] > edge - 2.0  # C0 and C1 on opposite faces
    reference_e, reference_f, inside = energy_forces(start - [8.0, 0.0, 0.0], wrap=False)
    assert np.all((inside[:, 0] > 2.0) & (inside[:, 0] < edge - 2.0))
    assert e == pytest.approx(reference_e, abs=1e-6)
    np.testing.assert_allclose(f, reference_f, atol=1e-6)
