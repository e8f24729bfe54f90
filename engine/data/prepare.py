"""One entry point per data source; the Data page and the CLI both call these."""

from pathlib import Path

import numpy as np
import pandas as pd

from engine.data.builtin import BUILTINS, load_builtin
from engine.data.health import health_report
from engine.data.images import archive_stem, read_image_archive
from engine.data.readers import read_table
from engine.data.store import Dataset, save_dataset
from engine.data.tabular import ColumnPlan, TextOptions, prepare_table, split_indices
from engine.errors import DataError


def prepare_frame(df: pd.DataFrame, target: str, *, name: str, source: str, task: str | None = None,
                  plans: list[ColumnPlan] | None = None, text: TextOptions | None = None, seed: int = 0,
                  root: Path | None = None) -> Dataset:
    info = prepare_table(df, target, task, plans=plans, text=text, seed=seed, name=name)
    extra = {}
    if info.preprocessing.get("text"):
        vocab = info.preprocessing["text"]["vocab"]
        extra.update(vocab=vocab, vocab_size=len(vocab))
    return save_dataset(name=name, source=source, task=info.task, x=info.x, y=info.y, classes=info.classes,
                        feature_names=info.feature_names, preprocessing=info.preprocessing,
                        notices=info.notices, preview=df, root=root, extra=extra,
                        meanwhile=lambda: {"health": health_report(info.frame, target, info.task, info.x, info.y,
                                                                   info.classes)})


def prepare_file(data: bytes, filename: str, target: str, *, task: str | None = None,
                 plans: list[ColumnPlan] | None = None, text: TextOptions | None = None, seed: int = 0,
                 delimiter: str | None = None, encoding: str | None = None, root: Path | None = None) -> Dataset:
    """Any table file the Data page reads (CSV, TSV, Parquet, Excel, JSON Lines)."""
    df = read_table(data, filename, delimiter=delimiter, encoding=encoding).frame
    return prepare_frame(df, target, name=Path(filename).stem, source=f"upload:{Path(filename).name}", task=task,
                         plans=plans, text=text, seed=seed, root=root)


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
    labels = loaded["labels"]
    splits = split_indices(len(labels), labels, True, 0.15, 0.15, seed)
    y = {k: labels[v] for k, v in splits.items()}
    if "tokens" in loaded:  # text: token ids per position, with the vocabulary saved alongside
        tokens, vocab = loaded["tokens"], loaded["vocab"]
        words = [" ".join(vocab[t] for t in row if t) for row in tokens[:200]]
        preview = pd.DataFrame({"label": [loaded["classes"][c] for c in labels[:200]], "text": words})
        return save_dataset(name=title, source=f"builtin:{name}", task="classification",
                            x={k: tokens[v] for k, v in splits.items()}, y=y, classes=loaded["classes"],
                            feature_names=[f"token{i}" for i in range(tokens.shape[1])],
                            # as a fitted text column: new rows with a "text" column are encoded by the same code
                            preprocessing={"columns": [], "text": {"columns": ["text"], "vocab": vocab,
                                                                   "max_length": int(tokens.shape[1]),
                                                                   "lowercase": True}},
                            notices=[], preview=preview,
                            root=root, extra={"vocab": vocab, "vocab_size": len(vocab)})
    # Images: already scaled to [0, 1]; no fitted preprocessing needed.
    images = loaded["images"]
    flat = pd.DataFrame(images.reshape(len(images), -1)[:200, :64])
    flat.insert(0, "label", labels[:200])
    return save_dataset(name=title, source=f"builtin:{name}", task="classification",
                        x={k: images[v] for k, v in splits.items()}, y=y, classes=loaded["classes"],
                        feature_names=[f"px{i}" for i in range(int(np.prod(images.shape[1:])))],
                        preprocessing={"kind": "image", "range": [0, 1]}, notices=[], preview=flat, root=root)


def prepare_images(data: bytes, filename: str, *, size: int = 32, grayscale: bool = False, seed: int = 0,
                   root: Path | None = None) -> Dataset:
    """An image archive (class folders, MNIST idx or CIFAR-10 batches): stored as uint8, split stratified;
    skipped files are listed."""
    found = read_image_archive(data, Path(filename).name, size=size, grayscale=grayscale)
    splits = split_indices(len(found.labels), found.labels, True, 0.15, 0.15, seed)
    notices = [f"Skipped {len(found.skipped)} file(s): " + "; ".join(found.skipped[:10])
               + (" …" if len(found.skipped) > 10 else "")] if found.skipped else []
    counts = np.bincount(found.labels, minlength=len(found.classes))
    preview = pd.DataFrame({"class": found.classes, "images": counts})
    return save_dataset(name=archive_stem(filename), source=f"upload:{Path(filename).name}", task="classification",
                        x={k: found.images[v] for k, v in splits.items()},
                        y={k: found.labels[v] for k, v in splits.items()}, classes=found.classes,
                        feature_names=[f"px{i}" for i in range(int(np.prod(found.images.shape[1:])))],
                        preprocessing={"kind": "image", "size": int(found.images.shape[-1]),
                                       "mode": "L" if found.images.shape[1] == 1 else "RGB", "scale": 255},
                        notices=notices, preview=preview, root=root, extra={"skipped": found.skipped})
