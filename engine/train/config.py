"""Training settings (train.json), validated, with the checks that need the model and the data."""

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine import (
    tasks,
)  # (a module: engine.tasks imports engine.train.options, which runs this package)
from engine.errors import ConfigError
from engine.train.options import LOSSES, OPTIMIZERS, SCHEDULES


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    loss: Literal[tuple(LOSSES)] | None = Field(
        None, description="None: the usual loss for the dataset's task."
    )
    optimizer: Literal[tuple(OPTIMIZERS)] = "adam"
    lr: float = Field(1e-3, gt=0, title="Learning rate")
    momentum: float = Field(
        0.9, ge=0, lt=1, title="Momentum", description="How much of the last step each step keeps."
    )
    nesterov: bool = Field(
        False,
        title="Nesterov momentum",
        description="Look ahead along the momentum before each step.",
    )
    weight_decay: float = Field(0.0, ge=0, le=1)
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(20, ge=1, le=10000)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    threads: int | None = Field(
        None, ge=1, description="CPU threads; None picks the fastest for the model."
    )
    class_weights: bool = Field(
        False,
        description="Weight each class's loss by how rare it is in the training "
        "split (classification).",
    )
    target: Literal["label", "input", "vae", "gan"] = Field(
        "label",
        description="label: predict the dataset's target; input: "
        "reconstruct the input (autoencoder); vae: reconstruct it through a Gaussian latent, with the KL term "
        "(variational autoencoder); gan: a generator learns to make samples a discriminator cannot tell from the "
        "data (GAN).",
    )
    g_lr: float | None = Field(
        None,
        gt=0,
        title="Generator learning rate",
        description="GAN: the generator's rate (None: the same as lr).",
    )
    d_steps: int = Field(
        1,
        ge=1,
        le=10,
        title="D steps per G step",
        description="GAN: discriminator steps before each generator step.",
    )
    gan_loss: Literal["non_saturating", "minimax"] = Field(
        "non_saturating",
        title="GAN loss",
        description="GAN: non_saturating (the generator maximises log D(G(z)): strong gradients early) or the "
        "original minimax (it minimises log(1 - D(G(z)))).",
    )
    beta: float = Field(
        1.0,
        ge=0,
        le=100,
        title="β (KL weight)",
        description="VAE: the weight of the KL term. Above 1, a smoother latent space and blurrier "
        "reconstructions; below 1, sharper reconstructions and worse samples.",
    )
    kl_warmup: int = Field(
        0,
        ge=0,
        le=1000,
        title="KL warm-up (epochs)",
        description="VAE: raise the KL weight from 0 to β over this many epochs, so the decoder learns to use "
        "the code before the KL term pulls it toward the prior (0 = off).",
    )
    flip: bool = Field(False, description="Augmentation: mirror images left-right at random.")
    crop_padding: int = Field(
        0,
        ge=0,
        le=16,
        description="Augmentation: pad images by this many pixels and crop "
        "back at a random offset (0 = off).",
    )
    rotation: float = Field(
        0.0, ge=0, le=45, description="Augmentation: rotate images by up to this many degrees."
    )
    noise: float = Field(
        0.0, ge=0, le=1, description="Augmentation: add Gaussian noise of this standard deviation."
    )
    memory_budget_mb: float = Field(
        4096, gt=0, description="Refuse models whose estimated training memory exceeds this."
    )
    # Learning-rate schedule (torch's schedulers; per optimizer step for cosine and one-cycle, per epoch else)
    scheduler: Literal[tuple(SCHEDULES)] = "none"
    step_size: int = Field(10, ge=1, title="Every (epochs)", description="Epochs between drops.")
    gamma: float = Field(
        0.1,
        title="Multiply by",
        gt=0,
        le=1,
        description="The factor each drop multiplies the rate by (per epoch for exponential decay).",
    )
    warmup_epochs: int = Field(
        0,
        ge=0,
        title="Warm-up epochs",
        description="Rise linearly to the learning rate first, then decay along a cosine.",
    )
    plateau_patience: int = Field(
        3,
        ge=0,
        title="Patience",
        description="Epochs without a better validation loss before the rate drops.",
    )
    # Early stopping
    early_stopping: int = Field(
        0, ge=0, description="Patience: stop after this many epochs without improvement (0 = off)."
    )
    monitor: Literal["val/loss", "val/accuracy", "val/mae"] = "val/loss"
    min_delta: float = Field(
        0.0, ge=0, description="The least change that counts as an improvement."
    )
    restore_best: bool = Field(True, description="End with the weights of the best epoch.")
    # Regularization and gradients
    l1: float = Field(
        0.0, ge=0, description="L1 penalty: this times the sum of |w| over the weight matrices."
    )
    l2: float = Field(
        0.0, ge=0, description="L2 penalty: this times the sum of w² over the weight matrices."
    )
    clip_grad_norm: float | None = Field(
        None, gt=0, description="Rescale gradients whose total norm exceeds this."
    )
    clip_grad_value: float | None = Field(None, gt=0, description="Clamp each gradient to ± this.")
    accumulate: int = Field(
        1, ge=1, le=1024, description="Batches per optimizer step (gradient accumulation)."
    )
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Classification: move this much of each target's "
        "probability evenly onto all classes.",
    )
    # Speed (defaults: safe on the CPU, fast on a GPU)
    precision: Literal["auto", "32", "bf16", "16"] = Field(
        "auto",
        description="auto: bf16 mixed precision on a CUDA GPU that supports it, 32-bit elsewhere; 16 is fp16 "
        "with loss scaling (CUDA only).",
    )
    compile: bool = Field(
        False, description="torch.compile the model: slower start, faster steps on a GPU."
    )
    channels_last: bool | None = Field(
        None,
        description="Image batches in channels-last memory order (None: on for "
        "images on a CUDA GPU).",
    )
    freeze: list[str] = Field(
        default_factory=list,
        description="Node ids whose weights stay fixed (fine-tuning: "
        "freeze the imported layers, train the rest).",
    )
    diagnostics: bool = Field(
        True, description="Sample gradient norms, histograms and dead ReLUs every few seconds."
    )

    @classmethod
    def parse(cls, data: dict) -> "TrainConfig":
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            e0 = e.errors()[0]
            field = ".".join(str(x) for x in e0["loc"])
            hints = {
                "lr": "Use a positive learning rate such as 0.001 (Adam) or 0.01 (SGD).",
                "batch_size": "Use a batch size of at least 1, such as 32.",
                "epochs": "Use at least 1 epoch.",
            }
            raise ConfigError(
                f"{field}: {e0['msg']} (got {e0.get('input')!r}). {hints.get(field, '')}".strip()
            ) from None


def losses_for_task(task: str, num_classes: int | None = None, target: str = "label") -> list[str]:
    return tasks.task_for(task, target).losses(num_classes)


def default_loss(task: str, target: str = "label") -> str:
    return tasks.task_for(task, target).default_loss


def resolve_device(name: str) -> torch.device:
    cuda, mps = (
        torch.cuda.is_available(),
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available(),
    )
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise ConfigError(
            "device 'cuda' was chosen but this machine has no CUDA GPU. Choose 'auto' or 'cpu'."
        )
    if name == "mps" and not mps:
        raise ConfigError(
            "device 'mps' was chosen but this machine has no Apple GPU. Choose 'auto' or 'cpu'."
        )
    return torch.device(name)


def resolve_precision(cfg: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, str]:
    """The autocast dtype (None: plain 32-bit) and the precision's name, for this device."""
    name = cfg.precision
    if name == "auto":
        name = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "32"
    if name == "16" and device.type != "cuda":
        raise ConfigError(
            f"precision 16 (fp16 with loss scaling) needs a CUDA GPU, and this run uses the "
            f"{device.type}: choose 32, or bf16."
        )
    return {"32": None, "bf16": torch.bfloat16, "16": torch.float16}[name], name


def check_compatible(
    cfg: TrainConfig, task: str, num_classes: int | None, out_shape, n_train: int, input_shape=None
) -> str:
    """Raise ConfigError if these settings cannot train this model on this data; return the loss to use."""
    kind = tasks.task_for(task, cfg.target)
    loss = cfg.loss or tasks.usual_loss(kind, input_shape)
    if loss not in kind.losses(num_classes):
        if LOSSES[loss].targets == "binary" and LOSSES[loss].task == kind.losses_for:
            raise ConfigError(
                "binary cross-entropy needs a 2-class target; use cross-entropy for "
                f"{num_classes} classes."
            )
        what = "reconstructing the input" if kind.outputs == "input" else f"this dataset ({task})"
        raise ConfigError(
            f"the loss '{loss}' is for {LOSSES[loss].task}, which does not fit {what}. "
            f"Choose one of: {', '.join(kind.losses(num_classes))}."
        )
    if kind.name == "vae" and LOSSES[loss].targets == "binary" and len(input_shape or ()) != 3:
        raise ConfigError(
            "binary cross-entropy reconstructs values between 0 and 1, such as an image's pixels, but this data "
            "holds scaled numbers that go below 0 and above 1: choose mean squared error."
        )
    out, want = tuple(out_shape), kind.output_shape(loss, num_classes, input_shape)
    if want is not None and out != want:
        if kind.outputs == "input":
            raise ConfigError(
                f"an autoencoder must output the input's shape {want} but this model outputs {out}: "
                f"end it with a Dense of {math.prod(want)} units"
                + (f" and a Reshape to {list(want)}." if len(want) > 1 else ".")
            )
        if LOSSES[loss].targets == "classes":
            raise ConfigError(
                f"the model outputs shape {out} but the dataset has {num_classes} classes: set the "
                f"last Dense layer's units to {num_classes} ({LOSSES[loss].title.lower()} wants one "
                "output per class)."
            )
        if kind.outputs == "tokens":
            raise ConfigError(
                f"a language model outputs a score for each of the {want[1]:,} tokens of the vocabulary at each of "
                f"the {want[0]} positions, {want}, but this model outputs {out}: end it with a Dense layer of "
                f"{want[1]:,} units applied to every position (no Flatten or pooling before it)."
            )
        if kind.outputs == "steps":
            raise ConfigError(
                f"a forecast of {want[0]} steps needs one output per step, but the model outputs {out}: set "
                f"the last Dense layer's units to {want[0]} (or change the horizon on the Data page)."
            )
        if LOSSES[loss].targets == "binary":
            raise ConfigError(
                f"binary cross-entropy needs one output, but the model outputs {out}: set the last "
                "Dense layer's units to 1, or choose cross-entropy."
            )
        raise ConfigError(
            f"{kind.title.lower()} needs one output, but the model outputs {out}: set the last Dense "
            "layer's units to 1."
        )
    if cfg.early_stopping and cfg.monitor not in kind.monitors():
        raise ConfigError(
            f"early stopping watches {cfg.monitor}, which this run does not report: watch "
            f"{' or '.join(kind.monitors())}."
        )
    if cfg.batch_size > n_train:
        raise ConfigError(
            f"the batch size {cfg.batch_size} is larger than the {n_train} training rows: choose a "
            f"batch size of at most {n_train} (32 or 64 is usual)."
        )
    return loss


@dataclass
class Preflight:
    """What training will do, decided before any step runs."""

    loss: str
    train_output: (
        str  # the node whose output the loss sees (the logits, when the model ends in softmax)
    )
    memory: dict
    notices: list[str]


def preflight(
    spec, infos, cfg: TrainConfig, task: str, num_classes: int | None, input_shape, n_train: int
) -> Preflight:
    """Every check that needs the model and the data; raises ConfigError with the fix."""
    from engine.compiler import memory_estimate

    shapes = {i.id: i.output_shape for i in infos}
    out_id = spec.output_id()
    latent = any(node.op == "gaussian_latent" for node in spec.nodes)
    if cfg.target == "vae" and not latent:
        raise ConfigError(
            "a variational autoencoder needs a Gaussian latent layer between its encoder and its decoder: add "
            "one (Generative), start from the MLP VAE template, or train a plain autoencoder."
        )
    if latent and cfg.target != "vae":
        raise ConfigError(
            "this model has a Gaussian latent layer, which trains only as a variational autoencoder (its KL term "
            "keeps the codes near the prior): train it as a VAE (CLI: --task vae), or replace the layer with a "
            "Dense one."
        )
    loss = check_compatible(cfg, task, num_classes, shapes[out_id], n_train, input_shape)
    resolve_precision(cfg, resolve_device(cfg.device))
    unknown = [nid for nid in cfg.freeze if nid not in shapes]
    if unknown:
        raise ConfigError(f"freeze names layer(s) this model does not have: {', '.join(unknown)}.")
    memory = memory_estimate(infos, cfg.batch_size, cfg.optimizer)
    budget = cfg.memory_budget_mb * 2**20
    if memory["total"] > budget:
        parts = ", ".join(f"{k} {v / 2**20:,.0f} MB" for k, v in memory.items() if k != "total")
        raise ConfigError(
            f"training this model at batch size {cfg.batch_size} needs about "
            f"{memory['total'] / 2**20:,.0f} MB ({parts}), over the memory budget of "
            f"{cfg.memory_budget_mb:,.0f} MB: lower the batch size, make the layers smaller, or raise "
            "the budget under Advanced."
        )
    notices, train_output = [], out_id
    last = next(n for n in spec.nodes if n.id == out_id)
    ending = last.params.get("kind") if last.op == "activation" else None
    needs = LOSSES[loss].needs
    if needs and ending != needs:
        raise ConfigError(
            f"{LOSSES[loss].title.lower()} expects the model to end in a {needs} activation, but it "
            f"ends in {ending or last.op}: add an Activation ({needs}) at the end, or choose "
            "cross-entropy."
        )
    squash = LOSSES[loss].applies
    if squash and ending == squash:
        train_output = spec.input_ids()[out_id][0]
        notices.append(
            f"The model ends in {squash} and {LOSSES[loss].title.lower()} applies {squash} itself, so "
            f"training uses the logits (the output of '{train_output}'); predictions still go through "
            f"{squash}."
        )
    return Preflight(loss, train_output, memory, notices)
