"""`Frames`: labelled (or unlabelled) configurations of one system.

One `Frames` object holds many configurations of the same atoms in the same order, the layout of
MD17/rMD17/MD22 and of everything the suite generates. Datasets with several systems are lists of
`Frames` (see `mlff_core.data.formats.read_systems`).

Units: positions Å, energies eV, forces eV/Å, cell Å (rows are lattice vectors), masses amu.
"""

from __future__ import annotations

import copy
import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_masses, chemical_symbols
from ase.formula import Formula

from mlff_core.errors import DataError

#: Level-of-theory tag of frames without labels (or whose origin is unknown).
UNKNOWN_LEVEL = "unknown"


@dataclass(eq=False)
class Frames:
    """Configurations of one system, with optional energy/force labels.

    Attributes:
        positions: [F, N, 3] float64, Å.
        atomic_numbers: [N] int64, the same for every frame.
        energies: [F] float64 total potential energies in eV, or None (unlabelled).
        forces: [F, N, 3] float64 in eV/Å, or None.
        cell: [F, 3, 3] float64 lattice vectors (rows) in Å, or None for molecules.
        pbc: [3] bool, periodic directions.
        masses: [N] float64 relative atomic masses (amu); standard atomic weights by default.
        levels: [F] str, the level of theory that produced each frame's labels.
        provenance: free-form dict (level of theory, sampling settings, seed, package versions,
            source files) that the native format stores alongside the arrays.
        source: file the frames were read from, used in error messages.
    """

    positions: np.ndarray
    atomic_numbers: np.ndarray
    energies: np.ndarray | None = None
    forces: np.ndarray | None = None
    cell: np.ndarray | None = None
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))
    masses: np.ndarray | None = None
    levels: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def __post_init__(self) -> None:
        self.positions = self._float_array(self.positions, "positions")
        if self.positions.ndim == 2:
            self.positions = self.positions[None]
        if self.positions.ndim != 3 or self.positions.shape[-1] != 3:
            raise self._fail(
                f"positions must have shape [frames, atoms, 3], got {self.positions.shape}"
            )
        n_frames, n_atoms, _ = self.positions.shape
        if n_frames == 0:
            raise self._fail("contains no frames")
        if n_atoms == 0:
            raise self._fail("frames contain no atoms")

        numbers = np.asarray(self.atomic_numbers)
        if numbers.ndim == 2:  # per-frame numbers: accept only when identical in every frame
            if not (numbers == numbers[:1]).all():
                raise self._fail("atomic numbers differ between frames; split it into systems")
            numbers = numbers[0]
        if numbers.shape != (n_atoms,):
            raise self._fail(
                f"atomic_numbers has shape {numbers.shape} but positions have {n_atoms} atoms"
            )
        if not np.issubdtype(numbers.dtype, np.integer):
            integral = np.issubdtype(numbers.dtype, np.floating) and (numbers == np.round(numbers))
            if not np.all(integral):
                raise self._fail(f"atomic_numbers must be integers, got dtype {numbers.dtype}")
        numbers = numbers.astype(np.int64)
        bad = numbers[(numbers < 1) | (numbers >= len(chemical_symbols))]
        if bad.size:
            raise self._fail(f"unknown element with atomic number {int(bad[0])}")
        self.atomic_numbers = numbers

        if self.energies is not None:
            self.energies = self._float_array(self.energies, "energies").reshape(-1)
            if self.energies.shape != (n_frames,):
                raise self._fail(
                    f"energies has {self.energies.size} values but there are {n_frames} frames"
                )
        if self.forces is not None:
            self.forces = self._float_array(self.forces, "forces")
            if self.forces.shape != self.positions.shape:
                raise self._fail(
                    f"forces have shape {self.forces.shape} but positions have shape "
                    f"{self.positions.shape}"
                )

        self.pbc = np.broadcast_to(np.asarray(self.pbc, dtype=bool), (3,)).copy()
        if self.cell is not None:
            cell = self._float_array(self.cell, "cell")
            if cell.shape == (3, 3):
                cell = np.broadcast_to(cell, (n_frames, 3, 3)).copy()
            if cell.shape != (n_frames, 3, 3):
                raise self._fail(f"cell must have shape [frames, 3, 3], got {cell.shape}")
            if not cell.any():
                cell = None
            self.cell = cell
        if self.pbc.any():
            if self.cell is None:
                raise self._fail("periodic frames need a cell")
            volumes = np.abs(np.linalg.det(self.cell))
            if (volumes < 1e-6).any():
                raise self._fail(f"cell of frame {int(np.argmin(volumes))} has zero volume")

        if self.masses is None:
            self.masses = atomic_masses[self.atomic_numbers].astype(np.float64)
        else:
            self.masses = self._float_array(self.masses, "masses").reshape(-1)
            if self.masses.shape != (n_atoms,):
                raise self._fail(f"masses has {self.masses.size} values for {n_atoms} atoms")
            if (self.masses <= 0).any():
                raise self._fail("masses must be positive")

        if self.levels is None:
            self.levels = np.full(n_frames, UNKNOWN_LEVEL)
        else:
            levels = np.asarray(self.levels).astype(str).reshape(-1)
            if levels.size == 1 and n_frames > 1:
                levels = np.full(n_frames, levels[0])
            if levels.shape != (n_frames,):
                raise self._fail(f"levels has {levels.size} entries for {n_frames} frames")
            self.levels = levels
        self.provenance = dict(self.provenance)

    def _fail(self, problem: str) -> DataError:
        return DataError(problem, self.source)

    def _float_array(self, values: Any, name: str) -> np.ndarray:
        try:
            array = np.array(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise self._fail(f"{name} is not numeric ({exc})") from None
        finite = np.isfinite(array)
        if not finite.all():
            index = np.argwhere(~finite)[0]
            where = f" at frame {index[0]}" if array.ndim >= 2 else ""
            kind = "NaN" if np.isnan(array[tuple(index)]) else "infinite"
            raise self._fail(f"{name} contains {kind} values{where}")
        return array

    # ----------------------------------------------------------------------------- shape & info
    @property
    def n_frames(self) -> int:
        return self.positions.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.positions.shape[1]

    def __len__(self) -> int:
        return self.n_frames

    @property
    def symbols(self) -> list[str]:
        """Chemical symbol of each atom, [N]."""
        return [chemical_symbols[z] for z in self.atomic_numbers]

    @property
    def formula(self) -> str:
        """Hill formula of the system, e.g. 'C9H8O4' for aspirin."""
        return Formula.from_list(self.symbols).format("hill")

    @property
    def elements(self) -> list[str]:
        """Distinct element symbols, in order of increasing atomic number."""
        return [chemical_symbols[z] for z in sorted(set(self.atomic_numbers.tolist()))]

    @property
    def is_periodic(self) -> bool:
        return bool(self.pbc.any())

    @property
    def has_labels(self) -> bool:
        """True when every frame has an energy and forces."""
        return self.energies is not None and self.forces is not None

    def content_hash(self) -> str:
        """SHA-256 of the arrays (not the provenance): identifies a dataset in model provenance."""
        digest = hashlib.sha256()
        for array in (self.atomic_numbers, self.positions, self.energies, self.forces, self.cell):
            if array is not None:
                digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(self.pbc.tobytes())
        return digest.hexdigest()

    def summary(self) -> dict[str, Any]:
        """Facts for `mlff data info`: sizes, composition, levels, units, label ranges."""
        counts = Counter(self.symbols)
        info: dict[str, Any] = {
            "frames": self.n_frames,
            "atoms": self.n_atoms,
            "formula": self.formula,
            "elements": {s: counts[s] for s in self.elements},
            "periodic": self.is_periodic,
            "levels": dict(Counter(self.levels.tolist())),
            "units": {"length": "Angstrom", "energy": "eV", "force": "eV/Angstrom", "mass": "amu"},
        }
        if self.is_periodic:
            info["cell_volume_A3"] = {
                "min": float(np.abs(np.linalg.det(self.cell)).min()),
                "max": float(np.abs(np.linalg.det(self.cell)).max()),
            }
        if self.energies is not None:
            info["energy_eV"] = {
                "min": float(self.energies.min()),
                "max": float(self.energies.max()),
                "mean": float(self.energies.mean()),
                "std": float(self.energies.std()),
            }
        if self.forces is not None:
            norms = np.linalg.norm(self.forces, axis=-1)
            info["force_eV_per_A"] = {
                "component_min": float(self.forces.min()),
                "component_max": float(self.forces.max()),
                "component_std": float(self.forces.std()),
                "max_norm": float(norms.max()),
            }
        return info

    # --------------------------------------------------------------------------------- selection
    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Frames:
        """Frames subset; an integer gives a one-frame `Frames`."""
        if isinstance(index, (int, np.integer)):
            if not -self.n_frames <= index < self.n_frames:
                raise IndexError(f"frame {index} out of range for {self.n_frames} frames")
            index = [int(index) % self.n_frames]
        elif not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == bool:
                index = np.flatnonzero(index)
        picked = self.positions[index]
        return replace(
            self,
            positions=picked,
            energies=None if self.energies is None else self.energies[index],
            forces=None if self.forces is None else self.forces[index],
            cell=None if self.cell is None else self.cell[index],
            levels=self.levels[index],
            provenance=copy.deepcopy(self.provenance),
        )

    def __iter__(self) -> Iterator[Frames]:
        for i in range(self.n_frames):
            yield self[i]

    def without_cell(self) -> Frames:
        """The same frames as an isolated system (no cell, no periodicity): for a molecule that
        an engine simulated in a box (positions must be unwrapped, molecules whole)."""
        return replace(self, cell=None, pbc=np.zeros(3, dtype=bool),
                       provenance=copy.deepcopy(self.provenance))

    def with_labels(self, energies: np.ndarray, forces: np.ndarray, level: str) -> Frames:
        """Copy of these frames with new labels (eV, eV/Å) from one level of theory."""
        return replace(
            self,
            energies=energies,
            forces=forces,
            levels=np.full(self.n_frames, level),
            provenance=copy.deepcopy(self.provenance),
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Frames]) -> Frames:
        """Join frames of the same system (same atoms in the same order); labels must agree.

        The provenance of the first part is kept, with the others listed under 'merged_from'.
        """
        if not parts:
            raise DataError("nothing to concatenate")
        first = parts[0]
        for other in parts[1:]:
            if not np.array_equal(other.atomic_numbers, first.atomic_numbers):
                raise DataError(
                    f"cannot join {other.formula} frames to {first.formula} frames: "
                    "the atoms differ",
                    other.source,
                )
            if (other.energies is None) != (first.energies is None) or (other.forces is None) != (
                first.forces is None
            ):
                raise DataError("cannot join labelled and unlabelled frames", other.source)
            if not np.array_equal(other.pbc, first.pbc):
                raise DataError("cannot join periodic and non-periodic frames", other.source)

        def join(name: str) -> np.ndarray | None:
            arrays = [getattr(p, name) for p in parts]
            return None if arrays[0] is None else np.concatenate(arrays)

        cells = [p.cell for p in parts]
        if any(c is None for c in cells) and not all(c is None for c in cells):
            cells = [
                np.zeros((p.n_frames, 3, 3)) if p.cell is None else p.cell for p in parts
            ]
        provenance = copy.deepcopy(first.provenance)
        if len(parts) > 1:
            provenance["merged_from"] = [p.provenance for p in parts[1:]]
        return cls(
            positions=join("positions"),
            atomic_numbers=first.atomic_numbers,
            energies=join("energies"),
            forces=join("forces"),
            cell=None if cells[0] is None else np.concatenate(cells),
            pbc=first.pbc,
            masses=first.masses,
            levels=join("levels"),
            provenance=provenance,
        )

    # ----------------------------------------------------------------------------------- ASE I/O
    def to_atoms(self, index: int) -> Atoms:
        """One frame as `ase.Atoms`; labels (if any) are attached as a SinglePointCalculator."""
        atoms = Atoms(
            numbers=self.atomic_numbers,
            positions=self.positions[index],
            cell=None if self.cell is None else self.cell[index],
            pbc=self.pbc,
            masses=self.masses,
        )
        atoms.info["level_of_theory"] = str(self.levels[index])
        results = {}
        if self.energies is not None:
            results["energy"] = float(self.energies[index])
            results["free_energy"] = float(self.energies[index])
        if self.forces is not None:
            results["forces"] = self.forces[index].copy()
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    def iter_atoms(self) -> Iterator[Atoms]:
        for i in range(self.n_frames):
            yield self.to_atoms(i)

    @classmethod
    def from_atoms(
        cls,
        images: Iterable[Atoms],
        level: str | None = None,
        provenance: dict[str, Any] | None = None,
        source: str | None = None,
    ) -> Frames:
        """Frames from ASE images of one system; energies/forces are taken from attached results.

        Args:
            images: `ase.Atoms` with the same atoms in the same order.
            level: level-of-theory tag for every frame; default `atoms.info['level_of_theory']`.
        """
        images = list(images)
        if not images:
            raise DataError("contains no frames", source)
        numbers = images[0].numbers
        for i, atoms in enumerate(images):
            if not np.array_equal(atoms.numbers, numbers):
                raise DataError(f"frame {i} has different atoms than frame 0", source)
        energies = [_stored_result(a, "energy") for a in images]
        forces = [_stored_result(a, "forces") for a in images]
        has_e = all(e is not None for e in energies)
        has_f = all(f is not None for f in forces)
        if any(e is not None for e in energies) and not has_e:
            raise DataError("some frames have an energy and others do not", source)
        if any(f is not None for f in forces) and not has_f:
            raise DataError("some frames have forces and others do not", source)
        periodic = images[0].pbc
        levels = [
            level if level is not None else str(a.info.get("level_of_theory", UNKNOWN_LEVEL))
            for a in images
        ]
        masses = images[0].get_masses() if images[0].has("masses") else None
        return cls(
            positions=np.stack([a.positions for a in images]),
            atomic_numbers=numbers,
            energies=np.array(energies) if has_e else None,
            forces=np.stack(forces) if has_f else None,
            cell=np.stack([a.cell.array for a in images]) if periodic.any() else None,
            pbc=periodic,
            masses=masses,
            levels=np.array(levels),
            provenance=provenance or {},
            source=source,
        )


def _stored_result(atoms: Atoms, name: str) -> Any:
    """A result stored with the image (never triggers a new calculation)."""
    calc = atoms.calc
    if calc is None:
        return None
    value = getattr(calc, "results", {}).get(name)
    if value is None:
        return None
    return np.array(value, dtype=np.float64)
