"""Training dynamics (Swayamdipta et al. 2020, "Dataset Cartography"): after every epoch of a classifier, each
training row's probability of its own label, and each validation row's predicted class and its probability, kept
in `dynamics.npz` beside the run.

From them: the map of the training rows (confidence: the mean probability of the label over the epochs;
variability: its spread), with easy, ambiguous and hard regions and the likely mislabelled rows (the model never
believes their label, and steadily so), and the timeline of pinned validation rows (when each was learned, and
whether it was forgotten).

The look costs one forward pass over the rows it tracks, held within BUDGET of the training time: a fixed random
subset of the training rows on big data, and a look every few epochs where epochs are tiny.
"""

import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from engine.train.core import as_input
from engine.train.state import Callback

FILE = "dynamics.npz"
MAX_TRAIN = 100_000
MAX_VAL = 20_000
BUDGET = 0.05
MIN_TRACKED = 2_000
WRITE_EVERY_S = 2.0
EASY, HARD, AMBIGUOUS = "easy", "hard", "ambiguous"
VARIABLE = 0.2  # variability at or above this: ambiguous
CONFIDENT = 0.5  # confidence at or above this (and steady): easy; below: hard
MISLABELLED = (
    0.2  # confidence below this, and right in at most this share of the epochs: likely mislabelled
)
MAX_SUSPECTS = 200
PINS = 20


def applies(plan) -> bool:
    return plan.loss in ("cross_entropy", "nll", "bce_logits", "bce")


def _probs(net, x: torch.Tensor, plan, batch: int) -> torch.Tensor:
    """Each row's class probabilities (two columns for a single logit)."""
    outs = []
    for i in range(0, len(x), batch):
        out = net(as_input(x[i : i + batch])).float()
        if out.shape[-1] == 1 or out.dim() == 1:
            p = out.reshape(-1) if plan.loss == "bce" else torch.sigmoid(out.reshape(-1))
            out = torch.stack([1 - p, p], 1)
        elif plan.loss == "nll":
            out = out.exp()
        else:
            out = torch.softmax(out, -1)
        outs.append(out)
    return torch.cat(outs) if outs else torch.zeros(0, 2)


class Dynamics(Callback):
    """Looks after an epoch, at most BUDGET of the training time: on big data it tracks fewer training rows (down to
    MIN_TRACKED), and where one look still costs more (many tiny epochs), it looks every few epochs. The file is
    written at most every WRITE_EVERY_S and at the end."""

    def __init__(self, out_dir: Path, seed: int):
        self.path = Path(out_dir) / FILE
        self.seed = seed
        self.order = None  # the training rows, shuffled once: a prefix of it is tracked
        self.tracked = None
        self.every, self.next_epoch, self.written = 1, 0, time.perf_counter()
        self.saved = (
            dict(np.load(self.path)) if self.path.exists() else {}
        )  # a resumed run continues its file

    def on_epoch_end(self, s):
        if s.epoch < self.next_epoch:
            return
        t0 = time.perf_counter()
        x_train, y_train, x_val, _ = s.data
        if self.order is None:
            self.order = np.random.default_rng(self.seed).permutation(len(y_train))[:MAX_TRAIN]
            self.tracked = (
                len(self.order) if "train_rows" not in self.saved else len(self.saved["train_rows"])
            )
        rows = torch.from_numpy(np.sort(self.order[: self.tracked])).to(y_train.device)
        was = s.net.training
        s.net.eval()
        with torch.no_grad(), s.autocast():
            p_train = _probs(s.net, x_train[rows], s.plan, s.plan.eval_batch)
            label = y_train[rows].long().reshape(-1)
            own = p_train.gather(1, label[:, None])[:, 0]
            p_val = _probs(s.net, x_val[:MAX_VAL], s.plan, s.plan.eval_batch)
        s.net.train(was)
        conf, pred = p_val.max(1)
        kept = self.saved
        rows_np = rows.cpu().numpy().astype(np.int64)
        old = kept.get("train_p")
        if old is not None and old.shape[1] != len(
            rows_np
        ):  # the tracked rows shrank to fit the budget
            old = old[:, np.isin(kept["train_rows"], rows_np)]
        kept["train_rows"] = rows_np
        kept["train_p"] = _stack(old, own.cpu().numpy().astype(np.float16))
        kept["val_pred"] = _stack(kept.get("val_pred"), pred.cpu().numpy().astype(np.int32))
        kept["val_p"] = _stack(kept.get("val_p"), conf.cpu().numpy().astype(np.float16))
        kept["epochs"] = _stack(kept.get("epochs"), np.array([s.epoch], np.int32))[:, 0]
        if time.perf_counter() - self.written >= WRITE_EVERY_S or len(kept["epochs"]) == 1:
            self.write()
        took, epoch = time.perf_counter() - t0, max(t0 - s.t_epoch, 1e-9)
        if took > BUDGET * epoch * self.every:
            if self.tracked > MIN_TRACKED:
                self.tracked = max(MIN_TRACKED, int(self.tracked * BUDGET * epoch / took))
            else:
                self.every = math.ceil(took / (BUDGET * epoch))
        self.next_epoch = s.epoch + self.every

    def on_train_end(self, s):
        if self.saved:
            self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, **self.saved)
        os.replace(tmp, self.path)
        self.written = time.perf_counter()


def _stack(old: np.ndarray | None, new: np.ndarray) -> np.ndarray:
    new = new.reshape(1, -1)
    return new if old is None else np.vstack([old.reshape(len(old), -1), new])


def load(run_dir: Path) -> dict | None:
    path = Path(run_dir) / FILE
    if not path.exists():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def cartography(run_dir: Path, y_train: torch.Tensor, classes: list) -> dict | None:
    """{"rows", "confidence", "variability", "correctness", "region", "suspects": [{"row", "label", "confidence",
    "correctness"}], "epochs"}: rows are positions in the training split."""
    found = load(run_dir)
    if found is None or len(found.get("epochs", [])) == 0:
        return None
    p = found["train_p"].astype(np.float32)
    rows = found["train_rows"]
    confidence, variability = p.mean(0), p.std(0)
    correctness = (p > 0.5).mean(
        0
    )  # right when its label is the likeliest (exact for two classes, a floor above)
    region = np.where(
        variability >= VARIABLE, AMBIGUOUS, np.where(confidence >= CONFIDENT, EASY, HARD)
    )
    labels = y_train.long().reshape(-1).numpy()[rows]
    odd = np.flatnonzero((confidence < MISLABELLED) & (correctness <= MISLABELLED))
    odd = odd[np.argsort(confidence[odd])][:MAX_SUSPECTS]
    names = [str(c) for c in classes]
    suspects = [{"row": int(rows[i]), "label": names[labels[i]] if labels[i] < len(names) else int(labels[i]),
                 "confidence": float(confidence[i]), "correctness": float(correctness[i])} for i in odd]  # fmt: skip
    counts = {k: int((region == k).sum()) for k in (EASY, AMBIGUOUS, HARD)}
    return {"rows": rows.tolist(), "confidence": confidence.tolist(), "variability": variability.tolist(),
            "correctness": correctness.tolist(), "region": region.tolist(), "counts": counts,
            "suspects": suspects, "epochs": len(found["epochs"])}  # fmt: skip


def timeline(run_dir: Path, rows: list[int], y_val: torch.Tensor, classes: list) -> list[dict]:
    """Each pinned validation row, epoch by epoch: the predicted class, its probability, whether it was right; with
    the epoch it was learned (right from then on) and the epochs it was forgotten (right, then wrong)."""
    found = load(run_dir)
    if found is None:
        return []
    names = [str(c) for c in classes]
    y = y_val.long().reshape(-1).numpy()
    out = []
    for r in rows[:PINS]:
        if r >= found["val_pred"].shape[1]:
            continue
        pred, prob = found["val_pred"][:, r], found["val_p"][:, r].astype(float)
        right = pred == y[r]
        learned = next(
            (int(found["epochs"][i]) for i in range(len(right)) if right[i:].all()), None
        )
        forgotten = [
            int(found["epochs"][i]) for i in range(1, len(right)) if right[i - 1] and not right[i]
        ]
        out.append({"row": int(r), "label": names[y[r]] if y[r] < len(names) else int(y[r]),
                    "epochs": found["epochs"].tolist(),
                    "predicted": [names[c] if c < len(names) else int(c) for c in pred.tolist()],
                    "probability": [round(v, 4) if math.isfinite(v) else None for v in prob.tolist()],
                    "right": right.tolist(), "learned": learned, "forgotten": forgotten})  # fmt: skip
    return out
