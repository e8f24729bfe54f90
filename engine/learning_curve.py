""" "Would more data help?": the same model and settings trained on 10, 25, 50 and 100% of the training split (four
ordinary runs grouped like a cross-validation's), each scored on the rows it trained on and on the validation split,
and a verdict in plain words from the curve:

- more data still helps: the validation score still improved clearly from half the rows to all of them;
- high variance: the model does far better on its training rows than on new ones, and more of the same data barely
  helped: regularize or simplify;
- high bias: training and validation scores are close and flat: a larger model or better features, not more rows.

Each run records `"curve": {"group", "share", "name"}` and `"subset": {"share", "seed"}` in its train.json
(engine.data.folds.run_dataset trains it on that share, stratified for classes).
"""

import os
import time
from pathlib import Path

from engine.errors import ConfigError
from engine.gan import is_gan
from engine.runs import create_run, read_status, run_dirs
from engine.workspace import read_json

SHARES = (0.1, 0.25, 0.5, 1.0)
GAIN = 0.01  # accuracy points (or a share of the MAE, 2x this) from half the rows to all: more data still helps
GAP = 0.05  # accuracy points between training and validation (or a share of the MAE, 4x this): high variance


def create_curve(spec: dict, train: dict, dataset_dir: Path, *, name: str,
                 run_dirs_: list[Path] | None = None) -> list[Path]:  # fmt: skip
    """Four queued runs, smallest share first."""
    from engine.data.store import load_dataset

    dataset = load_dataset(dataset_dir)
    if is_gan(spec) or dataset.task not in ("classification", "regression"):
        raise ConfigError(
            "the learning curve is for classifiers and regressors of tables, images and texts."
        )
    if dataset.meta["sizes"]["train"] < 40:
        raise ConfigError(
            f"{dataset.meta['sizes']['train']} training rows are too few to cut into a learning curve (10% of "
            "them must be a few rows): it needs 40 or more."
        )
    group = time.strftime("%Y%m%d-%H%M%S-") + os.urandom(3).hex()
    seed = int(train.get("seed", 0))
    out = []
    for i, share in enumerate(SHARES):
        extra = {"curve": {"group": group, "share": share, "name": name}}
        if share < 1:
            extra["subset"] = {"share": share, "seed": seed}
        out.append(create_run(spec, train, dataset_dir, name=f"{name} · {share:.0%} of the rows",
                              run_dir=run_dirs_[i] if run_dirs_ else None, extra=extra))  # fmt: skip
    return out


def curve_of(run_dir: Path) -> dict | None:
    return read_json(Path(run_dir) / "train.json", {}).get("curve")


def group_runs(group: str) -> list[Path]:
    found = [(curve_of(r), r) for r in run_dirs()]
    return [
        r for _, r in sorted((c["share"], r) for c, r in found if c and c.get("group") == group)
    ]


def points(runs: list[Path]) -> dict:
    """{"metric", "higher_is_better", "points": [{"share", "rows", "state", "train", "val", "run"}], "verdict"}:
    each finished run's final model scored on its training rows and on the validation split."""
    from engine.evaluate import evaluate_run

    out, metric = [], None
    for run in runs:
        status = read_status(run)
        share = (curve_of(run) or {}).get("share")
        point = {"share": share, "state": status["state"], "run": str(run), "train": None, "val": None,
                 "rows": None}  # fmt: skip
        if status["state"] == "completed":
            scores = {split: evaluate_run(run, split) for split in ("train", "val")}
            metric = "accuracy" if "accuracy" in scores["val"]["summary"] else "mae"
            point.update(train=scores["train"]["summary"][metric], val=scores["val"]["summary"][metric],
                         rows=scores["train"]["n"])  # fmt: skip
        out.append(point)
    return {"metric": metric, "higher_is_better": metric == "accuracy", "points": out,
            "verdict": verdict(out, metric)}  # fmt: skip


def verdict(pts: list[dict], metric: str | None) -> dict | None:
    """{"kind": more_data|high_variance|high_bias, "message"}; None until the half and the whole have trained."""
    done = {p["share"]: p for p in pts if p["val"] is not None}
    if metric is None or 0.5 not in done or 1.0 not in done:
        return None
    half, whole = done[0.5], done[1.0]
    if metric == "accuracy":
        gain, gap = whole["val"] - half["val"], whole["train"] - whole["val"]
        gained, gapped = gain > GAIN, gap > GAP
        said_gain = f"{gain * 100:+.1f} points of accuracy"
        said_gap = f"{gap * 100:.1f} points"
    else:
        gain = (half["val"] - whole["val"]) / max(abs(half["val"]), 1e-12)
        gap = (whole["val"] - whole["train"]) / max(abs(whole["val"]), 1e-12)
        gained, gapped = gain > 2 * GAIN, gap > 4 * GAP
        said_gain = f"{gain:+.0%} lower MAE"
        said_gap = f"{gap:.0%} of its validation MAE"
    if gained:
        return {"kind": "more_data", "message": f"More data still helps: from half the training rows to all of them, "
                f"validation went {said_gain}, and the curve has not flattened. Collect more rows (or augment "
                "images) before anything else."}  # fmt: skip
    if gapped:
        return {"kind": "high_variance", "message": f"High variance: the model does better on the rows it trained "
                f"on than on new ones (a gap of {said_gap}), and doubling the data changed little ({said_gain}). "
                "Regularize (dropout, weight decay, early stopping) or use a smaller model; much more data would "
                "also close the gap."}  # fmt: skip
    return {"kind": "high_bias", "message": f"High bias: training and validation scores are close and the curve is "
            f"flat ({said_gain} from half the rows to all). The model is too simple for the task, or the features "
            "lack the signal: make it larger, train longer, or add features; or the labels themselves are noisy "
            "(the Train page's Hard data lists rows that look mislabelled). More rows of the same will not "
            "help."}  # fmt: skip
