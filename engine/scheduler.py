"""The run queue: one LayerLab server serves many browser sessions, and their runs wait their turn.

A run the app starts is written queued, with `"queue": true` in its status; `dispatch()` starts the oldest
queued runs whose device has room, under a lock on the workspace (`runs/.queue.lock`), so two sessions or
two servers never start one run twice. The queue is the run folders themselves: a server that restarts
finds its queued runs on disk and goes on (`serve()` dispatches every second from a thread of the server).
Limits, from the environment: LAYERLAB_RUNS_PER_GPU concurrent runs on each GPU (a run of N processes
takes N GPUs' places) and LAYERLAB_CPU_RUNS on the CPU (default: one per two cores, at least two).
"""

import contextlib
import fcntl
import os
import threading
import time
from pathlib import Path

from engine.errors import LayerLabError
from engine.limits import CORES, Limit
from engine.runs import launch, read_status, run_dirs, runs_dir
from engine.workspace import atomic_write_json, read_json, record_error

RUNS_PER_GPU = Limit("LAYERLAB_RUNS_PER_GPU", 1, "concurrent runs on each GPU", "runs")
CPU_RUNS = Limit("LAYERLAB_CPU_RUNS", max(2, CORES // 2), "concurrent runs on the CPU", "runs")
DISPATCH_EVERY_S = 1.0


def gpu_count() -> int:
    """The machine's GPUs (a search's worker sees one, and is told the machine's count: LAYERLAB_MACHINE_GPUS)."""
    if os.environ.get("LAYERLAB_MACHINE_GPUS"):
        return int(os.environ["LAYERLAB_MACHINE_GPUS"])
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _device_kind(config: dict) -> str:
    device = config.get("device", "auto")
    return "cuda" if device == "cuda" or (device == "auto" and gpu_count()) else "cpu"


def _places(kind: str, launch_: dict) -> int:
    """The places a run takes: one per process on CUDA (each has a GPU), one on the CPU."""
    return int(launch_.get("processes", 1)) if kind == "cuda" else 1


def capacity(kind: str) -> int:
    return gpu_count() * RUNS_PER_GPU.value if kind == "cuda" else CPU_RUNS.value


@contextlib.contextmanager
def _locked():
    runs_dir().mkdir(parents=True, exist_ok=True)
    with open(runs_dir() / ".queue.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _waiting_and_busy() -> tuple[list[tuple[Path, dict, str, int]], dict[str, int]]:
    """The queued runs in queue order (run, status, device kind, places) and the places in use."""
    waiting, busy = [], {"cpu": 0, "cuda": 0}
    for run in run_dirs():
        status = read_status(run)
        if status["state"] not in ("queued", "running"):
            continue
        train = read_json(run / "train.json", {})
        kind = _device_kind(train.get("config", {}))
        places = _places(kind, train.get("launch") or {})
        if status["state"] == "running" or status.get("pid"):  # training, or being started
            busy[kind] += places
        elif status.get("queue"):
            waiting.append((run, status, kind, places))
    waiting.sort(key=lambda w: (w[1].get("queued_at", 0), w[0].name))
    return waiting, busy


def positions() -> dict[str, int]:
    """{run id: its place in the queue of its device (1 = next)}."""
    waiting, _ = _waiting_and_busy()
    seen: dict[str, int] = {}
    out = {}
    for run, _, kind, _ in waiting:
        seen[kind] = seen.get(kind, 0) + 1
        out[run.name] = seen[kind]
    return out


def dispatch() -> list[str]:
    """Start the queued runs whose device has room, oldest first (a run never jumps the queue of its
    device); the ids started."""
    started = []
    with _locked():
        waiting, busy = _waiting_and_busy()
        blocked = set()
        for run, status, kind, places in waiting:
            if kind in blocked:
                continue
            if busy[kind] and busy[kind] + places > capacity(kind):
                blocked.add(kind)
                continue
            busy[kind] += places
            launch(run, resume=bool(status.get("resume")))
            started.append(run.name)
    return started


def claim(run_dir: Path) -> bool:
    """Take the queued run `run_dir` to train in this process (a search's worker, which has torch loaded already)
    when its device has room and no older run of that device waits: its status gets this process's pid, so the
    queue counts it as started. False: it keeps its place in the queue."""
    with _locked():
        waiting, busy = _waiting_and_busy()
        for i, (run, _, kind, places) in enumerate(waiting):
            if run.name != Path(run_dir).name:
                continue
            ahead = any(w[2] == kind for w in waiting[:i])
            if ahead or (busy[kind] and busy[kind] + places > capacity(kind)):
                return False
            status = read_json(Path(run_dir) / "status.json", {})
            atomic_write_json(Path(run_dir) / "status.json",
                              {**status, "pid": os.getpid(), "heartbeat": time.time()})  # fmt: skip
            return True
    return False


def enqueue(run_dir: Path, resume: bool = False, start: bool = True) -> Path:
    """Put a queued run (create_run, prepare_resume) in the queue and (`start`) start what has room."""
    status = read_json(Path(run_dir) / "status.json", {})
    atomic_write_json(
        Path(run_dir) / "status.json",
        {**status, "queue": True, "queued_at": time.time(), "resume": resume},
    )
    if start:
        dispatch()
    return Path(run_dir)


def cancel(run_dir: Path) -> None:
    """Take a run that still waits out of the queue (state "cancelled"); a started one is stopped instead."""
    with _locked():
        status = read_status(run_dir)
        if status["state"] != "queued" or status.get("pid"):
            raise LayerLabError(
                f"run {Path(run_dir).name} is no longer waiting ({status['state']}): stop it instead."
            )
        atomic_write_json(
            Path(run_dir) / "status.json",
            {**status, "state": "cancelled", "queue": False, "finished": time.time(),
             "message": "Cancelled while it waited in the queue."},
        )  # fmt: skip


_serving: threading.Thread | None = None


def serve(every: float = DISPATCH_EVERY_S) -> None:
    """Dispatch every `every` seconds from a daemon thread of this process (the app's server), once.
    LAYERLAB_QUEUE_THREAD=0 turns it off: the engine and page tests, which run the pages inside the
    test process, set it, so no thread of theirs starts another test's runs or reaps its workers."""
    global _serving
    if os.environ.get("LAYERLAB_QUEUE_THREAD") == "0":
        return
    if _serving is not None and _serving.is_alive():
        return

    def loop():
        while True:
            try:
                dispatch()
            except Exception:  # noqa: BLE001 - a damaged run folder must not stop the queue
                record_error("the run queue")
            time.sleep(every)

    _serving = threading.Thread(target=loop, name="layerlab-queue", daemon=True)
    _serving.start()


if (
    __name__ == "__main__"
):  # `python -m engine.scheduler`: a queue without the app (a headless server)
    print(f"dispatching the queue of {runs_dir()} every {DISPATCH_EVERY_S:g} s; Ctrl-C ends it")
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            dispatch()
            time.sleep(DISPATCH_EVERY_S)
