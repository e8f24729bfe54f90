"""One entry point per data source; the Data page and the CLI both call these."""

from pathlib import Path

import numpy as np
import pandas as pd

from engine.data.builtin import BUILTINS, load_builtin
from engine.data.store import Dataset, save_dataset
from engine.data.tabular import _split, prepare_table, read_csv_bytes
from engine.errors import DataError


def prepare_frame(df: pd.DataFrame, target: str, *, name: str, source: str, task: str | None = None,
                  seed: int = 0, root: Path | None = None) -> Dataset:
    info = prepare_table(df, target, task, seed=seed, name=name)
    return save_dataset(name=name, source=source, task=info.task, x=info.x, y=info.y, classes=info.classes,
                        feature_names=info.feature_names, preprocessing=info.preprocessing,
                        notices=info.notices, preview=df, root=root)


def prepare_csv(data: bytes, filename: str, target: str, *, task: str | None = None, seed: int = 0,
                root: Path | None = None) -> Dataset:
    df = read_csv_bytes(data, filename)
    return prepare_frame(df, target, name=Path(filename).stem, source=f"upload:{filename}", task=task,
                         seed=seed, root=root)


def prepare_builtin(name: str, *, n_samples: int = 1000, noise: float = 0.1, seed: int = 0,
                    root: Path | None = None) -> Dataset:
    if name not in BUILTINS:
        raise DataError(f"unknown built-in dataset '{name}'. Choose one of: {', '.join(BUILTINS)}.")
    b = BUILTINS[name]
    if b.generated and not 50 <= n_samples <= 200_000:
        raise DataError(f"choose between 50 and 200,000 samples (got {n_samples}).")
    loaded = load_builtin(name, n_samples=n_samples, noise=noise, seed=seed)
    title = f"{b.title} (n={n_samples}, noise={noise:g})" if b.generated else b.title
    if "frame" in loaded:
        return prepare_frame(loaded["frame"], loaded["target"], name=title, source=f"builtin:{name}", seed=seed,
                             root=root)
    # Images: already scaled to [0, 1]; no fitted preprocessing needed.
    images, labels = loaded["images"], loaded["labels"]
    splits = _split(len(labels), labels, True, 0.15, 0.15, seed)
    flat = pd.DataFrame(images.reshape(len(images), -1)[:200])
    flat.insert(0, "label", labels[:200])
    return save_dataset(name=title, source=f"builtin:{name}", task="classification",
                        x={k: images[v] for k, v in splits.items()}, y={k: labels[v] for k, v in splits.items()},
                        classes=loaded["classes"], feature_names=[f"px{i}" for i in range(int(np.prod(images.shape[1:])))],
                        preprocessing={"kind": "image", "scale": "pixel/16"}, notices=[], preview=flat, root=root)
