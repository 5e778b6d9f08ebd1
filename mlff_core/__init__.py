"""mlff_core: engine-free core of mlff-plugins.

Data (frames, readers/writers, splits), levels of theory (labels), models, training, metrics,
monitors, the model file and reports. Units inside the core: Å, eV, eV/Å, amu, fs.
This package imports no engine bridge (`openmm_bridge`, `ase_bridge`, the LAMMPS plugin).
"""

import os as _os

__version__ = "0.1.0"

# Transparent huge pages for PyTorch's CPU allocator: large per-edge tensors otherwise cost more
# in page faults than in arithmetic (measured 1.5-2x slower at 8k atoms, see
# benchmarks/RESULTS.md). Effective only when set before torch's first allocation, i.e. when
# this package is imported before torch; users may override it in the environment.
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
