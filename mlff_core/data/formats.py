"""Readers and writers: native npz, MD17/MD22 (sGDML npz), rMD17 npz, and anything ASE reads.

Every reader returns frames in the suite's units (Å, eV, eV/Å) and raises `DataError` naming the
file and the problem; every writer writes to a temporary file and renames it, so a failed write
leaves nothing behind.

Formats (`fmt` names):
    native   mlff-plugins npz: arrays in Å/eV plus a JSON `metadata` entry with units and
             provenance (level of theory, sampling settings, seed, package versions).
    md17     sGDML-style npz used by MD17 and MD22: R [F,N,3] Å, z [N], E [F,1] kcal/mol,
    md22     F [F,N,3] kcal/mol/Å (units read from `r_unit`/`e_unit` when present).
    rmd17    revised MD17 npz: coords, nuclear_charges, energies [F], forces (kcal/mol, Å).
    extxyz   extended XYZ through ASE (energy, forces, cell, pbc, level_of_theory per frame).
    traj     ASE trajectory.
    ase:FMT  any other format ASE can read or write, e.g. ase:vasp-xml.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from mlff_core import units
from mlff_core.data.frames import UNKNOWN_LEVEL, Frames
from mlff_core.errors import DataError
from mlff_core.fileio import atomic_output, atomic_path

NATIVE_FORMAT = "mlff-frames"
NATIVE_FORMAT_VERSION = 1
NATIVE_UNITS = {"length": "Angstrom", "energy": "eV", "force": "eV/Angstrom", "mass": "amu"}

FORMATS = ("native", "md17", "md22", "rmd17", "extxyz", "traj")
_SUFFIX_FORMATS = {".npz": "native", ".xyz": "extxyz", ".extxyz": "extxyz", ".traj": "traj"}
_SGDML_LENGTH = {"Ang": 1.0, "A": 1.0, "Angstrom": 1.0, "bohr": units.BOHR, "nm": 10.0}
_SGDML_ENERGY = {"kcal/mol": units.KCAL_PER_MOL, "eV": 1.0, "kJ/mol": units.KJ_PER_MOL,
                 "Ha": units.HARTREE}
#: Level of theory of the rMD17 labels (Christensen & von Lilienfeld 2020, ORCA).
RMD17_LEVEL = "PBE/def2-SVP (rMD17)"


# ---------------------------------------------------------------------------------- reading
def read_frames(path: str | os.PathLike, fmt: str | None = None) -> Frames:
    """Read a file holding frames of one system.

    Args:
        path: the file.
        fmt: one of `FORMATS` or 'ase:NAME'; guessed from the suffix and content when None.

    Raises:
        DataError: missing file, unknown format, missing keys, NaN/inf, shape mismatch,
            unknown element, or several different systems in one file.
    """
    systems = read_systems(path, fmt)
    if len(systems) > 1:
        formulas = ", ".join(s.formula for s in systems)
        raise DataError(
            f"holds {len(systems)} different systems ({formulas}); use read_systems() "
            "or split the file per system",
            path,
        )
    return systems[0]


def read_systems(path: str | os.PathLike, fmt: str | None = None) -> list[Frames]:
    """Read a file into one `Frames` per system (frames grouped by their atoms, order kept)."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    if path.is_dir():
        raise DataError("is a directory, not a data file", path)
    fmt = fmt or _guess_read_format(path)
    if fmt in ("native", "md17", "md22", "rmd17", "npz"):
        return [_read_npz(path, fmt)]
    if fmt in ("extxyz", "traj") or fmt.startswith("ase:"):
        if fmt.startswith("ase:"):
            _check_format_of(path, fmt, "read")
        return _read_with_ase(path, fmt.removeprefix("ase:"))
    raise DataError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)} or ase:NAME", path)


def _check_format_of(path: Path, fmt: str, mode: str) -> str:
    """`check_format`, with the error naming the file."""
    try:
        return check_format(fmt, mode)
    except DataError as exc:
        raise DataError(exc.problem, path) from None


def check_format(fmt: str, mode: str = "read") -> str:
    """`fmt` in lower case if it names a format this suite can `mode` ('read' or 'write'):
    one of `FORMATS`, or 'ase:NAME' for a format ASE can read (write).

    Raises:
        DataError: an unknown name, or an ASE format ASE cannot `mode` (naming the format).
    """
    name = fmt.strip().lower()
    if name in FORMATS:
        return name
    if not name.startswith("ase:"):
        raise DataError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)} or ase:NAME")
    from ase.io.formats import ioformats

    ase_name = name.removeprefix("ase:")
    io_format = ioformats.get(ase_name)
    if io_format is None:
        raise DataError(f"unknown ASE format {ase_name!r} in {fmt!r} (see `ase info --formats` "
                        "for the names ASE knows)")
    if not (io_format.can_read if mode == "read" else io_format.can_write):
        raise DataError(f"ASE cannot {mode} the format {ase_name!r} ({io_format.description})")
    return name


def _guess_read_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "npz"  # decided by the keys inside
    if suffix in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffix]
    from ase.io.formats import UnknownFileTypeError, filetype

    try:
        return "ase:" + filetype(str(path), guess=False)
    except (UnknownFileTypeError, OSError, ValueError):
        raise DataError(
            "unknown format (expected .npz, .xyz/.extxyz, .traj or another file ASE can read)",
            path,
        ) from None


def _read_npz(path: Path, fmt: str) -> Frames:
    try:
        with np.load(path, allow_pickle=False) as npz:
            fmt = _npz_format(set(npz.files), fmt, path)  # from the keys, before any value
            data = {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"not a readable npz file ({exc})", path) from None
    except ValueError as exc:  # object arrays need pickle, which untrusted files never get
        raise DataError(f"npz holds objects that cannot be loaded safely ({exc})", path) from None
    reader = {"native": _from_native, "md17": _from_sgdml, "md22": _from_sgdml,
              "rmd17": _from_rmd17}[fmt]
    return reader(data, path)


def _npz_format(keys: set[str], fmt: str, path: Path) -> str:
    """The npz flavour its keys show ('npz': guess), or one clear error."""
    if fmt != "npz":
        return fmt
    if {"positions", "atomic_numbers", "metadata"} <= keys:
        return "native"
    if {"R", "z"} <= keys:
        return "md17"
    if {"coords", "nuclear_charges"} <= keys:
        return "rmd17"
    raise DataError(
        f"npz without the expected keys (found {', '.join(sorted(keys)) or 'none'}); "
        "expected native (positions, atomic_numbers, metadata), MD17/MD22 (R, z, E, F) "
        "or rMD17 (coords, nuclear_charges, energies, forces)",
        path,
    )


def _require(data: dict[str, np.ndarray], names: tuple[str, ...], kind: str, path: Path) -> None:
    missing = [name for name in names if name not in data]
    if missing:
        raise DataError(f"{kind} npz is missing key(s) {', '.join(map(repr, missing))}", path)


def _from_native(data: dict[str, np.ndarray], path: Path) -> Frames:
    _require(data, ("positions", "atomic_numbers", "metadata"), "native", path)
    try:
        metadata = json.loads(str(data["metadata"]))
    except json.JSONDecodeError as exc:
        raise DataError(f"metadata is not valid JSON ({exc})", path) from None
    if metadata.get("format") != NATIVE_FORMAT:
        raise DataError(f"metadata format is {metadata.get('format')!r}, not {NATIVE_FORMAT!r}",
                        path)
    version = metadata.get("format_version")
    if version != NATIVE_FORMAT_VERSION:
        raise DataError(
            f"unsupported format_version {version!r} (this version reads {NATIVE_FORMAT_VERSION})",
            path,
        )
    if metadata.get("units", NATIVE_UNITS) != NATIVE_UNITS:
        raise DataError(f"units {metadata['units']} differ from {NATIVE_UNITS}", path)
    if ("energies" in data) != ("forces" in data):
        present, absent = ("energies", "forces") if "energies" in data else ("forces", "energies")
        raise DataError(f"has {present} but not {absent}", path)
    return Frames(
        positions=data["positions"],
        atomic_numbers=data["atomic_numbers"],
        energies=data.get("energies"),
        forces=data.get("forces"),
        cell=data.get("cell"),
        pbc=data.get("pbc", np.zeros(3, dtype=bool)),
        masses=data.get("masses"),
        levels=data.get("levels"),
        provenance=metadata.get("provenance", {}),
        source=str(path),
    )


def _from_sgdml(data: dict[str, np.ndarray], path: Path) -> Frames:
    _require(data, ("R", "z", "E", "F"), "MD17/MD22", path)
    length_unit = str(data.get("r_unit", "Ang"))
    energy_unit = str(data.get("e_unit", "kcal/mol"))
    if length_unit not in _SGDML_LENGTH:
        raise DataError(f"unknown length unit r_unit={length_unit!r}", path)
    if energy_unit not in _SGDML_ENERGY:
        raise DataError(f"unknown energy unit e_unit={energy_unit!r}", path)
    to_a, to_ev = _SGDML_LENGTH[length_unit], _SGDML_ENERGY[energy_unit]
    frames = _labelled_frames(data["R"], data["z"], data["E"], data["F"], path)
    theory = str(data["theory"]) if "theory" in data else UNKNOWN_LEVEL
    provenance = {
        "source": {"format": "md17", "path": str(path), "name": str(data.get("name", "")),
                   "units": {"length": length_unit, "energy": energy_unit}},
        "level_of_theory": theory,
    }
    return Frames(
        positions=frames["R"] * to_a,
        atomic_numbers=frames["z"],
        energies=frames["E"] * to_ev,
        forces=frames["F"] * (to_ev / to_a),
        levels=np.full(frames["R"].shape[0], theory),
        provenance=provenance,
        source=str(path),
    )


def _from_rmd17(data: dict[str, np.ndarray], path: Path) -> Frames:
    _require(data, ("coords", "nuclear_charges", "energies", "forces"), "rMD17", path)
    frames = _labelled_frames(
        data["coords"], data["nuclear_charges"], data["energies"], data["forces"], path
    )
    provenance = {
        "source": {"format": "rmd17", "path": str(path)},
        "level_of_theory": RMD17_LEVEL,
    }
    return Frames(
        positions=frames["R"],
        atomic_numbers=frames["z"],
        energies=frames["E"] * units.KCAL_PER_MOL,
        forces=frames["F"] * units.KCAL_PER_MOL,
        levels=np.full(frames["R"].shape[0], RMD17_LEVEL),
        provenance=provenance,
        source=str(path),
    )


def _labelled_frames(R: Any, z: Any, E: Any, F: Any, path: Path) -> dict[str, np.ndarray]:
    """Validate raw arrays in file units (before conversion) so errors name the file's keys."""
    validated = Frames(positions=R, atomic_numbers=z, energies=E, forces=F, source=str(path))
    return {"R": validated.positions, "z": validated.atomic_numbers, "E": validated.energies,
            "F": validated.forces}


def _read_with_ase(path: Path, fmt: str) -> list[Frames]:
    import ase.io

    try:
        images = ase.io.read(path, index=":", format=fmt)
    except KeyError as exc:  # ase raises KeyError('Xx') for an unknown chemical symbol
        raise DataError(f"unknown element symbol {exc.args[0]!r}", path) from None
    except Exception as exc:  # ASE readers raise many types; report one clear line
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot be read as {fmt} ({message})", path) from None
    if not images:
        raise DataError("contains no frames", path)
    groups: dict[bytes, list] = {}
    for atoms in images:
        groups.setdefault(atoms.numbers.tobytes(), []).append(atoms)
    provenance = {"source": {"format": fmt, "path": str(path)}}
    return [Frames.from_atoms(group, provenance=provenance, source=str(path))
            for group in groups.values()]


# ---------------------------------------------------------------------------------- writing
def output_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The format `write_frames` will use for `path` (checked: a command that works for hours
    asks this first, before the work rather than after it).

    Raises:
        DataError: no `fmt` and an unknown suffix, or an unknown `fmt`.
    """
    path = Path(path)
    if fmt is None:
        fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise DataError(
                "unknown output format; use a .npz, .xyz/.extxyz or .traj name, or --to", path
            )
    return _check_format_of(path, fmt, "write")


def write_frames(frames: Frames, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write frames atomically; the format comes from `fmt` or the suffix (.npz → native).

    Returns the path written. MD17/MD22/rMD17 need labelled frames.
    """
    path = Path(path)
    fmt = output_format(path, fmt)
    if fmt == "native":
        _write_native(frames, path)
    elif fmt in ("md17", "md22"):
        _write_sgdml(frames, path, fmt)
    elif fmt == "rmd17":
        _write_rmd17(frames, path)
    else:  # extxyz, traj, ase:NAME
        _write_with_ase(frames, path, fmt.removeprefix("ase:"))
    return path


def native_arrays(frames: Frames) -> dict[str, np.ndarray]:
    """The arrays of the native npz format (what `write_frames(..., 'native')` stores)."""
    metadata = {
        "format": NATIVE_FORMAT,
        "format_version": NATIVE_FORMAT_VERSION,
        "units": NATIVE_UNITS,
        "provenance": frames.provenance,
    }
    arrays: dict[str, np.ndarray] = {
        "positions": frames.positions,
        "atomic_numbers": frames.atomic_numbers,
        "masses": frames.masses,
        "pbc": frames.pbc,
        "levels": frames.levels.astype(str),
        "metadata": np.array(json.dumps(metadata, default=_json_default)),
    }
    if frames.energies is not None:
        arrays["energies"] = frames.energies
    if frames.forces is not None:
        arrays["forces"] = frames.forces
    if frames.cell is not None:
        arrays["cell"] = frames.cell
    return arrays


def frames_from_native_arrays(data: dict[str, np.ndarray], path: str | os.PathLike) -> Frames:
    """The frames `native_arrays` stored (other keys in `data` are ignored); errors name
    `path`, the file the arrays came from."""
    return _from_native(data, Path(path))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _write_native(frames: Frames, path: Path) -> None:
    arrays = native_arrays(frames)
    with atomic_output(path) as fh:
        np.savez_compressed(fh, **arrays)


def _needs_labels(frames: Frames, fmt: str, path: Path) -> None:
    if not frames.has_labels:
        raise DataError(f"{fmt} files need energies and forces; these frames have none", path)


def _single_level(frames: Frames) -> str:
    levels = sorted(set(frames.levels.tolist()))
    return levels[0] if len(levels) == 1 else " + ".join(levels)


def _write_sgdml(frames: Frames, path: Path, fmt: str) -> None:
    _needs_labels(frames, fmt, path)
    kcal = units.KCAL_PER_MOL
    arrays = {
        "type": np.array("d"),
        "name": np.array(str(frames.provenance.get("name", frames.formula))),
        "theory": np.array(_single_level(frames)),
        "r_unit": np.array("Ang"),
        "e_unit": np.array("kcal/mol"),
        "R": frames.positions,
        "z": frames.atomic_numbers,
        "E": (frames.energies / kcal)[:, None],
        "F": frames.forces / kcal,
    }
    with atomic_output(path) as fh:
        np.savez_compressed(fh, **arrays)


def _write_rmd17(frames: Frames, path: Path) -> None:
    _needs_labels(frames, "rmd17", path)
    kcal = units.KCAL_PER_MOL
    with atomic_output(path) as fh:
        np.savez_compressed(
            fh,
            coords=frames.positions,
            nuclear_charges=frames.atomic_numbers,
            energies=frames.energies / kcal,
            forces=frames.forces / kcal,
        )


def _write_with_ase(frames: Frames, path: Path, fmt: str) -> None:
    import ase.io

    images = list(frames.iter_atoms())
    try:
        with atomic_path(path) as tmp:
            ase.io.write(tmp, images, format=fmt)
    except Exception as exc:
        raise DataError(f"cannot be written as {fmt} ({exc})", path) from None
