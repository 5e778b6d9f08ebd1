"""Dependencies point one way: bridges import mlff_core; mlff_core imports no bridge."""

import subprocess
import sys
from pathlib import Path

import mlff_core


def test_core_imports_no_bridge():
    root = Path(mlff_core.__file__).parent
    modules = sorted("mlff_core." + ".".join(p.relative_to(root).with_suffix("").parts)
                     for p in root.rglob("*.py") if p.name != "__init__.py")
    script = ("import importlib, sys\n"
              f"for name in {modules!r}:\n"
              "    importlib.import_module(name)\n"
              "bridges = sorted(m for m in sys.modules if m.split('.')[0] in "
              "('openmm_bridge', 'ase_bridge', 'mlff_lammps'))\n"
              "print(bridges)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_engines_are_registered():
    from mlff_core.engines import engine_names

    assert {"openmm", "ase", "lammps"} <= set(engine_names())
