"""The run store on disk, and the worker process entry point (`python -m engine.runs RUN_DIR`).

<home>/runs/<run_id>/
    spec.json  train.json   what was asked (model, training config, dataset)
    events.jsonl            append-only typed events: the single source of truth for every chart
    status.json             state, pid, heartbeat; replaced atomically
    model.safetensors       final weights; checkpoints/ holds last and best, and state.pt to resume from
    init.safetensors        a branch's or an import's starting weights
    boundary.json           2-D data: the latest decision boundary / regression surface
    stop                    present = a stop was requested (the loop checks it a few times a second)
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from pydantic import ValidationError
from safetensors.torch import save_file

from engine.compiler import infer_shapes
from engine.data.folds import run_dataset
from engine.data.store import load_dataset
from engine.errors import ConfigError, LayerLabError
from engine.gan import is_gan, validate_gan
from engine.spec import data_inputs, parse_spec
from engine.tasks import width
from engine.train import distributed
from engine.train.checkpoint import has_checkpoint, load_state
from engine.train.config import TrainConfig, preflight
from engine.train.events import EVENTS, check, run_finished
from engine.workspace import atomic_write_json, home, read_json

ACTIVE = ("queued", "running")
HEARTBEAT_S = 1.0
STALE_AFTER_S = 15.0
REMOTE_BEAT_S = 5.0  # a run whose rank 0 is on another machine refreshes its heartbeat this often
REMOTE_STALE_AFTER_S = 60.0  # ... and is taken for lost once its heartbeat is this old


def runs_dir() -> Path:
    return home() / "runs"


def validate(spec: dict, train: dict, meta: dict) -> tuple:
    """Everything that can be checked before a worker starts, from the dataset's meta (no tensors are read), so
    the Train page can say why a run would be refused before Start is pressed; raises LayerLabError with advice."""
    cfg = TrainConfig.parse(train)
    if is_gan(spec):
        return validate_gan(spec, cfg, meta), cfg
    spec_obj = parse_spec(spec)
    if cfg.target in ("input", "vae") and meta.get("vocab_size"):
        raise ConfigError(
            "an autoencoder rebuilds numbers or images, but this data holds text as token ids, which are names, "
            "not amounts: prepare the table without its text column (or with it as a category), or train the "
            "model to predict the target."
        )
    input_shape = tuple(meta["input_shape"])
    infos = infer_shapes(spec_obj, data_inputs(meta))
    preflight(
        spec_obj,
        infos,
        cfg,
        meta["task"],
        width(meta),
        input_shape,
        meta["sizes"]["train"],
    )
    return spec_obj, cfg


MODEL_KINDS = (
    ("VAE", ("gaussian_latent",)),
    ("transformer", ("transformer_encoder", "attention")),
    ("RNN", ("lstm", "gru", "rnn")),
    ("CNN", ("conv1d", "conv2d", "conv_transpose2d")),
)


def model_label(spec: dict) -> str:
    """A few words for a model: "4-layer CNN"."""
    if is_gan(spec):
        return "GAN"
    ops = {n["op"] for n in spec.get("nodes", [])}
    kind = next((name for name, members in MODEL_KINDS if ops & set(members)), "MLP")
    if len(spec.get("inputs") or {}) > 1:
        kind = f"{len(spec['inputs'])}-input {kind if kind != 'MLP' else 'model'}"
    return f"{len(spec.get('nodes', []))}-layer {kind}"


def default_run_name(dataset_name: str, spec: dict) -> str:
    """dataset · model · time: readable in run lists, pickers and the status strip (renamed on the Train page)."""
    short = (
        dataset_name.split(" (")[0].strip() or dataset_name
    )  # "Two moons (n=1000, noise=0.1)" -> "Two moons"
    return f"{short} · {model_label(spec)} · {time.strftime('%H:%M:%S')}"


def rename_run(run_dir: Path, name: str) -> str:
    name = " ".join(str(name).split())[:80]
    if not name:
        raise LayerLabError("a run needs a name: type a few words, such as 'moons, lr 0.01'.")
    train = read_json(Path(run_dir) / "train.json")
    atomic_write_json(Path(run_dir) / "train.json", {**train, "name": name})
    return name


CHECKPOINTS = {
    "best": "checkpoints/best.safetensors",
    "last": "checkpoints/last.safetensors",
    "final": "model.safetensors",
}


def create_run(
    spec: dict,
    train: dict,
    dataset_dir: Path,
    *,
    run_dir: Path | None = None,
    name: str = "",
    parent: dict | None = None,
    init: dict | None = None,
    processes: int = 1,
    nodes: int = 1,
    ray: str | None = None,
    extra: dict | None = None,
) -> Path:
    """Validate and write a queued run folder (nothing runs yet). `parent`: where a branch or an import came
    from; `init`: the tensors to start from (an import's matching tensors). `processes` per machine on
    `nodes` machines (more than one machine: the run waits for the launch files' commands); `ray`: the
    address of the Ray cluster it trains on instead. `extra`: more of train.json (a study's trial, a fold)."""
    dataset = load_dataset(dataset_dir)
    spec_obj, cfg = validate(spec, train, dataset.meta)
    distributed.check_world(
        processes * nodes, cfg.batch_size, cfg.device, processes if nodes == 1 else 0
    )
    if (
        run_dir is None
    ):  # a new folder of its own, even when another session creates one in the same second
        runs_dir().mkdir(parents=True, exist_ok=True)
        while True:
            run_dir = runs_dir() / (time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3))
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                continue
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "events.jsonl").touch()
    atomic_write_json(run_dir / "spec.json", spec_obj.to_dict())
    if init:
        save_file({k: v.contiguous() for k, v in init.items()}, str(run_dir / "init.safetensors"))
    atomic_write_json(
        run_dir / "status.json",
        {"state": "queued", "pid": None, "heartbeat": time.time(), "external": nodes > 1},
    )
    # train.json last: it is what makes the folder a run (run_dirs), so no reader sees a run without its status
    atomic_write_json(
        run_dir / "train.json",
        {
            "config": cfg.model_dump(mode="json"),
            "dataset_dir": str(dataset.path),
            "dataset_id": dataset.id,
            "dataset_name": dataset.meta["name"],
            "name": name or default_run_name(dataset.meta["name"], spec),
            "created": time.time(),
            "parent": parent,
            "launch": {"processes": processes, "nodes": nodes, **({"ray": ray} if ray else {})},
            **(extra or {}),
        },
    )
    return run_dir


def saved_checkpoints(run_dir: Path) -> list[str]:
    """The weights a branch can start from, of "best", "last", "final" (none for a GAN: it trains from the start)."""
    if is_gan(read_json(Path(run_dir) / "spec.json", {})):
        return []
    return [k for k, rel in CHECKPOINTS.items() if (Path(run_dir) / rel).exists()]


def branch_run(
    parent_dir: Path, checkpoint: str, train: dict, *, run_dir: Path | None = None
) -> Path:
    """A new run of the parent's model and data with new settings, starting from one of its checkpoints."""
    parent_dir = Path(parent_dir)
    if checkpoint not in saved_checkpoints(parent_dir):
        raise LayerLabError(
            f"run {parent_dir.name} has no '{checkpoint}' checkpoint; choose one of: "
            f"{', '.join(saved_checkpoints(parent_dir)) or 'none yet (let it train an epoch)'}."
        )
    info = run_info(parent_dir)
    origin = {
        "run": parent_dir.name,
        "name": info["name"],
        "checkpoint": checkpoint,
        "epoch": (info.get("best") or {}).get("epoch")
        if checkpoint == "best"
        else info.get("epoch"),
    }
    run_dir = create_run(
        read_json(parent_dir / "spec.json"),
        train,
        read_json(parent_dir / "train.json")["dataset_dir"],
        run_dir=run_dir,
        parent=origin,
    )
    shutil.copyfile(parent_dir / CHECKPOINTS[checkpoint], run_dir / "init.safetensors")
    return run_dir


def resumable(run_dir: Path, status: dict | None = None) -> bool:
    status = status or read_status(run_dir)
    return status.get("state") in ("stopped", "failed") and has_checkpoint(run_dir)


def prepare_resume(run_dir: Path) -> Path:
    """Make a stopped or killed run ready to continue from its resume checkpoint: refuse one that is alive or
    finished, cut its events back to that checkpoint (so the curves continue from it) and queue it."""
    run_dir = Path(run_dir)
    status = read_json(run_dir / "status.json", {})
    if status.get("state") in ACTIVE and pid_alive(status.get("pid")):
        raise LayerLabError(f"run {run_dir.name} is still training: stop it first.")
    if status.get("state") in ("completed", "diverged"):
        raise LayerLabError(
            f"run {run_dir.name} has {status['state']}, so there is nothing to resume: branch from "
            "its best or last weights to train it further."
        )
    if not has_checkpoint(run_dir):
        load_state(run_dir)  # says there is none yet, and what to do
    return _rewind(run_dir, status)


def _rewind(run_dir: Path, status: dict) -> Path:
    """Cut the events back to the resume checkpoint and queue the run (no checkpoint: start over)."""
    if not has_checkpoint(run_dir):
        (run_dir / "events.jsonl").write_bytes(b"")
        atomic_write_json(run_dir / "status.json", {**status, "state": "queued", "epoch": 0})
        return run_dir
    state = load_state(run_dir)
    path = run_dir / "events.jsonl"
    data = path.read_bytes()
    cut, pos = None, 0
    for line in data.splitlines(keepends=True):
        pos += len(line)
        if not line.endswith(b"\n"):
            break
        event = typed_event(line) or {}
        if event.get("step") == state["step"] and event["type"] in (
            "checkpoint_saved",
            "epoch_end",
        ):
            cut = pos if cut is None or event["type"] == "checkpoint_saved" else cut
    with open(path, "r+b") as f:
        f.truncate(cut if cut is not None else len(data))
    (run_dir / "stop").unlink(missing_ok=True)
    atomic_write_json(
        run_dir / "status.json",
        {
            "state": "queued",
            "pid": None,
            "heartbeat": time.time(),
            "started": status.get("started"),
            "epoch": state["epoch"] - 1,
            "resumes": status.get("resumes", 0) + 1,
        },
    )
    return run_dir


_ROOT = str(Path(__file__).resolve().parent.parent)
_spare: subprocess.Popen | None = (
    None  # a worker that has imported torch and the loop, waiting for a run
)


def warm_spare() -> None:
    """Start a spare worker if none waits: importing torch and the training loop takes a worker 3-6 s on a small
    machine, and a spare has done it before Start is pressed. The app calls this when no run is training (so the
    spare's start-up never competes with a run); a spare exits when this process does (its stdin closes).
    LAYERLAB_SPARE_WORKER=0 turns it off (the test suite does, but for the test of the spare itself: on a 2-core CI
    machine every spare's imports compete with the test that runs)."""
    global _spare
    if os.environ.get("LAYERLAB_SPARE_WORKER") == "0" or (
        _spare is not None and _spare.poll() is None
    ):
        return
    log = open(home() / "spare-workers.log", "ab")
    _spare = subprocess.Popen(
        [sys.executable, "-m", "engine.runs", "--spare"],
        stdin=subprocess.PIPE,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=_ROOT,
    )
    log.close()


def _take_spare() -> subprocess.Popen | None:
    global _spare
    proc, _spare = _spare, None
    return proc if proc is not None and proc.poll() is None else None


def launch(run_dir: Path, resume: bool = False) -> int:
    """Start the worker as its own process (its own session, so a page rerun never kills it): hand the run
    to the spare worker if one waits, else start a fresh one (a run of several processes: their
    supervisor). The queued status gets the worker's pid first (so a worker that dies before it starts
    is noticed); the worker itself then writes "running"."""

    def note_pid(pid: int) -> None:
        status = read_json(Path(run_dir) / "status.json", {})
        if status.get("state") == "queued":
            atomic_write_json(
                Path(run_dir) / "status.json", {**status, "pid": pid, "heartbeat": time.time()}
            )

    where = read_json(Path(run_dir) / "train.json", {}).get("launch") or {}
    worker = [sys.executable, "-m", "engine.runs", str(run_dir)] + (["--resume"] if resume else [])
    if where.get("processes", 1) > 1 or where.get("ray"):  # a supervisor, or Ray's driver
        extra = [f"--nproc={where['processes']}"] + (
            ["--ray", where["ray"]] if where.get("ray") else []
        )
        proc = _spawn(run_dir, worker + extra)
        note_pid(proc.pid)
        return proc.pid
    proc = _take_spare()
    if proc is not None:
        note_pid(
            proc.pid
        )  # before the hand-over: the spare writes "running" at once, and must not be overwritten
        try:
            proc.stdin.write(
                json.dumps(
                    {"run_dir": str(Path(run_dir).resolve()), "resume": resume, "home": str(home())}
                ).encode()
                + b"\n"
            )
            proc.stdin.close()
            return proc.pid
        except OSError:  # it died in the meantime
            pass
    proc = _spawn(run_dir, worker)
    note_pid(proc.pid)  # a fresh worker spends seconds importing torch before it writes anything
    return proc.pid


def _spawn(run_dir: Path, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    """A process of the run, in its own session (a page rerun never kills it), its output appended
    to the run's worker.log."""
    with open(Path(run_dir) / "worker.log", "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=_ROOT, env=env)  # fmt: skip


def request_stop(run_dir: Path) -> None:
    (Path(run_dir) / "stop").touch()


def pid_alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a finished child of this process stays a zombie until reaped
        if os.waitpid(int(pid), os.WNOHANG) != (0, 0):
            return False
    except ChildProcessError:
        pass
    try:  # another process's child that died and waits to be reaped (Linux)
        return Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_status(run_dir: Path) -> dict:
    """The run's status. A queued/running run whose worker process is gone reads as failed at once (a worker that
    was never given a pid: once its heartbeat is stale), with what to do next: Resume when it left a checkpoint."""
    status = read_json(
        Path(run_dir) / "status.json", {"state": "failed", "message": "status.json is missing"}
    )
    if status.get("state") not in ACTIVE:
        return status
    pid, age = status.get("pid"), time.time() - status.get("heartbeat", 0)
    if status["state"] == "queued" and not pid and (status.get("external") or status.get("queue")):
        return status  # waits in the queue (engine.scheduler), or for its launch files' commands
    if status.get("host", socket.gethostname()) != socket.gethostname():  # rank 0 is elsewhere
        alive = age <= REMOTE_STALE_AFTER_S
    else:
        alive = pid_alive(pid) if pid else age <= STALE_AFTER_S
    if alive:
        return status
    status = {**status, "state": "failed", "worker_lost": True}
    if has_checkpoint(run_dir):
        status["message"] = (
            "The training process stopped unexpectedly (it was killed or crashed). Resume "
            "continues from its last checkpoint."
        )
    else:
        status["message"] = (
            "The training process stopped unexpectedly (it was killed or crashed) before its first "
            "checkpoint. Start the run again."
        )
    return status


def read_events(run_dir: Path, offset: int = 0) -> tuple[list[dict], int]:
    """Events appended since `offset` (bytes); a half-written last line is left for the next read."""
    path = Path(run_dir) / "events.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    return [e for line in data[:end].splitlines() if (e := typed_event(line))], offset + end


def typed_event(line: bytes) -> dict | None:
    """One line of events.jsonl as its type's model accepts it (engine.train.events); None for a damaged
    line or an event of a known type with missing or wrong fields. An unknown type (a newer LayerLab's)
    passes as it is: readers ignore what they do not know."""
    try:
        event = json.loads(line)
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return None
        if event["type"] in EVENTS:
            check(event)
    except (ValueError, ValidationError):  # (json's and pydantic's errors, and a non-dict)
        return None
    return event


def _latest_progress(run_dir: Path) -> dict:
    """A live run's epochs done and samples/s from the end of its events (what the live charts read), so run
    lists and the status strip agree with the run view rather than with the once-a-second heartbeat."""
    path = Path(run_dir) / "events.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 16384))
            tail = f.read().splitlines()
    except OSError:
        return {}
    found: dict = {}
    for line in reversed(tail[1:] if len(tail) > 1 else tail):
        event = typed_event(line)
        if event is None:
            continue
        if "samples_per_second" in event and "samples_per_second" not in found:
            found["samples_per_second"] = event["samples_per_second"]
        if event.get("type") == "epoch_end":
            found.setdefault("epoch", event["epoch"])
            break
    return found


def run_info(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    train = read_json(run_dir / "train.json", {})
    status = read_status(run_dir)
    if status.get("state") == "running":
        status = {**status, **_latest_progress(run_dir)}
    elif status.get("state") == "queued" and status.get("queue") and not status.get("pid"):
        from engine.scheduler import positions  # (it imports this module)

        status = {**status, "queue_position": positions().get(run_dir.name)}
    spec = read_json(run_dir / "spec.json", {})
    return {
        "id": run_dir.name,
        "path": str(run_dir),
        "name": train.get("name", run_dir.name),
        "dataset": train.get("dataset_name"),
        "dataset_id": train.get("dataset_id"),
        "layers": len(spec.get("nodes", [])),
        "created": train.get("created", 0),
        "config": train.get("config", {}),
        "parent": train.get("parent"),
        "trial": train.get("trial"),  # a search's trial: its study, number and settings
        "launch": train.get("launch"),
        **status,
    }


def run_dirs() -> list[Path]:
    base = runs_dir()
    return [p for p in base.iterdir() if (p / "train.json").exists()] if base.exists() else []


def list_runs() -> list[dict]:
    return sorted((run_info(p) for p in run_dirs()), key=lambda r: r["created"], reverse=True)


def run_states() -> dict[str, str]:
    """Every run's state and nothing else (one small file per run): what a page polls to notice a run that
    started, ended or lost its worker."""
    return {p.name: read_status(p)["state"] for p in run_dirs()}


class RunWriter:
    """Appends events and keeps status.json's heartbeat fresh (at most once a second; with `beat`, also
    every REMOTE_BEAT_S from a thread, so a run on another machine is not taken for lost while it validates)."""

    def __init__(self, run_dir: Path, echo: bool = False, beat: bool = False):
        self.run_dir = Path(run_dir)
        self.echo = echo
        self.events = open(self.run_dir / "events.jsonl", "a", buffering=1)
        self.last_beat = 0.0
        self.finished = False
        self.status: dict = {"state": "running", "pid": os.getpid()}
        self.lock = threading.Lock()
        self.beating = threading.Event()
        if beat:
            threading.Thread(target=self._beat, daemon=True).start()

    def _beat(self) -> None:
        while not self.beating.wait(REMOTE_BEAT_S):
            self.set_status()

    def set_status(self, **fields) -> None:
        with self.lock:
            self.status.update(fields, heartbeat=time.time())
            atomic_write_json(self.run_dir / "status.json", self.status)

    def emit(self, event: dict) -> None:
        event = {"time": time.time(), **event}
        line = json.dumps(event)
        self.events.write(line + "\n")
        self.finished |= event["type"] == "run_finished"
        if self.echo:
            print(line, flush=True)
        if event["type"] == "epoch_end":
            self.status["metrics"] = event["metrics"]
            self.status["epoch"] = event["epoch"]
        if "samples_per_second" in event and event["type"] in ("batch_end", "epoch_end"):
            self.status["samples_per_second"] = event["samples_per_second"]
        if time.time() - self.last_beat >= HEARTBEAT_S:
            self.last_beat = time.time()
            self.set_status(progress=event.get("progress", self.status.get("progress", 0.0)))

    def close(self) -> None:
        self.beating.set()
        self.events.close()


def execute(run_dir: Path, echo: bool = False, resume: bool = False, watch=None) -> dict:
    """The worker body: train the run described by the folder (from its resume checkpoint if `resume`; call
    `prepare_resume` first). `run_finished` is always the last event; a stop asked for by a signal is named in
    the result's `signal`. Under torchrun's environment (WORLD_SIZE > 1) this process is one rank of the run:
    see `_execute`. `watch`: called with each event as it is written, on the training thread (a search's
    pruner; a stop it asks for is seen at the end of that epoch)."""
    run_dir = Path(run_dir)
    world = distributed.from_env()
    with stop_on_signals() as signalled:
        stop_file = (run_dir / "stop") if world.leader else None  # rank 0 reads the stop file
        result = _execute(
            run_dir,
            echo,
            resume,
            lambda: bool(signalled) or (stop_file is not None and stop_file.exists()),
            world,
            watch,
        )
    if signalled:
        result["signal"] = signalled[0]
    return result


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class stop_on_signals:
    """While training, SIGTERM (Kubernetes, Slurm, systemd) and SIGINT (Ctrl-C) ask for a stop, as the Stop button
    does: the loop ends its step, writes a checkpoint and ends as `stopped`, resumable. The names of the signals
    received are collected in the list this yields. Outside the main thread (no handlers there) it does nothing."""

    def __enter__(self) -> list[str]:
        self.received: list[str] = []
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self.previous[sig] = signal.signal(
                    sig, lambda signum, frame: self.received.append(signal.Signals(signum).name)
                )
        return self.received

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _owner_pid() -> int:
    """The process whose life is the run's: the supervisor that started torchrun, else torchrun's agent
    (it restarts ranks), else this worker."""
    if os.environ.get("LAYERLAB_SUPERVISOR_PID"):
        return int(os.environ["LAYERLAB_SUPERVISOR_PID"])
    return os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else os.getpid()


def _attempt() -> int:
    """How many times torchrun restarted this run's ranks (elastic restarts, --max-restarts)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def _rank_failures(run_dir: Path, attempt: int | None = None, since: float = 0.0) -> list[str]:
    """What the other ranks of an attempt (default: every attempt since `since`) failed with: each
    writes rank<r>-<attempt>.failed."""
    found = sorted(run_dir.glob(f"rank*-{'*' if attempt is None else attempt}.failed"))
    found = [p for p in found if p.stat().st_mtime >= since]
    return [f"Process {p.name.split('-')[0][4:]} of the run failed: {p.read_text()}" for p in found]


def _execute(run_dir: Path, echo: bool, resume: bool, should_stop, world, watch=None) -> dict:
    from engine.export import read_weights, stored_weights
    from engine.train.loop import fit  # imported here so the page process never pays for it

    lead = world.leader
    if lead and _attempt():  # torchrun restarted the ranks: on from the checkpoint
        _rewind(run_dir, read_json(run_dir / "status.json", {}))
    resume = resume or (_attempt() > 0 and has_checkpoint(run_dir))
    writer = RunWriter(run_dir, echo=echo, beat=world.size > 1) if lead else None
    if writer is not None:
        before = read_json(run_dir / "status.json", {})
        writer.status.update({k: before[k] for k in ("resumes", "epoch") if k in before})
        writer.status.update(pid=_owner_pid(), world_size=world.size, host=socket.gethostname())
        writer.set_status(state="running", started=before.get("started") if resume else time.time())
    emit = writer.emit if writer is not None else (lambda event: None)
    if watch is not None and writer is not None:
        emit = lambda event: (writer.emit(event), watch(event))  # noqa: E731
    trained = False
    try:
        train = read_json(run_dir / "train.json")
        cfg = TrainConfig.parse(train["config"])
        distributed.check_world(world.size, cfg.batch_size, cfg.device)
        distributed.join(world, cfg.device)
        spec = read_json(run_dir / "spec.json")
        dataset = run_dataset(train)
        init = run_dir / "init.safetensors"
        result = fit(
            spec,
            dataset,
            cfg,
            emit=emit,
            should_stop=should_stop,
            out_dir=run_dir if lead else None,
            resume=load_state(run_dir) if resume else None,
            init_weights=read_weights(stored_weights(init, init.name))[0]
            if init.exists() and not resume
            else None,
            world=world,
        )
        trained = True
    except LayerLabError as e:
        result = run_finished("failed", str(e))
    except Exception as e:  # noqa: BLE001 - the worker must always leave a final status and event
        name = "error.log" if lead else f"error-rank{world.rank}.log"
        (run_dir / name).write_text(traceback.format_exc())
        result = run_finished(
            "failed",
            f"Training failed with an internal error ({type(e).__name__}: {e}). "
            f"Details are in {name} in the run folder.",
        )
    finally:
        distributed.leave(failed=not trained)
    if writer is None:
        # another rank: its failure becomes rank 0's message (rank 0 alone writes the run)
        if result["status"] == "failed":
            (run_dir / f"rank{world.rank}-{_attempt()}.failed").write_text(result["message"])
        return result
    if result["status"] == "failed" and world.size > 1:
        failures = _rank_failures(run_dir, _attempt())
        if failures:
            result = run_finished("failed", " ".join(failures))
    _close(writer, result)
    return result


def _close(writer: "RunWriter", result: dict) -> None:
    """The final event (unless fit emitted it) and status."""
    if not writer.finished:
        writer.emit(result)
    writer.set_status(
        state=result["status"],
        message=result.get("message", ""),
        metrics=result.get("metrics", {}),
        best=result.get("best"),
        samples_per_second=result.get("samples_per_second"),
        finished=time.time(),
        progress=1.0 if result["status"] == "completed" else writer.status.get("progress", 0.0),
    )
    writer.close()


def supervise(
    run_dir: Path,
    processes: int,
    *,
    resume: bool = False,
    echo: bool = False,
    max_restarts: int = 0,
) -> dict:
    """Train the run on `processes` processes of this machine: torchrun starts them, each runs this
    module's worker as one rank. This process stays as the run's owner (its pid in status.json): a
    signal to it becomes a stop request, `echo` prints the events as rank 0 writes them, and when no
    rank ended the run (one was killed, torchrun gave up) it writes the final event with the failing
    rank's message. Returns the `run_finished` event."""
    run_dir = Path(run_dir)
    cfg = TrainConfig.parse(read_json(run_dir / "train.json")["config"])
    distributed.check_world(processes, cfg.batch_size, cfg.device)
    if max_restarts < 0:
        raise LayerLabError("--max-restarts must be 0 or more.")
    events = run_dir / "events.jsonl"
    offset = events.stat().st_size if events.exists() else 0
    cmd = distributed.torchrun(processes, max_restarts) + ["-m", "engine.runs", str(run_dir)]
    began = time.time()
    proc = _spawn(run_dir, cmd + (["--resume"] if resume else []),
                  {**os.environ, "LAYERLAB_SUPERVISOR_PID": str(os.getpid())})  # fmt: skip
    with stop_on_signals() as signalled:
        while proc.poll() is None:
            offset = echo_events(events, offset) if echo else offset
            if signalled:
                request_stop(run_dir)
            time.sleep(0.2)
    offset = echo_events(events, offset) if echo else offset
    final = finish_if_unfinished(
        run_dir,
        f"The run's processes ended without finishing it (torchrun exited with code "
        f"{proc.returncode}). worker.log in the run folder holds their output.",
        since=began,
        echo=echo,
    )
    if signalled:
        final = {**final, "signal": signalled[0]}
    return final


def finish_if_unfinished(
    run_dir: Path, reason: str, since: float = 0.0, echo: bool = False
) -> dict:
    """The run's `run_finished` event; when no rank wrote one (a rank was killed, a launcher gave up),
    write it as failed, with the failing ranks' messages (else `reason`) and whether Resume can go on."""
    tail = read_events(run_dir)[0][-1:]
    if tail and tail[0]["type"] == "run_finished":
        return tail[0]
    message = " ".join(_rank_failures(run_dir, since=since)) or reason
    if has_checkpoint(run_dir):
        message += " Resume continues from its last checkpoint."
    final = run_finished("failed", message)
    writer = RunWriter(run_dir, echo=echo)
    writer.status = {**read_json(run_dir / "status.json", {}), "pid": None}
    _close(writer, final)
    return final


def echo_events(events: Path, offset: int) -> int:
    """Print the whole lines appended to `events` since `offset`; the new offset."""
    try:
        with open(events, "rb") as f:
            f.seek(min(offset, events.stat().st_size))  # (a restart cuts the file back)
            data = f.read()
            start = f.tell() - len(data)
    except FileNotFoundError:
        return offset
    end = data.rfind(b"\n") + 1
    if end:
        sys.stdout.write(data[:end].decode("utf-8", "replace"))
        sys.stdout.flush()
    return start + end


def train_here(
    run_dir: Path,
    processes: int | None = None,
    ray: str | None = None,
    *,
    resume: bool = False,
    echo: bool = False,
    max_restarts: int = 0,
) -> dict:
    """Train the run from this process: on a Ray cluster at `ray` (`processes` workers, default 2),
    on `processes` local processes under torchrun, or in this process. The `run_finished` event."""
    if ray:
        from engine import raycluster

        return raycluster.train(run_dir, ray, processes or 2, resume=resume, echo=echo)
    if processes:
        return supervise(run_dir, processes, resume=resume, echo=echo, max_restarts=max_restarts)
    return execute(run_dir, echo=echo, resume=resume)


def _main(argv: list[str]) -> int:
    """`python -m engine.runs RUN_DIR [--resume] [--nproc N [--max-restarts R]] [--ray ADDRESS]`: the
    worker (one rank under torchrun's environment), or with --nproc the supervisor of N local processes,
    or with --ray the driver of N Ray actors."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m engine.runs")
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--nproc", type=int)
    parser.add_argument("--max-restarts", type=int, default=0)
    parser.add_argument("--ray", metavar="ADDRESS")
    args = parser.parse_args(argv)
    result = train_here(Path(args.run_dir), args.nproc, args.ray, resume=args.resume,
                        max_restarts=args.max_restarts)  # fmt: skip
    # under torchrun a failed rank exits non-zero, so that torchrun restarts the group or ends it
    return 1 if result["status"] == "failed" and "TORCHELASTIC_RUN_ID" in os.environ else 0


def _serve_as_spare() -> None:
    """A spare worker: import what training needs, wait for one run on stdin, then train it like a fresh worker
    (its output goes to the run's worker.log). Exits quietly when stdin closes without a run."""
    import engine.train.loop  # noqa: F401 - the slow imports, done before the run arrives

    line = sys.stdin.buffer.readline()
    if not line.strip():
        return
    job = json.loads(line)
    os.environ["LAYERLAB_HOME"] = job["home"]
    run_dir = Path(job["run_dir"])
    log = os.open(run_dir / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    execute(run_dir, resume=job["resume"])


if __name__ == "__main__":
    if sys.argv[1:] == ["--spare"]:
        _serve_as_spare()
    else:
        sys.exit(_main(sys.argv[1:]))
