"""Work the pages start in a process of its own, so a page rerun never blocks on it or kills it: the learning-rate
finder, the will-it-learn check, explanations, quantized variants. `<home>/jobs/<kind>/<id>/` holds job.json (what
to do), progress.json while it works, then result.json or error.json; `state` reads them for the page's live view.

A kind is a function `(job: dict, progress(done, what)) -> dict` (JSON; the job's "folder" is where it may write
files of its own), named in KINDS by its module path, so this
module imports none of them until a job runs.
"""

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

from engine.errors import LayerLabError
from engine.runs import pid_alive
from engine.workspace import atomic_write_json, home, read_json

KINDS = {
    "lr-finder": "engine.train.lr_find:run_job",
    "will-learn": "engine.train.learncheck:run_job",
    "explain": "engine.explain:run_job",
    "quantize": "engine.quantize:run_job",
}


def start(kind: str, job: dict, files: dict[str, bytes] | None = None) -> Path:
    """Write the job (and `files` beside it, by name) and start its process (its own session: a page rerun never
    kills it); its folder."""
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    folder = home() / "jobs" / kind / (time.strftime("%Y%m%d-%H%M%S-") + os.urandom(3).hex())
    folder.mkdir(parents=True)
    for name, data in (files or {}).items():
        (folder / Path(name).name).write_bytes(data)
    atomic_write_json(folder / "job.json", {"kind": kind, **job})
    with open(folder / "worker.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "engine.jobs", str(folder)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    (folder / "pid").write_text(str(proc.pid))
    return folder


def state(folder: Path) -> dict:
    """{"state": running|done|failed, "progress", "what", "started", "result" or "message"}."""
    if (result := read_json(folder / "result.json")) is not None:
        return {"state": "done", "result": result}
    if (error := read_json(folder / "error.json")) is not None:
        return {"state": "failed", "message": error["message"]}
    pid = (folder / "pid").read_text().strip() if (folder / "pid").exists() else ""
    if pid.isdigit() and not pid_alive(int(pid)):
        if (result := read_json(folder / "result.json")) is not None:  # it finished as we looked
            return {"state": "done", "result": result}
        return {"state": "failed", "message": "The work stopped before it finished (its process ended without "
                "a result: out of memory, or killed). Try again; the details are in its worker.log."}  # fmt: skip
    if not folder.exists():
        return {"state": "failed", "message": "This work's folder is gone (the workspace was cleared): start it "
                "again."}  # fmt: skip
    progress = read_json(folder / "progress.json", {})
    return {"state": "running", "progress": progress.get("done", 0.0), "what": progress.get("what", "Starting"),
            "started": progress.get("started")}  # fmt: skip


def run(folder: Path) -> None:
    """Do the job in this process and write how it ended."""
    job = {**read_json(folder / "job.json"), "folder": str(folder)}
    started, last = time.time(), [0.0]

    def progress(done: float, what: str) -> None:
        if time.time() - last[0] > 0.3 or done >= 1:
            last[0] = time.time()
            atomic_write_json(
                folder / "progress.json", {"done": done, "what": what, "started": started}
            )

    try:
        module, name = KINDS[job["kind"]].split(":")
        result = getattr(importlib.import_module(module), name)(job, progress)
        atomic_write_json(folder / "result.json", result)
    except LayerLabError as e:
        atomic_write_json(folder / "error.json", {"message": str(e)})
    except Exception as e:  # noqa: BLE001 - the page must always learn how it ended
        atomic_write_json(
            folder / "error.json",
            {"message": f"The {job['kind']} job failed ({type(e).__name__}: {e})."},
        )


if __name__ == "__main__":
    run(Path(sys.argv[1]))
