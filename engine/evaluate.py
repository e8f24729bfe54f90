"""Evaluate a finished run on a split of its data: metrics, curves and the worst cases (no Streamlit).

Classification: accuracy; precision, recall, F1 and support per class with macro and weighted averages; the
confusion matrix; ROC and precision-recall curves with their areas (binary, or one-vs-rest per class); the
misclassified rows, most confident first. Regression: MAE, RMSE, R², predicted against actual, residuals and
the worst predictions, in the target's own units. Computed here with numpy; the tests check them against
scikit-learn's.
"""

import math
from pathlib import Path

import numpy as np
import torch

from engine.data.folds import run_dataset
from engine.data.series import kept_series
from engine.errors import LayerLabError
from engine.export import load_model
from engine.portable import (
    PREDICT_BATCH,
    as_input,
    decode_tokens,
    generate,
    generator_samples,
    interpolation,
    latent_layer,
    model_outputs,
    prior_samples,
    probabilities,
    shown_samples,
    target_units,
)
from engine.tasks import task_for, usual_loss
from engine.train.options import LOSSES
from engine.workspace import read_json

CURVE_POINTS = 400  # points kept per ROC / PR curve
WORST = 50  # misclassified or worst-predicted rows listed
PAIRS, SAMPLES, LATENT_POINTS = (
    8,
    16,
    2000,
)  # a VAE's originals beside reconstructions, prior samples, map points


def _thin(*arrays: np.ndarray) -> list[list[float]]:
    n = len(arrays[0])
    keep = (
        np.unique(np.linspace(0, n - 1, min(n, CURVE_POINTS)).round().astype(int))
        if n
        else np.arange(0)
    )
    return [a[keep].tolist() for a in arrays]


def roc_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """False- and true-positive rates at every distinct threshold (from (0, 0)), and the area under them."""
    order = np.argsort(-score, kind="mergesort")
    score, positive = score[order], positive[order].astype(float)
    last = np.r_[
        np.flatnonzero(np.diff(score)), len(score) - 1
    ]  # the last row of each distinct score
    tp, fp = np.cumsum(positive)[last], np.cumsum(1 - positive)[last]
    tpr = np.r_[0, tp] / max(tp[-1], 1)
    fpr = np.r_[0, fp] / max(fp[-1], 1)
    return fpr, tpr, float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def pr_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Recall and precision at every distinct threshold, and the average precision (Σ ΔR·P, as scikit-learn)."""
    order = np.argsort(-score, kind="mergesort")
    score, positive = score[order], positive[order].astype(float)
    last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]
    tp, fp = np.cumsum(positive)[last], np.cumsum(1 - positive)[last]
    precision = tp / (tp + fp)
    recall = tp / max(tp[-1], 1)
    ap = float(np.sum(np.diff(np.r_[0, recall]) * precision))
    return recall, precision, ap


def classification_metrics(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    k = probs.shape[1]
    pred = probs.argmax(1)
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    tp, predicted, actual = np.diag(cm).astype(float), cm.sum(0), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0
    )
    per_class = [
        {
            "class": str(c),
            "precision": float(p),
            "recall": float(r),
            "f1": float(f),
            "support": int(s),
        }
        for c, p, r, f, s in zip(classes, precision, recall, f1, actual, strict=True)
    ]
    weights = actual / max(actual.sum(), 1)
    averages = {
        name: {
            "precision": float(agg(precision)),
            "recall": float(agg(recall)),
            "f1": float(agg(f1)),
        }
        for name, agg in (("macro", np.mean), ("weighted", lambda v: np.sum(v * weights)))
    }
    curves = []
    for c in [1] if k == 2 else range(k):  # binary: the positive class; else one-vs-rest per class
        positive = y == c
        if positive.all() or not positive.any():
            continue
        fpr, tpr, auc = roc_curve(positive, probs[:, c])
        recall_c, precision_c, ap = pr_curve(positive, probs[:, c])
        (fpr, tpr), (recall_c, precision_c) = _thin(fpr, tpr), _thin(recall_c, precision_c)
        curves.append(
            {
                "class": str(classes[c]),
                "roc_auc": auc,
                "average_precision": ap,
                "fpr": fpr,
                "tpr": tpr,
                "recall": recall_c,
                "precision": precision_c,
            }
        )
    confidence = probs.max(1)
    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-confidence[wrong], kind="mergesort")][:WORST]
    summary = {
        "accuracy": float(tp.sum() / max(len(y), 1)),
        "macro_f1": averages["macro"]["f1"],
        "weighted_f1": averages["weighted"]["f1"],
    }
    if curves:
        summary["roc_auc"] = float(np.mean([c["roc_auc"] for c in curves]))
    return {
        "task": "classification",
        "n": int(len(y)),
        "summary": summary,
        "per_class": per_class,
        "averages": averages,
        "confusion": cm.tolist(),
        "classes": [str(c) for c in classes],
        "curves": curves,
        "misclassified": [
            {
                "row": int(i),
                "true": str(classes[y[i]]),
                "predicted": str(classes[pred[i]]),
                "confidence": float(confidence[i]),
            }
            for i in wrong
        ],
    }


def regression_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict:
    err = predicted - actual
    ss_tot = float(np.sum((actual - actual.mean()) ** 2)) or 1e-12
    summary = {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": float(1 - np.sum(err**2) / ss_tot),
    }
    worst = np.argsort(-np.abs(err), kind="mergesort")[:WORST]
    sample = np.random.default_rng(0).permutation(len(actual))[:2000]
    return {
        "task": "regression",
        "n": int(len(actual)),
        "summary": summary,
        "actual": actual[sample].tolist(),
        "predicted": predicted[sample].tolist(),
        "residuals": err.tolist(),
        "worst": [
            {
                "row": int(i),
                "actual": float(actual[i]),
                "predicted": float(predicted[i]),
                "error": float(err[i]),
            }
            for i in worst
        ],
    }


FORECAST_SEGMENTS = 40  # forecasts drawn over the actual series


def forecast_errors(actual: np.ndarray, predicted: np.ndarray) -> dict:
    """MAE, RMSE, MAPE (over the actual values that are not zero; None when all are) and sMAPE, in percent for the
    last two."""
    err = predicted - actual
    nonzero = np.abs(actual) > 1e-9
    denom = np.abs(actual) + np.abs(predicted)
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mape": float(np.mean(np.abs(err[nonzero] / actual[nonzero])) * 100)
        if nonzero.any()
        else None,
        "smape": float(
            np.mean(np.where(denom > 0, 2 * np.abs(err) / np.where(denom > 0, denom, 1), 0)) * 100
        ),
    }


def naive_forecasts(x: np.ndarray, horizon: int, season: int | None) -> dict[str, np.ndarray]:
    """The baselines from each window alone (scaled like it): the last value repeated, and the last season
    repeated when a season is given (preparing made sure the window holds enough of it)."""
    naive = {"naive": np.repeat(x[:, -1, :1], horizon, 1)}
    if season:
        ahead = np.arange(horizon)
        naive["seasonal_naive"] = x[:, x.shape[1] + ahead - season * (1 + ahead // season), 0]
    return naive


def forecast_report(dataset, split: str, out: np.ndarray) -> dict:
    """A forecaster's errors on a split in the series' units, beside the naive forecasts' (and their ratio: below 1
    the model beats the baseline), the error by step ahead, and the forecasts from every `horizon`-th origin drawn
    over the actual series."""
    prep = dataset.meta["preprocessing"]
    x, y = (t.numpy() for t in dataset.split(split))
    horizon, stride = int(prep["horizon"]), int(prep["stride"])
    series = kept_series(dataset)
    origins = int(prep["origins"][split]) + np.arange(len(y)) * stride
    scale, shift = target_units(dataset.meta)
    # relative windows: each forecast is a change from the window's last value, which the kept series holds
    base = series["value"].to_numpy()[origins - 1, None] if prep.get("relative") else shift
    units = lambda a: a * scale + base  # noqa: E731
    actual, predicted = units(y), units(out)
    summary = forecast_errors(actual, predicted)
    baselines = {
        name: forecast_errors(actual, units(b))
        for name, b in naive_forecasts(x, int(prep["horizon"]), prep.get("season")).items()
    }
    ratios = {
        name: {
            k: (summary[k] / v if v else None)
            for k, v in b.items()
            if summary[k] is not None and v is not None
        }
        for name, b in baselines.items()
    }
    plot = None
    if len(y):
        picks = np.arange(0, len(y), max(1, -(-horizon // stride)))[-FORECAST_SEGMENTS:]
        lo, hi = max(origins[picks[0]] - int(prep["window"]), 0), origins[picks[-1]] + horizon
        when = series["time"].astype(str).tolist()
        plot = {
            "time": when[lo:hi],
            "actual": series["value"].iloc[lo:hi].tolist(),
            "forecasts": [
                {"time": when[origins[k] : origins[k] + horizon], "value": predicted[k].tolist()}
                for k in picks
            ],
        }
    return {
        "task": "forecast",
        "n": int(len(y)),
        "horizon": horizon,
        "summary": summary,
        "baselines": baselines,
        "ratios": ratios,
        "by_step": np.abs(predicted - actual).mean(0).tolist() if len(y) else [],
        "plot": plot,
        "worst": [],
    }


TEXT_BATCH = 32  # windows scored at a time: (windows, context, vocabulary) scores can be large


@torch.no_grad()
def text_report(model, dataset, split: str) -> dict:
    """A language model on a split: cross-entropy per token in bits and as a perplexity, next-token accuracy, the
    same for the unigram baseline (each token's training frequency, add-one smoothed, whatever came before), and
    a sample written after the split's first window."""
    x, y = dataset.split(split)
    vocab = int(dataset.meta["vocab_size"])
    model.eval()
    nats, right = 0.0, 0
    for i in range(0, len(x), TEXT_BATCH):
        scores = model(x[i : i + TEXT_BATCH].long()).float()
        target = y[i : i + TEXT_BATCH]
        nats += torch.nn.functional.cross_entropy(
            scores.flatten(0, 1), target.flatten(), reduction="sum"
        ).item()
        right += int((scores.argmax(-1) == target).sum())
    tokens = y.numel()
    counts = torch.bincount(dataset.split("train")[1].flatten(), minlength=vocab).double() + 1
    unigram = -(counts / counts.sum()).log2()
    baseline_bits = float(unigram[y.flatten()].mean())
    bits = nats / max(tokens, 1) / math.log(2)
    prompt = decode_tokens(x[0].long().tolist(), dataset.meta) if len(x) else ""
    return {
        "task": "language_model",
        "n": int(len(x)),
        "tokens": int(tokens),
        "summary": {
            "bits_per_token": bits,
            "perplexity": float(2**bits),
            "accuracy": right / max(tokens, 1),
            "unigram_bits_per_token": baseline_bits,
        },
        "prompt": prompt,
        "sample": generate(model, dataset.meta, prompt, length=200, temperature=0.8, top_k=20)
        if prompt
        else "",
        "worst": [],
    }


def vae_report(model, dataset, split: str, loss: str) -> dict:
    """A VAE on a split: the reconstruction loss per row (each row coded by its mean) beside the mean training
    row's, the KL per row, originals beside their reconstructions, samples decoded from the prior and the latent
    map (the codes, projected on their two main axes when there are more than two), coloured by label."""
    x, y = dataset.split(split)
    shape, layer = tuple(dataset.input_shape), latent_layer(model)
    outs, codes, kls = [], [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(x), PREDICT_BATCH):
            xb = as_input(x[i : i + PREDICT_BATCH])
            outs.append(model(xb).float())
            codes.append(layer.mean_out.float())
            kls.append(layer.kl.float())
    out, code, kl = torch.cat(outs), torch.cat(codes), torch.cat(kls)
    actual = as_input(x).float()
    mean_row = as_input(dataset.split("train")[0]).float().mean(0, keepdim=True).expand_as(actual)
    squashed = ends_in_squash(model)
    recon = reconstruction_loss(out, actual, loss, squashed)
    baseline = reconstruction_loss(mean_row, actual, loss, True)
    image = len(shape) == 3
    show = min(len(x), PAIRS)
    samples = prior_samples(model, SAMPLES, shape, seed=0)
    if not squashed and LOSSES[loss].targets == "binary":  # a decoder that ends in logits
        out, samples = out.sigmoid(), samples.sigmoid()
    return {
        "task": "vae",
        "n": int(len(x)),
        "summary": {
            "reconstruction": float(recon.mean()),
            "mean_row_reconstruction": float(baseline.mean()),
            "kl": float(kl.mean()),
            "mse": float((out - actual).square().mean()),
            "mean_row_mse": float((mean_row - actual).square().mean()),
            "latent_size": int(code.shape[1]),
        },
        "loss": loss,
        "image": image,
        "originals": shown_samples(actual[:show], dataset.meta),
        "reconstructions": shown_samples(out[:show], dataset.meta),
        "samples": shown_samples(samples, dataset.meta),
        "latent": latent_map(code[:LATENT_POINTS], y[:LATENT_POINTS], dataset.meta),
        "worst": [],
    }


def reconstruction_loss(
    out: torch.Tensor, actual: torch.Tensor, loss: str, squashed: bool
) -> torch.Tensor:
    """Each row's reconstruction loss, summed over its values: binary cross-entropy on probabilities (logits
    when not `squashed`), or the loss itself."""
    if LOSSES[loss].targets == "binary":
        p = (out if squashed else out.sigmoid()).clamp(1e-6, 1 - 1e-6)
        per_value = torch.nn.functional.binary_cross_entropy(p, actual, reduction="none")
    else:
        per_value = LOSSES[loss].fn(out, actual, reduction="none")
    return per_value.flatten(1).sum(1)


def latent_map(code: torch.Tensor, y: torch.Tensor, meta: dict) -> dict:
    """The codes as points on a plane: themselves with two numbers, else their projection on the two main axes
    (PCA, with the share of the variance each keeps); a label per point where the data has classes."""
    points, explained = code.numpy().astype(np.float64), None
    if points.shape[1] > 2:
        centred = points - points.mean(0)
        _, sv, vt = np.linalg.svd(centred, full_matrices=False)
        points = centred @ vt[:2].T
        explained = (sv[:2] ** 2 / max(float((sv**2).sum()), 1e-12)).tolist()
    elif points.shape[1] == 1:
        points = np.c_[points, np.zeros(len(points))]
    classes = meta.get("classes")
    labels = [classes[int(i)] for i in y.tolist()] if classes and y.ndim == 1 else None
    return {
        "x": points[:, 0].tolist(),
        "y": points[:, 1].tolist(),
        "labels": labels,
        "classes": list(classes or []),
        "explained": explained,
    }


def gan_report(generator, dataset, split: str, run_dir: Path) -> dict:
    """A GAN on a split: its discriminator's accuracy on the split's rows and on as many generated samples, samples
    to look at (points: 1,000, beside the split's own) and, for 2-D points with labelled modes, the modes covered."""
    from engine.gan import DISCRIMINATOR, VIEW_POINTS, VIEW_SAMPLES, class_figures, coverage, modes
    from engine.predict import noise_size

    x, y = dataset.split(split)
    noise = noise_size(generator)
    made = generator_samples(generator, len(x), noise, seed=1)
    summary = {"noise": noise}
    judge = run_dir / DISCRIMINATOR
    if judge.exists():
        discriminator, _ = load_model(judge)
        discriminator.eval()
        on_real, on_fake = model_outputs(discriminator, x), model_outputs(discriminator, made)
        summary["d_real_accuracy"] = float((on_real > 0).float().mean())
        summary["d_fake_accuracy"] = float((on_fake < 0).float().mean())
    image = len(dataset.input_shape) == 3
    result = {"task": "gan", "n": int(len(x)), "image": image, "worst": []}
    targets = modes(*dataset.split("train"))
    if targets is not None:
        points = generator_samples(generator, VIEW_POINTS, noise, seed=2)
        summary.update(coverage(points.double().numpy(), *targets))
        result["points"] = {
            "real": as_input(x[:VIEW_POINTS]).float().tolist(),
            "generated": points.tolist(),
        }
    else:
        result["samples"] = shown_samples(
            generator_samples(generator, VIEW_SAMPLES, noise, seed=0), dataset.meta
        )
    classes = dataset.meta.get("classes")
    if image and classes and len(classes) > 1:  # a classifier of the real images judges both
        result["judged"] = class_figures(*dataset.split("train"), classes, x, made)
    return {**result, "summary": summary}


def vae_interpolation(run_dir: Path, split: str, a: int, b: int, steps: int = 8) -> dict:
    """Samples on the line between the codes of rows `a` and `b` of a run's split, both ends included."""
    model, dataset, _ = finished_run(Path(run_dir), split)
    x = dataset.split(split)[0]
    out = interpolation(model, x[a], x[b], steps, tuple(dataset.input_shape))
    if not ends_in_squash(model) and LOSSES[_run_loss(Path(run_dir), dataset)].targets == "binary":
        out = out.sigmoid()
    image = len(dataset.input_shape) == 3
    return {"image": image, "steps": shown_samples(out, dataset.meta)}


def outputs(model, x: torch.Tensor) -> torch.Tensor:
    """The model's outputs for `x` in batches (images scaled, token ids as integers)."""
    return model_outputs(model, x, model.takes_tokens)


def ends_in_squash(model) -> bool:
    """Whether the model's last layer already turns outputs into probabilities (softmax or sigmoid)."""
    last = model.spec.nodes[-1] if model.spec.nodes else None
    return (
        last is not None
        and last.op == "activation"
        and last.params.get("kind") in ("softmax", "sigmoid")
    )


def class_probabilities(model, out: torch.Tensor) -> torch.Tensor:
    """Each class's probability from a classifier's outputs (softmax, or sigmoid for one output)."""
    return probabilities(out, ends_in_squash(model))


def finished_run(run_dir: Path, split: str):
    """A finished run's model, its dataset (with rows in `split`) and its train.json."""
    weights = run_dir / "model.safetensors"
    if not weights.exists():
        raise LayerLabError(
            f"run {run_dir.name} has no trained weights yet: let it finish an epoch first."
        )
    train = read_json(run_dir / "train.json", {})
    try:
        dataset = run_dataset(train)
    except (KeyError, LayerLabError):
        raise LayerLabError(
            f"the dataset of run {run_dir.name} is no longer in the workspace, so it cannot be "
            "evaluated: prepare the same data again and train a new run."
        ) from None
    if f"x_{split}" not in dataset.tensors or not len(dataset.split(split)[1]):
        raise LayerLabError(f"the dataset of run {run_dir.name} has no rows in its {split} split.")
    return load_model(weights)[0], dataset, train


def _run_loss(run_dir: Path, dataset) -> str:
    """The loss a run trained with: its setting, else the one its task takes on this data."""
    config = read_json(run_dir / "train.json", {}).get("config", {})
    task = task_for(dataset.task, config.get("target", "label"))
    return config.get("loss") or usual_loss(task, dataset.input_shape)


def evaluate_run(run_dir: Path, split: str = "test") -> dict:
    """The run's final model on a split of its dataset (the test split by default)."""
    run_dir = Path(run_dir)
    model, dataset, train = finished_run(run_dir, split)
    x, y = dataset.split(split)
    config = train.get("config", {})
    task = task_for(dataset.task, config.get("target", "label"))
    out = (
        None if task.predictions in ("text", "samples", "generated") else outputs(model, x)
    )  # scores per token, a VAE's parts: in batches, below
    if task.predictions == "text":
        result = text_report(model, dataset, split)
    elif task.predictions == "samples":
        result = vae_report(model, dataset, split, _run_loss(run_dir, dataset))
    elif task.predictions == "generated":
        result = gan_report(model, dataset, split, run_dir)
    elif task.predictions == "forecast":
        result = forecast_report(dataset, split, out.numpy())
    elif task.predictions == "reconstruction":
        result = regression_metrics(as_input(x).float().flatten().numpy(), out.flatten().numpy())
        result["worst"] = []  # per value, not per row: no row list
    elif task.predictions == "classes":
        probs = class_probabilities(model, out)
        result = classification_metrics(y.long().numpy(), probs.numpy(), dataset.meta["classes"])
    else:
        scale, shift = target_units(dataset.meta)
        result = regression_metrics(
            y.float().numpy() * scale + shift, out[:, 0].numpy() * scale + shift
        )
    return {
        "run": run_dir.name,
        "split": split,
        "dataset": dataset.meta["name"],
        **result,
        "task": task.name,
    }
