"""The optimizers and losses LayerLab trains with, one entry each: the one place a training option is described.

`TrainConfig` takes its choices from here, the loop builds from here, the memory estimate reads each optimizer's
state size, the CLI's choices and the Train page's options and help text are derived from here. Adding an optimizer
or a loss is one entry. Imports only torch.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Optimizer:
    name: str
    title: str
    description: str
    build: type  # the torch.optim class
    state: int  # tensors of state it keeps per parameter (for the memory estimate)
    usual_lr: float  # a learning rate that usually works (divergence advice)
    settings: tuple[str, ...] = ()  # TrainConfig fields it takes beyond lr and weight decay (the
    #                                   Train page draws them from TrainConfig's schema)
    fused: bool = False  # has torch's fused kernels (faster steps)


OPTIMIZERS: dict[str, Optimizer] = {
    o.name: o
    for o in (
        Optimizer(
            "adam",
            "Adam",
            "Adaptive moments: a good default for most models.",
            torch.optim.Adam,
            2,
            1e-3,
            fused=True,
        ),
        Optimizer(
            "adamw",
            "AdamW",
            "Adam with decoupled weight decay: the usual choice for transformers.",
            torch.optim.AdamW,
            2,
            1e-3,
            fused=True,
        ),
        Optimizer(
            "sgd",
            "SGD",
            "Plain gradient descent, with momentum and Nesterov: can generalize best, with tuning.",
            torch.optim.SGD,
            1,
            1e-2,
            settings=("momentum", "nesterov"),
            fused=True,
        ),
        Optimizer(
            "rmsprop",
            "RMSprop",
            "Divides by a running average of squared gradients: common for RNNs.",
            torch.optim.RMSprop,
            2,
            1e-3,
            settings=("momentum",),
        ),
        Optimizer(
            "adagrad",
            "Adagrad",
            "Per-weight rates that shrink with the gradients seen: suits sparse features.",
            torch.optim.Adagrad,
            1,
            1e-2,
            fused=True,
        ),
        Optimizer(
            "adadelta",
            "Adadelta",
            "Adagrad without the ever-shrinking rate; a learning rate of 1.0 is usual.",
            torch.optim.Adadelta,
            2,
            1.0,
        ),
        Optimizer(
            "adamax",
            "Adamax",
            "Adam with the infinity norm: steadier with large or rare gradients.",
            torch.optim.Adamax,
            2,
            2e-3,
        ),
        Optimizer("nadam", "NAdam", "Adam with Nesterov momentum.", torch.optim.NAdam, 2, 2e-3),
        Optimizer(
            "radam",
            "RAdam",
            "Adam with a rectified warm-up of its variance: less sensitive to the rate.",
            torch.optim.RAdam,
            2,
            1e-3,
        ),
        Optimizer(
            "asgd", "ASGD", "SGD that averages the weights it visits.", torch.optim.ASGD, 1, 1e-2
        ),
        Optimizer(
            "adafactor",
            "Adafactor",
            "Adam-like steps from factored second moments: little optimizer memory "
            "for big weight matrices.",
            torch.optim.Adafactor,
            1,
            1e-2,
        ),
    )
}


def build_optimizer(cfg, params, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer `cfg.optimizer` names, with the config's rate, weight decay and momentum."""
    spec = OPTIMIZERS[cfg.optimizer]
    kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    kwargs.update({name: getattr(cfg, name) for name in spec.settings})
    if "nesterov" in kwargs:  # (torch refuses Nesterov without momentum)
        kwargs["nesterov"] = cfg.nesterov and cfg.momentum > 0
    params = list(params)
    # Fused kernels: 1.5-1.6x on CPU at batch 32 (torch defaults to the per-parameter loop there).
    if spec.fused and device.type in ("cpu", "cuda", "mps"):
        try:
            return spec.build(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            pass
    return spec.build(params, **kwargs)


@dataclass(frozen=True)
class Loss:
    name: str
    title: str
    task: str  # "classification" (logits against class labels) or "regression" (numbers)
    description: str
    fn: Callable
    targets: str = (
        "values"  # "classes" (one output per class, index targets), "binary" (one logit), "values"
    )
    applies: str | None = (
        None  # the final activation it applies itself (a model ending in it trains on logits)
    )
    needs: str | None = None  # the final activation the model must end in


def _kl_div(
    out: torch.Tensor, y: torch.Tensor, smoothing: float = 0.0, weight=None
) -> torch.Tensor:
    """KL(target || predicted) per row, averaged (weighted by class when `weight` is given); the target
    is the class's one-hot distribution, with `smoothing` spread evenly over the classes."""
    target = F.one_hot(y, out.shape[1]).float()
    if smoothing:
        target = target * (1 - smoothing) + smoothing / out.shape[1]
    per_row = F.kl_div(out, target, reduction="none").sum(1)
    return per_row.mean() if weight is None else (per_row * weight[y]).sum() / weight[y].sum()


LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in (
        Loss(
            "cross_entropy",
            "Cross-entropy",
            "classification",
            "For classes; it applies softmax itself.",
            F.cross_entropy,
            targets="classes",
            applies="softmax",
        ),
        Loss(
            "bce_with_logits",
            "Binary cross-entropy (logits)",
            "classification",
            "For two classes with one output; it applies the sigmoid itself.",
            F.binary_cross_entropy_with_logits,
            targets="binary",
            applies="sigmoid",
        ),
        Loss(
            "nll",
            "Negative log-likelihood",
            "classification",
            "For classes, on log-probabilities: the model ends in "
            "a log-softmax activation (together they are cross-entropy).",
            F.nll_loss,
            targets="classes",
            needs="log_softmax",
        ),
        Loss(
            "kl_div",
            "KL divergence",
            "classification",
            "For classes, on log-probabilities (a log-softmax at the end): how far the predicted "
            "distribution is from the target's (one-hot, or smoothed with label smoothing).",
            _kl_div,
            targets="classes",
            needs="log_softmax",
        ),
        Loss(
            "mse",
            "Mean squared error",
            "regression",
            "For numbers: large errors weigh most.",
            F.mse_loss,
        ),
        Loss(
            "l1",
            "Mean absolute error (L1)",
            "regression",
            "For numbers: every error weighs by its size; robust to outliers.",
            F.l1_loss,
        ),
        Loss(
            "huber",
            "Huber",
            "regression",
            "Squared for small errors, absolute for large ones.",
            F.huber_loss,
        ),
        Loss(
            "smooth_l1",
            "Smooth L1",
            "regression",
            "Huber scaled by its threshold (as in object detection).",
            F.smooth_l1_loss,
        ),
    )
}


def per_position(fn: Callable) -> Callable:
    """A class loss that also takes class scores at every position of a sequence ((N, T, C) against (N, T) labels,
    a language model's): each position counts as a row."""

    def loss(out, y):
        if out.dim() == 3 and y.dim() == 2:
            return fn(out.flatten(0, 1), y.flatten())
        return fn(out, y)

    return loss


def loss_function(
    name: str, weight: torch.Tensor | None = None, label_smoothing: float = 0.0
) -> Callable:
    """The loss by name; `weight` holds per-class weights (cross-entropy, NLL, KL) or the positive
    class's (BCE). Class losses take a sequence's positions as rows (`per_position`)."""
    fn = _loss_function(name, weight, label_smoothing)
    return per_position(fn) if LOSSES[name].targets == "classes" else fn


def _loss_function(name: str, weight: torch.Tensor | None, label_smoothing: float) -> Callable:
    if name == "cross_entropy" and (weight is not None or label_smoothing):
        return lambda out, y: F.cross_entropy(
            out, y, weight=weight, label_smoothing=label_smoothing
        )
    if name == "bce_with_logits" and (weight is not None or label_smoothing):
        pos_weight = None if weight is None else weight[1:] / weight[0]
        return lambda out, y: F.binary_cross_entropy_with_logits(
            out, y * (1 - label_smoothing) + 0.5 * label_smoothing, pos_weight=pos_weight
        )
    if name == "kl_div" and (weight is not None or label_smoothing):
        return lambda out, y: _kl_div(out, y, label_smoothing, weight)
    if name == "nll" and weight is not None:  # (label smoothing needs the logits: cross-entropy)
        return lambda out, y: F.nll_loss(out, y, weight=weight)
    return LOSSES[name].fn


@dataclass(frozen=True)
class Schedule:
    name: str
    title: str
    description: str  # what it does; torch's scheduler is built by build_scheduler
    settings: tuple[str, ...] = ()  # the TrainConfig fields it reads (the Train page draws them)


SCHEDULES: dict[str, Schedule] = {
    s.name: s
    for s in (
        Schedule("none", "Constant", "The learning rate stays as set."),
        Schedule(
            "step",
            "Step decay",
            "Multiply the rate by a factor every few epochs.",
            ("step_size", "gamma"),
        ),
        Schedule(
            "exponential",
            "Exponential decay",
            "Multiply the rate by a factor every epoch.",
            ("gamma",),
        ),
        Schedule(
            "cosine",
            "Cosine (with warm-up)",
            "Rise linearly for some epochs, then fall along a cosine to zero.",
            ("warmup_epochs",),
        ),
        Schedule(
            "onecycle",
            "One-cycle",
            "Rise to the rate and fall far below it over the run (super-convergence).",
        ),
        Schedule(
            "plateau",
            "Reduce on plateau",
            "Multiply the rate by a factor when the validation loss stops improving.",
            ("plateau_patience", "gamma"),
        ),
    )
}


def build_scheduler(cfg, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """torch's scheduler for the chosen schedule, and when it steps: "step" (each optimizer step), "epoch" or
    "plateau" (each epoch, given the validation loss); (None, None) for a constant rate."""
    sched = torch.optim.lr_scheduler
    total = steps_per_epoch * cfg.epochs
    if cfg.scheduler == "step":
        return sched.StepLR(optimizer, cfg.step_size, cfg.gamma), "epoch"
    if cfg.scheduler == "exponential":
        return sched.ExponentialLR(optimizer, cfg.gamma), "epoch"
    if cfg.scheduler == "plateau":
        return sched.ReduceLROnPlateau(
            optimizer, factor=cfg.gamma, patience=cfg.plateau_patience
        ), "plateau"
    if cfg.scheduler == "onecycle":
        cycles = (
            "momentum" in optimizer.defaults or "betas" in optimizer.defaults
        )  # (Adagrad, ASGD have neither)
        return sched.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total, cycle_momentum=cycles
        ), "step"
    if cfg.scheduler == "cosine":
        warm = min(cfg.warmup_epochs * steps_per_epoch, total - 1)
        cosine = sched.CosineAnnealingLR(optimizer, T_max=max(total - warm, 1))
        if not warm:
            return cosine, "step"
        warmup = sched.LinearLR(optimizer, start_factor=1 / (warm + 1), total_iters=warm)
        return sched.SequentialLR(optimizer, [warmup, cosine], milestones=[warm]), "step"
    return None, None
