"""k-fold cross-validation as k ordinary runs grouped under one name (engine.data.folds cuts the rows).

Each fold's run is named "<name> · fold i/k" and records `"fold": {"k", "index", "seed", "group"}` in its
train.json; the group's results are each fold's final validation metrics, their mean and standard deviation.
"""

import math
import os
import time
from pathlib import Path

import numpy as np

from engine.data.folds import fold_rows
from engine.data.store import load_dataset
from engine.errors import ConfigError
from engine.gan import is_gan
from engine.runs import create_run, read_status, run_dirs
from engine.workspace import read_json


def create_folds(
    spec: dict,
    train: dict,
    dataset_dir: Path,
    k: int,
    *,
    name: str,
    run_dirs_: list[Path] | None = None,
) -> list[Path]:
    """k queued runs, one per fold (in `run_dirs_` when given, else new folders in the workspace)."""
    dataset = load_dataset(dataset_dir)
    if is_gan(spec) or dataset.task in ("forecast", "language_model"):
        raise ConfigError(
            "cross-validation cuts shuffled rows into folds: it is for tables and images, not for a series, "
            "a text or a GAN (their validation rows follow the training rows in time, or there are none)."
        )
    y = np.concatenate([dataset.tensors["y_train"].numpy(), dataset.tensors["y_val"].numpy()])
    seed = int(train.get("seed", 0))
    fold_rows(
        y if y.ndim == 1 else np.zeros(len(y)), k, dataset.task == "classification", seed
    )  # refuse early
    group = time.strftime("%Y%m%d-%H%M%S-") + os.urandom(3).hex()
    out = []
    for i in range(k):
        fold = {"k": k, "index": i, "seed": seed, "group": group, "name": name}
        out.append(create_run(spec, train, dataset_dir, name=f"{name} · fold {i + 1}/{k}",
                              run_dir=run_dirs_[i] if run_dirs_ else None, extra={"fold": fold}))  # fmt: skip
    return out


def fold_of(run_dir: Path) -> dict | None:
    return read_json(Path(run_dir) / "train.json", {}).get("fold")


def group_runs(group: str) -> list[Path]:
    """The runs of one cross-validation, in fold order."""
    found = [(fold_of(r), r) for r in run_dirs()]
    mine = [(f["index"], r) for f, r in found if f and f.get("group") == group]
    return [r for _, r in sorted(mine)]


def summary(runs: list[Path]) -> dict:
    """Each fold's final validation metrics, and every metric's mean and standard deviation over the finished
    folds: {"folds": [{"fold", "run", "state", "metrics"}], "metrics": {name: {"mean", "std", "n"}}}."""
    folds, values = [], {}
    for run in runs:
        status = read_status(run)
        fold = fold_of(run) or {}
        metrics = {k: v for k, v in (status.get("metrics") or {}).items() if k.startswith("val/")}
        folds.append({"fold": fold.get("index", 0) + 1, "run": str(run), "state": status["state"],
                      "metrics": metrics})  # fmt: skip
        if status["state"] == "completed":
            for k, v in metrics.items():
                if v is not None and math.isfinite(v):
                    values.setdefault(k, []).append(v)
    stats = {k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                 "n": len(v)} for k, v in values.items()}  # fmt: skip
    return {"folds": folds, "metrics": stats}
