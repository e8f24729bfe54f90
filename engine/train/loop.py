"""`fit`: a LayerLab run, from a spec and a prepared dataset to weights and events.

It decides the plan once (`make_plan`: the loss and the layer it reads, class weights, threads, ...), builds the
training state with `core.prepare`, puts a resume checkpoint back, and hands over to `core.train` with
LayerLab's callbacks (engine/train/callbacks.py). What it ends with (weights, messages, `run_finished`) comes
after. The step itself is in engine/train/core.py.
"""

import contextlib
import gc
import hashlib
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from engine.compiler import compile_spec
from engine.data.health import class_weights
from engine.data.store import Dataset
from engine.errors import ConfigError, LayerLabError
from engine.export import save_weights
from engine.gan import fit_gan, is_gan
from engine.limits import CORES
from engine.portable import target_units
from engine.spec import data_inputs
from engine.tasks import task_for, width
from engine.train import boundary, callbacks, core, distributed, dynamics, options
from engine.train.config import TrainConfig, preflight, resolve_device, resolve_precision
from engine.train.diagnostics import Coach
from engine.train.events import run_finished
from engine.train.state import EVAL_BATCH, Plan, State

EVAL_VALUES = (
    2**22
)  # evaluation batches hold at most about this many values in the widest layer's output (cache-
#                      sized: a 1,200-image CNN validation ran 1.7x faster in chunks of 256 than in one batch)


def pick_threads(n_params: int, batch_size: int, processes: int = 1) -> int:
    """Small models run fastest on one thread (measured: 2 threads ran 0.71-0.86x on this 2-core box and
    stalled under load); bigger ones get all cores but one, leaving one to the Streamlit server, shared
    among the run's `processes` on this machine."""
    if CORES <= 2 or n_params * batch_size < 20_000_000:
        return 1
    return max(1, (CORES - 1) // processes)


def fingerprint(model: torch.nn.Module) -> str:
    """A digest of the model's parameters, bit for bit: every rank of a run must hold the same."""
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's own random stream (dropout, augmentation) in a run of several processes."""
    return seed + 7919 * rank


def eval_batch_size(infos) -> int:
    """Rows per evaluation batch: cache-sized for the widest layer's output (see EVAL_VALUES)."""
    return max(64, min(EVAL_BATCH, EVAL_VALUES // max(math.prod(i.output_shape) for i in infos)))


def make_plan(
    model, infos, dataset: Dataset, cfg: TrainConfig, threads: int | None = None
) -> tuple[Plan, list]:
    """The plan (see Plan) and the notices of the checks that need the model and the data (ConfigError
    with the fix when these settings cannot train it)."""
    checked = preflight(
        model.spec,
        infos,
        cfg,
        dataset.task,
        width(dataset.meta),
        dataset.input_shape,
        len(dataset.split("train")[1]),
    )
    label = cfg.target == "label"
    weights = (
        class_weights(dataset.split("train")[1].numpy(), dataset.num_classes)
        if cfg.class_weights and task_for(dataset.task, cfg.target).class_weights
        else None
    )
    plan = Plan(
        checked.loss,
        model.spec.output_id(),
        checked.train_output,
        weights,
        cfg.label_smoothing if label else 0.0,
        target_units(dataset.meta)[0] if label else 1.0,
        eval_batch_size(infos),
        threads,
    )
    return plan, checked


def diverged_message(
    value: float, ref: float | None, cfg: TrainConfig, epoch: int, step: int
) -> str:
    """What happened, the learning rate named first, and what to try."""
    if math.isfinite(value):
        what = f"The loss exploded to {value:.3g} at epoch {epoch}, step {step:,}"
        if ref is not None:
            ratio = value / ref
            what += f", {f'{ratio:.2g}' if ratio >= 1e6 else f'{ratio:,.0f}'}× the untrained model's {ref:.3g}"
    else:
        what = f"The loss became NaN or infinite at epoch {epoch}, step {step:,}"
    suggest = min(cfg.lr / 10, options.OPTIMIZERS[cfg.optimizer].usual_lr)
    return (
        f"{what}: training diverged. The learning rate, {cfg.lr:g}, is most likely too high for this model: try "
        f"{suggest:g}. If it still diverges, clip the gradient norm (Regularization and gradients, e.g. 1.0), "
        "scale the inputs, or add batch norm."
    )


def try_compile(model, sample: torch.Tensor, device: torch.device, notices: list[str]):
    """torch.compile'd `model`, tried once on `sample` (random streams and batch-norm statistics put back
    after); the model itself, with a notice, where compiling fails (no C compiler, an unsupported layer)."""
    buffers = [b.clone() for b in model.buffers()]
    try:
        fast = torch.compile(model)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            fast(sample)
        return fast
    except Exception as e:  # noqa: BLE001 - any compile failure falls back to eager
        notices.append(
            f"torch.compile is not available here ({type(e).__name__}: {str(e)[:120]}), so this run "
            "trains uncompiled."
        )
        return model
    finally:
        for b, saved in zip(model.buffers(), buffers, strict=True):
            b.copy_(saved)


def fit(
    spec,
    dataset: Dataset,
    cfg: TrainConfig,
    *,
    emit: Callable[[dict], None],
    should_stop: Callable[[], bool] = lambda: False,
    out_dir: Path | None = None,
    resume: dict | None = None,
    init_weights: dict[str, torch.Tensor] | None = None,
    world: distributed.World = distributed.World(),
) -> dict:
    """Train `spec` on `dataset`; report through `emit`; write weights under `out_dir` if given.

    `resume` (a checkpoint from `engine.train.checkpoint.load_state`) continues a run exactly where it was;
    `init_weights` starts from saved weights (a branch, or imported tensors). `world`: this process's
    rank among several (torchrun; the process group is joined): only rank 0 emits and writes files.
    Returns the `run_finished` event (also emitted).
    Bad settings raise ConfigError/SpecError before any step runs. A CUDA out-of-memory error ends the run as
    failed, with the batch size and what to change, and gives the GPU memory back.
    """
    if is_gan(spec):
        if resume or world.size > 1 or init_weights:
            raise ConfigError(
                "a GAN trains from the start, on one process: it cannot resume, branch or use several processes."
            )
        return fit_gan(spec, dataset, cfg, emit, should_stop, out_dir)
    try:
        return _fit(spec, dataset, cfg, emit, should_stop, out_dir, resume, init_weights, world)
    except torch.OutOfMemoryError:
        pass  # handled outside the except block, so the traceback's frames (and their tensors) are gone first
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    final = run_finished(
        "failed",
        f"The GPU ran out of memory at batch size {cfg.batch_size}. Lower the batch size "
        f"(try {max(cfg.batch_size // 2, 1)}), choose bf16 precision, or make the model smaller. The "
        "GPU's memory was released.",
        out_of_memory=True,
    )
    emit(final)
    return final


def _fit(spec, dataset, cfg, emit, should_stop, out_dir, resume, init_weights, world) -> dict:
    """Set up, put a resume checkpoint back (or measure the untrained model), train with LayerLab's
    callbacks (on rank 0 alone), then write what the run ends with."""
    s, started, notices = _setup(spec, dataset, cfg, init_weights, world)
    if not world.leader:  # the other ranks train and share; rank 0 reports and writes
        emit, out_dir = (lambda event: None), None
    task = task_for(dataset.task, cfg.target)
    step, validate = task_step(s, task), task.validate or core.validate
    if world.size > 1 and task.step is not None:
        raise ConfigError(
            f"the {task.name} task trains with its own step, which runs on one process only: "
            "choose Run on: This machine, one process."
        )
    if resume:
        _restore(s, resume)
        first = {
            "type": "run_resumed",
            "epoch": s.epoch,
            "step": s.step,
            "device": started["device"],
            "world_size": world.size,
        }
        notices = resume.get("notices") or []
    else:  # the untrained model's validation loss: the yardstick for a loss that explodes
        ref = validate(s)["loss"] if len(s.data[2]) and world.leader else None
        ref = core.broadcast(ref, world.size)
        s.plan.loss_ref = ref if ref is not None and math.isfinite(ref) else None
        first = {**started, "loss_ref": s.plan.loss_ref, "plan": asdict(s.plan)}

    def save(name: str, state=None):
        weights = state if state is not None else s.model
        save_weights(weights, Path(out_dir) / name, s.model.spec, dataset.meta)

    kinds = {node.params.get("kind") for node in s.model.spec.nodes if node.op == "activation"}
    coach = Coach(resume and resume["coach"], activations=kinds, lr=cfg.lr)
    coach.loss_ref = s.plan.loss_ref
    hooks = [callbacks.Events(emit, first, notices, coach)] if world.leader else []
    if cfg.diagnostics and world.leader:
        hooks.append(callbacks.LookInside(emit, coach))
    if out_dir is not None and cfg.target == "label" and boundary.applies(dataset):
        grid = boundary.grid_axes(dataset.split("train")[0])
        hooks.append(callbacks.Boundary(out_dir, grid, target_units(dataset.meta)))
    if world.leader and task_for(dataset.task).predictions == "text":
        hooks.append(callbacks.Writes(emit, dataset))
    if out_dir is not None and task.predictions == "samples":
        hooks.append(callbacks.Rebuilds(out_dir, dataset))
    if (
        out_dir is not None
        and world.size == 1  # (several processes: nothing extra between their collectives)
        and task.predictions == "classes"
        and dynamics.applies(s.plan)
    ):
        hooks.append(dynamics.Dynamics(out_dir, cfg.seed))
    if out_dir is not None:
        hooks.append(callbacks.Checkpoints(out_dir, save, coach, emit))
    hooks.append(callbacks.StopRequest(should_stop))  # every rank: a signal stops any
    core.train(s, hooks, step, validate)
    if world.size > 1 and len(set(core.gather(fingerprint(s.model), world.size))) > 1:
        raise LayerLabError(
            "the processes of this run ended with different weights, so the run is not kept as "
            "trained. This is a LayerLab bug: please report it, with the run folder."
        )
    return _finish(s, hooks, save if out_dir is not None else None, emit)


def task_step(s: State, task) -> Callable:
    """The task's training step (the standard one unless the task has its own), with the task's criterion set
    on `s` where it has one (a VAE's adds the KL term)."""
    if task.criterion is not None:
        s.criterion = task.criterion(s)
    return task.step or core.standard_step


def _setup(spec, dataset, cfg, init_weights, world) -> tuple[State, dict, list[str]]:
    """The model on its device, the plan, the training state; the run_started event (but for the
    untrained model's loss) and the notices of the checks. Several processes: the model in DDP
    (batch norm synchronised on CUDA), each rank with its own dropout and augmentation streams."""
    device = resolve_device(cfg.device)
    amp_dtype, precision = resolve_precision(cfg, device)
    model, infos = compile_spec(spec, data_inputs(dataset.meta), seed=cfg.seed)
    if init_weights is not None:  # a branch's full state, or an import's matching tensors
        unexpected = model.load_state_dict(init_weights, strict=False).unexpected_keys
        if unexpected:
            raise ConfigError(
                f"the starting weights hold tensors this model lacks ({', '.join(unexpected[:3])}); "
                "match them again on the Build page."
            )
    plan, checked = make_plan(model, infos, dataset, cfg)
    for nid in cfg.freeze:
        model.layers[nid].requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    if device.type == "cpu":
        plan.threads = cfg.threads or pick_threads(n_params, cfg.batch_size, world.local_size)
        torch.set_num_threads(plan.threads)
    if world.size > 1 and device.type == "cuda":
        distributed.sync_batch_norm(model)
    layout = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    channels_last = len(dataset.input_shape) == 3 and layout
    model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
    net = model.with_output(plan.train_output) if plan.train_output != plan.output else model
    splits = {s: dataset.split(s) for s in ("train", "val")}
    tensors = {f"{k}_{s}": t for s, pair in splits.items() for k, t in zip("xy", pair, strict=True)}
    autocast = contextlib.nullcontext
    if amp_dtype:
        autocast = lambda: torch.autocast(device.type, dtype=amp_dtype)  # noqa: E731
    scaler = torch.amp.GradScaler(device.type) if precision == "16" else None
    s = core.prepare(cfg, plan, model, net, tensors, device, autocast=autocast, scaler=scaler,
                     channels_last=channels_last)  # fmt: skip
    notices = list(checked.notices)
    if world.size > 1:
        s.rank, s.world = world.rank, world.size
        s.aug_gen = torch.Generator(device=device).manual_seed(rank_seed(cfg.seed, world.rank))
        if world.rank:  # dropout: a stream of its own (rank 0 keeps the one-process stream)
            torch.manual_seed(rank_seed(cfg.seed, world.rank))
        ran = {nid for nid, _ in net.plan}
        unused = any(p.requires_grad for k, m in net.layers.items() if k not in ran
                     for p in m.parameters())  # fmt: skip
        s.forward = distributed.wrap(net, device, unused)
    eager = s.forward
    if cfg.compile:
        s.forward = try_compile(
            s.forward, core.as_input(s.data[0][: cfg.batch_size]), device, notices
        )
    n = len(s.data[1])
    started = {"type": "run_started", "device": str(device), "threads": plan.threads,
               "params": n_params, "loss": plan.loss, "optimizer": cfg.optimizer,
               "epochs": cfg.epochs, "steps_per_epoch": math.ceil(n / cfg.batch_size), "n_train": n,
               "batch_size": cfg.batch_size, "memory_bytes": checked.memory["total"], "lr": cfg.lr,
               "scheduler": cfg.scheduler, "precision": precision, "compiled": s.forward is not eager,
               "channels_last": channels_last, "world_size": world.size}  # fmt: skip
    return s, started, notices


def _restore(s: State, resume: dict) -> None:
    """Put a resume checkpoint (engine.train.checkpoint.load_state) back into the state."""
    s.model.load_state_dict(resume["model"])
    s.optimizer.load_state_dict(resume["optimizer"])
    if s.scheduler is not None:
        s.scheduler.load_state_dict(resume["scheduler"])
    if s.scaler is not None and resume.get("scaler"):
        s.scaler.load_state_dict(resume["scaler"])
    s.gen.set_state(resume["generator"])
    device = s.data[0].device
    rngs = resume.get("rngs") or [
        {"torch": resume["torch_rng"], "cuda": resume.get("cuda_rng"), "aug": None}
    ]
    if s.rank < len(rngs):  # this rank's streams where it stopped
        torch.set_rng_state(rngs[s.rank]["torch"])
        if device.type == "cuda" and rngs[s.rank]["cuda"] is not None:
            torch.cuda.set_rng_state(rngs[s.rank]["cuda"])
        if s.aug_gen is not None and rngs[s.rank]["aug"] is not None:
            s.aug_gen.set_state(rngs[s.rank]["aug"])
    else:  # a rank the stopped run did not have (resumed on more processes): fresh streams
        torch.manual_seed(rank_seed(s.cfg.seed + resume["step"], s.rank))
        s.aug_gen.manual_seed(rank_seed(s.cfg.seed + resume["step"], s.rank + 1))
    s.step, s.epoch, s.start = resume["step"], resume["epoch"], resume["start"]
    s.perm = resume["perm"].to(device) if resume["perm"] is not None else None
    s.epoch_loss, s.epoch_steps = resume["epoch_loss"], resume["epoch_steps"]
    s.best, s.best_state, s.waited, s.metrics = (
        resume["best"],
        resume["best_state"],
        resume["waited"],
        resume["metrics"],
    )
    s.elapsed_before, s.plan.loss_ref = resume["elapsed"], resume.get("loss_ref")


def _finish(s: State, hooks: list, save: Callable | None, emit: Callable[[dict], None]) -> dict:
    """The weights the run ends with, the last looks at them, and `run_finished` with what happened."""
    cfg, message = s.cfg, ""
    monitor = core.monitored(cfg)[0]
    if s.status == "diverged":
        message = diverged_message(s.diverged_at, s.plan.loss_ref, cfg, s.epoch, s.step)
        if s.best_state is not None:
            message += (
                f" The weights of epoch {s.best['epoch']}, the best before it diverged, were kept."
            )
    elif s.early_stopped:
        message = (
            f"Stopped early after epoch {s.epoch}: {cfg.monitor} did not improve by more than "
            f"{cfg.min_delta:g} for {cfg.early_stopping} epoch(s). Its best was {s.best[monitor]:.4g} at epoch "
            f"{s.best['epoch']}; the model keeps "
            + ("that epoch's weights." if cfg.restore_best else "the last epoch's weights.")
        )
    elif s.status == "stopped":
        message = (
            f"Stopped at epoch {s.epoch}, step {s.step}; the weights at that point were kept."
            + (" Resume continues from here." if save is not None else "")
        )
    if save is not None:
        if s.status != "diverged":
            save("model.safetensors")
        elif s.best_state is not None:
            save("model.safetensors", s.best_state)
        if s.best_state is not None:
            save("checkpoints/best.safetensors", s.best_state)
    for hook in hooks:
        if hasattr(hook, "finish"):
            hook.finish(s)
    elapsed = s.elapsed()
    final = run_finished(
        s.status,
        message,
        epochs_completed=s.epoch if s.status == "completed" else s.epoch - 1,
        step=s.step,
        metrics=s.metrics,
        best=s.best,
        early_stopped=s.early_stopped,
        seconds=elapsed,
        samples_per_second=s.step * cfg.batch_size / elapsed if elapsed > 0 else 0.0,
    )
    emit(final)
    return final
