"""OpenMM bridge: mlff-plugins model files as openmm-torch TorchForce / PythonForce /
openmm-ml potentials, and OpenMM reporters for bond collapse, unexplored frames and forces.

Units at this boundary: OpenMM nm and kJ/mol in, `mlff_core` Å and eV inside.
"""

import mlff_core  # noqa: F401  (sets allocator defaults before torch is imported)
from openmm_bridge.forces import (
    add_mlff_force,
    check_compatible,
    create_python_force,
    create_torch_force,
)

__all__ = ["add_mlff_force", "check_compatible", "create_python_force", "create_torch_force"]
