"""The resume checkpoint: everything the loop needs to go on exactly where it was.

`checkpoints/state.pt` holds the model, optimizer, scheduler and loss-scaler states, the random generators,
the position (epoch, next batch, the epoch's shuffle), the best epoch so far and the coach's memory. It is
written atomically by the loop and read with `weights_only=True`: tensors, numbers, strings and containers
only, never code.

Format 2 (this one) starts with MAGIC and the SHA-256 of what follows, checked on load: one flipped bit is found,
not trained on. The checkpoint before the latest is kept as `state.prev.pt`; when the latest is damaged, resume
falls back to it with a notice. Format 1 (before 2026-12, no checksum) is read through `_migrate`, which fills
what it did not record; anything else gets a message naming the version that wrote it.
"""

import hashlib
import io
import os
import shutil
from pathlib import Path

import torch

from engine.errors import LayerLabError
from engine.workspace import atomic_write_bytes

STATE = "checkpoints/state.pt"
PREVIOUS = "checkpoints/state.prev.pt"
MAGIC = b"LAYERLAB-CKPT\x00"
FORMAT = 2
REQUIRED = (
    "model",
    "optimizer",
    "generator",
    "torch_rng",
    "step",
    "epoch",
    "start",
    "perm",
    "best",
    "best_state",
    "waited",
    "metrics",
    "elapsed",
)
DEFAULTS = {
    "scheduler": None,
    "scaler": None,
    "cuda_rng": None,
    "epoch_loss": 0.0,
    "epoch_steps": 0,
    "coach": None,
    "loss_ref": None,
}  # what format 1 did not always record


class Damaged(Exception):
    """A checkpoint file that does not pass its checksum or cannot be read."""


def save_state(run_dir: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save({**state, "format": FORMAT}, buf)
    payload = buf.getvalue()
    path, previous = Path(run_dir) / STATE, Path(run_dir) / PREVIOUS
    if (
        path.exists()
    ):  # the last good one becomes the previous; the latest stays in place until replaced whole
        aside = previous.with_name(previous.name + ".tmp")
        aside.unlink(missing_ok=True)
        try:
            os.link(path, aside)
        except OSError:  # a file system without hard links
            shutil.copyfile(path, aside)
        os.replace(aside, previous)
    atomic_write_bytes(path, MAGIC + hashlib.sha256(payload).digest() + payload)


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / STATE).exists() or (Path(run_dir) / PREVIOUS).exists()


def _read(path: Path) -> dict:
    data = path.read_bytes()
    if data.startswith(MAGIC):
        digest, payload = data[len(MAGIC) : len(MAGIC) + 32], data[len(MAGIC) + 32 :]
        if hashlib.sha256(payload).digest() != digest:
            raise Damaged("its checksum does not match: the file was changed or damaged on disk")
    else:
        payload = data  # format 1: no checksum to check
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged file must not crash the caller
        raise Damaged(f"it cannot be read ({type(e).__name__})") from None
    if not isinstance(state, dict):
        raise Damaged("it does not hold a training state")
    return state


def _migrate(state: dict, run: str) -> dict:
    """A state of any known format as the loop reads it now."""
    version = state.get("format", 1)
    if version > FORMAT:
        raise LayerLabError(
            f"the resume checkpoint of run {run} was written by a newer LayerLab (checkpoint format "
            f"{version}; this one reads up to {FORMAT}). Update LayerLab, or branch from its weights."
        )
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise LayerLabError(
            f"the resume checkpoint of run {run} (checkpoint format {version}) lacks "
            f"{', '.join(missing)}, so training cannot go on exactly where it was: branch from its "
            "last or best weights instead."
        )
    return {**DEFAULTS, **state, "format": FORMAT}


def load_state(run_dir: Path) -> dict:
    """The latest resume state that passes its checksum, migrated to this format. Its `notices` say when the
    latest was damaged and the one before it was used."""
    run_dir = Path(run_dir)
    path, previous = run_dir / STATE, run_dir / PREVIOUS
    if not path.exists() and not previous.exists():
        raise LayerLabError(
            f"run {run_dir.name} has no resume checkpoint yet (it stopped before its first "
            "epoch ended): start it again instead."
        )
    problems = []
    for candidate in (path, previous):
        if not candidate.exists():
            continue
        try:
            state = _migrate(_read(candidate), run_dir.name)
        except Damaged as e:
            problems.append(f"{candidate.name}: {e}")
            continue
        state["notices"] = (
            [
                f"The latest resume checkpoint was damaged ({problems[0]}); training resumed from the "
                f"one before it (epoch {state['epoch']}, step {state['step']})."
            ]
            if problems
            else []
        )
        return state
    raise LayerLabError(
        f"the resume checkpoints of run {run_dir.name} are damaged ({'; '.join(problems)}); "
        "branch from its last or best weights instead."
    )
