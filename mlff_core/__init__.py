"""mlff_core: engine-free core of mlff-plugins.

Data (frames, readers/writers, splits), levels of theory (labels), models, training, metrics,
monitors, the model file and reports. Units inside the core: Å, eV, eV/Å, amu, fs.
This package imports no engine bridge (`openmm_bridge`, `ase_bridge`, the LAMMPS plugin).
"""

__version__ = "0.1.0"
