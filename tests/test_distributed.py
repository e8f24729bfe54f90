"""Training on several processes: torchrun with DistributedDataParallel on the CPU (gloo).

Each test starts real processes (`-m distributed` selects them). The batch size is the global batch, so
N processes must train the model one process trains.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from engine.errors import ConfigError, LayerLabError
from engine.runs import (
    create_run,
    execute,
    prepare_resume,
    read_events,
    read_status,
    request_stop,
    supervise,
)
from engine.train import distributed
from tests.conftest import ROOT, mlp_spec
from tests.test_runs import wait_for

pytestmark = pytest.mark.distributed

# 700 training rows; 63 per batch leaves a ragged last batch of 7, and every batch splits unevenly
TRAIN = {"epochs": 3, "batch_size": 63, "lr": 0.02, "diagnostics": False, "seed": 3}
DROPOUT = {
    "version": 1,
    "nodes": [
        {"id": "fc1", "op": "linear", "params": {"out_features": 32}},
        {"id": "act1", "op": "activation", "params": {"kind": "relu"}},
        {"id": "drop", "op": "dropout", "params": {"p": 0.2}},
        {"id": "head", "op": "linear", "params": {"out_features": 2}},
    ],
}


def weights(run) -> dict:
    return load_file(run / "model.safetensors")


def events_of(run, kind: str) -> list[dict]:
    return [e for e in read_events(run)[0] if e["type"] == kind]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_process_under_torchrun_is_bitwise_the_plain_worker(moons, tmp_path):
    plain = create_run(mlp_spec(2), TRAIN, moons.path, run_dir=tmp_path / "plain")
    assert execute(plain)["status"] == "completed"
    one = create_run(mlp_spec(2), TRAIN, moons.path, run_dir=tmp_path / "one", processes=1)
    assert supervise(one, 1)["status"] == "completed"
    a, b = weights(plain), weights(one)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])  # Adam: torch's fused kernel on the CPU
def test_two_processes_train_the_one_process_model(moons, tmp_path, optimizer):
    train = {**TRAIN, "optimizer": optimizer, "weight_decay": 1e-3}
    one = create_run(mlp_spec(2), train, moons.path, run_dir=tmp_path / "one")
    assert execute(one)["status"] == "completed"
    two = create_run(mlp_spec(2), train, moons.path, run_dir=tmp_path / "two", processes=2)
    final = supervise(two, 2)
    # completed: the ranks' weights matched bit for bit at the end (a run whose ranks drift fails)
    assert final["status"] == "completed", final
    a, b = weights(one), weights(two)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    started = events_of(two, "run_started")
    assert len(started) == 1 and started[0]["world_size"] == 2
    assert len(events_of(two, "run_finished")) == 1
    assert started[0]["batch_size"] == 63 and started[0]["steps_per_epoch"] == 12
    # only rank 0 wrote: the same files as the one-process run (plus torchrun's log). How many resume
    # checkpoints a run writes depends on how long writing one takes, so the previous one may or may not exist.
    timed = {"worker.log", "checkpoints/state.prev.pt"}
    files = lambda run: {str(p.relative_to(run)) for p in run.rglob("*")} - timed  # noqa: E731
    assert files(two) == files(one) - {"dynamics.npz"}  # training dynamics: kept on one process


def _record_rows(rank: int, world: int, port: int, out: str) -> None:
    """One rank of a world that runs `core.train` with augmentation on and a step that records which
    rows (their ids are the targets) the rank was given."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    from engine.train import core
    from engine.train.config import TrainConfig
    from engine.train.state import Plan

    n = 103
    cfg = TrainConfig.parse(
        {"epochs": 3, "batch_size": 10, "loss": "mse", "flip": True, "crop_padding": 1,
         "noise": 0.1, "device": "cpu"}
    )  # fmt: skip
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1))
    tensors = {"x_train": torch.rand(n, 1, 8, 8), "y_train": torch.arange(n).float(),
               "x_val": torch.rand(4, 1, 8, 8), "y_val": torch.zeros(4)}  # fmt: skip
    s = core.prepare(cfg, Plan("mse", "o", "o"), net, net, tensors, torch.device("cpu"))
    s.rank, s.world = rank, world
    s.aug_gen = torch.Generator().manual_seed(100 + rank)
    seen = []

    def step(s, xb, yb, last):
        seen.append([int(v) for v in yb.flatten()] if s.share else [])
        return torch.zeros(())

    core.train(s, step=step, validate=lambda s: {"loss": 0.0})
    rows = core.gather(seen, world)
    if rank == 0:
        torch.save(rows, out)
    distributed.leave()
    # The rows are recorded and the group left: end here. Tearing the interpreter down once aborted a rank on CI
    # ("terminate called without an active exception", a native thread alive at exit) after its work was done.
    os._exit(0)


@pytest.mark.parametrize("world", [2, 3])
def test_each_epoch_gives_every_row_to_exactly_one_rank_with_augmentation_on(tmp_path, world):
    out = tmp_path / "rows.pt"
    torch.multiprocessing.spawn(_record_rows, args=(world, free_port(), str(out)), nprocs=world)
    rows = torch.load(out)  # [rank][step] -> row ids
    steps = len(rows[0])
    assert steps == 3 * 11 and all(len(r) == steps for r in rows)
    for epoch in range(3):
        taken = [row for r in rows for batch in r[epoch * 11 : (epoch + 1) * 11] for row in batch]
        assert sorted(taken) == list(range(103)), f"epoch {epoch + 1}"


def test_stop_then_resume_on_two_processes_is_bitwise_the_uninterrupted_run(workspace, tmp_path):
    from engine.data.prepare import prepare_builtin

    data = prepare_builtin("moons", n_samples=2000, noise=0.2)
    train = {**TRAIN, "epochs": 40, "batch_size": 32, "lr": 0.003}
    reference = create_run(DROPOUT, train, data.path, run_dir=tmp_path / "ref", processes=2)
    assert supervise(reference, 2)["status"] == "completed"

    run = create_run(DROPOUT, train, data.path, run_dir=tmp_path / "run", processes=2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.runs", str(run), "--nproc", "2"], cwd=ROOT
    )
    wait_for(lambda: len(events_of(run, "epoch_end")) >= 3, timeout=120)
    request_stop(run)
    assert proc.wait(timeout=120) == 0
    final = events_of(run, "run_finished")[-1]
    assert final["status"] == "stopped", final
    on_one = shutil.copytree(run, tmp_path / "on-one")

    assert supervise(prepare_resume(run), 2, resume=True)["status"] == "completed"
    a, b = weights(reference), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert events_of(run, "run_resumed")[0]["world_size"] == 2

    assert execute(prepare_resume(on_one), resume=True)["status"] == "completed"
    epochs = [e["epoch"] for e in events_of(on_one, "epoch_end")]
    assert epochs == list(range(1, 41))  # the curve goes on from where it stopped, no repeats
    steps = [e["step"] for e in read_events(on_one)[0] if e["type"] in ("batch_end", "epoch_end")]
    assert steps == sorted(steps)
    assert events_of(on_one, "run_resumed")[0]["world_size"] == 1


def _ranks_of(run) -> dict[int, int]:
    """{rank: pid} of the worker processes training `run` (read from /proc)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
            env = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if str(run).encode() in cmd and b"engine.runs" in cmd and b"--nproc" not in cmd:
            rank = next((v[5:] for v in env if v.startswith(b"RANK=")), None)
            if rank is not None and b"torch.distributed.run" not in cmd:
                found[int(rank)] = int(entry)
    return found


def test_a_killed_rank_restarts_the_group_from_the_checkpoint(workspace, tmp_path):
    from engine.data.prepare import prepare_builtin

    data = prepare_builtin("moons", n_samples=2000, noise=0.2)
    train = {**TRAIN, "epochs": 40, "batch_size": 32, "lr": 0.003}
    run = create_run(DROPOUT, train, data.path, run_dir=tmp_path / "run", processes=2)
    cmd = [sys.executable, "-m", "engine.runs", str(run), "--nproc", "2", "--max-restarts", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    wait_for(lambda: len(events_of(run, "checkpoint_saved")) >= 2, timeout=120)
    os.kill(wait_for(lambda: _ranks_of(run).get(1), timeout=30), signal.SIGKILL)
    assert proc.wait(timeout=180) == 0
    events = read_events(run)[0]
    assert [e["type"] for e in events].count("run_started") == 1
    assert [e["type"] for e in events].count("run_resumed") == 1
    finished = [e for e in events if e["type"] == "run_finished"]
    assert len(finished) == 1 and finished[0]["status"] == "completed", finished
    assert [e["epoch"] for e in events if e["type"] == "epoch_end"] == list(range(1, 41))


def by_hand(run, extra=lambda rank: {}) -> list[subprocess.Popen]:
    """Two plain workers of `run` with torchrun's variables set by hand (the contract Slurm's srun
    and Kubernetes follow); `extra(rank)`: more variables for one rank."""
    port = str(free_port())
    return [
        subprocess.Popen(
            [sys.executable, "-m", "engine.runs", str(run)],
            cwd=ROOT,
            env={
                **os.environ,
                "RANK": str(r),
                "LOCAL_RANK": str(r),
                "WORLD_SIZE": "2",
                "LOCAL_WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                **extra(r),
            },
        )  # fmt: skip
        for r in range(2)
    ]


def test_launcher_environment_by_hand_matches_torchrun(moons, tmp_path):
    """The contract Slurm's srun and Kubernetes follow: each process gets RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR and MASTER_PORT, and runs the plain worker."""
    by_torchrun = create_run(mlp_spec(2), TRAIN, moons.path, run_dir=tmp_path / "t", processes=2)
    assert supervise(by_torchrun, 2)["status"] == "completed"
    run = create_run(mlp_spec(2), TRAIN, moons.path, run_dir=tmp_path / "h", processes=2)
    procs = by_hand(run)
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert events_of(run, "run_finished")[-1]["status"] == "completed"
    a, b = weights(by_torchrun), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_failing_rank_ends_the_run_as_failed_with_its_message(moons, tmp_path):
    """Rank 1's machine allows smaller weight files than rank 0's, so it refuses the run's starting
    weights: the run fails with rank 1's message, and no process hangs."""
    from engine.compiler import compile_spec
    from engine.spec import data_inputs, parse_spec

    init = compile_spec(parse_spec(mlp_spec(2)), data_inputs(moons.meta), seed=0)[0].state_dict()
    run = create_run(mlp_spec(2), TRAIN, moons.path, run_dir=tmp_path / "run", init=init)
    t = time.time()
    procs = by_hand(run, lambda rank: {"LAYERLAB_MAX_WEIGHTS_BYTES": "100"} if rank == 1 else {})
    for p in procs:
        p.wait(timeout=120)
    assert time.time() - t < 120
    final = events_of(run, "run_finished")
    assert len(final) == 1 and final[0]["status"] == "failed"
    assert "Process 1 of the run failed" in final[0]["message"], final[0]["message"]
    assert "LAYERLAB_MAX_WEIGHTS_BYTES" in final[0]["message"]
    assert read_status(run)["state"] == "failed"


def test_worlds_a_run_cannot_train_are_refused_before_anything_starts(moons, monkeypatch):
    with pytest.raises(
        ConfigError, match=r"batch size \(2\) is smaller than the number of processes \(3\)"
    ):
        create_run(mlp_spec(2), {**TRAIN, "batch_size": 2}, moons.path, processes=3)
    run = create_run(mlp_spec(2), {**TRAIN, "batch_size": 2}, moons.path)
    with pytest.raises(ConfigError, match="Raise the batch size to 3"):
        supervise(run, 3)
    assert read_events(run)[0] == []  # nothing started
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="2 processes on CUDA need 2 GPUs .* this one has 1"):
        distributed.check_world(2, 64, "auto")
    distributed.check_world(2, 64, "cpu")  # CPU processes: allowed, for trying it out
    with pytest.raises(LayerLabError):
        distributed.check_world(0, 64, "cpu")


def test_the_emitted_torchrun_script_trains_on_two_machines(moons, tmp_path):
    """`--emit-launch torchrun --nodes 2`: the same script on two "machines" (two torchrun agents on
    this host, meeting at the rendezvous) trains the run; the app reads it as a local run."""
    from engine.cli import main

    out = tmp_path / "cluster"
    data = tmp_path / "table.csv"
    rows = ["a,b,y"] + [f"{i % 7},{(i * 3) % 11},{int(i % 7 > 3)}" for i in range(300)]
    data.write_text("\n".join(rows) + "\n")
    assert main(["train", "--data", str(data), "--target", "y", "--out", str(out), "--epochs", "3",
                 "--emit-launch", "all", "--nodes", "2", "--nproc", "1", "--no-diagnostics"]) == 0  # fmt: skip
    assert {"launch-torchrun.sh", "launch.sbatch", "pytorchjob.yaml"} <= {
        p.name for p in out.iterdir()
    }
    assert read_status(out)["state"] == "queued"  # waits for the machines, not taken for lost
    env = {**os.environ, "HEAD": "127.0.0.1", "PORT": str(free_port())}
    nodes = [subprocess.Popen(["bash", str(out / "launch-torchrun.sh")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]  # fmt: skip
    assert [n.wait(timeout=180) for n in nodes] == [0, 0]
    assert events_of(out, "run_started")[0]["world_size"] == 2
    assert events_of(out, "run_finished")[-1]["status"] == "completed"
    assert "--gpus-per-node" not in (out / "launch.sbatch").read_text()  # a CPU run asks for no GPU
    assert '"nprocPerNode": "1"' in (out / "pytorchjob.yaml").read_text()


def test_a_ray_job_of_two_workers_trains_the_torchrun_model(moons, tmp_path):
    """Skipped without Ray (an optional extra; CI does not install it)."""
    ray = pytest.importorskip("ray")
    from engine import raycluster

    by_torchrun = create_run(mlp_spec(2), TRAIN, moons.path, run_dir=tmp_path / "t", processes=2)
    assert supervise(by_torchrun, 2)["status"] == "completed"
    on_ray = create_run(mlp_spec(2), TRAIN, moons.path, run_dir=tmp_path / "r", processes=2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        final = raycluster.train(on_ray, None, 2)
    finally:
        ray.shutdown()
    assert final["status"] == "completed", final
    assert events_of(on_ray, "run_started")[0]["world_size"] == 2
    a, b = weights(by_torchrun), weights(on_ray)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_without_ray_the_ray_choice_says_how_to_install_it(moons, monkeypatch):
    from engine import raycluster
    from engine.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(LayerLabError, match=r"pip install -e '\.\[ray\]'"):
        raycluster.available()
    run = create_run(mlp_spec(2), TRAIN, moons.path, processes=2)
    with pytest.raises(LayerLabError, match="optional extra"):
        raycluster.train(run, "auto", 2)
    assert read_events(run)[0] == []
    assert main(["resume", str(run), "--ray", "auto"]) == 2  # no checkpoint: refused, not crashed


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_two_gpus_with_nccl_train_the_one_gpu_model_with_synced_batch_norm(moons, tmp_path):
    spec = mlp_spec(2)
    spec["nodes"].insert(1, {"id": "bn", "op": "batchnorm", "params": {}})
    train = {**TRAIN, "device": "cuda", "precision": "32", "batch_size": 64}
    one = create_run(spec, train, moons.path, run_dir=tmp_path / "one")
    assert execute(one)["status"] == "completed"
    two = create_run(spec, train, moons.path, run_dir=tmp_path / "two", processes=2)
    assert supervise(two, 2)["status"] == "completed"
    a, b = weights(one), weights(two)  # SyncBatchNorm: the statistics of the whole global batch
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-4
