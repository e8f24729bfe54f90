"""The resume checkpoint: everything the loop needs to go on exactly where it was.

`checkpoints/state.pt` holds the model, optimizer, scheduler and loss-scaler states, the random generators,
the position (epoch, next batch, the epoch's shuffle), the best epoch so far and the coach's memory. It is
written atomically by the loop and read with `weights_only=True`: tensors, numbers, strings and containers
only, never code.
"""

import io
from pathlib import Path

import torch

from engine.errors import LayerLabError
from engine.workspace import atomic_write_bytes

STATE = "checkpoints/state.pt"


def save_state(run_dir: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(Path(run_dir) / STATE, buf.getvalue())


def load_state(run_dir: Path) -> dict:
    path = Path(run_dir) / STATE
    if not path.exists():
        raise LayerLabError(f"run {Path(run_dir).name} has no resume checkpoint yet (it stopped before its first "
                            "epoch ended): start it again instead.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged file must not crash the caller
        raise LayerLabError(f"the resume checkpoint of run {Path(run_dir).name} cannot be read ({type(e).__name__}); "
                            "branch from its last or best weights instead.") from None
