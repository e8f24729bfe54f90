"""The training core: one short `train()` and the step, evaluation and set-up it is built from.

Portable: it imports torch and its torch-only neighbours (`state`: the plan, the state and the hooks;
`options`: optimizers, schedules and losses; `augment`) and nothing else, so a bundle's train.py
ships these files verbatim. LayerLab's
instrumentation (events, checkpoints, diagnostics, the decision boundary, stop requests) plugs in as
`Callback`s; a task with its own step (a VAE's KL term, a GAN's two optimizers) passes `step` and
`validate` (see engine/tasks.py).

Fast path: the tensors sit on the device and each step slices a shuffled index batch; losses add up
on the device and the host syncs a few times a second (SYNC_EVERY_S), never every step.
"""

import contextlib
import math
import time

import torch

from .augment import active as augment_active
from .augment import augment
from .options import LOSSES, build_optimizer, build_scheduler, loss_function
from .state import Plan, State

SYNC_EVERY_S = 0.25
DIVERGE_FACTOR = 100.0  # this many times the untrained model's validation loss (and above 1)


class Diverged(Exception):
    """The loss became NaN or infinite, or rose above DIVERGE_FACTOR times the untrained model's."""


def as_input(x: torch.Tensor) -> torch.Tensor:
    """Images are stored as uint8: scaled to [0, 1] on the device, one batch at a time."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


@torch.no_grad()
def evaluate(net, x, y, plan: Plan, autocast=contextlib.nullcontext) -> dict[str, float]:
    """The loss and the task's metrics over a whole split (eval mode, in plan.eval_batch rows)."""
    was_training, b = net.training, plan.eval_batch
    net.eval()
    with autocast():
        outs = torch.cat([net(as_input(x[i : i + b])) for i in range(0, len(x), b)]).float()
    net.train(was_training)
    y, targets = as_input(y), LOSSES[plan.loss].targets
    metrics = {"loss": loss_function(plan.loss)(outs, y).item()}
    if targets == "classes":
        metrics["accuracy"] = (outs.argmax(-1) == y).float().mean().item()
    elif targets == "binary":
        metrics["accuracy"] = ((outs > 0).float() == y).float().mean().item()
    else:
        metrics["mae"] = (outs - y).abs().mean().item() * plan.target_scale
        ss_tot = ((y - y.mean()) ** 2).sum().clamp_min(1e-12)
        metrics["r2"] = (1 - ((outs - y) ** 2).sum() / ss_tot).item()
    return metrics


def prepare(cfg, plan: Plan, model, net, tensors: dict, device, **speed) -> State:
    """The state before the first step: the splits on the device with the targets shaped for the loss
    (the input itself for an autoencoder), the loss, optimizer, schedule and shuffling generator.
    `speed`: forward (a compiled `net`), autocast, scaler, channels_last."""
    x_train, x_val = tensors["x_train"].to(device), tensors["x_val"].to(device)
    y_train, y_val = (tensors[k] for k in ("y_train", "y_val"))
    if cfg.target in ("input", "vae"):
        y_train, y_val = x_train, x_val
    elif LOSSES[plan.loss].targets == "classes":
        y_train, y_val = y_train.to(device, torch.long), y_val.to(device, torch.long)
    else:  # numbers: targets shaped like the model's output ((N, 1) for one number a row)
        y_train, y_val = (
            y.to(device, torch.float32)[:, None] if y.ndim == 1 else y.to(device, torch.float32)
            for y in (y_train, y_val)
        )
    weight = torch.tensor(plan.class_weights, device=device) if plan.class_weights else None
    optimizer = build_optimizer(cfg, (p for p in model.parameters() if p.requires_grad), device)
    steps = math.ceil(math.ceil(len(y_train) / cfg.batch_size) / cfg.accumulate)
    monitor, sign = monitored(cfg)
    s = State(
        cfg,
        plan,
        model,
        net,
        speed.pop("forward", net),
        (x_train, y_train, x_val, y_val),
        optimizer,
        loss_function(plan.loss, weight, plan.label_smoothing),
        torch.Generator(device=device).manual_seed(cfg.seed),
        **speed,
    )
    s.scheduler, s.schedule_every = build_scheduler(cfg, optimizer, steps)
    s.best = {"epoch": None, monitor: math.inf * sign}
    return s


def monitored(cfg) -> tuple[str, float]:
    """What "best" means (the early-stopping monitor, else the validation loss), and -1.0 where
    higher is better."""
    name = cfg.monitor if cfg.early_stopping else "val/loss"
    return name, -1.0 if name == "val/accuracy" else 1.0


def optimizer_step(s: State) -> None:
    """Clip, step (through the loss scaler in fp16), clear the gradients, advance a per-step schedule."""
    cfg = s.cfg
    if cfg.clip_grad_value is not None or cfg.clip_grad_norm is not None:
        params = [p for g in s.optimizer.param_groups for p in g["params"]]
        if s.scaler is not None:
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
    """One batch: forward, loss (plus L1/L2 on the weight matrices; weighted by the rank's `share`
    of the batch), backward, and an optimizer step every `accumulate` batches and at the epoch's
    end. Returns the loss, detached."""
    cfg = s.cfg
    with s.autocast():
        loss = s.criterion(s.forward(xb), yb)
    if cfg.l1 or cfg.l2:
        weights = [p for g in s.optimizer.param_groups for p in g["params"] if p.dim() > 1]
        loss = loss + sum(cfg.l1 * p.abs().sum() + cfg.l2 * p.square().sum() for p in weights)
    if s.share != 1.0:  # several processes: this rank's part of the global batch (see `shard`)
        loss = loss * s.share
    every, scaler = cfg.accumulate, s.scaler
    scaled = loss / every if every > 1 else loss
    (scaler.scale(scaled) if scaler is not None else scaled).backward()
    if every == 1 or s.epoch_steps % every == 0 or last:
        optimizer_step(s)
    return loss.detach()


def validate(s: State) -> dict[str, float]:
    return evaluate(s.net, *s.data[2:], s.plan, s.autocast)


def healthy(plan: Plan, value: float) -> bool:
    """False for a NaN or infinite loss, or one DIVERGE_FACTOR times the untrained model's."""
    ref = plan.loss_ref
    return value <= (math.inf if ref is None else DIVERGE_FACTOR * max(ref, 1.0))


def check(s: State, value: float) -> None:
    if not healthy(s.plan, value):
        raise Diverged(value)


def shard(idx: torch.Tensor, rank: int, world: int) -> tuple[torch.Tensor, float]:
    """This rank's part of a global batch (contiguous; the parts differ by one row at most) and its
    weight in the batch's mean loss: rows x world / batch rows, so that the ranks' gradients,
    averaged by DDP, are the one-process gradient, a ragged last batch included. A rank left
    without a row takes one at weight 0 and still joins the all-reduce."""
    mine = idx.tensor_split(world)[rank]
    if len(mine) == 0:
        return idx[:1], 0.0
    return mine, len(mine) * world / len(idx)


def share(s: State, *values) -> list[float]:
    """The sums over the ranks of each rank's `values`, in one all-reduce of a small tensor; the
    values themselves in a world of one."""
    if s.world == 1:
        return [float(v) for v in values]
    device = s.data[1].device
    t = torch.stack([torch.as_tensor(v, device=device).double().reshape(()) for v in values])
    torch.distributed.all_reduce(t)
    return t.tolist()


def broadcast(value, world: int = 1):
    """Rank 0's `value` (a small picklable object) on every rank."""
    if world == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather(value, world: int = 1) -> list:
    """Every rank's `value`, in rank order, on every rank."""
    if world == 1:
        return [value]
    out = [None] * world
    torch.distributed.all_gather_object(out, value)
    return out


def rng_state(s: State) -> dict:
    """This rank's random streams (dropout's and, with several processes, augmentation's)."""
    cuda = s.data[1].device.type == "cuda"
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if cuda else None,
        "aug": s.aug_gen.get_state() if s.aug_gen is not None else None,
    }


def train(s: State, callbacks=(), step=standard_step, validate=validate) -> State:
    """Epochs of shuffled batches from `s`'s position, validation after each, the best epoch kept,
    early stop and restore-best. `s.status` ends completed, stopped (a hook set `stop`) or diverged.

    With several processes (`s.world` > 1) every rank runs this with the same shuffle and takes its
    share of each batch (`shard`). Only rank 0 has callbacks. Rank 0 times the syncs, in steps, and
    its stop request, the ranks' summed losses and the next sync's step travel in one all-reduce
    (`share`), so no rank waits in a collective another skipped; rank 0 validates and sends the
    metrics to all, so every rank takes the same decisions (best, early stop, divergence)."""
    cfg, (x_train, y_train, *_) = s.cfg, s.data
    n, bs, device = len(y_train), cfg.batch_size, y_train.device
    (monitor, sign), min_delta = monitored(cfg), cfg.min_delta if cfg.early_stopping else 0.0
    augmenting = augment_active(cfg) and cfg.target == "label"
    fire = lambda hook: [getattr(c, hook)(s) for c in callbacks]  # noqa: E731
    many, lead, halt = s.world > 1, s.rank == 0, False
    s.total_steps = math.ceil(n / bs) * cfg.epochs
    s.t_start = time.perf_counter() - s.elapsed_before
    fire("on_train_start")
    next_sync, (xb, yb) = time.perf_counter() + SYNC_EVERY_S, s.batch
    next_step, t_sync = s.step + 1, time.perf_counter()  # several processes: syncs counted in steps
    s.model.train()
    try:
        for epoch in range(s.epoch, cfg.epochs + 1):
            s.epoch, s.t_epoch = epoch, time.perf_counter()
            if s.start:  # resuming mid-epoch: its shuffle and running loss
                s.epoch_loss = torch.tensor(float(s.epoch_loss), device=device)
            else:
                s.perm = torch.randperm(n, device=device, generator=s.gen)
                s.epoch_loss, s.epoch_steps = torch.zeros((), device=device), 0
            window, synced = 0, s.epoch_loss.item()
            for start in range(s.start, n, bs):
                idx = s.perm[start : start + bs]
                if many:
                    idx, s.share = shard(idx, s.rank, s.world)
                xb, yb = as_input(x_train[idx]), as_input(y_train[idx])
                if augmenting:
                    xb = augment(xb, cfg, s.aug_gen if many else s.gen)
                if s.channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                s.epoch_steps, s.step, window = s.epoch_steps + 1, s.step + 1, window + 1
                s.epoch_loss += step(s, xb, yb, start + bs >= n)
                if s.step >= next_step if many else time.perf_counter() >= next_sync:
                    s.start, s.batch = start + bs, (xb, yb)
                    if many:
                        now = time.perf_counter()
                        pace = round(SYNC_EVERY_S * window / max(now - t_sync, 1e-9))
                        pace = max(1, min(pace, 10 * window))  # at most 10x longer each time
                        total, halt, pace = share(s, s.epoch_loss, s.stop, pace if lead else 0)
                        total, next_step, t_sync = total / s.world, s.step + int(pace), now
                    else:
                        total = s.epoch_loss.item()
                    s.window_loss, synced, window = (total - synced) / window, total, 0
                    if halt:  # several processes: a stop that every rank now knows of
                        s.stop, s.epoch_loss = True, torch.tensor(total, device=device)
                        break
                    fire("on_sync")
                    check(s, s.window_loss)
                    next_sync = time.perf_counter() + SYNC_EVERY_S
                    if s.stop and not many:
                        break
            if halt:
                break
            if many:
                train_loss = share(s, s.epoch_loss)[0] / s.world / s.epoch_steps
            else:
                train_loss = s.epoch_loss.item() / s.epoch_steps
            if not math.isfinite(train_loss):
                raise Diverged(train_loss)
            if s.stop and not many:
                break
            s.start, s.batch = 0, (xb, yb)
            val = broadcast(validate(s) if lead else None, s.world)
            check(s, val["loss"])
            if many:
                s.rngs = gather(rng_state(s), s.world)
            s.metrics = {"train/loss": train_loss, **{f"val/{k}": v for k, v in val.items()}}
            s.lr_used = s.lr()
            if s.schedule_every == "epoch":
                s.scheduler.step()
            elif s.schedule_every == "plateau":
                s.scheduler.step(val["loss"])
            if s.best["epoch"] is None or sign * (s.best[monitor] - s.metrics[monitor]) > min_delta:
                s.best, s.waited = {"epoch": s.epoch, **s.metrics}, 0
                s.best_state = {
                    k: v.detach().to("cpu", copy=True) for k, v in s.model.state_dict().items()
                }
            else:
                s.waited += 1
            fire("on_epoch_end")
            if cfg.early_stopping and s.waited >= cfg.early_stopping and s.epoch < cfg.epochs:
                s.early_stopped = True
                break
            if (
                s.stop and not many
            ):  # several processes: a stop asked now is shared at the next sync
                break
    except Diverged as e:
        s.status, s.diverged_at = "diverged", e.args[0]
    if s.stop and s.status == "completed" and not s.early_stopped:
        s.status = "stopped"
    if halt:
        s.rngs = gather(rng_state(s), s.world)
    fire("on_train_end")
    if s.early_stopped and cfg.restore_best:
        s.model.load_state_dict(s.best_state)
        s.metrics = {k: v for k, v in s.best.items() if k != "epoch"}
    return s
