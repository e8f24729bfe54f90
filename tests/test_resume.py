"""Resume a stopped or killed run exactly where it was; branch a new run from a checkpoint."""

import itertools
import os
import signal
import subprocess
import sys

import pytest
from safetensors.torch import load_file

import engine.train.core as core
import engine.train.loop as loop
from engine.errors import LayerLabError
from engine.runs import (
    RunWriter,
    branch_run,
    create_run,
    execute,
    launch,
    list_runs,
    prepare_resume,
    read_events,
    read_status,
    request_stop,
    resumable,
)
from engine.train.config import TrainConfig
from tests.conftest import ROOT
from tests.test_runs import wait_for

SPEC = {
    "version": 1,
    "nodes": [
        {"id": "fc1", "op": "linear", "params": {"out_features": 64}},
        {"id": "act1", "op": "activation", "params": {"kind": "relu"}},
        {
            "id": "drop",
            "op": "dropout",
            "params": {"p": 0.2},
        },  # dropout: the global random stream must resume too
        {"id": "head", "op": "linear", "params": {"out_features": 2}},
    ],
}
TRAIN = {"epochs": 8, "lr": 0.003, "scheduler": "cosine", "warmup_epochs": 1}


@pytest.fixture
def big_moons(workspace):
    from engine.data.prepare import prepare_builtin

    return prepare_builtin("moons", n_samples=20000, noise=0.2)


def uninterrupted(dataset, tmp_path) -> dict:
    run = create_run(SPEC, TRAIN, dataset.path, run_dir=tmp_path / "reference")
    assert execute(run)["status"] == "completed"
    return load_file(run / "model.safetensors")


def assert_continuous(run, steps_per_epoch):
    events = read_events(run)[0]
    epochs = [e["epoch"] for e in events if e["type"] == "epoch_end"]
    assert epochs == list(
        range(1, TRAIN["epochs"] + 1)
    )  # each epoch once: the curve continues, no repeats
    steps = [e["step"] for e in events if e["type"] in ("batch_end", "epoch_end")]
    assert steps == sorted(steps)
    final = events[-1]
    assert final["type"] == "run_finished" and final["status"] == "completed", final
    assert final["step"] == TRAIN["epochs"] * steps_per_epoch
    assert sum(e["type"] == "run_resumed" for e in events) == 1
    return events


def test_killed_worker_resumes_from_its_checkpoint_to_the_same_weights(big_moons, tmp_path):
    run = create_run(SPEC, TRAIN, big_moons.path)
    pid = launch(run)

    def mid_epoch_after_a_checkpoint():
        events = read_events(run)[0]
        saved = [e["step"] for e in events if e["type"] == "checkpoint_saved"]
        return (
            saved
            and saved[-1] >= 2 * events[0]["steps_per_epoch"]
            and any(e["type"] == "batch_end" and e["step"] > saved[-1] for e in events)
        )

    wait_for(mid_epoch_after_a_checkpoint, timeout=120, every=0.02)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: os.waitpid(pid, os.WNOHANG)[0] == pid)
    killed = read_events(run)[0]
    assert killed[-1]["type"] != "run_finished"
    steps_per_epoch = killed[0]["steps_per_epoch"]

    out = subprocess.run(
        [sys.executable, "-m", "engine", "resume", str(run)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    events = assert_continuous(run, steps_per_epoch)
    resumed = next(e for e in events if e["type"] == "run_resumed")
    assert resumed["step"] % steps_per_epoch == 0 and resumed["step"] >= 2 * steps_per_epoch
    assert read_status(run)["resumes"] == 1
    reference = uninterrupted(big_moons, tmp_path)
    for name, tensor in load_file(run / "model.safetensors").items():
        assert (tensor - reference[name]).abs().max() < 1e-6, name


def test_run_stopped_mid_epoch_resumes_from_its_next_batch(big_moons, tmp_path, monkeypatch):
    monkeypatch.setattr(core, "SYNC_EVERY_S", 0.0)  # the loop asks whether to stop after every step
    run = create_run(SPEC, TRAIN, big_moons.path)
    writer, calls = RunWriter(run), itertools.count(1)
    steps_per_epoch = -(-big_moons.meta["sizes"]["train"] // 32)
    stop_at = steps_per_epoch + 1 + 100  # epoch 1's steps and its end, then 100 steps into epoch 2
    result = loop.fit(
        SPEC,
        big_moons,
        TrainConfig.parse(TRAIN),
        emit=writer.emit,
        out_dir=run,
        should_stop=lambda: next(calls) == stop_at,
    )
    writer.set_status(state=result["status"])
    assert result["status"] == "stopped" and result["step"] == steps_per_epoch + 100
    assert "Resume continues from here" in result["message"]
    assert resumable(run)
    execute(prepare_resume(run), resume=True)
    events = assert_continuous(run, steps_per_epoch)
    assert next(e for e in events if e["type"] == "run_resumed")["step"] == steps_per_epoch + 100
    reference = uninterrupted(big_moons, tmp_path)
    for name, tensor in load_file(run / "model.safetensors").items():
        assert (tensor - reference[name]).abs().max() < 1e-6, name
    with pytest.raises(LayerLabError, match="nothing to resume"):
        prepare_resume(run)


def test_resume_refuses_a_live_run_and_one_without_a_checkpoint(moons):
    run = create_run(SPEC, {"epochs": 5000}, moons.path)
    launch(run)
    wait_for(lambda: read_status(run)["state"] == "running")
    with pytest.raises(LayerLabError, match="still training"):
        prepare_resume(run)
    request_stop(run)
    wait_for(lambda: read_status(run)["state"] == "stopped")
    fresh = create_run(SPEC, {"epochs": 2}, moons.path)
    with pytest.raises(LayerLabError, match="no resume checkpoint"):
        prepare_resume(fresh)


def test_branch_starts_from_the_parents_checkpoint_with_new_settings(moons):
    parent = create_run(SPEC, {"epochs": 10, "lr": 0.01}, moons.path, name="parent")
    assert execute(parent)["status"] == "completed"
    child = branch_run(parent, "best", {"epochs": 3, "lr": 0.001, "optimizer": "sgd"})
    assert (
        load_file(child / "init.safetensors").keys()
        == load_file(parent / "checkpoints/best.safetensors").keys()
    )
    result = execute(child)
    assert result["status"] == "completed"
    first = lambda run: next(e for e in read_events(run)[0] if e["type"] == "epoch_end")["metrics"]  # noqa: E731
    assert first(child)["val/accuracy"] >= 0.95  # it starts trained, not from scratch
    assert first(child)["train/loss"] < 0.5 * first(parent)["train/loss"]
    info = next(r for r in list_runs() if r["id"] == child.name)
    assert info["parent"]["run"] == parent.name and info["parent"]["checkpoint"] == "best"
    assert info["config"]["optimizer"] == "sgd"
    with pytest.raises(LayerLabError, match="no 'nope' checkpoint"):
        branch_run(parent, "nope", {})
