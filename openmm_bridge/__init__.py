"""OpenMM bridge: mlff-plugins model files as openmm-torch TorchForce / openmm-ml potentials,
and OpenMM reporters for bond collapse and unexplored frames.

Units at this boundary: OpenMM nm and kJ/mol in, `mlff_core` Å and eV inside.
"""
