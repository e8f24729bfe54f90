"""The run queue: runs wait for room on their device, in order, across server restarts."""

import signal
import subprocess
import sys
import threading
import time

import pytest

from engine.errors import LayerLabError
from engine.runs import create_run, read_events, read_status, request_stop, run_info
from engine.scheduler import cancel, dispatch, enqueue, positions
from tests.conftest import ROOT, mlp_spec
from tests.test_runs import wait_for

QUICK = {"epochs": 40, "diagnostics": False}


def serve_in_a_process() -> subprocess.Popen:
    """The app's dispatcher, in a process of its own (a server that can be killed)."""
    return subprocess.Popen([sys.executable, "-m", "engine.scheduler"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, start_new_session=True)  # fmt: skip


def test_five_runs_with_a_limit_of_two_never_overlap_more_and_survive_a_server_restart(
    moons, monkeypatch
):
    monkeypatch.setenv("LAYERLAB_CPU_RUNS", "2")
    monkeypatch.setenv("LAYERLAB_RUNS_PER_GPU", "2")
    runs = [create_run(mlp_spec(2), {**QUICK, "seed": i}, moons.path) for i in range(5)]
    for run in runs:  # queued by the app, before any server dispatches
        status = read_status(run)
        (run / "status.json").write_text(
            __import__("json").dumps({**status, "queue": True, "queued_at": time.time()})
        )
    assert positions() == {run.name: i + 1 for i, run in enumerate(runs)}
    most, states = 0, {}

    def watch():
        nonlocal most, states
        states = {r.name: read_status(r) for r in runs}
        busy = sum(s["state"] == "running" or bool(s.get("pid")) and s["state"] == "queued"
                   for s in states.values())  # fmt: skip
        most = max(most, busy)
        return states

    server = serve_in_a_process()
    wait_for(lambda: sum(s["state"] == "running" for s in watch().values()) >= 1, timeout=60)
    server.send_signal(signal.SIGKILL)  # the server dies mid-queue; its workers go on
    server.wait()
    time.sleep(3)
    watch()
    assert any(s["state"] == "queued" and not s.get("pid") for s in states.values())
    assert all(s["state"] != "failed" for s in states.values())  # waiting is not failing
    server = serve_in_a_process()
    try:
        wait_for(lambda: all(s["state"] == "completed" for s in watch().values()), timeout=240)
    finally:
        server.send_signal(signal.SIGTERM)
    assert most <= 2
    for run in runs:  # each started once
        types = [e["type"] for e in read_events(run)[0]]
        assert types.count("run_started") == 1 and types.count("run_finished") == 1
    spans = sorted((states[r.name]["started"], states[r.name]["finished"]) for r in runs)
    for start, _ in spans:  # what the workers themselves recorded: never three at once
        assert sum(a <= start < b for a, b in spans) <= 2


def test_queue_places_cancel_and_two_starts_at_once(moons, monkeypatch):
    monkeypatch.setenv("LAYERLAB_CPU_RUNS", "1")
    monkeypatch.setenv("LAYERLAB_RUNS_PER_GPU", "1")
    first = enqueue(create_run(mlp_spec(2), {"epochs": 5000}, moons.path))
    made, errors = [], []

    def press_start():
        try:
            made.append(enqueue(create_run(mlp_spec(2), QUICK, moons.path)))
        except Exception as e:  # noqa: BLE001 - the test reports any
            errors.append(e)

    users = [threading.Thread(target=press_start) for _ in range(2)]
    for t in users:
        t.start()
    for t in users:
        t.join()
    assert not errors and len({str(r) for r in made}) == 2  # two runs, two folders
    wait_for(lambda: read_status(first)["state"] == "running")
    places = positions()
    assert sorted(places[r.name] for r in made) == [1, 2]
    assert run_info(made[0])["queue_position"] == places[made[0].name]
    second, third = sorted(made, key=lambda r: places[r.name])
    cancel(second)
    assert read_status(second)["state"] == "cancelled"
    assert positions() == {third.name: 1}
    assert dispatch() == []  # the CPU is full: the first run trains
    with pytest.raises(LayerLabError, match="no longer waiting"):
        cancel(first)
    request_stop(first)
    wait_for(lambda: read_status(first)["state"] == "stopped", timeout=30)
    wait_for(lambda: dispatch() or read_status(third)["state"] != "queued", timeout=30)
    wait_for(lambda: read_status(third)["state"] == "completed", timeout=120)
    assert read_status(second)["state"] == "cancelled" and read_events(second)[0] == []
