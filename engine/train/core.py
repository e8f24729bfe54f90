"""The training core: one short `train()` and the functions it is built from.

Portable: it imports torch and its two torch-only neighbours (`options`, `augment`) and nothing else, so a
bundle's train.py ships these three files verbatim. LayerLab's instrumentation (events, checkpoints,
diagnostics, the decision boundary, the stop file) plugs in as `Callback`s; a task with its own step (a VAE's
KL term, a GAN's two optimizers) passes `step` and `validate`.

Fast path: the tensors sit on the device and each step slices a shuffled index batch; losses add up on the
device and the host syncs a few times a second (SYNC_EVERY_S), never every step.
"""

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .augment import active as augment_active
from .augment import augment
from .options import LOSSES, build_optimizer

SYNC_EVERY_S = 0.25
EVAL_BATCH = 4096
DIVERGE_FACTOR = 100.0  # a loss this many times the untrained model's validation loss (and above 1): diverged


@dataclass
class Plan:
    """Decided once, before the first step, and recorded in `run_started`: nothing recomputes it."""
    loss: str
    output: str                   # the model's output layer
    train_output: str             # the layer the loss reads (the logits, when the loss applies the final squash)
    class_weights: list[float] | None = None
    label_smoothing: float = 0.0
    target_scale: float = 1.0     # a regression target's scale: the MAE in the target's own units
    eval_batch: int = EVAL_BATCH
    threads: int | None = None
    loss_ref: float | None = None  # the untrained model's validation loss: the yardstick for divergence


class Callback:
    """Named hooks `train` calls with the `State`. A hook may set `state.stop` to end the run."""

    def on_train_start(self, s): ...
    def on_sync(self, s): ...       # a few times a second; `s.window_loss` is the mean loss since the last
    def on_epoch_end(self, s): ...  # after validation; `s.metrics` holds the epoch's metrics
    def on_train_end(self, s): ...  # the weights are the last step's (before restore-best)


class Diverged(Exception):
    """The loss became NaN or infinite, or rose above the plan's limit."""


@dataclass
class State:
    """Everything `train` reads and changes. `net` is the model up to the loss's layer; `forward` may be
    its compiled twin."""
    cfg: object
    plan: Plan
    model: torch.nn.Module
    net: torch.nn.Module
    forward: torch.nn.Module
    data: tuple                   # x_train, y_train, x_val, y_val, on the device, targets shaped for the loss
    optimizer: torch.optim.Optimizer
    criterion: Callable
    gen: torch.Generator
    scheduler: object = None
    schedule_every: str | None = None
    autocast: Callable = contextlib.nullcontext
    scaler: object = None
    channels_last: bool = False
    # where the run is: the epoch, the offset of its next batch, its shuffle and running loss
    epoch: int = 1
    start: int = 0
    step: int = 0
    perm: torch.Tensor | None = None
    epoch_loss: object = 0.0
    epoch_steps: int = 0
    best: dict = field(default_factory=dict)
    best_state: dict | None = None
    waited: int = 0
    metrics: dict = field(default_factory=dict)
    elapsed_before: float = 0.0
    # what happened
    t_start: float = 0.0
    total_steps: int = 0
    t_epoch: float = 0.0          # when the epoch began
    window_loss: float = math.nan
    lr_used: float = math.nan     # the rate the last epoch ended with (before an epoch schedule's step)
    batch: tuple = (None, None)   # the last batch (x, y), for a look inside
    stop: bool = False
    status: str = "completed"
    early_stopped: bool = False
    diverged_at: float | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


def as_input(x: torch.Tensor) -> torch.Tensor:
    """Images are stored as uint8: scaled to [0, 1] on the device, one batch at a time."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def make_optimizer(cfg, params, device: torch.device) -> torch.optim.Optimizer:
    return build_optimizer(cfg.optimizer, params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                           nesterov=cfg.nesterov, device=device)


def make_scheduler(cfg, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
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
    return LOSSES[name].fn


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
    targets = LOSSES[loss_name].targets
    if targets == "classes":
        metrics["accuracy"] = (outs.argmax(1) == y).float().mean().item()
    elif targets == "binary":
        metrics["accuracy"] = ((outs > 0).float() == y).float().mean().item()
    else:
        metrics["mae"] = (outs - y).abs().mean().item() * target_scale
        ss_tot = ((y - y.mean()) ** 2).sum().clamp_min(1e-12)
        metrics["r2"] = (1 - ((outs - y) ** 2).sum() / ss_tot).item()
    return metrics


def prepare(cfg, plan: Plan, model, net, tensors: dict, device: torch.device, **speed) -> State:
    """The state before the first step: the splits on the device with targets shaped for the loss (the input
    itself for an autoencoder), the loss, optimizer, schedule and shuffling generator. `speed`: forward (a
    compiled `net`), autocast, scaler, channels_last."""
    x_train, x_val = tensors["x_train"].to(device), tensors["x_val"].to(device)
    if cfg.target == "input":
        y_train, y_val = x_train, x_val
    elif LOSSES[plan.loss].targets == "classes":
        y_train, y_val = tensors["y_train"].to(device, torch.long), tensors["y_val"].to(device, torch.long)
    else:  # one output per row: targets shaped (N, 1) like the model's output
        y_train, y_val = (tensors[k].to(device, torch.float32)[:, None] for k in ("y_train", "y_val"))
    weight = torch.tensor(plan.class_weights, dtype=torch.float32, device=device) if plan.class_weights else None
    optimizer = make_optimizer(cfg, (p for p in model.parameters() if p.requires_grad), device)
    steps = math.ceil(math.ceil(len(y_train) / cfg.batch_size) / cfg.accumulate)
    scheduler, every = make_scheduler(cfg, optimizer, steps)
    monitor = monitored(cfg)
    return State(cfg, plan, model, net, speed.pop("forward", None) or net, (x_train, y_train, x_val, y_val),
                 optimizer, loss_function(plan.loss, weight, plan.label_smoothing),
                 torch.Generator(device=device).manual_seed(cfg.seed), scheduler, every,
                 best={"epoch": None, monitor[0]: math.inf * monitor[1]}, **speed)


def monitored(cfg) -> tuple[str, float]:
    """What "best" means (the early-stopping monitor, else the validation loss) and its sign (-1: higher is
    better)."""
    name = cfg.monitor if cfg.early_stopping else "val/loss"
    return name, -1.0 if name == "val/accuracy" else 1.0


def optimizer_step(s: State) -> None:
    """Clip, step (through the loss scaler in fp16), clear the gradients, and advance a per-step schedule."""
    cfg, params = s.cfg, [p for g in s.optimizer.param_groups for p in g["params"]]
    if s.scaler is not None and (cfg.clip_grad_value or cfg.clip_grad_norm):
        s.scaler.unscale_(s.optimizer)
    if cfg.clip_grad_value is not None:
        torch.nn.utils.clip_grad_value_(params, cfg.clip_grad_value)
    if cfg.clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
    if s.scaler is not None:
        s.scaler.step(s.optimizer)
        s.scaler.update()
    else:
        s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    if s.schedule_every == "step":
        s.scheduler.step()


def standard_step(s: State, xb, yb, last: bool) -> torch.Tensor:
    """One batch: forward, loss (plus L1/L2 on the weight matrices), backward, and an optimizer step every
    `accumulate` batches and at the epoch's end. Returns the loss, detached, on the device."""
    cfg = s.cfg
    with s.autocast():
        loss = s.criterion(s.forward(xb), yb)
    if cfg.l1 or cfg.l2:
        loss = loss + sum(cfg.l1 * p.abs().sum() + cfg.l2 * p.square().sum()
                          for g in s.optimizer.param_groups for p in g["params"] if p.dim() > 1)
    scaled = loss / cfg.accumulate if cfg.accumulate > 1 else loss
    (s.scaler.scale(scaled) if s.scaler is not None else scaled).backward()
    if cfg.accumulate == 1 or s.epoch_steps % cfg.accumulate == 0 or last:
        optimizer_step(s)
    return loss.detach()


def validate(s: State) -> dict[str, float]:
    x_val, y_val = s.data[2:]
    return evaluate(s.net, x_val, y_val, s.plan.loss, s.plan.target_scale, s.autocast, s.plan.eval_batch)


def healthy(plan: Plan, value: float) -> bool:
    """False for NaN, infinite, or DIVERGE_FACTOR times the untrained model's validation loss (and above 1)."""
    return value <= (math.inf if plan.loss_ref is None else DIVERGE_FACTOR * max(plan.loss_ref, 1.0))


def check(s: State, value: float) -> None:
    if not healthy(s.plan, value):
        raise Diverged(value)


def train(s: State, callbacks=(), step=standard_step, validate=validate) -> State:
    """Epochs of shuffled batches from `s`'s position, validation after each, the best epoch kept, early stop
    and restore-best; `s.status` ends as completed, stopped (a hook set `stop`) or diverged."""
    cfg, (x_train, y_train, *_) = s.cfg, s.data
    n, bs = len(y_train), cfg.batch_size
    (monitor, sign), min_delta = monitored(cfg), cfg.min_delta if cfg.early_stopping else 0.0
    augmenting = augment_active(cfg) and cfg.target == "label"
    fire = lambda hook: [getattr(c, hook)(s) for c in callbacks]  # noqa: E731
    s.total_steps, s.t_start = math.ceil(n / bs) * cfg.epochs, time.perf_counter() - s.elapsed_before
    fire("on_train_start")
    next_sync = time.perf_counter() + SYNC_EVERY_S
    xb, yb = s.batch
    s.model.train()
    try:
        for epoch in range(s.epoch, cfg.epochs + 1):
            s.epoch, s.t_epoch = epoch, time.perf_counter()
            if s.start:  # resuming mid-epoch: its shuffle and running loss
                s.epoch_loss = torch.tensor(float(s.epoch_loss), device=y_train.device)
            else:
                s.perm = torch.randperm(n, device=y_train.device, generator=s.gen)
                s.epoch_loss, s.epoch_steps = torch.zeros((), device=y_train.device), 0
            window, synced = 0, s.epoch_loss.item()
            for start in range(s.start, n, bs):
                idx = s.perm[start:start + bs]
                xb, yb = as_input(x_train[idx]), as_input(y_train[idx])
                if augmenting:
                    xb = augment(xb, cfg, s.gen)
                if s.channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                s.epoch_steps, s.step, window = s.epoch_steps + 1, s.step + 1, window + 1
                s.epoch_loss += step(s, xb, yb, start + bs >= n)
                if time.perf_counter() >= next_sync:
                    total, s.start, s.batch = s.epoch_loss.item(), start + bs, (xb, yb)
                    s.window_loss, synced, window = (total - synced) / window, total, 0
                    fire("on_sync")
                    check(s, s.window_loss)
                    next_sync = time.perf_counter() + SYNC_EVERY_S
                    if s.stop:
                        break
            if not math.isfinite(s.epoch_loss.item()):
                raise Diverged(s.epoch_loss.item())
            if s.stop:
                s.status = "stopped"
                break
            s.start, s.batch = 0, (xb, yb)
            val = validate(s)
            check(s, val["loss"])
            s.metrics = {"train/loss": s.epoch_loss.item() / s.epoch_steps, **{f"val/{k}": v for k, v in val.items()}}
            s.lr_used = s.lr()
            if s.schedule_every == "epoch":
                s.scheduler.step()
            elif s.schedule_every == "plateau":
                s.scheduler.step(val["loss"])
            if sign * (s.best[monitor] - s.metrics[monitor]) > min_delta or s.best["epoch"] is None:
                s.best = {"epoch": s.epoch, **s.metrics}
                s.best_state, s.waited = {k: v.detach().to("cpu", copy=True) for k, v in s.model.state_dict().items()}, 0
            else:
                s.waited += 1
            fire("on_epoch_end")
            if cfg.early_stopping and s.waited >= cfg.early_stopping and s.epoch < cfg.epochs:
                s.early_stopped = True
                break
            if s.stop:
                s.status = "stopped"
                break
    except Diverged as e:
        s.status, s.diverged_at = "diverged", e.args[0]
    fire("on_train_end")
    if s.early_stopped and cfg.restore_best:
        s.model.load_state_dict(s.best_state)
        s.metrics = {k: v for k, v in s.best.items() if k != "epoch"}
    return s
