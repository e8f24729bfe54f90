import os
import signal
import time

import pytest

from engine.runs import create_run, launch, list_runs, read_events, read_status, request_stop
from engine.workspace import atomic_write_json, read_json
from tests.conftest import mlp_spec


def wait_for(predicate, timeout=60.0, every=0.05):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out")


def test_worker_process_trains_and_writes_the_run_folder(moons):
    run = create_run(mlp_spec(2), {"epochs": 30, "lr": 0.01}, moons.path)
    assert read_status(run)["state"] == "queued"
    launch(run)
    status = wait_for(lambda: (s := read_status(run))["state"] not in ("queued", "running") and s)
    assert status["state"] == "completed", status
    events, offset = read_events(run)
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    assert events[-1]["metrics"]["val/accuracy"] >= 0.95
    assert offset == (run / "events.jsonl").stat().st_size
    assert read_events(run, offset) == ([], offset)  # only new bytes are read
    for name in ("spec.json", "train.json", "model.safetensors", "checkpoints/best.safetensors"):
        assert (run / name).exists(), name
    assert list_runs()[0]["id"] == run.name


def test_stop_stops_within_a_second_and_keeps_weights(moons):
    run = create_run(mlp_spec(2, hidden=256), {"epochs": 5000}, moons.path)
    launch(run)
    wait_for(lambda: any(e["type"] == "epoch_end" for e in read_events(run)[0]))
    asked = time.time()
    request_stop(run)
    status = wait_for(lambda: (s := read_status(run))["state"] == "stopped" and s, timeout=10)
    assert status["finished"] - asked < 1.0
    assert (run / "model.safetensors").exists()
    assert read_events(run)[0][-1]["status"] == "stopped"


def test_killed_worker_is_detected_by_its_stale_heartbeat(moons):
    run = create_run(mlp_spec(2), {"epochs": 5000}, moons.path)
    pid = launch(run)
    wait_for(lambda: read_status(run)["state"] == "running")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: os.waitpid(pid, os.WNOHANG)[0] == pid)
    status = read_json(run / "status.json")
    atomic_write_json(run / "status.json", {**status, "heartbeat": time.time() - 60})
    assert read_status(run)["state"] == "failed"
    assert "stopped unexpectedly" in read_status(run)["message"]


def test_bad_settings_never_create_a_run(moons):
    from engine.errors import LayerLabError
    with pytest.raises(LayerLabError, match="larger than"):
        create_run(mlp_spec(2), {"batch_size": 10_000}, moons.path)
    assert list_runs() == []


def test_half_written_event_line_waits_for_the_next_read(tmp_path):
    (tmp_path / "events.jsonl").write_text('{"type": "a"}\n{"type": "b"')
    events, offset = read_events(tmp_path)
    assert events == [{"type": "a"}] and offset == len('{"type": "a"}\n')
