"""The learning-rate range test (Smith 2015, as fastai's lr_find): train a copy of the model for a few hundred
steps while the rate grows from `low` to `high` on a log scale, and watch the loss. The suggestion is the rate
where the (smoothed) loss falls fastest, before it turns up. The model's own weights are never touched: the test
trains a model of its own, built from the spec (and the run's starting weights, if any), and throws it away.
"""

import math
import time
from collections.abc import Callable

import numpy as np
import torch

from engine.data.store import Dataset
from engine.errors import ConfigError
from engine.gan import is_gan
from engine.tasks import task_for
from engine.train import core
from engine.train.config import TrainConfig
from engine.train.distributed import World

LOW, HIGH = 1e-7, 10.0
STEPS = 200
SMOOTHING = 0.9  # of the loss's moving average (bias-corrected)
DIVERGED = 4.0  # the test ends once the smoothed loss is this many times its lowest


def lr_range_test(
    spec: dict,
    dataset: Dataset,
    cfg: TrainConfig,
    *,
    low: float = LOW,
    high: float = HIGH,
    steps: int = STEPS,
    init_weights: dict | None = None,
    progress: Callable[[float, str], None] = lambda done, what: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict:
    """{"lrs", "losses" (smoothed), "raw", "suggestion", "steepest_at", "min_at", "stopped_at", "seconds"}."""
    from engine.train.loop import _setup, task_step

    if is_gan(spec):
        raise ConfigError(
            "the learning-rate finder trains one model: a GAN's two rates are set by hand."
        )
    if not 0 < low < high:
        raise ConfigError(f"the finder's range must rise from above 0 (got {low:g} to {high:g}).")
    if not 20 <= steps <= 2000:
        raise ConfigError(f"choose between 20 and 2,000 steps for the finder (got {steps}).")
    cfg = cfg.model_copy(update={"scheduler": None, "accumulate": 1, "early_stopping": None, "compile": False,
                                 "lr": low})  # fmt: skip
    s, _, _ = _setup(spec, dataset, cfg, init_weights, World())
    step = task_step(s, task_for(dataset.task, cfg.target))
    x_train, y_train = s.data[0], s.data[1]
    n, bs = len(y_train), cfg.batch_size
    factor = (high / low) ** (1 / (steps - 1))
    lrs, raw, smooth = [], [], []
    avg, best, t0, perm, at = 0.0, math.inf, time.perf_counter(), None, n
    s.model.train()
    for i in range(steps):
        if at + bs > n:  # a fresh shuffle once the rows run out (whole batches only)
            perm, at = torch.randperm(n, device=y_train.device, generator=s.gen), 0
        idx = perm[at : at + bs] if n > bs else perm
        at += bs
        lr = low * factor**i
        for group in s.optimizer.param_groups:
            group["lr"] = lr
        s.epoch_steps = i + 1
        loss = float(step(s, core.as_input(x_train[idx]), core.as_input(y_train[idx]), True))
        if not math.isfinite(loss):
            break
        avg = SMOOTHING * avg + (1 - SMOOTHING) * loss
        value = avg / (1 - SMOOTHING ** (i + 1))
        lrs.append(lr), raw.append(loss), smooth.append(value)
        best = min(best, value)
        progress((i + 1) / steps, f"Step {i + 1} of {steps}: rate {lr:.2g}, loss {value:.4g}")
        if (i > steps // 10 and value > DIVERGED * best) or should_stop():
            break
    result = {"lrs": lrs, "losses": smooth, "raw": raw, "stopped_at": len(lrs),
              "seconds": time.perf_counter() - t0, **suggest(lrs, smooth)}  # fmt: skip
    return result


def suggest(lrs: list[float], losses: list[float]) -> dict:
    """The rate of the steepest fall of the loss (per step of log rate) before its lowest point; the first
    tenth of the sweep is skipped (its slopes are noise while the moving average fills)."""
    if len(lrs) < 10:
        return {"suggestion": None, "steepest_at": None, "min_at": None}
    loss, logs = np.asarray(losses), np.log10(lrs)
    lowest = int(np.argmin(loss))
    skip = max(1, len(loss) // 10)
    if lowest <= skip + 1:
        return {"suggestion": None, "steepest_at": None, "min_at": lowest}
    slope = np.gradient(loss[: lowest + 1], logs[: lowest + 1])
    steepest = skip + int(np.argmin(slope[skip:]))
    return {"suggestion": float(lrs[steepest]), "steepest_at": steepest, "min_at": lowest}


# ---- as a job of its own process (the Train page's button; engine.jobs runs it)


def run_job(job: dict, progress: Callable[[float, str], None]) -> dict:
    """job: {"spec", "train", "dataset_dir"}."""
    from engine.data.folds import run_dataset

    return lr_range_test(
        job["spec"], run_dataset(job), TrainConfig.parse(job["train"]), progress=progress
    )
