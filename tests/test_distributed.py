"""Labelling and exploration MD on a Dask cluster (issue 14): a real `LocalCluster` of worker
processes against the serial path, a worker killed mid-run, a failed frame reported by index,
resumes from saved chunks, MD runs as tasks, and one clear error for an unreachable scheduler or
a malformed cluster config."""

import os
import signal

import numpy as np
import pytest
import torch
from conftest import assert_clean_error, run_mlff_here

from mlff_core.data.formats import write_frames
from mlff_core.data.frames import Frames
from mlff_core.data.generate import LangevinSampling, generate_frames, relabel_frames
from mlff_core.data.molecules import named_molecule
from mlff_core.data.trajectories import read_trajectory
from mlff_core.distributed import (
    ChunkStore,
    LabellingFailed,
    MDRun,
    cluster_md_runner,
    dask_client,
    label_frames_on_cluster,
    read_cluster_config,
    serial_md_runner,
)
from mlff_core.distributed.cluster import batch_cluster
from mlff_core.distributed.labelling import labelling_settings
from mlff_core.errors import ClusterError, DataError, MLFFError
from mlff_core.labels import get_level
from mlff_core.progress import no_progress


@pytest.fixture(scope="module")
def client():
    with dask_client(workers=2) as client:
        yield client


@pytest.fixture(scope="module")
def ethanol():
    """30 MMFF94 Langevin frames of ethanol (the labels are replaced in every test)."""
    return generate_frames(named_molecule("ethanol"), get_level("mmff94"), 30,
                           LangevinSampling(stride=5, equilibration=20, seed=3))


@pytest.mark.parametrize("level", ["mmff94", "gfn2"])
def test_a_local_cluster_labels_bit_for_bit_like_the_serial_path(client, ethanol, level):
    serial = relabel_frames(ethanol, get_level(level))
    cluster = label_frames_on_cluster(ethanol, get_level(level), client, chunk_size=7)
    assert len(client.scheduler_info()["workers"]) == 2
    np.testing.assert_array_equal(cluster.energies, serial.energies)
    np.testing.assert_array_equal(cluster.forces, serial.forces)
    assert cluster.provenance == serial.provenance
    assert set(cluster.levels) == {get_level(level).tag}


def test_killing_a_worker_mid_run_still_labels_every_frame_exactly_once(client, ethanol,
                                                                         tmp_path):
    level = get_level("gfn2")
    store = ChunkStore(tmp_path / "chunks", labelling_settings(ethanol, level, 2))
    killed, reports = [], []

    def advance(count):
        reports.append(count)
        if len(reports) == 2 and not killed:  # after the first chunk (the first call reports 0)
            pid = next(iter(client.run(os.getpid).values()))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    labelled = label_frames_on_cluster(ethanol, level, client, store, chunk_size=2,
                                       advance=advance)
    assert killed and killed[0] not in client.run(os.getpid).values()  # it did die
    assert len(reports) == 1 + 15 and sum(reports) == 30  # 15 chunks, each reported once
    saved = sorted(store.directory.glob("chunk-*.npz"))
    assert [int(p.stem.split("-")[1]) for p in saved] == list(range(0, 30, 2))
    serial = relabel_frames(ethanol, level)
    np.testing.assert_array_equal(labelled.energies, serial.energies)
    np.testing.assert_array_equal(labelled.forces, serial.forces)


def _with_a_broken_frame(frames: Frames, index: int) -> Frames:
    positions = frames.positions.copy()
    positions[index, 1] = positions[index, 0]  # two atoms on one spot: xTB cannot set it up
    return Frames(positions=positions, atomic_numbers=frames.atomic_numbers,
                  energies=frames.energies, forces=frames.forces, cell=frames.cell,
                  pbc=frames.pbc, levels=frames.levels, provenance=frames.provenance)


def test_a_failed_frame_is_reported_by_index_and_a_rerun_labels_only_what_is_missing(
        client, ethanol, tmp_path):
    level = get_level("gfn2")
    frames = _with_a_broken_frame(ethanol[:12], 5)
    store = ChunkStore(tmp_path / "chunks", labelling_settings(frames, level, 4))
    with pytest.raises(LabellingFailed) as failed:
        label_frames_on_cluster(frames, level, client, store, chunk_size=4)
    assert list(failed.value.failures) == [5]
    assert "frame 5: GFN2-xTB: cannot set up this system" in str(failed.value)
    assert "1 of 12 frames" in str(failed.value) and str(store.directory) in str(failed.value)
    assert len(list(store.directory.glob("chunk-*.npz"))) == 3  # the good chunks are kept

    # a rerun finds chunks 0 and 8 on disk and labels chunk 4 again (it still fails)
    reports = []
    with pytest.raises(LabellingFailed):
        label_frames_on_cluster(frames, level, client, store, chunk_size=4,
                                advance=reports.append)
    assert reports == [8, 4]

    # a killed run: the chunks on disk are used, the missing one is labelled
    good = ethanol[:12]
    store = ChunkStore(tmp_path / "good", labelling_settings(good, level, 4))
    label_frames_on_cluster(good, level, client, store, chunk_size=4)
    (store.directory / "chunk-0000004.npz").unlink()
    reports = []
    resumed = label_frames_on_cluster(good, level, client, store, chunk_size=4,
                                      advance=reports.append)
    assert reports == [8, 4]
    np.testing.assert_array_equal(resumed.energies, relabel_frames(good, level).energies)

    # chunks of other frames or another level are never mixed in
    with pytest.raises(DataError, match="other settings"):
        ChunkStore(store.directory, labelling_settings(good, get_level("gfn1"), 4)).open()


def test_an_unreachable_scheduler_is_one_clear_error(tmp_path, ethanol, monkeypatch):
    monkeypatch.setattr("mlff_core.distributed.cluster.CONNECT_TIMEOUT", 1.0)  # default 10 s
    source = write_frames(ethanol[:2], tmp_path / "in.npz")
    result = run_mlff_here("data", "relabel", source, "--level", "mmff94", "-o",
                           tmp_path / "out.npz", "--scheduler", "tcp://127.0.0.1:9")
    assert_clean_error(result, "cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("text,needle", [
    ("queue: normal\ncores: 4\nmemory: 8GB\nwaltime: '01:00:00'\n", "unknown setting 'waltime'"),
    ("queue: normal\ncores: four\nmemory: 8GB\n", "cores must be a whole number, not 'four'"),
    ("queue: normal\nmemory: 8GB\n", "lacks cores"),
    ("queue: [normal\n", "not valid YAML"),
    ("- cores\n", "must be a mapping"),
    ("cores: 4\nmemory: 8GB\njobs: 0\n", "jobs must be at least 1"),
])
def test_a_malformed_cluster_config_is_one_clear_error_naming_the_file(tmp_path, ethanol, text,
                                                                     needle):
    config = tmp_path / "slurm.yaml"
    config.write_text(text)
    source = write_frames(ethanol[:2], tmp_path / "in.npz")
    result = run_mlff_here("data", "relabel", source, "--level", "mmff94", "-o",
                           tmp_path / "out.npz", "--cluster", "slurm", "--cluster-config", config)
    assert_clean_error(result, str(config), needle)
    assert not (tmp_path / "out.npz").exists()


def test_a_cluster_config_becomes_the_batch_jobs_script(tmp_path, monkeypatch):
    config = tmp_path / "slurm.yaml"
    config.write_text("queue: normal\naccount: chem123\ncores: 8\nmemory: 16GB\n"
                      "walltime: '02:00:00'\njobs: 3\n")
    settings = read_cluster_config(config)
    with pytest.raises(ClusterError, match="sbatch, which is not on this machine's PATH"):
        batch_cluster("slurm", settings)
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")  # a login node
    with batch_cluster("slurm", settings) as cluster:
        script = cluster.job_script()
    for line in ("#SBATCH -p normal", "#SBATCH -A chem123", "#SBATCH --cpus-per-task=8",
                 "#SBATCH -t 02:00:00", "--nworkers 8", "--nthreads 1"):
        assert line in script, script


def test_generate_killed_while_labelling_on_the_cluster_resumes_to_the_same_frames(client,
                                                                                   tmp_path):
    """`mlff data generate --label-level` labels on the cluster: a run stopped after its first
    labelled chunk resumes from the partial run's sampled frames and the saved chunks, and ends
    with the frames of an uninterrupted run (sampling excluded from the kill: it is serial)."""
    from mlff_core.data.partial import PartialRun
    from mlff_core.distributed import cluster_labeller

    structure, sampling = named_molecule("ethanol"), LangevinSampling(stride=3, equilibration=5)
    driver, label = get_level("mmff94"), get_level("gfn2")
    whole = generate_frames(structure, driver, 12, sampling, label)
    steps = sampling.total_steps(12)
    partial = PartialRun(tmp_path / "e.npz.partial.npz", {"case": "ethanol"})
    chunks = tmp_path / "e.npz.chunks"
    done = []

    def stop_after_first_chunk(count):
        done.append(count)
        if sum(done) > steps:  # a labelled chunk came back
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_frames(structure, driver, 12, sampling, label, stop_after_first_chunk, partial,
                        cluster_labeller(client, 4), chunks)
    assert len(list(chunks.glob("chunk-*.npz"))) == 1
    reports = []
    resumed = generate_frames(structure, driver, 12, sampling, label, reports.append,
                              PartialRun(partial.path, {"case": "ethanol"}),
                              cluster_labeller(client, 4), chunks)
    assert reports[1] == 4  # after the sampling steps, the saved chunk
    np.testing.assert_array_equal(resumed.positions, whole.positions)
    np.testing.assert_array_equal(resumed.energies, whole.energies)
    np.testing.assert_array_equal(resumed.forces, whole.forces)
    assert not chunks.exists()


# ------------------------------------------------------------------------ exploration MD on Dask
def _md_runs(model, start, directory, seeds) -> list[MDRun]:
    return [MDRun(f"run{seed}", str(model), str(start), str(directory / f"run{seed}"),
                  {"temperature": 500.0, "timestep": 0.5, "steps": 40, "report_interval": 10,
                   "friction": 1.0, "bond_threshold": 0.5, "action": "stop", "seed": seed})
            for seed in seeds]


def test_exploration_md_on_the_cluster_gives_the_serial_trajectories(client, exported_water_model,
                                                                     water_frames, tmp_path):
    """Three seeded ASE Langevin runs as Dask tasks (one thread per worker) against the same runs
    one after the other in this process, pinned to one thread: the same trajectories, stopped
    by the collapse monitor at the same step (the 2-epoch model collapses within 20–40 steps at
    500 K), each reported in full when it ends. A stale file in a run directory (a retried
    task's first attempt) is gone."""
    start = write_frames(water_frames[[0]], tmp_path / "start.xyz")
    stale = tmp_path / "cluster" / "run1" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("left by a task whose worker died")
    reports = []
    on_cluster = cluster_md_runner(client)("ase", _md_runs(exported_water_model, start,
                                                          tmp_path / "cluster", [0, 1, 2]),
                                           reports.append)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = serial_md_runner("ase", _md_runs(exported_water_model, start,
                                                tmp_path / "serial", [0, 1, 2]))
    finally:
        torch.set_num_threads(threads)
    assert reports == [40, 40, 40]
    assert not stale.exists()
    for mine, theirs in zip(on_cluster, here, strict=True):  # the weak model collapses
        assert (mine["steps_run"], mine["reason"]) == (theirs["steps_run"], theirs["reason"])
        assert "/cluster/" in mine["trajectory"]
        ours, serial = read_trajectory(mine["trajectory"]), read_trajectory(theirs["trajectory"])
        assert ours.n_frames == serial.n_frames >= 3
        np.testing.assert_allclose(ours.positions, serial.positions, rtol=0, atol=1e-9)
    first, second = (read_trajectory(s["trajectory"]).positions[-1] for s in on_cluster[:2])
    assert np.abs(first - second).max() > 1e-3  # the seeds differ, and so do the runs


def test_an_engine_error_on_a_worker_is_raised_in_the_client(client, water_frames, tmp_path):
    start = write_frames(water_frames[[0]], tmp_path / "start.xyz")
    with pytest.raises(MLFFError, match="missing.pt"):
        cluster_md_runner(client, retries=0)("ase", _md_runs(tmp_path / "missing.pt", start,
                                                             tmp_path, [0]), no_progress)
