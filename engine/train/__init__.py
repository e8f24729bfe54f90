"""Training: config, optimizers and losses by name (options), the loop, and its typed events.

`fit` (engine.train.loop, which imports the whole training machinery) is loaded on first use, so a page that only
reads settings or runs does not pay for it."""

from engine.train.config import (
    TrainConfig,
    check_compatible,
    default_loss,
    losses_for_task,
    resolve_device,
)

__all__ = [
    "TrainConfig",
    "check_compatible",
    "default_loss",
    "fit",
    "losses_for_task",
    "resolve_device",
]


def __getattr__(name: str):
    if name == "fit":
        from engine.train.loop import fit

        return fit
    raise AttributeError(f"module 'engine.train' has no attribute {name!r}")
