"""Hyperparameter and architecture search on Optuna. A study's trials are ordinary runs.

<home>/studies/<id>/          (or the CLI's --out folder)
    study.json     what was asked: the data, the base model and training settings, the space, the objective
    journal.log    Optuna's journal storage, shared by the study's worker processes (and readable by the page)
    workers.json   the worker processes' pids
    stop           present = stop the study: each worker stops its trial's run and ends

A worker (`python -m engine.search STUDY_DIR --worker I --trials N`) asks Optuna for a trial, writes it as a run
(named "<study> · trial <n>", with `"trial"` in its train.json) and puts it in the run queue (engine.scheduler).
When the queue gives the run its turn (its device has room), the worker trains it in its own process, where torch
is loaded already (`scheduler.claim`), and watches its events meanwhile: each epoch's validation metric is reported
to the pruner, and a pruned trial's run is stopped (a `stopped` run, resumable). The run's final metric is the
trial's value. Trials share nothing but the journal, so workers on several machines can share one study through
a journal file on a shared file system, or an Optuna storage URL (`storage` in study.json).
"""

import functools
import json
import math
import os
import subprocess
import sys
import threading
import time
import typing
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.errors import ConfigError, LayerLabError
from engine.workspace import atomic_write_json, home, read_json

SAMPLERS = {
    "tpe": "TPE (Bayesian): learns from the trials so far",
    "random": "random: each trial drawn independently",
    "grid": "grid: every combination of the choices, once",
}
PRUNERS = {
    "median": "median: stop a trial whose metric is worse than the median of earlier trials at that epoch",
    "hyperband": "Hyperband (successive halving): keep the best fraction of trials at each rung of epochs",
    "none": "none: every trial trains to the end",
}
GRID_MAX = 1000  # combinations a grid may hold
POLL_S = 0.5
_ROOT = Path(__file__).resolve().parent.parent


class Dimension(BaseModel):
    """One searched setting: a range (`low`, `high`, optionally `log` or `step`) or a list of `choices`."""

    model_config = ConfigDict(extra="forbid")
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None
    choices: list[int | float | str | bool | None] | None = None

    @model_validator(mode="after")
    def _one_kind(self):
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low and high, not both")
            if not self.choices:
                raise ValueError("choices is empty: list at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or choices (a list)")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range must start above 0")
        if self.log and self.step:
            raise ValueError("a range is either log or stepped, not both")
        return self

    def integer(self, target_is_int: bool) -> bool:
        return target_is_int and self.choices is None

    def grid(self, name: str, target_is_int: bool) -> list:
        """The values a grid search visits."""
        if self.choices is not None:
            return list(self.choices)
        if self.log or (self.step is None and not target_is_int):
            raise ConfigError(
                f"grid search needs a list of choices (or a step) for '{name}': a continuous range has no grid."
            )
        step = self.step or 1
        count = int(math.floor((self.high - self.low) / step + 1e-9)) + 1
        if count > GRID_MAX:
            raise ConfigError(f"'{name}' has {count:,} grid values; use a larger step or choices.")
        return [
            int(self.low + i * step) if target_is_int else round(self.low + i * step, 12)
            for i in range(count)
        ]


class StudyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=80)
    dataset_dir: str
    spec: dict
    train: dict
    space: dict[str, Dimension]  # (empty: refused with an example, by check_space)
    metric: str = "val/loss"
    direction: Literal["minimize", "maximize"] = "minimize"
    sampler: Literal[tuple(SAMPLERS)] = "tpe"
    pruner: Literal[tuple(PRUNERS)] = "median"
    trials: int = Field(20, ge=1, le=1000)
    workers: int = Field(1, ge=1, le=64)
    seed: int = Field(0, ge=0)
    # an Optuna storage URL shared by machines (default: journal.log in the study's folder)
    storage: str | None = None
    # settings to try first, in order (e.g. the model's current ones), before the sampler's own
    enqueue: list[dict] = Field(default_factory=list, max_length=100)
    created: float = Field(default_factory=time.time)


def default_direction(metric: str) -> str:
    return (
        "maximize" if any(k in metric for k in ("accuracy", "r2", "f1", "coverage")) else "minimize"
    )


def _is_int(annotation) -> bool:
    kinds = set(typing.get_args(annotation)) or {annotation}
    return int in kinds and float not in kinds


def _takes_int(name: str, spec: dict) -> bool:
    """Whether the setting a space's key names takes whole numbers; ConfigError when the key names nothing."""
    from engine.registry import get_op
    from engine.train.config import TrainConfig

    if name.startswith(REPEAT):
        first = name[len(REPEAT) :]
        if first not in blocks(spec):
            raise ConfigError(
                f"'{name}': '{first}' does not start a block that can be repeated (blocks start at "
                f"{', '.join(blocks(spec)) or 'no layer of this model'}: a layer with weights and the "
                "activation, normalization and dropout after it, in a chain)."
            )
        return True
    if "." in name:
        node_id, param = name.split(".", 1)
        nodes = {n["id"]: n for n in spec.get("nodes", [])}
        if node_id not in nodes:
            raise ConfigError(
                f"'{name}': the model has no layer '{node_id}' (its layers: {', '.join(nodes) or 'none'})."
            )
        fields = get_op(nodes[node_id]["op"]).params.model_fields
        if param not in fields:
            raise ConfigError(
                f"'{name}': a {nodes[node_id]['op']} layer has no setting '{param}' (it has: "
                f"{', '.join(fields) or 'none'})."
            )
        return _is_int(fields[param].annotation)
    if name not in TrainConfig.model_fields or name in ("target", "device"):
        raise ConfigError(
            f"'{name}' is neither a training option nor a layer setting (write a layer's as LAYER.SETTING, "
            "e.g. dense_1.out_features)."
        )
    return _is_int(TrainConfig.model_fields[name].annotation)


REPEAT = "repeat:"
WEIGHTED = ("linear", "conv1d", "conv2d", "rnn", "lstm", "gru")
FOLLOWERS = ("activation", "batchnorm", "layernorm", "groupnorm", "dropout", "dropout2d")


def blocks(spec: dict) -> dict[str, list[str]]:
    """The blocks a study can repeat, by their first layer: a layer with weights and the activation,
    normalization and dropout layers after it, each reading the one before (not the output layer)."""
    nodes = spec.get("nodes", [])
    output = spec.get("output") or (nodes[-1]["id"] if nodes else None)
    out = {}
    for i, node in enumerate(nodes):
        if node["op"] not in WEIGHTED or node["id"] == output or node.get("inputs"):
            continue
        block = [node["id"]]
        for after in nodes[i + 1 :]:
            if after["op"] not in FOLLOWERS or after.get("inputs") or after["id"] == output:
                break
            block.append(after["id"])
        out[node["id"]] = block
    return out


def _repeat(spec: dict, first: str, times: int) -> None:
    """`times` copies of the block that starts at `first` in a row (its copies named <id>_r2, <id>_r3, …)."""
    block = blocks(spec)[first]
    nodes = spec["nodes"]
    end = next(i for i, n in enumerate(nodes) if n["id"] == block[-1]) + 1
    members = [n for n in nodes if n["id"] in block]
    copies = [
        {**json.loads(json.dumps(n)), "id": f"{n['id']}_r{c}"}
        for c in range(2, times + 1)
        for n in members
    ]
    nodes[end:end] = copies


def apply(spec: dict, train: dict, params: dict) -> tuple[dict, dict]:
    """The model and training settings with a trial's values in place (blocks repeated last, so that their copies
    take the searched settings of their layers)."""
    spec = json.loads(json.dumps(spec))
    train = dict(train)
    for name, value in params.items():
        if name.startswith(REPEAT):
            continue
        if "." in name:
            node_id, param = name.split(".", 1)
            for node in spec["nodes"]:
                if node["id"] == node_id:
                    node.setdefault("params", {})[param] = value
        else:
            train[name] = value
    for name, value in params.items():
        if name.startswith(REPEAT) and int(value) > 1:
            _repeat(spec, name[len(REPEAT) :], int(value))
    return spec, train


def check_space(space: dict[str, Dimension], spec: dict) -> None:
    """Refuse an empty space, a key that names nothing, and fractional bounds for a whole-number setting."""
    if not space:
        raise ConfigError(
            'the search space is empty: map at least one setting to a range or choices, e.g. {"lr": '
            '{"low": 0.0001, "high": 0.1, "log": true}}.'
        )
    for name, dim in space.items():
        whole = _takes_int(name, spec)
        if (
            dim.choices is None
            and whole
            and not all(float(v).is_integer() for v in (dim.low, dim.high))
        ):
            raise ConfigError(f"'{name}' takes whole numbers: give whole low and high values.")


def _corners(space: dict[str, Dimension]) -> list[dict]:
    """Values to check before any trial: every setting at its low, then each end and each choice in turn."""
    first = {n: d.choices[0] if d.choices is not None else d.low for n, d in space.items()}
    out = [first]
    for n, d in space.items():
        for v in d.choices[1:] if d.choices is not None else [d.high]:
            out.append({**first, n: v})
    return out[:64]


def check_study(config: StudyConfig) -> None:
    """Refuse a study whose trials would be refused: each end of every range and every choice is checked
    as a run would be (the model's shapes, the training settings), before any trial starts."""
    from engine.data.store import load_dataset
    from engine.runs import validate

    meta = load_dataset(config.dataset_dir).meta
    check_space(config.space, config.spec)
    if config.sampler == "grid":
        grid_size(config)
    for params in _corners(config.space):
        spec, train = apply(config.spec, config.train, params)
        try:
            validate(spec, train, meta)
        except LayerLabError as e:
            shown = ", ".join(f"{k}={v}" for k, v in params.items())
            raise ConfigError(f"with {shown} a trial would be refused: {e}") from None
    if config.metric not in metric_choices(meta, config.train):
        raise ConfigError(
            f"the runs do not report '{config.metric}'; choose one of "
            f"{', '.join(metric_choices(meta, config.train))}."
        )


def metric_choices(meta: dict, train: dict) -> list[str]:
    """The validation metrics a run on this data reports each epoch (what a study can optimize)."""
    from engine.tasks import task_for

    task = task_for(meta["task"], train.get("target", "label"))
    return [
        "val/loss",
        *(f"val/{m}" for m in task.metrics if m != "naive_mae"),
    ]  # (a baseline's, not the model's)


def default_metric(meta: dict, train: dict) -> str:
    """What a study optimizes unless told: accuracy for classes, the mean absolute error for numbers, else the
    validation loss."""
    choices = metric_choices(meta, train)
    return next((m for m in ("val/accuracy", "val/mae") if m in choices), "val/loss")


def grid_space(config: StudyConfig) -> dict[str, list]:
    return {n: d.grid(n, _takes_int(n, config.spec)) for n, d in config.space.items()}


def grid_size(config: StudyConfig) -> int:
    return math.prod(len(v) for v in grid_space(config).values())


# ---- the study on disk


def studies_dir() -> Path:
    return home() / "studies"


def storage_of(study_dir: Path, config: StudyConfig | None = None):
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    config = config or read_config(study_dir)
    if config.storage:
        try:
            return optuna.storages.get_storage(config.storage)
        except Exception as e:  # noqa: BLE001 - SQLAlchemy's and the drivers' own errors, for a URL the user typed
            raise ConfigError(
                f"the study's storage {config.storage!r} cannot be opened ({type(e).__name__}: {str(e)[:200]}). "
                "Give a database URL Optuna reads (e.g. postgresql://USER:PASSWORD@HOST/DB, with its driver "
                "installed), or leave --storage out to keep the study in a journal file."
            ) from None
    path = str(Path(study_dir) / "journal.log")
    return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def read_config(study_dir: Path) -> StudyConfig:
    data = read_json(Path(study_dir) / "study.json")
    if data is None:
        raise LayerLabError(f"{study_dir} is not a study folder (it has no study.json).")
    return StudyConfig.model_validate(data)


def create_study(config: dict | StudyConfig, study_dir: Path | None = None) -> Path:
    """Validate and write a study (nothing runs yet); its folder."""
    import optuna

    try:
        config = StudyConfig.model_validate(config) if isinstance(config, dict) else config
    except ValidationError as e:
        first = e.errors()[0]
        loc = [
            str(p)
            for p in first["loc"]
            if p not in ("int", "float", "str", "bool", "none", "Dimension")
        ]
        hint = (
            ' Each setting maps to a range, {"low": 0.0001, "high": 0.1, "log": true}, or to choices, '
            '{"choices": [16, 32, 64]} (numbers, words, true/false).'
            if loc and loc[0] == "space"
            else ""
        )
        raise ConfigError(f"the study's {'.'.join(loc)}: {first['msg']}.{hint}") from None
    check_study(config)
    if config.sampler == "grid":
        config = config.model_copy(update={"trials": min(config.trials, grid_size(config))})
    if study_dir is None:
        studies_dir().mkdir(parents=True, exist_ok=True)
        study_dir = studies_dir() / (time.strftime("%Y%m%d-%H%M%S-") + os.urandom(3).hex())
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    if (study_dir / "study.json").exists():
        raise LayerLabError(f"{study_dir} already holds a study: choose a new folder.")
    atomic_write_json(study_dir / "study.json", config.model_dump(mode="json"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="study",
        storage=storage_of(study_dir, config),
        direction=config.direction,
        load_if_exists=True,
    )
    for params in config.enqueue:
        study.enqueue_trial({k: v for k, v in params.items() if k in config.space})
    return study_dir


def load(study_dir: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name="study", storage=storage_of(study_dir))


def start(study_dir: Path) -> list[int]:
    """Start the study's worker processes (each in its own session: a page rerun never kills them)."""
    config = read_config(study_dir)
    share = [config.trials // config.workers + (i < config.trials % config.workers)
             for i in range(config.workers)]  # fmt: skip
    from engine.scheduler import gpu_count

    pids, gpus = [], gpu_count()
    with open(Path(study_dir) / "workers.log", "ab") as log:
        for i, n in enumerate(share):
            if n == 0:
                continue
            proc = subprocess.Popen(
                [sys.executable, "-m", "engine.search", str(study_dir), "--worker", str(i),
                 "--trials", str(n)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=_ROOT,
                env={**os.environ, "LAYERLAB_HOME": str(home()), **worker_gpu(i, gpus)},
            )  # fmt: skip
            pids.append(proc.pid)
    atomic_write_json(Path(study_dir) / "workers.json", {"pids": pids, "started": time.time()})
    return pids


def worker_gpu(worker: int, gpus: int, visible: str | None = None) -> dict[str, str]:
    """The environment that gives worker `worker` a GPU of its own (one trial per GPU; worker i takes GPU i mod n),
    and tells its run queue how many GPUs the machine has (it sees one). Nothing with fewer than two GPUs."""
    if gpus < 2:
        return {}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    ids = (
        [v.strip() for v in visible.split(",") if v.strip()]
        if visible
        else [str(k) for k in range(gpus)]
    )
    return {"CUDA_VISIBLE_DEVICES": ids[worker % len(ids)], "LAYERLAB_MACHINE_GPUS": str(gpus)}


def request_stop(study_dir: Path) -> None:
    (Path(study_dir) / "stop").touch()


def running(study_dir: Path) -> bool:
    from engine.runs import pid_alive

    pids = read_json(Path(study_dir) / "workers.json", {}).get("pids", [])
    return any(pid_alive(p) for p in pids)


def state(study_dir: Path) -> str:
    """running, stopping, stopped (by the user), finished, or not started."""
    if running(study_dir):
        return "stopping" if (Path(study_dir) / "stop").exists() else "running"
    if (Path(study_dir) / "stop").exists():
        return "stopped"
    return "finished" if (Path(study_dir) / "workers.json").exists() else "not started"


def list_studies() -> list[dict]:
    out = []
    for d in (
        sorted(studies_dir().glob("*/study.json"), reverse=True) if studies_dir().exists() else []
    ):
        data = read_json(d)
        if data:
            out.append(
                {
                    "dir": d.parent,
                    "name": data.get("name", d.parent.name),
                    "created": data.get("created"),
                }
            )
    return out


# ---- a worker


def _sampler(config: StudyConfig, worker: int):
    import optuna

    seed = config.seed + worker  # workers draw different trials
    if config.sampler == "grid":
        return optuna.samplers.GridSampler(grid_space(config), seed=config.seed)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=min(5, max(2, config.trials // 3))
    )


def _pruner(config: StudyConfig):
    import optuna

    epochs = int(config.train.get("epochs", 20))
    if config.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 3))
    return optuna.pruners.NopPruner()


def suggest(trial, config: StudyConfig) -> dict:
    params = {}
    for name, dim in config.space.items():
        if dim.choices is not None:
            params[name] = trial.suggest_categorical(name, dim.choices)
        elif _takes_int(name, config.spec):
            params[name] = trial.suggest_int(
                name, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log
            )
        else:
            params[name] = trial.suggest_float(
                name, float(dim.low), float(dim.high), step=dim.step, log=dim.log
            )
    return params


def _objective(study_dir: Path, config: StudyConfig):
    import optuna

    from engine.runs import create_run
    from engine.runs import request_stop as stop_run
    from engine.scheduler import enqueue

    stop_file = Path(study_dir) / "stop"

    def objective(trial) -> float:
        if stop_file.exists():
            trial.study.stop()
            raise optuna.TrialPruned("the study was stopped")
        params = suggest(trial, config)
        spec, train = apply(config.spec, config.train, params)
        run_dir = create_run(spec, train, Path(config.dataset_dir),
                             name=f"{config.name} · trial {trial.number}",
                             extra={"trial": {"study": str(Path(study_dir).resolve()), "number": trial.number,
                                              "params": params, "metric": config.metric}})  # fmt: skip
        trial.set_user_attr("run", str(run_dir))
        enqueue(run_dir, start=False)
        pruned = []

        def watch(
            event: dict,
        ) -> None:  # each epoch's metric to the pruner; a pruned trial's run stops
            value = event["metrics"].get(config.metric) if event["type"] == "epoch_end" else None
            if pruned or value is None or not math.isfinite(value):
                return
            trial.report(value, event["epoch"])
            if trial.should_prune():
                pruned.append(event["epoch"])
                stop_run(run_dir)

        final, stopped = _train_trial(run_dir, watch, stop_file)
        if stopped:
            trial.study.stop()
        trial.set_user_attr("status", final["status"])
        if final.get("message"):
            trial.set_user_attr("message", final["message"][:500])
        if (pruned or stopped) and final[
            "status"
        ] != "completed":  # (a stop may come after the last epoch)
            raise optuna.TrialPruned()
        value = (final.get("metrics") or {}).get(config.metric)
        if final["status"] != "completed" or value is None or not math.isfinite(value):
            if not final.get("message"):
                trial.set_user_attr(
                    "message", f"the run ended {final['status']} without {config.metric}"
                )
            return float("nan")  # a failed trial (its run says why); the study goes on
        return float(value)

    return objective


def _train_trial(run_dir: Path, watch, stop_file: Path) -> tuple[dict, bool]:
    """Wait for the run's turn in the queue, train it on a thread of this process (`watch` sees each event as it
    is written), and return its final event, and whether the study was stopped meanwhile. A run that another
    process started (the app's queue) is watched through its events instead."""
    from engine.runs import execute, read_events, read_status
    from engine.runs import request_stop as stop_run
    from engine.scheduler import cancel, claim, dispatch

    offset, stopping, trainer, result = 0, False, None, {}
    while True:
        if trainer is None and not stopping and claim(run_dir):  # its turn: train it here
            trainer = threading.Thread(target=lambda: result.update(execute(run_dir, watch=watch)),
                                       name="trial", daemon=True)  # fmt: skip
            trainer.start()
        if trainer is not None:
            trainer.join(POLL_S)
            if not trainer.is_alive():
                return result, stopping
        else:  # waiting, or trained by another process
            events, offset = read_events(run_dir, offset)
            for event in events:
                watch(event)
                if event["type"] == "run_finished":
                    return event, stopping
            status = read_status(run_dir)
            if status["state"] not in (
                "queued",
                "running",
            ):  # (its last events may still be on their way)
                return {"status": status["state"], "message": status.get("message", ""),
                        "metrics": status.get("metrics") or {}}, stopping  # fmt: skip
            dispatch()  # older runs waiting before this one (no app may be serving the queue)
            time.sleep(POLL_S)
        if stop_file.exists() and not stopping:
            stopping = True
            try:
                cancel(run_dir)
            except LayerLabError:  # already started
                stop_run(run_dir)


def work(study_dir: Path, worker: int, trials: int) -> None:
    import optuna

    config = read_config(study_dir)
    study = optuna.load_study(study_name="study", storage=storage_of(study_dir, config),
                              sampler=_sampler(config, worker), pruner=_pruner(config))  # fmt: skip
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(_objective(study_dir, config), n_trials=trials, gc_after_trial=True)


# ---- reading results


def trial_rows(study, study_dir: Path | None = None) -> list[dict]:
    """Each trial as the table and the CLI show it (`study_dir`: where a Ray study maps its trials to runs)."""
    runs = _runs(study_dir)
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.value,
            "params": dict(t.params),
            "run": _run_of(t, runs),
            "epochs": len(t.intermediate_values),
            "message": t.user_attrs.get("message", ""),
            "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start else None,
        })  # fmt: skip
    return rows


def best(study, study_dir: Path | None = None) -> dict | None:
    """The best finished trial: its value, settings and run, or None before one completes."""
    try:
        t = study.best_trial
    except ValueError:
        return None
    run = _run_of(t, _runs(study_dir))
    return {"number": t.number, "value": t.value, "params": dict(t.params), "run": run}


def _runs(study_dir: Path | None) -> dict:
    """A Ray study's trial numbers -> runs (runs.json: its finished trials took no attributes)."""
    return read_json(Path(study_dir) / "runs.json", {}) if study_dir else {}


def _run_of(trial, runs: dict) -> str | None:
    """A trial's run folder: its attribute (a worker's trial), else runs.json's entry (a Ray trial)."""
    return trial.user_attrs.get("run") or runs.get(str(trial.number))


def train_best(study_dir: Path) -> Path:
    """A new run with the best trial's model and settings (queued; the caller enqueues it)."""
    from engine.runs import create_run

    config = read_config(study_dir)
    top = best(load(study_dir))
    if top is None:
        raise LayerLabError("no trial has finished yet: wait for one, then train the best.")
    spec, train = apply(config.spec, config.train, top["params"])
    return create_run(spec, train, Path(config.dataset_dir),
                      name=f"{config.name} · best (trial {top['number']})",
                      extra={"from_study": {"study": str(Path(study_dir).resolve()), "trial": top["number"],
                                            "params": top["params"]}})  # fmt: skip


def figures(study) -> dict:
    """Optuna's own plotly figures of the study, by title (those it can draw yet)."""
    from optuna import visualization as vis

    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    complete = [t for t in finished if t.state.name == "COMPLETE"]
    out = {}
    makers = {
        "Optimization history": (vis.plot_optimization_history, 1),
        "Intermediate values": (vis.plot_intermediate_values, 1),
        "Parallel coordinates": (vis.plot_parallel_coordinate, 1),
        "Slice": (vis.plot_slice, 1),
        "Contour": (vis.plot_contour, 2),
        "Parameter importances": (vis.plot_param_importances, 2),
    }
    for title, (make, least) in makers.items():
        need = finished if title == "Intermediate values" else complete
        if len(need) < least or (title == "Contour" and len(study.best_trial.params) < 2):
            continue
        try:
            out[title] = make(study)
        except (
            ValueError,
            RuntimeError,
            ZeroDivisionError,
        ):  # e.g. importances of a constant value
            continue
    return out


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m engine.search")
    parser.add_argument("study_dir")
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--trials", type=int, required=True)
    args = parser.parse_args(argv)
    work(Path(args.study_dir), args.worker, args.trials)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))


# ---- what a form offers

PARAM_TITLES = {
    "p": "dropout rate",
    "kind": "activation",
    "out_features": "width",
    "units": "code size",
}
WIDTHS = (
    "out_features",
    "out_channels",
    "hidden_size",
    "dim_feedforward",
    "embedding_dim",
    "units",
)
TRAIN_KNOBS = {
    "lr": {"low": 1e-4, "high": 0.1, "log": True},
    "batch_size": {"choices": [16, 32, 64, 128]},
    "optimizer": {"choices": ["adam", "adamw", "sgd"]},
    "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    "scheduler": {"choices": ["none", "cosine", "onecycle"]},
    "momentum": {"low": 0.8, "high": 0.99},
    "label_smoothing": {"low": 0.0, "high": 0.2},
}


def tunable(spec: dict, train: dict, meta: dict) -> dict[str, dict]:
    """The settings a study can search for this model and data, each with a title, its current value and a
    starting range or list: the training options above, and each layer's width, kernel size, number of heads
    or layers, dropout rate and activation (not the output layer's width: the data fixes it)."""
    from engine.registry import get_op
    from engine.spec import parse_spec
    from engine.train.config import TrainConfig
    from engine.train.options import OPTIMIZERS, SCHEDULES

    out = {}
    rows = int(meta.get("sizes", {}).get("train", 10**9))
    for name, default in TRAIN_KNOBS.items():
        if name == "label_smoothing" and meta.get("task") != "classification":
            continue
        field = TrainConfig.model_fields[name]
        current = train.get(name, field.default)
        if name == "batch_size":
            default = {"choices": [b for b in default["choices"] if b <= rows] or [max(1, rows)]}
        options = {"optimizer": list(OPTIMIZERS), "scheduler": list(SCHEDULES)}.get(name)
        out[name] = {"title": field.title or name.replace("_", " ").capitalize(), "value": current,
                     "default": default, "options": options}  # fmt: skip
    try:
        output = parse_spec(spec).output_id()
    except LayerLabError:
        return out
    for node in spec.get("nodes", []):
        op = get_op(node["op"])
        if op is None:
            continue
        params = {
            **{k: f.default for k, f in op.params.model_fields.items()},
            **node.get("params", {}),
        }
        for param, value in params.items():
            default, options = None, None
            if param in WIDTHS and node["id"] != output and isinstance(value, int):
                default = {"low": max(1, value // 4), "high": max(value * 4, 4), "log": True}
            elif param == "kernel_size" and isinstance(value, int):
                default = {"choices": [2, 3] if "pool" in node["op"] else [1, 3, 5]}
            elif param == "num_heads":
                default = {"choices": [1, 2, 4, 8]}
            elif param == "num_layers" and isinstance(value, int):
                default = {"low": 1, "high": max(3, value * 2)}
            elif param in ("p", "dropout"):
                default = {"low": 0.0, "high": 0.5}
            elif node["op"] == "activation" and param == "kind":
                default = {"choices": ["relu", "gelu", "tanh", "silu"]}
                options = list(typing.get_args(op.params.model_fields["kind"].annotation))
            if default is not None:
                title = f"{node['id']}: {PARAM_TITLES.get(param, param.replace('_', ' '))}"
                out[f"{node['id']}.{param}"] = {"title": title, "value": value, "default": default,
                                                "options": options}  # fmt: skip
    for first, block in blocks(spec).items():
        out[f"{REPEAT}{first}"] = {"title": f"Repeat {' → '.join(block)}", "value": 1,
                                   "default": {"low": 1, "high": 3}, "options": None}  # fmt: skip
    return out


# ---- on a Ray cluster: Ray Tune runs the same space through its Optuna searcher and ASHA


def ray_tune(study_dir: Path, address: str | None) -> None:
    """Run the study's trials on the Ray cluster at `address`: Ray Tune's OptunaSearch asks Optuna (this study's
    storage, so the Tune page and `trial_rows` read it as any study) with the same `suggest`, ASHA stops weak
    trials, and each trial trains as an ordinary run on whichever node Ray places it (the workspace must be on
    storage every node reaches)."""
    from engine import raycluster

    raycluster.connect(address)
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    config = read_config(study_dir)
    mode = "max" if config.direction == "maximize" else "min"
    searcher = OptunaSearch(space=functools.partial(_define, config=config), metric="objective", mode=mode,
                            storage=storage_of(study_dir, config), study_name="study",
                            seed=config.seed)  # fmt: skip
    epochs = int(config.train.get("epochs", 20))
    scheduler = ASHAScheduler(metric="objective", mode=mode, max_t=max(epochs, 1), grace_period=1)
    resources = {"gpu": 1} if _uses_cuda(config) else {"cpu": 1}
    trainable = tune.with_resources(
        tune.with_parameters(
            _ray_trial, study_dir=str(Path(study_dir).resolve()), home=str(home())
        ),
        resources,
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=config.trials,
                                    max_concurrent_trials=config.workers),
        run_config=tune.RunConfig(name="ray", storage_path=str(Path(study_dir).resolve()), verbose=0),
    )  # fmt: skip
    results = tuner.fit()
    _name_runs(study_dir, [r.metrics.get("run") for r in results if r.metrics])


def _define(trial, config: StudyConfig) -> None:
    """Ray Tune's define-by-run space: the same suggestions as a worker's (a module-level function: Tune pickles
    its searcher)."""
    suggest(trial, config)


def _uses_cuda(config: StudyConfig) -> bool:
    from engine.train.distributed import uses_cuda

    return uses_cuda(config.train.get("device", "auto"))


def _ray_trial(params: dict, study_dir: str, home: str) -> None:
    """One Ray trial: a run of the trial's settings, trained on a thread while each epoch's metric is reported
    to Tune; when ASHA stops the trial, its run is stopped (a `stopped` run, resumable)."""
    os.environ["LAYERLAB_HOME"] = home
    from ray import tune

    from engine.runs import create_run, execute, read_events, request_stop

    config = read_config(Path(study_dir))
    spec, train = apply(config.spec, config.train, params)
    run_dir = create_run(spec, train, Path(config.dataset_dir), name=f"{config.name} · Ray trial",
                         extra={"trial": {"study": study_dir, "params": params, "metric": config.metric,
                                          "number": None}})  # fmt: skip
    trainer = threading.Thread(target=execute, args=(run_dir,), name="trial", daemon=True)
    trainer.start()
    offset = 0
    try:
        while True:
            alive = trainer.is_alive()
            events, offset = read_events(run_dir, offset)
            for event in events:
                value = (
                    event["metrics"].get(config.metric) if event["type"] == "epoch_end" else None
                )
                if value is not None and math.isfinite(value):
                    tune.report({"objective": value, "epoch": event["epoch"], "run": str(run_dir)})
            if not alive:
                break
            trainer.join(POLL_S)
    finally:
        if trainer.is_alive():  # Tune stopped the trial (ASHA), or the study ended
            request_stop(run_dir)
            trainer.join()


def _name_runs(study_dir: Path, runs: list) -> None:
    """Each Ray trial's run gets its trial's number (Optuna numbers the trials as Tune asks for them), and the
    study's runs.json maps the numbers to the runs (a finished Optuna trial takes no more attributes)."""
    from engine.workspace import atomic_write_json as write

    config, trials = read_config(study_dir), load(study_dir).get_trials(deepcopy=False)
    found = {}
    for run in filter(None, runs):
        train = read_json(Path(run) / "train.json", {})
        params = (train.get("trial") or {}).get("params")
        match = next((t for t in trials if t.params == params), None)
        if match is not None:
            found[str(match.number)] = run
            train["trial"]["number"] = match.number
            train["name"] = f"{config.name} · trial {match.number}"
            write(Path(run) / "train.json", train)
    write(Path(study_dir) / "runs.json", found)
