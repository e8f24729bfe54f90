"""A run on a Ray cluster (optional: `pip install -e '.[ray]'`).

Ray places one actor per process (a GPU each on CUDA); each actor sets torchrun's variables (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT: rank 0's node and a port free there) and runs the same
worker as every other launcher, `engine.runs.execute`, so rank 0 writes the run folder that the app reads.
The folder must be on storage every Ray node reaches. The driver waits for the ranks and, when none ended
the run (a node was lost), writes the failure, as the local supervisor does.
"""

import os
import socket
from pathlib import Path

from engine.errors import LayerLabError

INSTALL = "pip install -e '.[ray]'"


def available() -> None:
    """Raise, with how to install it, when Ray is missing."""
    _ray()


def _ray():
    try:
        import ray
    except ImportError:
        raise LayerLabError(
            f"training on a Ray cluster needs Ray, which is an optional extra: {INSTALL}."
        ) from None
    return ray


class _Rank:
    """One process of the run, on whichever node Ray placed it."""

    def where(self) -> tuple[str, int]:
        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            return ray.util.get_node_ip_address(), s.getsockname()[1]

    def train(self, run_dir: str, env: dict, resume: bool) -> dict:
        os.environ.update(env)
        from engine.runs import execute

        return execute(Path(run_dir), resume=resume)


def connect(address: str | None):
    """Ray, joined to the cluster at `address` ("auto": the one this machine belongs to) unless this process
    has joined one already."""
    ray = _ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address or "auto", log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise LayerLabError(
                f"no Ray cluster answers at {address or 'auto'} ({e}). Start one with `ray start "
                "--head`, or give its address (ray://HOST:10001 or HOST:6379)."
            ) from None
    return ray


def train(
    run_dir: Path, address: str | None, processes: int, resume: bool = False, echo: bool = False
) -> dict:
    """Train the run on `processes` Ray actors of the cluster at `address` ("auto": the one this machine
    belongs to; None: a Ray already initialised in this process), from its checkpoint if `resume`
    (after `prepare_resume`); `echo` prints the events as rank 0 writes them. Returns the
    `run_finished` event. A world the run's settings cannot train is refused before Ray is asked
    (a GPU each on CUDA)."""
    from engine.runs import echo_events, finish_if_unfinished
    from engine.train.config import TrainConfig
    from engine.train.distributed import check_world, uses_cuda
    from engine.workspace import read_json

    cfg = TrainConfig.parse(read_json(Path(run_dir) / "train.json")["config"])
    check_world(processes, cfg.batch_size, cfg.device, 0)
    gpus = uses_cuda(cfg.device)
    ray = connect(address)
    actor = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0)(_Rank)
    ranks = [actor.remote() for _ in range(processes)]
    places = ray.get([r.where.remote() for r in ranks])
    master, port = places[0]
    by_node: dict[str, list[int]] = {}
    for rank, (ip, _) in enumerate(places):
        by_node.setdefault(ip, []).append(rank)
    home = os.environ.get("LAYERLAB_HOME")
    owner = {"LAYERLAB_SUPERVISOR_PID": str(os.getpid())}  # the run lives while this driver does
    jobs = []
    for rank, r in enumerate(ranks):
        node = by_node[places[rank][0]]
        env = {"RANK": str(rank), "WORLD_SIZE": str(processes), "MASTER_ADDR": master,
               "MASTER_PORT": str(port), "LOCAL_RANK": str(node.index(rank)),
               "LOCAL_WORLD_SIZE": str(len(node)), **owner,
               **({"LAYERLAB_HOME": home} if home else {})}  # fmt: skip
        jobs.append(r.train.remote(str(Path(run_dir).resolve()), env, resume))
    events = Path(run_dir) / "events.jsonl"
    offset = events.stat().st_size if events.exists() else 0
    try:
        while len(ray.wait(jobs, num_returns=len(jobs), timeout=0.2)[0]) < len(jobs):
            offset = echo_events(events, offset) if echo else offset
        echo_events(events, offset) if echo else None
        results = ray.get(jobs)
    except ray.exceptions.RayError as e:  # an actor or its node was lost
        results = [{"status": "failed", "message": f"a Ray worker of the run was lost: {e}"}]
    return finish_if_unfinished(Path(run_dir), results[0].get("message", ""))
