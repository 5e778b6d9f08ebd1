"""MD trajectories as `Frames`: DCD/XTC/TRR/NetCDF/HDF5 (mdtraj), LAMMPS text dumps, ASE
trajectories, extended XYZ, and the native npz. Positions and cells in Å.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mlff_core.data.formats import read_frames
from mlff_core.data.frames import Frames
from mlff_core.errors import DataError

#: Suffixes read with mdtraj (they need a topology for the atoms).
MDTRAJ_SUFFIXES = {".dcd", ".xtc", ".trr", ".nc", ".h5", ".netcdf"}
#: Suffixes of LAMMPS text dumps.
LAMMPS_SUFFIXES = {".lammpstrj", ".dump"}


def read_trajectory(path: str | os.PathLike, topology: str | os.PathLike | None = None,
                    type_map: Sequence[str] | None = None) -> Frames:
    """Read a trajectory.

    Args:
        path: the trajectory file.
        topology: a structure file giving the atoms (PDB, or any file ASE/mdtraj reads);
            required for DCD/XTC/TRR/NetCDF, which store coordinates only.
        type_map: element symbol of each LAMMPS atom type (1, 2, ...) for dumps without an
            `element` column (ignored when the dump has one).

    Raises:
        DataError: missing file or topology, unreadable file, atom counts that disagree.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("trajectory file not found", path)
    suffix = path.suffix.lower()
    if suffix in MDTRAJ_SUFFIXES:
        return _read_mdtraj(path, topology)
    if suffix in LAMMPS_SUFFIXES:
        return _read_lammps_dump(path, type_map)
    return read_frames(path)


def _read_mdtraj(path: Path, topology: str | os.PathLike | None) -> Frames:
    import mdtraj

    if topology is None:
        raise DataError(f"{path.suffix} files hold coordinates only: give the topology "
                        "(e.g. the PDB the simulation started from)", path)
    if not Path(topology).exists():
        raise DataError("topology file not found", topology)
    try:
        with _quiet_c_stdout():  # mdtraj's molfile plugins print notes from C to stdout
            trajectory = mdtraj.load(str(path), top=str(topology))
    except Exception as exc:  # mdtraj raises many types for bad or mismatched files
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot be read with topology {topology} ({message})", path) from None
    numbers = []
    for atom in trajectory.topology.atoms:
        if atom.element is None or atom.element.atomic_number == 0:
            raise DataError(f"topology atom {atom} has no element", topology)
        numbers.append(atom.element.atomic_number)
    cell = None
    if trajectory.unitcell_vectors is not None and np.abs(trajectory.unitcell_vectors).sum() > 0:
        cell = trajectory.unitcell_vectors * 10.0
    return Frames(positions=trajectory.xyz * 10.0, atomic_numbers=numbers, cell=cell,
                  pbc=cell is not None,
                  provenance={"source": {"format": path.suffix[1:], "path": str(path),
                                         "topology": str(topology)},
                              "time_ps": trajectory.time.tolist()},
                  source=str(path))


@contextlib.contextmanager
def _quiet_c_stdout():
    """Send file descriptor 1 to /dev/null for the duration (C-level prints)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _read_lammps_dump(path: Path, type_map: Sequence[str] | None) -> Frames:
    import ase.io
    from ase.data import atomic_numbers

    try:
        images = ase.io.read(path, index=":", format="lammps-dump-text")
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot be read as a LAMMPS text dump ({message})", path) from None
    if not images:
        raise DataError("contains no frames", path)
    with open(path) as fh:
        header = next((line for line in fh if line.startswith("ITEM: ATOMS")), "")
    if type_map and "element" not in header.split():
        # ASE reads a dump without an element column as atomic number = LAMMPS type.
        try:
            mapping = {k + 1: atomic_numbers[s] for k, s in enumerate(type_map)}
        except KeyError as exc:
            raise DataError(f"unknown element symbol {exc.args[0]!r} in the type map") from None
        for atoms in images:
            types = atoms.numbers.copy()
            unknown = set(types.tolist()) - set(mapping)
            if unknown:
                raise DataError(f"atom type(s) {sorted(unknown)} have no element in the type "
                                f"map ({' '.join(type_map)})", path)
            atoms.numbers = [mapping[t] for t in types]
    for atoms in images:
        atoms.calc = None  # forces in a dump carry the run's unit style: not used
    return Frames.from_atoms(images, provenance={"source": {"format": "lammps-dump",
                                                            "path": str(path)}},
                             source=str(path))
