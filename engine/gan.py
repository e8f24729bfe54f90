"""Generative adversarial networks: a generator (noise of a chosen size to a sample) and a discriminator (a sample to
one logit), two graphs in one spec, trained in alternation.

A GAN spec is `{"kind": "gan", "noise": Z, "generator": spec, "discriminator": spec}`; each part is an ordinary model
spec (engine.spec), so the compiler, the linter and the code writer handle either. The generator reads one input,
`noise`, of Z numbers drawn from N(0, 1); its output must have the data's shape. The discriminator reads the data.

Training (`fit_gan`): per batch of real rows, `d_steps` discriminator steps on real and generated samples (the
non-saturating loss by default, real targets smoothed by `label_smoothing`), then a generator step; two optimizers,
each with its own learning rate (`lr` for the discriminator, `g_lr` for the generator). Each epoch reports the
losses and the discriminator's accuracy on real and on generated samples of the validation split, and, on 2-D points
with labelled modes, how many modes the generated points cover. The generator is the run's model.safetensors (what
Export, Predict and `generate` use); the discriminator is discriminator.safetensors.
"""

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.compiler import compile_spec
from engine.errors import ConfigError, SpecError
from engine.portable import as_input, generator_samples, shown_samples
from engine.spec import SPEC_VERSION, data_inputs, parse_spec
from engine.workspace import atomic_write_json

NOISE = "noise"  # the generator's one input
SAMPLES_FILE = "gan_samples.json"  # the fixed-noise samples, redrawn while training
VIEW_SAMPLES = 64  # fixed-noise samples in the live view (points: 1,000)
VIEW_POINTS = 1000
VAL_ROWS = 2048  # validation rows (and as many generated) each epoch's metrics read
DISCRIMINATOR = "discriminator.safetensors"


class GanSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = SPEC_VERSION
    kind: str = Field("gan", pattern="^gan$")
    noise: int = Field(
        16,
        ge=1,
        le=1024,
        title="Noise size",
        description="How many random numbers the generator turns into a sample.",
    )
    generator: dict
    discriminator: dict

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "kind": "gan",
            "noise": self.noise,
            "generator": parse_spec(self.generator).to_dict(),
            "discriminator": parse_spec(self.discriminator).to_dict(),
        }


def gan_train(meta: dict) -> dict:
    """The settings a starter GAN trains with (Adam's β1 is 0.5 for both networks): points learn fast at a rate of
    0.001; images at 0.0002, the usual rate for GANs of images."""
    if len(meta["input_shape"]) == 3:
        return {"target": "gan", "epochs": 100, "lr": 0.0002, "batch_size": 64}
    return {"target": "gan", "epochs": 200, "lr": 0.001, "batch_size": 64}


def starter_gan(meta: dict) -> dict:
    """The GAN a dataset gets: MLPs both ways (LeakyReLU in the discriminator); for images the generator has batch
    norm after its hidden layers (without it, on the digits, every sample became the same image) and ends in a
    sigmoid (pixels from 0 to 1); for numbers it ends in plain numbers."""
    shape = list(meta["input_shape"])
    size, image = math.prod(shape), len(shape) == 3
    hidden = 256 if size > 64 else 128

    def node(node_id, op, **params):
        return {"id": node_id, "op": op, "params": params}

    norm = (
        [node("g_bn_1", "batchnorm")] if image else []
    )  # keeps an image generator from collapsing
    generator = [
        node("g_1", "linear", out_features=hidden),
        *norm,
        node("g_relu_1", "activation", kind="relu"),
        node("g_2", "linear", out_features=hidden),
        *([node("g_bn_2", "batchnorm")] if image else []),
        node("g_relu_2", "activation", kind="relu"),
        node("g_out", "linear", out_features=size),
    ]
    if len(shape) > 1:
        generator.append(node("g_shape", "reshape", shape=shape))
    if image:
        generator.append(node("pixels", "activation", kind="sigmoid"))
    discriminator = ([node("flatten", "flatten")] if len(shape) > 1 else []) + [
        node("d_1", "linear", out_features=hidden),
        node("d_act_1", "activation", kind="leaky_relu", negative_slope=0.2),
        node("d_2", "linear", out_features=hidden),
        node("d_act_2", "activation", kind="leaky_relu", negative_slope=0.2),
        node("d_out", "linear", out_features=1),
    ]
    return GanSpec(
        noise=64 if image else 8,
        generator={"version": SPEC_VERSION, "inputs": {NOISE: {}}, "nodes": generator},
        discriminator={"version": SPEC_VERSION, "inputs": {"features": {}}, "nodes": discriminator},
    ).to_dict()


def is_gan(spec) -> bool:
    return isinstance(spec, dict) and spec.get("kind") == "gan"


def parse_gan(spec: dict) -> GanSpec:
    try:
        gan = GanSpec.model_validate(spec)
    except ValidationError as e:
        first = e.errors()[0]
        raise SpecError(
            None, f"the GAN spec's {'.'.join(map(str, first['loc']))}: {first['msg']}."
        ) from None
    if list(parse_spec(gan.generator).inputs) != [NOISE]:
        raise SpecError(None, f"a GAN's generator reads one input, named '{NOISE}'.")
    return gan


def compile_gan(spec: dict, meta: dict, seed: int | None = None):
    """The spec, the generator and the discriminator as models; SpecError where either does not fit
    the data: the generator must make samples of the data's shape, the discriminator give one logit."""
    gan = parse_gan(spec)
    if meta.get("vocab_size") or meta.get("inputs"):
        raise SpecError(None, "a GAN learns images or numbers; this data holds text as token ids.")
    try:
        generator, g_infos = compile_spec(gan.generator, (gan.noise,), seed=seed)
    except SpecError as e:
        raise SpecError(e.node_id, f"generator: {e.message}") from None
    try:
        discriminator, d_infos = compile_spec(gan.discriminator, data_inputs(meta))
    except SpecError as e:
        raise SpecError(e.node_id, f"discriminator: {e.message}") from None
    shape = tuple(meta["input_shape"])
    made = g_infos[-1].output_shape if g_infos else (gan.noise,)
    if made != shape:
        raise SpecError(
            None,
            f"the generator makes samples of shape {made}, but the data's are {shape}: end it with a Dense "
            f"layer of {math.prod(shape)} units"
            + (f" and a Reshape to {list(shape)}." if len(shape) > 1 else "."),
        )
    judged = d_infos[-1].output_shape if d_infos else shape
    if judged != (1,):
        raise SpecError(
            None,
            f"the discriminator must give one logit per sample (real or generated), but it outputs {judged}: end "
            "it with a Dense layer of 1 unit and no sigmoid (the loss applies it).",
        )
    last = parse_spec(gan.discriminator).nodes[-1] if gan.discriminator.get("nodes") else None
    if last is not None and last.op == "activation" and last.params.get("kind") == "sigmoid":
        raise SpecError(
            last.id,
            "the discriminator ends in a sigmoid, but the GAN's loss is binary cross-entropy on logits, which "
            "applies the sigmoid itself: remove the sigmoid.",
        )
    return gan, generator, discriminator


def validate_gan(spec: dict, cfg, meta: dict) -> GanSpec:
    """Every check a GAN run gets before it starts (ConfigError / SpecError with the fix)."""
    if cfg.target != "gan":
        raise ConfigError("a GAN spec trains only as a GAN: train it with --task gan.")
    gan = compile_gan(spec, meta)[0]
    if cfg.batch_size > meta["sizes"]["train"]:
        raise ConfigError(
            f"the batch size {cfg.batch_size} is larger than the {meta['sizes']['train']} training rows."
        )
    return gan


def modes(x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """For 2-D points with labels (a mixture's modes): each mode's centre and spread; None for other data."""
    if x.ndim != 2 or x.shape[1] != 2 or y.ndim != 1 or not len(y):
        return None
    points, labels = x.double().numpy(), y.long().numpy()
    found = [k for k in np.unique(labels) if (labels == k).sum() >= 5]
    if len(found) < 2:
        return None
    centres = np.stack([points[labels == k].mean(0) for k in found])
    spread = np.array([points[labels == k].std(0).mean() for k in found])
    return centres, spread


JUDGE_ROWS, JUDGE_EPOCHS = (
    10_000,
    10,
)  # the quality figure's classifier: its training rows and epochs


def class_figures(
    x_train, y_train, classes: list, real: torch.Tensor, made: torch.Tensor, seed: int = 0
) -> dict:
    """The quality figure of a GAN of labelled images: a small classifier trained here on the real training images
    (an MLP, seeded, at most JUDGE_ROWS rows for JUDGE_EPOCHS epochs) judges real test images and as many generated
    ones. For each: its mean confidence (the top class's probability: high when the images look like some class)
    and the share of classes it predicts for at least a quarter of their fair share of images (low: mode
    collapse)."""
    torch.manual_seed(seed)
    x, y = as_input(x_train[:JUDGE_ROWS]).float().flatten(1), y_train[:JUDGE_ROWS].long()
    judge = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, len(classes))
    )
    optimizer = torch.optim.Adam(judge.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(seed)
    for _ in range(JUDGE_EPOCHS):
        for batch in torch.randperm(len(x), generator=order).split(64):
            loss = F.cross_entropy(judge(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    @torch.no_grad()
    def figures(images: torch.Tensor) -> dict[str, float]:
        probs = judge(images.float().flatten(1)).softmax(1)
        counts = torch.bincount(probs.argmax(1), minlength=len(classes)).double()
        fair = len(images) / len(classes)
        return {
            "confidence": float(probs.max(1).values.mean()),
            "classes_covered": float((counts >= 0.25 * fair).double().mean()),
        }

    return {"real": figures(as_input(real)), "generated": figures(made)}


def coverage(points: np.ndarray, centres: np.ndarray, spread: np.ndarray) -> dict[str, float]:
    """How generated 2-D points cover a mixture's modes: a point is of a mode when within 3 of its spreads of the
    mode's centre (its nearest); a mode is covered when at least a quarter of its fair share of points is of it.
    Returns the share of modes covered and the share of points that are of some mode ("quality")."""
    distance = np.linalg.norm(points[:, None, :] - centres[None], axis=2)
    nearest = distance.argmin(1)
    near = distance[np.arange(len(points)), nearest] <= 3 * spread[nearest]
    counts = np.bincount(nearest[near], minlength=len(centres))
    fair = len(points) / len(centres)
    return {
        "modes_covered": float((counts >= 0.25 * fair).mean()),
        "quality": float(near.mean()) if len(points) else 0.0,
    }


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def fit_gan(spec: dict, dataset, cfg, emit, should_stop, out_dir: Path | None) -> dict:
    """Train a GAN (see the module's notes); returns the `run_finished` event (also emitted)."""
    from engine.export import save_weights
    from engine.train.callbacks import SAMPLE_EVERY_S, SAMPLE_FIRST_S
    from engine.train.config import resolve_device
    from engine.train.core import SYNC_EVERY_S
    from engine.train.events import run_finished
    from engine.train.options import build_optimizer

    device = resolve_device(cfg.device)
    gan, generator, discriminator = compile_gan(spec, dataset.meta, seed=cfg.seed)
    generator.to(device).train(), discriminator.to(device).train()
    x_train = dataset.split("train")[0].to(device)
    x_val = dataset.split("val")[0][:VAL_ROWS]
    targets = modes(*dataset.split("train"))
    n, bs, z = len(x_train), cfg.batch_size, gan.noise
    opt_d = build_optimizer(cfg, discriminator.parameters(), device)
    opt_g = build_optimizer(
        cfg.model_copy(update={"lr": cfg.g_lr or cfg.lr}), generator.parameters(), device
    )
    for group in (
        *opt_d.param_groups,
        *opt_g.param_groups,
    ):  # Adam and kin: β1 0.5, as GANs usually train
        if "betas" in group:
            group["betas"] = (0.5, group["betas"][1])
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    real_target = 1.0 - cfg.label_smoothing
    steps = math.ceil(n / bs)
    params = sum(p.numel() for m in (generator, discriminator) for p in m.parameters())
    emit({"type": "run_started", "device": str(device), "threads": None, "params": params,
          "loss": cfg.gan_loss, "optimizer": cfg.optimizer, "epochs": cfg.epochs, "steps_per_epoch": steps,
          "n_train": n, "batch_size": bs, "lr": cfg.lr, "scheduler": "none", "precision": "32",
          "compiled": False})  # fmt: skip
    view_noise = VIEW_POINTS if len(dataset.input_shape) == 1 else VIEW_SAMPLES
    status, step, metrics, best = "completed", 0, {}, {"epoch": None}
    t0 = time.perf_counter()
    next_view, next_check = t0 + SAMPLE_FIRST_S, t0
    coach = GanCoach()

    points = len(dataset.input_shape) == 1  # rows of numbers: drawn as points, beside the data's
    beside = {"real": as_input(x_train[:VIEW_POINTS]).float().cpu().tolist()} if points else {}

    def view(epoch: int) -> None:
        if out_dir is None:
            return
        made = generator_samples(generator, view_noise, z, seed=cfg.seed)
        generator.train()
        atomic_write_json(
            Path(out_dir) / SAMPLES_FILE,
            {"epoch": epoch, "step": step, **_shown(made, dataset.meta), **beside},
        )

    for epoch in range(1, cfg.epochs + 1):
        perm = torch.randperm(n, device=device, generator=gen)
        sums = torch.zeros(2, device=device)
        for i, start in enumerate(range(0, n, bs)):
            real = as_input(x_train[perm[start : start + bs]])
            noise = torch.randn(len(real), z, device=device, generator=gen)
            fake = generator(noise)
            d_loss = _bce(discriminator(real), real_target) + _bce(
                discriminator(fake.detach()), 0.0
            )
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            sums[0] += d_loss.detach()
            if (i + 1) % cfg.d_steps == 0 or start + bs >= n:
                judged = discriminator(fake)
                g_loss = (
                    _bce(judged, 1.0) if cfg.gan_loss == "non_saturating" else -_bce(judged, 0.0)
                )
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                sums[1] += g_loss.detach()
            step += 1
            now = time.perf_counter()
            if now >= next_view:
                view(epoch)
                next_view = time.perf_counter() + SAMPLE_EVERY_S
            if (
                now >= next_check
            ):  # the Stop button's file, a signal: a few times a second, as the core does
                next_check = now + SYNC_EVERY_S
                if should_stop():
                    status = "stopped"
                    break
        if status == "stopped":
            break
        train_d = sums[0].item() / steps
        if not math.isfinite(train_d):
            status = "diverged"
            break
        metrics = _validate(generator, discriminator, x_val, z, cfg, targets)
        # "loss" (what run lists and the loss chart show) is the discriminator's: real against generated
        metrics = {"train/loss": train_d, "val/loss": metrics["val/d_loss"], **metrics}
        for kind, message in coach.look(metrics):
            emit({"type": "coach", "kind": kind, "message": message, "epoch": epoch, "step": step})
        best = {"epoch": epoch, **metrics}
        elapsed = time.perf_counter() - t0
        emit({"type": "epoch_end", "epoch": epoch, "step": step, "metrics": metrics, "lr": cfg.lr,
              "best_epoch": epoch, "seconds": elapsed, "progress": epoch / cfg.epochs,
              "samples_per_second": step * bs / elapsed, "eta_s": elapsed / epoch * (cfg.epochs - epoch)})  # fmt: skip
    if out_dir is not None and status != "diverged":
        view(best["epoch"] or 0)
        save_weights(generator, Path(out_dir) / "model.safetensors", generator.spec, dataset.meta)
        save_weights(discriminator, Path(out_dir) / DISCRIMINATOR, discriminator.spec, dataset.meta)
    elapsed = time.perf_counter() - t0
    message = {
        "stopped": "Stopped; the generator at that point was kept.",
        "diverged": "The discriminator's loss became NaN or infinite: lower the learning rates.",
    }.get(status, "")
    final = run_finished(status, message, metrics=metrics, epochs_completed=best["epoch"] or 0, step=step,
                         best=best, early_stopped=False, seconds=elapsed,
                         samples_per_second=step * bs / elapsed if elapsed > 0 else 0.0)  # fmt: skip
    emit(final)
    return final


class GanCoach:
    """What a GAN's epochs say, each said once: the discriminator winning outright (three epochs in a row it tells
    almost every real row and every generated sample apart), and mode collapse (the generated samples far less
    varied than the data, or on labelled 2-D modes, half of them or more left out)."""

    WINS, COLLAPSE_SPREAD, COLLAPSE_MODES, PATIENCE = 0.97, 0.35, 0.5, 3

    def __init__(self):
        self.said: set[str] = set()
        self.winning = 0

    def look(self, m: dict) -> list[tuple[str, str]]:
        out = []
        self.winning = (
            self.winning + 1
            if min(m["val/d_real_accuracy"], m["val/d_fake_accuracy"]) >= self.WINS
            else 0
        )
        if self.winning >= self.PATIENCE:
            out.append(("discriminator_wins", "The discriminator wins outright: it tells almost every real row and "
                        "every generated sample apart, so the generator learns little. Lower its learning rate (or "
                        "raise the generator's), add label smoothing (0.1), use one D step per G step, or give the "
                        "discriminator fewer units."))  # fmt: skip
        spread = m.get("val/spread_ratio")
        covered = m.get("val/modes_covered")
        if (spread is not None and spread < self.COLLAPSE_SPREAD) or (
            covered is not None and covered <= self.COLLAPSE_MODES
        ):
            what = (f"it covers {covered:.0%} of the data's modes" if covered is not None
                    else f"its samples vary {spread:.0%} as much as the data")  # fmt: skip
            out.append(("mode_collapse", f"Mode collapse: {what}. The generator has found a few samples that fool "
                        "the discriminator and makes little else. Lower both learning rates, use the "
                        "non-saturating loss, add label smoothing, or give the generator more noise."))  # fmt: skip
        fresh = [(k, v) for k, v in out if k not in self.said]
        self.said.update(k for k, _ in fresh)
        return fresh


@torch.no_grad()
def _validate(generator, discriminator, x_val, z: int, cfg, targets) -> dict[str, float]:
    """The losses and the discriminator's accuracy on validation rows and as many generated samples (fixed noise),
    and on 2-D mixtures the modes covered."""
    generator.eval(), discriminator.eval()
    device = next(generator.parameters()).device
    real = as_input(x_val.to(device))
    fake = generator(
        torch.randn(len(real), z, generator=torch.Generator().manual_seed(cfg.seed + 1)).to(device)
    )
    on_real, on_fake = discriminator(real).float(), discriminator(fake).float()
    d_loss = (_bce(on_real, 1.0 - cfg.label_smoothing) + _bce(on_fake, 0.0)).item()
    g_loss = (
        _bce(on_fake, 1.0) if cfg.gan_loss == "non_saturating" else -_bce(on_fake, 0.0)
    ).item()
    out = {
        "val/d_loss": d_loss,
        "val/g_loss": g_loss,
        "val/d_real_accuracy": (on_real > 0).float().mean().item(),
        "val/d_fake_accuracy": (on_fake < 0).float().mean().item(),
    }
    # variety: the generated samples' spread about their mean over the real rows' (near 0: they are all alike)
    spread = (fake.flatten(1).std(0).mean() / real.flatten(1).std(0).mean().clamp_min(1e-12)).item()
    out["val/spread_ratio"] = spread
    if targets is not None:
        points = generator_samples(generator, VIEW_POINTS, z, seed=cfg.seed + 2).double().numpy()
        out.update({f"val/{k}": v for k, v in coverage(points, *targets).items()})
    generator.train(), discriminator.train()
    return out


def _shown(made: torch.Tensor, meta: dict) -> dict:
    """Generated samples to draw: 2-D points as two lists, pictures as uint8 nested lists."""
    if len(meta["input_shape"]) == 3:
        return {"image": True, "samples": shown_samples(made, meta)}
    return {
        "image": False,
        "x": made[:, 0].tolist(),
        "y": made[:, 1].tolist() if made.shape[1] > 1 else [],
    }
