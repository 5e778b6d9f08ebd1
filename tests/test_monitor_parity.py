"""One monitor in every engine: the Python detectors (OpenMM reporters, ASE observers) and the
C++ `fix mlff/monitor` see the same planted trajectory and must flag exactly the same frames
for exactly the same reasons, worded the same, under 1 and 2 MPI ranks.

The trajectory (ethanol in a 30 Å box, a model file with conformation clusters) plants:
stretches below, just under, just over and far over the 0.5 Å threshold; a reference frame
with two hydrogens 1.1 Å apart, which only ASE NeighborList's wider r_i + r_j + 0.6 Å rule
would call a bond (so every later frame would be "collapsed" under it); a frame outside the
training clusters; two atoms on top of each other (the model returns NaN forces); and an O-H
bond stretched by 0.12 Å, inside the clusters but outside the bond's training range (the local
bond score flags it).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import read, write
from ase.neighborlist import NeighborList, natural_cutoffs
from models_helpers import ethanol_md_frames, save_model_with_clusters

from ase_bridge import MLFFCalculator
from mlff_core.data.molecules import covalent_bonds
from mlff_core.monitors import CollapseDetector, ExplorationDetector

EDGE = 30.0  # Å, cubic box
THRESHOLD = 0.5


@pytest.fixture(scope="module")
def plugin():
    from mlff_lammps import plugin_path

    return plugin_path()


def _stretch(positions, i, j, reference, extra):
    """Atom j moved along bond i-j so that the bond is `extra` Å longer than `reference`."""
    out = positions.copy()
    unit = (out[j] - out[i]) / np.linalg.norm(out[j] - out[i])
    out[j] = out[i] + (reference + extra) * unit
    return out


def _planted_trajectory(frames):
    """[K, 9, 3] positions centred in the box, and what each frame plants."""
    shift = EDGE / 2 - frames.positions[0].mean(axis=0)
    base = frames.positions[0] + shift
    numbers = frames.atomic_numbers
    hydrogens = [i for i, z in enumerate(numbers) if z == 1]
    # two hydrogens of the methyl group squeezed to 1.1 Å in the reference frame
    methyl = [h for h in hydrogens if np.linalg.norm(base[h] - base[0]) < 1.2][:2]
    a, b = methyl
    middle, half = (base[a] + base[b]) / 2, (base[b] - base[a]) / np.linalg.norm(base[b] - base[a])
    reference = base.copy()
    reference[a], reference[b] = middle - 0.55 * half, middle + 0.55 * half
    h = next(i for i in hydrogens if i not in methyl and np.linalg.norm(base[i] - base[1]) < 1.2)
    ch = np.linalg.norm(reference[h] - reference[1])
    overlap = base.copy()
    overlap[h] = overlap[1]
    centre = base.mean(axis=0)
    planted = [
        (reference, "reference (two H 1.1 Å apart)"),
        (frames.positions[5] + shift, "MD frame"),  # distance/radius ≈ 0.5: inside
        (_stretch(base, 1, h, ch, 0.45), "stretch 0.45"),
        (_stretch(base, 1, h, ch, 0.499), "stretch 0.499"),
        (_stretch(base, 1, h, ch, 0.501), "stretch 0.501"),
        (_stretch(base, 1, h, ch, 0.8), "stretch 0.8"),
        (centre + 1.12 * (base - centre), "scaled by 1.12 (outside the clusters)"),
        (overlap, "H on top of its carbon"),
        (frames.positions[20] + shift, "MD frame"),  # distance/radius ≈ 0.5: inside
        # the O-H bond 0.12 Å longer: inside the clusters, outside that bond's training range
        (_stretch(base, 2, 8, np.linalg.norm(base[8] - base[2]), 0.12), "O-H stretch 0.12"),
    ]
    return np.stack([p for p, _ in planted]), [what for _, what in planted], (a, b)


def _python_monitor(model, positions, numbers, warn_ratio=1.0):
    """(status, 'kind: details') rows, two per frame, as the Python reporters log them; atom
    indices + 1 (LAMMPS atom IDs)."""
    cell, pbc = np.eye(3) * EDGE, np.ones(3, dtype=bool)
    collapse = CollapseDetector.from_atoms(Atoms(numbers=numbers, positions=positions[0],
                                                 cell=cell, pbc=pbc), THRESHOLD)
    exploration = ExplorationDetector(model, warn_ratio)
    calculator = MLFFCalculator(model)
    rows = []
    for frame in positions:
        atoms = Atoms(numbers=numbers, positions=frame, cell=cell, pbc=pbc)
        atoms.calc = calculator
        forces = atoms.get_forces()
        c = collapse.check(frame, cell, pbc, forces)
        e = exploration.check(frame, numbers, cell, pbc)
        rows.append(("FLAGGED" if c.collapsed else "ok", f"collapse: {_ids(c.describe())}"))
        rows.append(("FLAGGED" if e.flagged else "ok", f"exploration: {_ids(e.describe())}"))
    return rows


def _ids(text):
    text = re.sub(r"bond (\d+)-(\d+)", lambda m: f"bond {int(m[1]) + 1}-{int(m[2]) + 1}", text)
    return re.sub(r"atom (\d+)", lambda m: f"atom {int(m[1]) + 1}", text)


def _write_dump(path, positions, types):
    lines = []
    for step, frame in enumerate(positions, start=1):
        lines += ["ITEM: TIMESTEP", str(step), "ITEM: NUMBER OF ATOMS", str(len(frame)),
                  "ITEM: BOX BOUNDS pp pp pp", *[f"0 {EDGE}"] * 3, "ITEM: ATOMS id type x y z"]
        lines += [f"{i + 1} {t} {x:.17g} {y:.17g} {z:.17g}"
                  for i, (t, (x, y, z)) in enumerate(zip(types, frame, strict=True))]
    Path(path).write_text("\n".join(lines) + "\n")


def _fix_rows(log):
    rows = []
    for line in Path(log).read_text(encoding="utf-8").splitlines()[1:]:
        _, status, text = line.split("\t")
        rows.append((status, text))
    return rows


def test_python_monitors_and_the_lammps_fix_flag_the_same_frames(tmp_path, plugin):
    frames = ethanol_md_frames()
    model = save_model_with_clusters(tmp_path / "m.pt", frames)
    positions, planted, squeezed = _planted_trajectory(frames)
    numbers = frames.atomic_numbers

    # The planted reference really separates the two bond rules.
    wide = NeighborList(natural_cutoffs(Atoms(numbers=numbers, positions=positions[0])),
                        self_interaction=False, bothways=False)  # ASE default skin 0.3
    wide.update(Atoms(numbers=numbers, positions=positions[0]))
    assert squeezed[1] in wide.get_neighbors(squeezed[0])[0]
    assert list(squeezed) not in covalent_bonds(Atoms(numbers=numbers,
                                                      positions=positions[0])).tolist()

    python = _python_monitor(model, positions, numbers)
    statuses = [python[2 * k][0] + "/" + python[2 * k + 1][0] for k in range(len(planted))]
    # (the stretched hydrogens also leave the clusters; overlapping atoms cannot be classified)
    assert statuses == ["ok/FLAGGED", "ok/ok", "ok/FLAGGED", "ok/FLAGGED", "FLAGGED/FLAGGED",
                        "FLAGGED/FLAGGED", "ok/FLAGGED", "FLAGGED/ok", "ok/ok", "ok/FLAGGED"], \
        list(zip(planted, python[::2], python[1::2], strict=True))
    # the last frame is flagged by the local bond score alone (O is atom 3, its H atom 9)
    assert re.fullmatch(r"exploration: unexplored: nearest cluster \d+, distance/radius "
                        r"0\.\d+, bond 3-9 score [1-9]\.\d{3}", python[-1][1]), python[-1]
    assert python[14][1] == "collapse: atom 1 has a non-finite force (NaN or inf)"
    assert python[15][1].startswith("exploration: not classified")

    types = {1: 1, 6: 2, 8: 3}
    start = Atoms(numbers=numbers, positions=positions[0], cell=np.eye(3) * EDGE, pbc=True)
    write(tmp_path / "start.data", start, format="lammps-data", specorder=["H", "C", "O"],
          masses=True, units="metal")
    _write_dump(tmp_path / "frames.dump", positions, [types[z] for z in numbers])
    # A lower warn level (DeePMD's trust_lo) flags the in-cluster MD frames too, alike.
    md_scores = [max(map(float, re.findall(r"(?:radius|score) (\d+\.\d+)", python[2 * k + 1][1])))
                 for k, what in enumerate(planted) if what == "MD frame"]
    warn = round(0.9 * min(md_scores), 6)
    graded = _python_monitor(model, positions, numbers, warn)
    assert [graded[2 * k + 1][0] for k, what in enumerate(planted) if what == "MD frame"] == \
        ["FLAGGED", "FLAGGED"]
    _run_fix(tmp_path, plugin, "graded", 1, f"warn_ratio {warn}")
    assert _fix_rows(tmp_path / "monitor.graded.log") == graded

    for n in (1, 2):
        _run_fix(tmp_path, plugin, str(n), n)
        assert _fix_rows(tmp_path / f"monitor.{n}.log") == python, n
        flagged = read(tmp_path / f"flagged.{n}.xyz", index=":")
        assert [f.info["step"] for f in flagged] == [1, 3, 4, 5, 6, 7, 8, 10]  # steps 1..10
        assert not any(f.pbc.any() for f in flagged)  # a molecule, as the suite reads it
        np.testing.assert_allclose(flagged[4].positions, positions[5], atol=1e-9)


def _run_fix(tmp_path, plugin, name, ranks, levels=""):
    """Rerun the planted frames through fix mlff/monitor on `ranks` MPI ranks; writes
    monitor.NAME.log and flagged.NAME.xyz."""
    (tmp_path / "in.parity").write_text(f"""
units metal
atom_style atomic
atom_modify map yes
boundary p p p
read_data start.data
plugin load {plugin}
pair_style mlff dtype float64
pair_coeff * * m.pt H C O
fix monitor all mlff/monitor 1000000 m.pt threshold {THRESHOLD} file monitor.${{n}}.log &
    frames flagged.${{n}}.xyz {levels}
rerun frames.dump dump x y z box no
""")
    lammps_dir = Path(__import__("lammps").__file__).parent
    environment = dict(os.environ, OMP_NUM_THREADS="1",
                       LD_LIBRARY_PATH=str(Path(sys.prefix) / "lib"))
    mpirun = Path(sys.executable).with_name("mpirun")
    result = subprocess.run([str(mpirun), "-np", str(ranks), str(lammps_dir / "lmp"), "-in",
                             "in.parity", "-var", "n", name], cwd=tmp_path,
                            capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"on {ranks} procs" in result.stdout or ranks == 1


def test_the_committee_deviation_is_the_same_in_python_and_in_the_lammps_fix(tmp_path, plugin):
    """The planted frames through a committee: the same deviations, flags and words from the
    Python detector (OpenMM reporter, ASE observer) and from the fix, on 1 and 2 ranks."""
    from models_helpers import save_random_committee

    from mlff_core.monitors import DeviationDetector

    frames = ethanol_md_frames()
    save_random_committee(tmp_path / "m.pt", size=3)
    positions, planted, _ = _planted_trajectory(frames)
    numbers = frames.atomic_numbers
    cell, pbc = np.eye(3) * EDGE, np.ones(3, dtype=bool)
    values = [DeviationDetector(tmp_path / "m.pt", 1.0).check(p, numbers, cell, pbc).deviation
              for p in positions]
    assert np.isnan(values[7]) and np.isfinite(np.delete(values, 7)).all()  # the overlap
    warn = round(float(np.nanmedian(values)), 6)  # about half the frames above it
    detector = DeviationDetector(tmp_path / "m.pt", warn)
    python = []
    for frame in positions:
        check = detector.check(frame, numbers, cell, pbc)
        python.append(("FLAGGED" if check.flagged else "ok",
                       f"deviation: {_ids(check.describe())}"))
    assert 2 <= sum(status == "FLAGGED" for status, _ in python) <= 6, python

    types = {1: 1, 6: 2, 8: 3}
    start = Atoms(numbers=numbers, positions=positions[0], cell=cell, pbc=True)
    write(tmp_path / "start.data", start, format="lammps-data", specorder=["H", "C", "O"],
          masses=True, units="metal")
    _write_dump(tmp_path / "frames.dump", positions, [types[z] for z in numbers])
    for n in (1, 2):
        _run_fix(tmp_path, plugin, f"d{n}", n, f"explore no warn_deviation {warn}")
        rows = [row for row in _fix_rows(tmp_path / f"monitor.d{n}.log")
                if row[1].startswith("deviation: ")]
        assert rows == python, n
