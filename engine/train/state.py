"""What the training core and its plug-ins share: the plan decided before the first step, the state
`core.train` reads and changes, and the hooks a callback implements. Imports only torch."""

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

EVAL_BATCH = 4096


@dataclass
class Plan:
    """Decided once, before the first step, and recorded in `run_started`: nothing recomputes it.
    `train_output` is the layer the loss reads (the logits when the loss applies the final squash
    itself); `target_scale` turns the MAE into the target's own units; `loss_ref` is the untrained
    model's validation loss, the yardstick for divergence."""

    loss: str
    output: str
    train_output: str
    class_weights: list[float] | None = None
    label_smoothing: float = 0.0
    target_scale: float = 1.0
    eval_batch: int = EVAL_BATCH
    threads: int | None = None
    loss_ref: float | None = None


class Callback:
    """Hooks `train` calls with the `State`, in this order; any may set `state.stop`. on_sync: a few
    times a second (`window_loss` is the mean loss since the last); on_epoch_end: after validation
    (`metrics`); on_train_end: with the last step's weights, before restore-best."""

    def on_train_start(self, s): ...
    def on_sync(self, s): ...
    def on_epoch_end(self, s): ...
    def on_train_end(self, s): ...


@dataclass
class State:
    """All `train` reads and changes. `net` is the model up to the loss's layer, `forward` maybe its
    compiled twin; `data` holds x_train, y_train, x_val, y_val on the device, the targets shaped for
    the loss. The position: `epoch`, the offset of its next batch (`start`), its shuffle (`perm`),
    the same on every rank of a world of several processes."""

    cfg: object
    plan: Plan
    model: torch.nn.Module
    net: torch.nn.Module
    forward: torch.nn.Module
    data: tuple
    optimizer: torch.optim.Optimizer
    criterion: Callable
    gen: torch.Generator
    scheduler: object = None
    schedule_every: str | None = None  # "step", "epoch" or "plateau"
    autocast: Callable = contextlib.nullcontext
    scaler: object = None
    channels_last: bool = False
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
    t_start: float = 0.0
    t_epoch: float = 0.0
    total_steps: int = 0
    window_loss: float = math.nan
    lr_used: float = math.nan  # the last epoch's rate, before an epoch schedule stepped
    batch: tuple = (None, None)  # the latest batch (x, y), for a look inside
    stop: bool = False
    rank: int = 0  # this process's place in a world of `world` processes (engine.train.distributed)
    world: int = 1
    share: float = 1.0  # the weight of this rank's part of the batch in the global batch's loss
    aug_gen: torch.Generator | None = None  # several processes: each rank's own augmentation stream
    rngs: list | None = (
        None  # several processes: each rank's random states, gathered for a checkpoint
    )
    status: str = "completed"  # or "stopped", "diverged"
    early_stopped: bool = False
    diverged_at: float | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])
