import os
import signal
import time

import pytest

from engine.runs import (
    create_run,
    launch,
    list_runs,
    read_events,
    read_status,
    request_stop,
    run_states,
)
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


def test_killed_worker_is_detected_at_once_and_offered_resume(moons):
    run = create_run(mlp_spec(2), {"epochs": 5000}, moons.path)
    pid = launch(run)
    wait_for(lambda: (run / "checkpoints" / "state.pt").exists())
    assert read_status(run)["state"] == "running"
    os.kill(pid, signal.SIGKILL)
    # The heartbeat is still fresh (written within the last second), and the dead child is not reaped yet: the
    # status reads failed at once all the same, and says Resume continues.
    status = wait_for(lambda: (s := read_status(run))["state"] == "failed" and s, timeout=2)
    assert time.time() - read_json(run / "status.json")["heartbeat"] < 3
    assert "stopped unexpectedly" in status["message"] and "Resume continues" in status["message"]
    assert list_runs()[0]["state"] == "failed" and run_states() == {run.name: "failed"}


def test_a_queued_run_that_never_got_a_worker_fails_once_its_heartbeat_is_stale(moons):
    run = create_run(mlp_spec(2), {"epochs": 5}, moons.path)
    assert read_status(run)["state"] == "queued"
    atomic_write_json(
        run / "status.json", {**read_json(run / "status.json"), "heartbeat": time.time() - 60}
    )
    status = read_status(run)
    assert status["state"] == "failed" and "Start the run again" in status["message"]


def test_the_status_carries_live_samples_per_second_and_epoch(moons):
    run = create_run(mlp_spec(2), {"epochs": 5000}, moons.path)
    launch(run)
    status = wait_for(
        lambda: (s := read_status(run)).get("epoch", 0) >= 2 and s.get("samples_per_second") and s
    )
    assert status["state"] == "running" and status["samples_per_second"] > 0
    request_stop(run)
    wait_for(lambda: read_status(run)["state"] == "stopped", timeout=10)


def test_runs_get_readable_names_and_can_be_renamed(moons):
    from engine.errors import LayerLabError
    from engine.runs import rename_run, run_info

    run = create_run(mlp_spec(2), {"epochs": 1}, moons.path)
    name = run_info(run)["name"]
    assert (
        name.startswith("Two moons · 5-layer MLP · ") and run.name not in name
    )  # the set's name, short
    assert rename_run(run, "  moons,   lr 0.01 ") == "moons, lr 0.01"
    assert run_info(run)["name"] == "moons, lr 0.01"
    with pytest.raises(LayerLabError, match="needs a name"):
        rename_run(run, "   ")


def test_bad_settings_never_create_a_run(moons):
    from engine.errors import LayerLabError

    with pytest.raises(LayerLabError, match="larger than"):
        create_run(mlp_spec(2), {"batch_size": 10_000}, moons.path)
    assert list_runs() == []


def test_half_written_event_line_waits_for_the_next_read(tmp_path):
    (tmp_path / "events.jsonl").write_text('{"type": "a"}\n{"type": "b"')
    events, offset = read_events(tmp_path)
    assert events == [{"type": "a"}] and offset == len('{"type": "a"}\n')


def test_a_spare_worker_takes_the_next_run(moons, monkeypatch):
    import engine.runs as runs

    monkeypatch.setenv("LAYERLAB_SPARE_WORKER", "1")
    runs.warm_spare()
    spare = runs._spare
    time.sleep(
        3
    )  # it imports torch meanwhile (a run handed over earlier waits in its stdin all the same)
    assert spare.poll() is None
    run = create_run(mlp_spec(2), {"epochs": 3}, moons.path)
    pid = launch(run)
    assert pid == spare.pid and runs._spare is None  # handed over, not a fresh process
    status = wait_for(lambda: (s := read_status(run))["state"] not in ("queued", "running") and s)
    assert status["state"] == "completed", (run / "worker.log").read_text()[-2000:]
    assert spare.wait(10) == 0
    runs.warm_spare()
    runs._spare.stdin.close()  # the app went away: an idle spare exits quietly
    assert runs._spare.wait(30) == 0


def test_every_event_a_run_writes_has_its_documented_type(moons, tmp_path):
    """events.jsonl as a reader sees it: each line validates against its type in engine.train.events, and the
    README's table of types and fields is made from the same models."""
    from engine.runs import create_run, execute, read_events
    from engine.train.events import EVENTS, check, readme_table
    from tests.conftest import ROOT, mlp_spec

    run = create_run(
        mlp_spec(2), {"epochs": 25, "lr": 0.05, "batch_size": 4}, moons.path, run_dir=tmp_path / "r"
    )
    execute(run)  # long enough for the few-a-second batch_end events
    events = read_events(run)[0]
    kinds = {e["type"] for e in events}
    assert (
        {"run_started", "batch_end", "epoch_end", "diagnostics", "run_finished"}
        <= kinds
        <= set(EVENTS)
    )
    for event in events:
        check(event)
    assert readme_table() in (ROOT / "README.md").read_text()
