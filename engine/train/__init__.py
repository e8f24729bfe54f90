"""Training: config, losses and optimizers by name, the loop, and its typed events."""

from engine.train.config import TrainConfig, check_compatible, default_loss, losses_for_task, resolve_device
from engine.train.loop import fit

__all__ = ["TrainConfig", "check_compatible", "default_loss", "fit", "losses_for_task", "resolve_device"]
