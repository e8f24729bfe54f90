"""The training loop: one readable function, top to bottom.

Fast path: the dataset's tensors move to the device once; each step slices a shuffled index
batch on the device. Losses accumulate on the device and the loop syncs with the host a few
times per second (to emit `batch_end`, check for NaN and for a stop request), never every step.
"""

import contextlib
import gc
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.compiler import compile_spec
from engine.data.health import class_weights
from engine.data.store import Dataset
from engine.errors import ConfigError
from engine.export import save_weights
from engine.portable import as_input, target_units
from engine.spec import data_inputs
from engine.train import boundary, options
from engine.train.augment import active as augment_active
from engine.train.augment import augment
from engine.train.checkpoint import save_state
from engine.train.config import TrainConfig, preflight, resolve_device, resolve_precision
from engine.train.diagnostics import Coach, inspect_model
from engine.train.events import run_finished
from engine.workspace import atomic_write_json

SYNC_EVERY_S = 0.25
DIAGNOSE_EVERY_S = 2.0
DIAGNOSE_SHARE = 0.02  # diagnostics are sampled less often than every 2 s when a look would cost more than this
BOUNDARY_EVERY_S = 0.5
CHECKPOINT_SHARE = 0.05  # resume checkpoints are written each epoch unless that costs more than this share of time
DIVERGE_FACTOR = 100.0  # a loss this many times the untrained model's validation loss (and above 1): diverged
EVAL_BATCH = 4096
EVAL_VALUES = 2**22  # evaluation batches hold at most about this many values in the widest layer's output (cache-
#                      sized: a 1,200-image CNN validation ran 1.7x faster in chunks of 256 than in one batch)


def pick_threads(n_params: int, batch_size: int) -> int:
    """Small models run fastest on one thread (measured: 2 threads ran 0.71-0.86x on this 2-core box and
    stalled under load); bigger ones get all cores but one, leaving one to the Streamlit server."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores <= 2 or n_params * batch_size < 20_000_000:
        return 1
    return cores - 1


def make_optimizer(cfg: TrainConfig, params, device: torch.device) -> torch.optim.Optimizer:
    return options.build_optimizer(cfg.optimizer, params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  momentum=cfg.momentum, nesterov=cfg.nesterov, device=device)


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """torch's scheduler for the chosen schedule, and when it steps: "step" (each optimizer step), "epoch" or
    "plateau" (each epoch, given the validation loss); (None, None) for a constant rate."""
    sched = torch.optim.lr_scheduler
    total = steps_per_epoch * cfg.epochs
    if cfg.scheduler == "step":
        return sched.StepLR(optimizer, cfg.step_size, cfg.gamma), "epoch"
    if cfg.scheduler == "exponential":
        return sched.ExponentialLR(optimizer, cfg.gamma), "epoch"
    if cfg.scheduler == "plateau":
        return sched.ReduceLROnPlateau(optimizer, factor=cfg.gamma, patience=cfg.plateau_patience), "plateau"
    if cfg.scheduler == "onecycle":
        return sched.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total), "step"
    if cfg.scheduler == "cosine":
        warm = min(cfg.warmup_epochs * steps_per_epoch, total - 1)
        cosine = sched.CosineAnnealingLR(optimizer, T_max=max(total - warm, 1))
        if not warm:
            return cosine, "step"
        warmup = sched.LinearLR(optimizer, start_factor=1 / (warm + 1), total_iters=warm)
        return sched.SequentialLR(optimizer, [warmup, cosine], milestones=[warm]), "step"
    return None, None


def loss_function(name: str, weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> Callable:
    """The loss by name; `weight` holds per-class weights (cross-entropy, NLL) or the positive class's (BCE)."""
    if name == "cross_entropy" and (weight is not None or label_smoothing):
        return lambda out, y: F.cross_entropy(out, y, weight=weight, label_smoothing=label_smoothing)
    if name == "bce_with_logits" and (weight is not None or label_smoothing):
        pos_weight = None if weight is None else weight[1:] / weight[0]
        return lambda out, y: F.binary_cross_entropy_with_logits(
            out, y * (1 - label_smoothing) + 0.5 * label_smoothing, pos_weight=pos_weight)
    if name == "nll" and weight is not None:  # (label smoothing needs the logits: cross-entropy)
        return lambda out, y: F.nll_loss(out, y, weight=weight)
    return options.LOSSES[name].fn


@torch.no_grad()
def evaluate(model, x, y, loss_name: str, target_scale: float = 1.0, autocast=contextlib.nullcontext,
             batch: int = EVAL_BATCH) -> dict[str, float]:
    """Loss and the task's metrics over a whole split (eval mode, big batches)."""
    was_training = model.training
    model.eval()
    with autocast():
        outs = torch.cat([model(as_input(x[i:i + batch])) for i in range(0, len(x), batch)]).float()
    model.train(was_training)
    y = as_input(y)
    metrics = {"loss": loss_function(loss_name)(outs, y).item()}
    targets = options.LOSSES[loss_name].targets
    if targets == "classes":
        metrics["accuracy"] = (outs.argmax(1) == y).float().mean().item()
    elif targets == "binary":
        metrics["accuracy"] = ((outs > 0).float() == y).float().mean().item()
    else:
        pred = outs
        metrics["mae"] = (pred - y).abs().mean().item() * target_scale
        ss_res = ((pred - y) ** 2).sum()
        ss_tot = ((y - y.mean()) ** 2).sum().clamp_min(1e-12)
        metrics["r2"] = (1 - ss_res / ss_tot).item()
    return metrics


def eval_batch_size(infos) -> int:
    """Rows per evaluation batch: cache-sized for the widest layer's output (see EVAL_VALUES)."""
    return max(64, min(EVAL_BATCH, EVAL_VALUES // max(math.prod(i.output_shape) for i in infos)))


class Diverged(Exception):
    """The loss became NaN or infinite, or exploded far above the untrained model's."""

    def __init__(self, value: float):
        super().__init__(value)
        self.value = value


def diverged_message(value: float, ref: float | None, cfg: TrainConfig, epoch: int, step: int) -> str:
    """What happened, the learning rate named first, and what to try."""
    if math.isfinite(value):
        what = f"The loss exploded to {value:.3g} at epoch {epoch}, step {step:,}"
        if ref is not None:
            ratio = value / ref
            what += f", {f'{ratio:.2g}' if ratio >= 1e6 else f'{ratio:,.0f}'}× the untrained model's {ref:.3g}"
    else:
        what = f"The loss became NaN or infinite at epoch {epoch}, step {step:,}"
    suggest = min(cfg.lr / 10, options.OPTIMIZERS[cfg.optimizer].usual_lr)
    return (f"{what}: training diverged. The learning rate, {cfg.lr:g}, is most likely too high for this model: try "
            f"{suggest:g}. If it still diverges, clip the gradient norm (Regularization and gradients, e.g. 1.0), "
            "scale the inputs, or add batch norm.")


def _state_on_cpu(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


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
        notices.append(f"torch.compile is not available here ({type(e).__name__}: {str(e)[:120]}), so this run "
                       "trains uncompiled.")
        return model
    finally:
        for b, saved in zip(model.buffers(), buffers, strict=True):
            b.copy_(saved)


def fit(spec, dataset: Dataset, cfg: TrainConfig, *, emit: Callable[[dict], None],
        should_stop: Callable[[], bool] = lambda: False, out_dir: Path | None = None, resume: dict | None = None,
        init_weights: dict[str, torch.Tensor] | None = None) -> dict:
    """Train `spec` on `dataset`; report through `emit`; write weights under `out_dir` if given.

    `resume` (a checkpoint from `engine.train.checkpoint.load_state`) continues a run exactly where it was;
    `init_weights` starts from saved weights (a branch, or imported tensors). Returns the `run_finished` event (also emitted).
    Bad settings raise ConfigError/SpecError before any step runs. A CUDA out-of-memory error ends the run as
    failed, with the batch size and what to change, and gives the GPU memory back.
    """
    try:
        return _fit(spec, dataset, cfg, emit, should_stop, out_dir, resume, init_weights)
    except torch.OutOfMemoryError:
        pass  # handled outside the except block, so the traceback's frames (and their tensors) are gone first
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    final = run_finished("failed", f"The GPU ran out of memory at batch size {cfg.batch_size}. Lower the batch size "
                         f"(try {max(cfg.batch_size // 2, 1)}), choose bf16 precision, or make the model smaller. The "
                         "GPU's memory was released.", out_of_memory=True)
    emit(final)
    return final


def _fit(spec, dataset, cfg, emit, should_stop, out_dir, resume, init_weights) -> dict:
    device = resolve_device(cfg.device)
    amp_dtype, precision = resolve_precision(cfg, device)
    model, infos = compile_spec(spec, data_inputs(dataset.meta), seed=cfg.seed)
    if init_weights is not None:  # a branch's full state, or an import's matching tensors (the rest stay fresh)
        unexpected = model.load_state_dict(init_weights, strict=False).unexpected_keys
        if unexpected:
            raise ConfigError(f"the starting weights hold tensors this model lacks ({', '.join(unexpected[:3])}); "
                              "match them again on the Build page.")

    x_train, y_train = dataset.split("train")
    x_val, y_val = dataset.split("val")
    plan = preflight(model.spec, infos, cfg, dataset.task, dataset.num_classes, dataset.input_shape, len(y_train))
    for nid in cfg.freeze:
        model.layers[nid].requires_grad_(False)
    loss_name = plan.loss
    n_params = sum(p.numel() for p in model.parameters())
    threads = None
    if device.type == "cpu":
        threads = cfg.threads or pick_threads(n_params, cfg.batch_size)
        torch.set_num_threads(threads)
    images = len(dataset.input_shape) == 3
    channels_last = images and (cfg.channels_last if cfg.channels_last is not None else device.type == "cuda")
    model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
    x_train, x_val = x_train.to(device), x_val.to(device)
    if cfg.target == "input":  # autoencoder: the input is the target
        y_train, y_val = x_train, x_val
    elif options.LOSSES[loss_name].targets == "classes":
        y_train, y_val = y_train.to(device, torch.long), y_val.to(device, torch.long)
    else:  # one output per row: targets shaped (N, 1) like the model's output
        y_train, y_val = y_train.to(device, torch.float32)[:, None], y_val.to(device, torch.float32)[:, None]
    units = target_units(dataset.meta)  # (scale, shift) of a regression target's own units
    target_scale = units[0] if cfg.target == "label" else 1.0
    train_model = model.with_output(plan.train_output) if plan.train_output != model.spec.output_id() else model
    weight = None
    if cfg.class_weights and cfg.target == "label" and dataset.task == "classification":
        weight = torch.tensor(class_weights(dataset.split("train")[1].numpy(), dataset.num_classes),
                              dtype=torch.float32, device=device)
    criterion = loss_function(loss_name, weight, cfg.label_smoothing if cfg.target == "label" else 0.0)
    optimizer = make_optimizer(cfg, (p for p in model.parameters() if p.requires_grad), device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    augmenting = augment_active(cfg) and cfg.target == "label"
    params = [p for p in model.parameters() if p.requires_grad]
    penalized = [p for p in params if p.dim() > 1] if (cfg.l1 or cfg.l2) else []  # weight matrices, not biases
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    scaler = torch.amp.GradScaler(device.type) if precision == "16" else None
    kinds = {node.params.get("kind") for node in model.spec.nodes if node.op == "activation"}
    coach = Coach(resume and resume["coach"], activations=kinds, lr=cfg.lr)
    grid = boundary.grid_axes(x_train) if out_dir is not None and cfg.target == "label" and \
        boundary.applies(dataset) else None

    n, bs, accumulate = len(y_train), cfg.batch_size, cfg.accumulate
    eval_batch = eval_batch_size(infos)
    steps_per_epoch = math.ceil(n / bs)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler, schedule_every = make_scheduler(cfg, optimizer, math.ceil(steps_per_epoch / accumulate))
    notices = list(plan.notices)
    forward = try_compile(train_model, as_input(x_train[:bs]), device, notices) if cfg.compile else train_model
    compiled = forward is not train_model

    status, message, early_stopped = "completed", "", False
    monitor = cfg.monitor if cfg.early_stopping else "val/loss"  # what "best" means
    min_delta = cfg.min_delta if cfg.early_stopping else 0.0
    sign = -1.0 if monitor == "val/accuracy" else 1.0  # lower is better, except accuracy
    best = {"epoch": None, monitor: math.inf * sign}
    best_state, waited, last_metrics = None, 0, {}
    step, first_epoch, first_start, perm, elapsed_before = 0, 1, 0, None, 0.0
    if resume:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(resume["scheduler"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        gen.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        if device.type == "cuda" and resume.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(resume["cuda_rng"])
        step, first_epoch, first_start = resume["step"], resume["epoch"], resume["start"]
        perm = resume["perm"].to(device) if resume["perm"] is not None else None
        best, best_state, waited, last_metrics = resume["best"], resume["best_state"], resume["waited"], \
            resume["metrics"]
        elapsed_before = resume["elapsed"]
        loss_ref = resume.get("loss_ref")
        emit({"type": "run_resumed", "epoch": first_epoch, "step": step, "device": str(device)})
        for text in resume.get("notices") or []:
            emit({"type": "notice", "message": text})
    else:
        # The untrained model's validation loss: the yardstick for a loss that explodes without becoming NaN.
        loss_ref = evaluate(train_model, x_val, y_val, loss_name, target_scale, autocast, eval_batch)["loss"] \
            if len(x_val) else None
        loss_ref = loss_ref if loss_ref is not None and math.isfinite(loss_ref) else None
        emit({"type": "run_started", "device": str(device), "threads": threads, "params": n_params,
              "loss": loss_name, "optimizer": cfg.optimizer, "epochs": cfg.epochs, "steps_per_epoch": steps_per_epoch,
              "n_train": n, "batch_size": bs, "memory_bytes": plan.memory["total"], "lr": cfg.lr,
              "scheduler": cfg.scheduler, "precision": precision, "compiled": compiled,
              "channels_last": channels_last, "loss_ref": loss_ref})
        for text in notices:
            emit({"type": "notice", "message": text})

    spec_full = model.spec
    def save(name: str, state=None):
        if out_dir is not None:
            save_weights(state if state is not None else model, Path(out_dir) / name, spec_full, dataset.meta)

    def lr_now() -> float:
        return float(optimizer.param_groups[0]["lr"])

    def checkpoint(epoch_next: int, start_next: int, order, epoch_loss: float, epoch_steps: int) -> None:
        """The resume state at a position: the epoch in progress and the offset of its next batch."""
        if out_dir is None:
            return
        save("checkpoints/last.safetensors")
        if best_state is not None:
            save("checkpoints/best.safetensors", best_state)
        save_state(out_dir, {
            "model": _state_on_cpu(model), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
            "step": step, "epoch": epoch_next, "start": start_next,
            "perm": order.cpu() if order is not None else None, "epoch_loss": epoch_loss, "epoch_steps": epoch_steps,
            "best": best, "best_state": best_state, "waited": waited, "metrics": last_metrics,
            "elapsed": time.perf_counter() - t_start, "coach": coach.state(), "loss_ref": loss_ref})
        emit({"type": "checkpoint_saved", "epoch": epoch_next - (start_next == 0), "step": step})

    def look_inside(epoch: int, xb, yb) -> float:
        """Sample the diagnostics; returns when to look next (every 2 s, or less often if a look costs over 2%)."""
        t = time.perf_counter()
        diag = inspect_model(train_model, xb, yb, criterion, autocast)
        emit({"type": "diagnostics", "epoch": epoch, "step": step, **diag})
        for event in coach.gradients(diag, epoch=epoch, step=step):
            emit(event)
        now = time.perf_counter()
        return now + max(DIAGNOSE_EVERY_S, (now - t) / DIAGNOSE_SHARE)

    def draw_boundary(epoch: int) -> None:
        surface = boundary.surface(train_model, *grid, loss_name, units)
        atomic_write_json(Path(out_dir) / boundary.BOUNDARY, {"epoch": epoch, "step": step, **surface})

    coach.loss_ref = loss_ref
    limit = DIVERGE_FACTOR * max(loss_ref, 1.0) if loss_ref is not None else math.inf

    def check(value: float) -> None:
        if not value <= limit:  # NaN, infinite, or exploded
            raise Diverged(value)

    t_start = time.perf_counter() - elapsed_before
    next_sync = time.perf_counter() + SYNC_EVERY_S
    next_diag = -math.inf if cfg.diagnostics else math.inf  # the first look: at epoch 1 at the latest
    next_boundary = time.perf_counter() if grid is not None else math.inf
    ckpt_at, ckpt_cost = -math.inf, 0.0
    epoch, xb, yb = first_epoch, None, None
    model.train()
    try:
        for epoch in range(first_epoch, cfg.epochs + 1):
            t_epoch = time.perf_counter()
            if epoch == first_epoch and first_start:  # resuming mid-epoch: its shuffle and running loss
                epoch_loss = torch.tensor(resume["epoch_loss"], device=device)
                epoch_steps = resume["epoch_steps"]
            else:
                perm = torch.randperm(n, device=device, generator=gen)
                epoch_loss, epoch_steps = torch.zeros((), device=device), 0
            window_steps, synced_loss = 0, epoch_loss.item()
            for start in range(first_start if epoch == first_epoch else 0, n, bs):
                idx = perm[start:start + bs]
                xb, yb = as_input(x_train[idx]), as_input(y_train[idx])
                if augmenting:
                    xb = augment(xb, cfg, gen)
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with autocast():
                    loss = criterion(forward(xb), yb)
                if penalized:
                    loss = loss + sum(cfg.l1 * p.abs().sum() + cfg.l2 * p.square().sum() for p in penalized)
                scaled = loss / accumulate if accumulate > 1 else loss
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
                epoch_loss += loss.detach()
                epoch_steps += 1
                window_steps += 1
                step += 1
                if accumulate == 1 or epoch_steps % accumulate == 0 or start + bs >= n:
                    if scaler is not None and (cfg.clip_grad_value or cfg.clip_grad_norm):
                        scaler.unscale_(optimizer)
                    if cfg.clip_grad_value is not None:
                        torch.nn.utils.clip_grad_value_(params, cfg.clip_grad_value)
                    if cfg.clip_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    if schedule_every == "step":
                        scheduler.step()
                now = time.perf_counter()
                if now >= next_sync:
                    next_sync = now + SYNC_EVERY_S
                    total = epoch_loss.item()
                    value = (total - synced_loss) / window_steps
                    synced_loss, window_steps = total, 0
                    elapsed = now - t_start
                    emit({"type": "batch_end", "epoch": epoch, "step": step, "loss": value, "lr": lr_now(),
                          "progress": step / total_steps, "samples_per_second": step * bs / elapsed,
                          "eta_s": elapsed / step * (total_steps - step)})
                    check(value)
                    if now >= next_diag:
                        next_diag = look_inside(epoch, xb, yb)
                    if now >= next_boundary:
                        draw_boundary(epoch)
                        next_boundary = time.perf_counter() + BOUNDARY_EVERY_S
                    if should_stop():
                        status = "stopped"
                        checkpoint(epoch, start + bs, perm, epoch_loss.item(), epoch_steps)
                        break
            train_loss = epoch_loss.item() / epoch_steps
            if not math.isfinite(train_loss):
                raise Diverged(train_loss)
            if status == "stopped":
                break
            val = evaluate(train_model, x_val, y_val, loss_name, target_scale, autocast, eval_batch)
            check(val["loss"])
            last_metrics = {"train/loss": train_loss, **{f"val/{k}": v for k, v in val.items()}}
            lr_used = lr_now()
            if schedule_every == "epoch":
                scheduler.step()
            elif schedule_every == "plateau":
                scheduler.step(val["loss"])
            if sign * (best[monitor] - last_metrics[monitor]) > min_delta or best["epoch"] is None:
                best = {"epoch": epoch, **last_metrics}
                best_state, waited = _state_on_cpu(model), 0
            else:
                waited += 1
            now = time.perf_counter()
            elapsed = now - t_start
            emit({"type": "epoch_end", "epoch": epoch, "step": step, "metrics": last_metrics, "lr": lr_used,
                  "best_epoch": best["epoch"], "seconds": now - t_epoch, "progress": step / total_steps,
                  "samples_per_second": step * bs / elapsed, "eta_s": elapsed / step * (total_steps - step)})
            for event in coach.epoch(train_loss, val["loss"], epoch=epoch, step=step):
                emit(event)
            if now >= next_diag:
                next_diag = look_inside(epoch, xb, yb)
            if now - ckpt_at >= ckpt_cost / CHECKPOINT_SHARE:  # every epoch, unless writing costs over 5%
                ckpt_at = time.perf_counter()
                checkpoint(epoch + 1, 0, None, 0.0, 0)
                ckpt_cost = time.perf_counter() - ckpt_at
            if cfg.early_stopping and waited >= cfg.early_stopping and epoch < cfg.epochs:
                early_stopped = True
                break
            if should_stop():
                status = "stopped"
                if epoch < cfg.epochs:
                    checkpoint(epoch + 1, 0, None, 0.0, 0)
                break
    except Diverged as e:
        status = "diverged"
        message = diverged_message(e.value, loss_ref, cfg, epoch, step)
        if best_state is not None:
            message += f" The weights of epoch {best['epoch']}, the best before it diverged, were kept."
    elapsed = time.perf_counter() - t_start
    if status != "diverged":
        save("checkpoints/last.safetensors")
    if early_stopped:
        message = (f"Stopped early after epoch {epoch}: {cfg.monitor} did not improve by more than {cfg.min_delta:g} "
                   f"for {cfg.early_stopping} epoch(s). Its best was {best[monitor]:.4g} at epoch {best['epoch']}")
        if cfg.restore_best:
            model.load_state_dict(best_state)
            last_metrics = {k: v for k, v in best.items() if k != "epoch"}
            message += "; the model keeps that epoch's weights."
        else:
            message += "; the model keeps the last epoch's weights."
    if status != "diverged":
        save("model.safetensors")
    elif best_state is not None:
        save("model.safetensors", best_state)
    if best_state is not None:
        save("checkpoints/best.safetensors", best_state)
    if status != "diverged" and xb is not None:  # the last look: the weights the run ends with
        if cfg.diagnostics:
            look_inside(epoch, xb, yb)
        if grid is not None:
            draw_boundary(epoch)
    if status == "stopped":
        message = f"Stopped at epoch {epoch}, step {step}; the weights at that point were kept."
        if out_dir is not None:
            message += " Resume continues from here."
    final = run_finished(status, message, epochs_completed=epoch if status == "completed" else epoch - 1, step=step,
                         metrics=last_metrics, best=best, early_stopped=early_stopped, seconds=elapsed,
                         samples_per_second=step * bs / elapsed if elapsed > 0 else 0.0)
    emit(final)
    return final
