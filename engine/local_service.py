"""Prediction services the app starts on this machine (the Export page): one `python -m engine serve RUN` process per
run, on a free loopback port, recorded in `<home>/services/<run id>.json` so every session and rerun sees it. A
service stops when the user asks, or by itself when the app's process ends (`--stop-with`)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from engine.errors import LayerLabError
from engine.runs import pid_alive
from engine.workspace import atomic_write_json, home, read_json

START_TIMEOUT_S = 60.0


def _record(run_dir: Path) -> Path:
    return home() / "services" / f"{Path(run_dir).name}.json"


def running(run_dir: Path) -> dict | None:
    """{"pid", "port", "url", "log"} of the run's service while its process lives, else None."""
    found = read_json(_record(run_dir), None)
    if not found or not pid_alive(found["pid"]):
        return None
    return found


def free_port() -> int:
    """A port nothing listens on now, on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(run_dir: Path, stop_with: int | None = None) -> dict:
    """Start the run's service (or return the one that runs) and wait until it answers /health."""
    found = running(run_dir)
    if found:
        return found
    port = free_port()
    record = _record(run_dir)
    record.parent.mkdir(parents=True, exist_ok=True)
    log = record.with_suffix(".log")
    command = [
        sys.executable,
        "-m",
        "engine",
        "serve",
        str(run_dir),
        "--port",
        str(port),
        "--quiet",
    ]
    if stop_with:
        command += ["--stop-with", str(stop_with)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    found = {"pid": proc.pid, "port": port, "url": f"http://127.0.0.1:{port}", "log": str(log)}
    if wait_for_health(found["url"], START_TIMEOUT_S, lambda: proc.poll() is None):
        atomic_write_json(record, found)
        return found
    if proc.poll() is not None:
        raise LayerLabError(f"the service stopped as it started: {log.read_text()[-400:].strip()}")
    proc.kill()
    raise LayerLabError(
        f"the service did not answer within {START_TIMEOUT_S:.0f} s: {log.read_text()[-400:]}"
    )


def wait_for_health(url: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    """Ask `url`'s GET /health until it answers (True), or until `alive()` says its process ended or `timeout`
    seconds pass (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline and alive():
        try:
            request(url, "/health")
            return True
        except OSError:
            time.sleep(0.2)
    return False


def stop(run_dir: Path) -> None:
    found = running(run_dir)
    if found:
        try:
            os.kill(found["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
    _record(run_dir).unlink(missing_ok=True)


def request(
    url: str, path: str, body: dict | None = None, timeout: float = 30.0
) -> tuple[int, dict]:
    """GET (no body) or POST a JSON body; the HTTP status and the JSON answer (4xx and 5xx included)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
