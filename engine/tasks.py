"""The tasks LayerLab trains, one entry each: what output the data needs, which losses fit, which metrics
a run reports, how outputs become predictions, which Evaluate views apply, and (for a task with its own
training step) the step.

Preflight and the linter (output shape, losses), the Train page (loss choices, class weights, what early
stopping can watch), the starter model (its output width), evaluation and `fit` ask `task_for` instead of
deciding themselves. A task whose training is not "forward, loss, backward" (a VAE's KL term, a GAN's
two models, a language model's shifted targets) sets `step` and `validate` to functions of
`engine.train.core.State` and plugs into `core.train` without touching it.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.train import vae
from engine.train.options import LOSSES


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    losses_for: str  # the `Loss.task` its losses have ("classification" or "regression")
    default_loss: str
    metrics: tuple[str, ...]  # validation metrics beside the loss (early stopping may watch them)
    # outputs: "classes" (one per class; one logit with BCE), "value", "input", "steps" (one per step of a
    # forecast's horizon) or "tokens" (a score per vocabulary entry at each position)
    outputs: str
    # predictions: how outputs become them: "classes" (argmax, probabilities), "values" (in the target's units),
    # "reconstruction", "samples" (a VAE's: rebuilt and generated rows), "generated" (a GAN's), "forecast" or "text"
    predictions: str
    views: tuple[str, ...]  # the Evaluate page's views for it
    class_weights: bool = False  # whether weighting the loss by class rarity applies
    step: Callable | None = None  # core.standard_step when None: fn(state, xb, yb, last) -> loss
    validate: Callable | None = (
        None  # core.validate when None: fn(state) -> {"loss": ..., metric: ...}
    )
    # criterion: fn(state) -> the training criterion, where it is not the plan's loss alone (a VAE's adds the KL)
    criterion: Callable | None = None
    loss_names: tuple[
        str, ...
    ] = ()  # the losses that fit, where not every loss of `losses_for` does
    notes: dict = field(default_factory=dict)
    samples: str = "rows"  # what one sample of its data is called (a forecast's and a language model's: windows)

    def losses(self, num_classes: int | None = None) -> list[str]:
        """The losses that fit this task (binary cross-entropy only for two classes)."""
        if self.loss_names:
            return list(self.loss_names)
        names = [k for k, loss in LOSSES.items() if loss.task == self.losses_for]
        return [k for k in names if LOSSES[k].targets != "binary" or num_classes == 2]

    def output_shape(self, loss: str, num_classes: int | None, input_shape) -> tuple | None:
        """The model output shape the data needs with this loss (None: the task does not fix it).
        `num_classes`: what `width` says of the data (the classes, a forecast's horizon, a vocabulary)."""
        if self.outputs == "steps":
            return (num_classes,) if num_classes else None
        if self.outputs == "tokens":  # scores for every token of the vocabulary, at each position
            return (int(input_shape[0]), num_classes) if num_classes and input_shape else None
        if self.outputs == "input":
            return tuple(input_shape) if input_shape is not None else None
        if self.outputs == "classes":
            return (1,) if LOSSES[loss].targets == "binary" else (num_classes,)
        return (1,) if self.outputs == "value" else None

    def monitors(self) -> list[str]:
        return ["val/loss", *(f"val/{m}" for m in self.metrics[:1])]


def forecast_validate(s) -> dict[str, float]:
    """The validation loss and metrics, and the naive forecast's MAE beside the model's (the last value of each
    window repeated over the horizon; the target is the inputs' first column, scaled alike, and both are relative
    to that last value where the data is), in the series' units."""
    from engine.train.core import validate

    metrics = validate(s)
    x_val, y_val = s.data[2], s.data[3]
    naive = (x_val[:, -1, :1].float() - y_val).abs().mean().item() * s.plan.target_scale
    return {**metrics, "naive_mae": naive}


def language_model_validate(s) -> dict[str, float]:
    """The validation loss (cross-entropy per token, in nats) and accuracy, and the same loss in bits per token and
    as a perplexity."""
    from engine.train.core import validate

    metrics = validate(s)
    return {
        **metrics,
        "bits_per_token": metrics["loss"] / math.log(2),
        "perplexity": math.exp(min(metrics["loss"], 50.0)),
    }


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "classification",
            "Classification",
            "classification",
            "cross_entropy",
            ("accuracy",),
            "classes",
            "classes",
            ("summary", "confusion", "per_class", "roc", "calibration", "misclassified"),
            class_weights=True,
        ),
        Task(
            "regression",
            "Regression",
            "regression",
            "mse",
            ("mae", "r2"),
            "value",
            "values",
            ("summary", "scatter", "residuals", "worst"),
        ),
        Task(
            "reconstruction",
            "Reconstruction (autoencoder)",
            "regression",
            "mse",
            ("mae", "r2"),
            "input",
            "reconstruction",
            ("summary",),
        ),
        Task(
            "vae",
            "Variational autoencoder",
            "regression",
            "mse",
            ("reconstruction", "kl"),
            "input",
            "samples",
            ("vae",),
            validate=vae.validate,
            criterion=vae.criterion,
            loss_names=("bce_with_logits", "mse", "l1"),
        ),
        Task(
            "gan",
            "GAN",
            "classification",
            "bce_with_logits",
            ("d_loss", "g_loss", "d_real_accuracy", "d_fake_accuracy"),
            "input",
            "generated",
            ("gan",),
            loss_names=("bce_with_logits",),
        ),
        Task(
            "forecast",
            "Forecasting",
            "regression",
            "mse",
            ("mae", "r2", "naive_mae"),
            "steps",
            "forecast",
            ("forecast",),
            validate=forecast_validate,
            samples="windows",
        ),
        Task(
            "language_model",
            "Language model",
            "classification",
            "cross_entropy",
            ("accuracy", "bits_per_token", "perplexity"),
            "tokens",
            "text",
            ("text",),
            validate=language_model_validate,
            samples="windows",
        ),
    )
}


def task_for(data_task: str, target: str = "label") -> Task:
    """The task a run trains: the dataset's (classification, regression, or a registered one), or
    reconstruction when the target is the input itself, a VAE when it is the input through a Gaussian latent."""
    if target == "input":
        return TASKS["reconstruction"]
    if target in ("vae", "gan"):
        return TASKS[target]
    return TASKS[data_task]


def variational(spec: dict, meta: dict) -> bool:
    """Whether this model trains on this data as a VAE: it has a Gaussian latent layer (which trains only in a VAE),
    and the data is a table or images (windows of a series or of a text have targets of their own)."""
    return meta["task"] in ("classification", "regression") and any(
        node["op"] == "gaussian_latent" for node in spec["nodes"]
    )


def usual_loss(task: Task, input_shape) -> str:
    """The loss a run of this task takes unless told: for a VAE of images (values from 0 to 1), binary
    cross-entropy per pixel; else the task's default."""
    if task.name == "vae" and input_shape is not None and len(input_shape) == 3:
        return "bce_with_logits"
    return task.default_loss


def width(meta: dict) -> int | None:
    """What fixes the width of a model's output on this data besides its task: the number of classes, the horizon
    of a forecast, or a language model's vocabulary (`Task.output_shape`'s `num_classes`)."""
    if meta.get("task") == "language_model":
        return meta.get("vocab_size")
    return (
        len(meta.get("classes") or []) or (meta.get("preprocessing") or {}).get("horizon") or None
    )


def output_units(data_task: str, num_classes: int | None) -> int:
    """The width of a starter model's last Dense layer for this data."""
    task = task_for(data_task)
    shape = task.output_shape(task.default_loss, num_classes, None)
    return math.prod(shape) if shape else 1
