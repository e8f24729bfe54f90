"""k-fold cross-validation: the rows a dataset trains and validates on (train + val) cut into k folds; fold i
validates on its part and trains on the rest. The test split is never touched.

A fold's run records `"fold": {"k", "index", "seed", "group"}` in its train.json, and every reader of a run's data
(training, Evaluate, the bundle) takes `run_dataset(train)`: the dataset as that fold sees it. The dataset's
preprocessing stays the one fitted on its original training split (refitting per fold would mean preparing the
file k times); the folds differ in the rows they train and validate on.
"""

import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedKFold

from engine.data.store import Dataset, load_dataset
from engine.errors import ConfigError

MAX_FOLDS = 20


def fold_rows(y: np.ndarray, k: int, stratify: bool, seed: int) -> list[np.ndarray]:
    """Each fold's validation rows (positions in train + val), a partition of them; stratified for classes
    where every class has k rows or more."""
    if not 2 <= k <= MAX_FOLDS:
        raise ConfigError(f"choose between 2 and {MAX_FOLDS} folds (got {k}).")
    if len(y) < 2 * k:
        raise ConfigError(f"{len(y)} rows cannot be cut into {k} folds: use fewer folds.")
    rows = np.zeros(len(y))
    if stratify and np.bincount(y.astype(np.int64)).min(initial=k) >= k:
        cut = StratifiedKFold(k, shuffle=True, random_state=seed).split(rows, y)
    else:
        cut = KFold(k, shuffle=True, random_state=seed).split(rows)
    return [np.sort(val) for _, val in cut]


def fold_view(dataset: Dataset, fold: dict) -> Dataset:
    """The dataset as fold `fold["index"]` of `fold["k"]` sees it: train and validation re-cut, test as it is."""
    x = torch.cat([dataset.tensors["x_train"], dataset.tensors["x_val"]])
    y = torch.cat([dataset.tensors["y_train"], dataset.tensors["y_val"]])
    stratify = dataset.task == "classification" and y.dim() == 1
    val = fold_rows(y.numpy(), fold["k"], stratify, fold.get("seed", 0))[fold["index"]]
    keep = np.ones(len(y), bool)
    keep[val] = False
    train = np.flatnonzero(keep)
    tensors = {
        **dataset.tensors,
        "x_train": x[train],
        "y_train": y[train],
        "x_val": x[val],
        "y_val": y[val],
    }
    meta = {
        **dataset.meta,
        "sizes": {**dataset.meta["sizes"], "train": len(train), "val": len(val)},
        "fold": dict(fold),
        "positions": {
            "train": train,
            "val": val,
        },  # in the dataset's own row order (kept_rows reads it)
    }
    return Dataset(dataset.path, meta, tensors)


def run_dataset(train: dict) -> Dataset:
    """A run's data (its train.json): the dataset, or the fold of it that the run trains on; without the training
    rows it dropped (`drop_rows`, positions in the training split); on a share of its training rows (`subset`, a
    learning curve's point)."""
    dataset = load_dataset(train["dataset_dir"])
    dataset = fold_view(dataset, train["fold"]) if train.get("fold") else dataset
    if train.get("drop_rows"):
        keep = np.ones(len(dataset.split("train")[1]), bool)
        keep[[r for r in train["drop_rows"] if 0 <= r < len(keep)]] = False
        dataset = train_rows_view(dataset, np.flatnonzero(keep))
    if train.get("subset"):
        dataset = train_rows_view(
            dataset, subset_rows(dataset, train["subset"]["share"], train["subset"]["seed"])
        )
    return dataset


def subset_rows(dataset: Dataset, share: float, seed: int) -> np.ndarray:
    """A share of the training rows (stratified for classes), the same for the same seed; sorted."""
    y = dataset.split("train")[1]
    n = len(y)
    k = max(2, int(round(share * n)))
    if k >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if dataset.task == "classification" and y.dim() == 1:
        labels = y.long().numpy()
        picked = [rng.permutation(np.flatnonzero(labels == c))[: max(1, int(round(share * (labels == c).sum())))]
                  for c in np.unique(labels)]  # fmt: skip
        return np.sort(np.concatenate(picked))
    return np.sort(rng.permutation(n)[:k])


def train_rows_view(dataset: Dataset, rows: np.ndarray) -> Dataset:
    """The dataset training on `rows` of its training split only (validation and test as they are)."""
    rows = np.asarray(rows, dtype=np.int64)
    index = torch.from_numpy(rows)
    tensors = {**dataset.tensors, "x_train": dataset.tensors["x_train"][index],
               "y_train": dataset.tensors["y_train"][index]}  # fmt: skip
    positions = dict(dataset.meta.get("positions") or {})
    sizes = dataset.meta["sizes"]
    at = {"train": 0, "val": sizes["train"], "test": sizes["train"] + sizes["val"]}
    for split in (
        "val",
        "test",
    ):  # their places in the dataset's own order, which the smaller train would move
        positions.setdefault(split, np.arange(at[split], at[split] + sizes[split]))
    positions["train"] = np.asarray(positions["train"])[rows] if "train" in positions else rows
    meta = {
        **dataset.meta,
        "sizes": {**dataset.meta["sizes"], "train": len(rows)},
        "positions": positions,
    }
    return Dataset(dataset.path, meta, tensors)
