"""Force metrics for 100,000 frames × 21 atoms from a predictions file (target ≤ 30 s).

Makes a synthetic aspirin-sized dataset (positions around an aspirin structure, random labels),
a predictions file and a cluster-labels file, then times `mlff eval --predictions` end to end
(process start, reading both npz files, validation, all metrics, writing metrics.json) and the
`force_metrics` call alone.

    python benchmarks/metrics_speed.py [--frames 100000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mlff_core.data.formats import write_frames
from mlff_core.data.frames import Frames
from mlff_core.data.molecules import named_molecule
from mlff_core.metrics.force import force_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--clusters", type=int, default=8)
    args = parser.parse_args()
    atoms = named_molecule("aspirin").atoms
    rng = np.random.default_rng(0)
    shape = (args.frames, len(atoms), 3)
    frames = Frames(positions=atoms.positions + 0.1 * rng.standard_normal(shape),
                    atomic_numbers=atoms.numbers, energies=rng.normal(size=args.frames),
                    forces=rng.normal(size=shape))
    predicted = frames.forces + 0.05 * rng.standard_normal(shape)
    labels = rng.integers(0, args.clusters, args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_frames(frames, tmp / "data.npz")
        np.savez(tmp / "pred.npz", forces=predicted, energies=frames.energies + 0.01)
        np.save(tmp / "labels.npy", labels)

        start = time.perf_counter()
        force_metrics(frames, predicted, frames.energies + 0.01, labels)
        in_process = time.perf_counter() - start

        command = [str(Path(sys.executable).with_name("mlff")), "eval", "--data",
                   str(tmp / "data.npz"), "--predictions", str(tmp / "pred.npz"),
                   "--cluster-labels", str(tmp / "labels.npy"), "-o", str(tmp / "m.json")]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        end_to_end = time.perf_counter() - start
    print(f"{args.frames} frames × {len(atoms)} atoms, {args.clusters} clusters")
    print(f"force_metrics() alone: {in_process:.2f} s")
    print(f"mlff eval --predictions end to end: {end_to_end:.2f} s (target ≤ 30 s)")


if __name__ == "__main__":
    main()
