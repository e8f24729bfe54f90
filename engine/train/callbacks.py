"""LayerLab's instrumentation of a run, as callbacks on the hooks of `engine.train.core.train`.

`fit` passes them in this order, which is the order they act in at each hook: the event writer, the look
inside (diagnostics and the coach), the decision boundary or a language model's live text, the resume checkpoints,
the stop request.
"""

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from engine.portable import as_input, decode_tokens, generate, shown_samples
from engine.train import boundary
from engine.train.checkpoint import save_state
from engine.train.core import healthy
from engine.train.diagnostics import Coach, inspect_model
from engine.train.state import Callback, State
from engine.workspace import atomic_write_json

DIAGNOSE_EVERY_S = 2.0
DIAGNOSE_SHARE = (
    0.02  # diagnostics are sampled less often than every 2 s when a look would cost more than this
)
BOUNDARY_EVERY_S = 0.5
SAMPLE_FIRST_S, SAMPLE_EVERY_S, SAMPLE_LENGTH = 2.0, 5.0, 120  # a language model's live text
REBUILDS, REBUILD_ROWS = (
    "reconstructions.json",
    8,
)  # a VAE's live originals beside their reconstructions
CHECKPOINT_SHARE = (
    0.05  # resume checkpoints are written each epoch unless that costs more than this share of time
)


def _progress(s: State) -> dict:
    elapsed = s.elapsed()
    return {
        "progress": s.step / s.total_steps,
        "samples_per_second": s.step * s.cfg.batch_size / elapsed,
        "eta_s": elapsed / s.step * (s.total_steps - s.step),
    }


class Events(Callback):
    """`first` (run_started or run_resumed) and the notices at the start; batch_end at each sync; epoch_end and
    the coach's advice on the curves after each epoch."""

    def __init__(self, emit: Callable[[dict], None], first: dict, notices: list[str], coach: Coach):
        self.emit, self.first, self.notices, self.coach = emit, first, notices, coach

    def on_train_start(self, s):
        self.emit(self.first)
        for text in self.notices:
            self.emit({"type": "notice", "message": text})

    def on_sync(self, s):
        self.emit(
            {
                "type": "batch_end",
                "epoch": s.epoch,
                "step": s.step,
                "loss": s.window_loss,
                "lr": s.lr(),
                **_progress(s),
            }
        )

    def on_epoch_end(self, s):
        self.emit(
            {
                "type": "epoch_end",
                "epoch": s.epoch,
                "step": s.step,
                "metrics": s.metrics,
                "lr": s.lr_used,
                "best_epoch": s.best["epoch"],
                "seconds": time.perf_counter() - s.t_epoch,
                **_progress(s),
            }
        )
        for event in self.coach.epoch(
            s.metrics["train/loss"], s.metrics["val/loss"], epoch=s.epoch, step=s.step
        ):
            self.emit(event)


class LookInside(Callback):
    """Diagnostics on the latest batch every 2 s (less often when a look costs over 2% of the time), the coach's
    advice on the gradients, and a last look at the weights the run ends with (`finish`)."""

    def __init__(self, emit: Callable[[dict], None], coach: Coach):
        self.emit, self.coach, self.next = (
            emit,
            coach,
            -math.inf,
        )  # the first look: at epoch 1 at the latest
        self.before = None  # (step, each layer's weights) at the last look, for the update ratio

    def look(self, s):
        t = time.perf_counter()
        diag = inspect_model(s.net, *s.batch, s.criterion, s.autocast)
        self.updates(s, diag)
        self.emit({"type": "diagnostics", "epoch": s.epoch, "step": s.step, **diag})
        for event in self.coach.gradients(diag, epoch=s.epoch, step=s.step):
            self.emit(event)
        now = time.perf_counter()
        self.next = now + max(DIAGNOSE_EVERY_S, (now - t) / DIAGNOSE_SHARE)

    def updates(self, s, diag: dict) -> None:
        """Each layer's update-to-weight ratio per step since the last look: |W now - W then| / |W then| / steps
        (about 1e-3 is healthy; far below, the layer hardly learns; far above, it is thrown about)."""
        now = {nid: [p.detach() for p in s.net.layers[nid].parameters() if p.requires_grad]
               for nid, _ in s.net.plan}  # fmt: skip
        if self.before is not None and s.step > self.before[0]:
            steps, then = s.step - self.before[0], self.before[1]
            for entry in diag["layers"]:
                old, new = then.get(entry["id"]), now.get(entry["id"])
                if old and new and len(old) == len(new):
                    moved = math.sqrt(
                        sum(
                            float((a - b).float().square().sum())
                            for a, b in zip(new, old, strict=True)
                        )
                    )
                    size = math.sqrt(sum(float(b.float().square().sum()) for b in old))
                    if size > 0:
                        entry["update_ratio"] = moved / size / steps
        self.before = (s.step, {nid: [p.clone() for p in ps] for nid, ps in now.items() if ps})

    def on_sync(self, s):
        if time.perf_counter() >= self.next and healthy(s.plan, s.window_loss):
            self.look(s)

    def on_epoch_end(self, s):
        if time.perf_counter() >= self.next:
            self.look(s)

    def finish(self, s):
        if s.status != "diverged" and s.batch[0] is not None:
            self.look(s)


class Writes(Callback):
    """A language model's text from a fixed prompt (the start of the validation text), every SAMPLE_EVERY_S and at
    the end: what it has learned to write, as it learns. Its own random stream, so training is unchanged."""

    def __init__(self, emit, dataset):
        x_val = dataset.split("val")[0]
        context = int(dataset.meta["preprocessing"]["context"])
        self.emit, self.meta, self.next = emit, dataset.meta, time.perf_counter() + SAMPLE_FIRST_S
        self.prompt = (
            decode_tokens(x_val[0, : context // 2].long().tolist(), dataset.meta)
            if len(x_val)
            else ""
        )

    def write(self, s):
        text = generate(s.model, self.meta, self.prompt, length=SAMPLE_LENGTH)
        self.emit(
            {
                "type": "sample",
                "epoch": s.epoch,
                "step": s.step,
                "prompt": self.prompt,
                "text": text,
            }
        )
        self.next = time.perf_counter() + SAMPLE_EVERY_S

    def on_sync(self, s):
        if time.perf_counter() >= self.next:
            self.write(s)

    def on_train_end(self, s):
        if s.status != "diverged":
            self.write(s)


class Rebuilds(Callback):
    """A VAE's first validation rows beside what it rebuilds of them, written to reconstructions.json every
    SAMPLE_EVERY_S and at the end (pictures as uint8, rows in their columns' terms), for the live view."""

    def __init__(self, out_dir: Path, dataset):
        x_val = dataset.split("val")[0]
        self.path, self.meta = Path(out_dir) / REBUILDS, dataset.meta
        self.x = as_input(x_val[:REBUILD_ROWS]).float()
        self.next = time.perf_counter() + SAMPLE_FIRST_S

    def write(self, s):
        was_training = s.model.training
        s.model.eval()
        with torch.no_grad():
            out = s.model(self.x.to(s.data[0].device)).float().cpu()
        s.model.train(was_training)
        pictures = len(self.meta["input_shape"]) == 3
        atomic_write_json(self.path, {"epoch": s.epoch, "step": s.step, "image": pictures,
                                      "originals": shown_samples(self.x, self.meta),
                                      "rebuilt": shown_samples(out, self.meta)})  # fmt: skip
        self.next = time.perf_counter() + SAMPLE_EVERY_S

    def on_sync(self, s):
        if time.perf_counter() >= self.next and len(self.x):
            self.write(s)

    def on_train_end(self, s):
        if s.status != "diverged" and len(self.x):
            self.write(s)


class Boundary(Callback):
    """The decision boundary (or regression surface) of 2-D data, redrawn twice a second into boundary.json."""

    def __init__(self, out_dir: Path, grid: tuple, units: tuple[float, float]):
        self.path, self.grid, self.units, self.next = (
            Path(out_dir) / boundary.BOUNDARY,
            grid,
            units,
            -math.inf,
        )

    def draw(self, s):
        surface = boundary.surface(s.net, *self.grid, s.plan.loss, self.units)
        atomic_write_json(self.path, {"epoch": s.epoch, "step": s.step, **surface})
        self.next = time.perf_counter() + BOUNDARY_EVERY_S

    def on_sync(self, s):
        if time.perf_counter() >= self.next and healthy(s.plan, s.window_loss):
            self.draw(s)

    def finish(self, s):
        if s.status != "diverged" and s.batch[0] is not None:
            self.draw(s)


class Checkpoints(Callback):
    """The resume state after each epoch (unless writing it costs over 5% of the time) and where a stop left
    the run; checkpoints/last.safetensors at the end (the last step's weights, before restore-best)."""

    def __init__(self, out_dir: Path, save: Callable, coach: Coach, emit: Callable[[dict], None]):
        self.out_dir, self.save, self.coach, self.emit = Path(out_dir), save, coach, emit
        self.at, self.cost = -math.inf, 0.0

    def write(self, s, epoch: int, start: int) -> None:
        """The resume state at a position: the epoch in progress and the offset of its next batch."""
        self.save("checkpoints/last.safetensors")
        if s.best_state is not None:
            self.save("checkpoints/best.safetensors", s.best_state)
        device = s.data[0].device
        save_state(
            self.out_dir,
            {
                "model": {
                    k: v.detach().to("cpu", copy=True) for k, v in s.model.state_dict().items()
                },
                "optimizer": s.optimizer.state_dict(),
                "scheduler": s.scheduler.state_dict() if s.scheduler is not None else None,
                "scaler": s.scaler.state_dict() if s.scaler is not None else None,
                "generator": s.gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                "step": s.step,
                "epoch": epoch,
                "start": start,
                "perm": s.perm.cpu() if start else None,
                "epoch_loss": float(s.epoch_loss) if start else 0.0,
                "epoch_steps": s.epoch_steps if start else 0,
                "best": s.best,
                "best_state": s.best_state,
                "waited": s.waited,
                "metrics": s.metrics,
                "elapsed": s.elapsed(),
                "coach": self.coach.state(),
                "rngs": s.rngs if s.world > 1 else None,  # each rank's streams
                "loss_ref": s.plan.loss_ref,
            },
        )
        self.emit({"type": "checkpoint_saved", "epoch": epoch - (start == 0), "step": s.step})

    def on_epoch_end(self, s):
        if time.perf_counter() - self.at >= self.cost / CHECKPOINT_SHARE:
            self.at = time.perf_counter()
            self.write(s, s.epoch + 1, 0)
            self.cost = time.perf_counter() - self.at

    def on_train_end(self, s):
        if s.status == "stopped" and (s.start or s.epoch < s.cfg.epochs):
            self.write(s, *((s.epoch, s.start) if s.start else (s.epoch + 1, 0)))
        if s.status != "diverged":
            self.save("checkpoints/last.safetensors")


class StopRequest(Callback):
    """Ends the run as stopped when `should_stop()` (the Stop button's file, a signal) says so."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def on_sync(self, s):
        if self.should_stop():
            s.stop = True

    on_epoch_end = on_sync
