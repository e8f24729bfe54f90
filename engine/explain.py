"""Why the model predicts what it does, with Captum (PyTorch's attribution library).

- `attribute`: per-input attributions for one class (the predicted one unless chosen) by saliency (the gradient's
  size), Integrated Gradients (the path integral of the gradient from a baseline; its attributions add up to the
  output's change from the baseline), SmoothGrad (saliency averaged over noisy copies) or Grad-CAM (a conv layer's
  feature maps weighted by their gradient, scaled up to the image).
- Tables: attributions per source column (a categorical column's one-hot columns summed back), against an
  average row of the training split. Text: per token, through the Embedding layer. Images: a heatmap overlay.
- `permutation_importance`: how much the test metric drops when one source column's values are shuffled among the
  rows, repeated, with the spread.

All of it runs on the CPU in eval mode and changes nothing in the model.
"""

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from engine.errors import LayerLabError
from engine.portable import as_input, model_outputs

METHODS = ("integrated_gradients", "saliency", "smoothgrad", "gradcam", "permutation")
TITLES = {
    "integrated_gradients": "Integrated Gradients",
    "saliency": "Saliency",
    "smoothgrad": "SmoothGrad",
    "gradcam": "Grad-CAM",
    "permutation": "Permutation importance",
}
IG_STEPS = 50
SMOOTH_SAMPLES = 20
SMOOTH_NOISE = 0.15  # of the input's spread (images: of the [0, 1] range)
PERMUTATION_ROWS = 5000
PERMUTATION_REPEATS = 5
MAX_EXPLAIN_ROWS = 64  # rows or images per call: each costs IG_STEPS forward and backward passes


def kind(meta: dict) -> str:
    """ "image", "text" (token ids), "table", "mixed" (a table's numbers beside its text) or "series"."""
    prep = meta.get("preprocessing") or {}
    if prep.get("kind") == "image" or len(meta.get("input_shape") or []) == 3:
        return "image"
    if prep.get("kind") == "series":
        return "series"
    if meta.get("inputs"):
        return "mixed"
    if meta.get("vocab") and not prep.get("columns"):
        return "text"
    return "table"


def refuse_task(meta: dict) -> None:
    if meta.get("task") not in ("classification", "regression", "forecast"):
        raise LayerLabError(
            f"explanations are for models that predict a class or a number; this one is a {meta.get('task')} "
            "model. Its Evaluate page shows what it generates."
        )


class _Scores(nn.Module):
    """The model's scores per output, before a final softmax or sigmoid (the logits, where the gradients are
    informative); a single logit of two classes becomes (-logit, logit), so class 0 has a score too."""

    def __init__(self, model, classes: int):
        super().__init__()
        last = model.spec.nodes[-1] if model.spec.nodes else None
        squash = (
            last is not None
            and last.op == "activation"
            and last.params.get("kind") in ("softmax", "sigmoid")
        )
        self.net = model.with_output(model.plan[-2][0]) if squash and len(model.plan) > 1 else model
        self.pair = classes == 2

    def forward(self, *xs):
        out = self.net(*xs)
        out = out.reshape(len(out), -1)
        return torch.cat([-out, out], 1) if self.pair and out.shape[1] == 1 else out


def _scores(model, meta: dict) -> _Scores:
    return _Scores(
        model, len(meta.get("classes") or []) if meta.get("task") == "classification" else 0
    ).eval()


def conv_layers(model) -> list[str]:
    """The model's 2-D convolutions, in order (Grad-CAM's choices; the last is its default)."""
    ops = {n.id: n.op for n in model.spec.nodes}
    return [nid for nid, _ in model.plan if ops[nid] == "conv2d"]


def _embedding(model) -> str:
    return next(nid for nid, _ in model.plan if isinstance(model.layers[nid], nn.Embedding))


def attribute(
    model, meta: dict, x: torch.Tensor, method: str, *, target: int | None = None, layer: str | None = None,
    baseline: torch.Tensor | None = None,
) -> dict:  # fmt: skip
    """`x`: rows as the dataset stores them (images as bytes, token ids, encoded features). Returns
    {"attributions": array shaped like x (text: one per token; Grad-CAM: one per pixel), "targets": the class (or
    output) explained per row, "scores": that output per row, "delta": Integrated Gradients' completeness gap}."""
    from captum.attr import (
        IntegratedGradients,
        LayerGradCam,
        LayerIntegratedGradients,
        NoiseTunnel,
        Saliency,
    )

    refuse_task(meta)
    if method not in METHODS or method == "permutation":
        raise LayerLabError(f"unknown method {method!r}: choose one of {', '.join(METHODS[:-1])}.")
    what = kind(meta)
    if what == "mixed":
        raise LayerLabError(
            "per-row attributions for a model with several inputs are not available yet: use permutation "
            "importance, which ranks every column, text included."
        )
    if len(x) > MAX_EXPLAIN_ROWS:
        raise LayerLabError(f"explain at most {MAX_EXPLAIN_ROWS} rows at a time (got {len(x)}).")
    if not len(x):
        raise LayerLabError("there are no rows to explain: give at least one.")
    scores = _scores(model, meta)
    tokens = what == "text"
    inputs = x.long() if tokens else as_input(x).float()
    with torch.no_grad():
        out = scores(inputs)
    targets = (
        torch.full((len(x),), int(target), dtype=torch.long)
        if target is not None
        else out.argmax(1)
    )
    if target is not None and not 0 <= int(target) < out.shape[1]:
        raise LayerLabError(f"there is no class {target}: the model has {out.shape[1]} outputs.")
    result = {
        "targets": targets.tolist(),
        "scores": out.gather(1, targets[:, None])[:, 0].tolist(),
        "delta": None,
    }
    if tokens:
        if method not in ("integrated_gradients", "saliency"):
            raise LayerLabError("for text, choose integrated_gradients or saliency (per token).")
        emb = model.layers[_embedding(model)]
        if method == "saliency":
            from captum.attr import LayerGradientXActivation

            attr = LayerGradientXActivation(scores, emb).attribute(inputs, target=targets)
        else:
            attr, delta = LayerIntegratedGradients(scores, emb).attribute(
                inputs, baselines=torch.zeros_like(inputs), target=targets, n_steps=IG_STEPS,
                return_convergence_delta=True)  # fmt: skip
            result["delta"] = delta.abs().max().item()
        result["attributions"] = attr.sum(-1).detach().numpy()
        return result
    if method == "gradcam":
        convs = conv_layers(model)
        if not convs:
            raise LayerLabError(
                "Grad-CAM needs a model with a 2-D convolution: choose another method."
            )
        layer = layer or convs[-1]
        if layer not in convs:
            raise LayerLabError(
                f"'{layer}' is not a 2-D convolution of this model: choose one of {', '.join(convs)}."
            )
        cam = LayerGradCam(scores, model.layers[layer]).attribute(
            inputs, target=targets, relu_attributions=True
        )
        cam = torch.nn.functional.interpolate(
            cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False
        )
        result["attributions"], result["layer"] = cam[:, 0].detach().numpy(), layer
        return result
    inputs = inputs.clone().requires_grad_(True)
    if method == "saliency":
        attr = Saliency(scores).attribute(inputs, target=targets, abs=True)
    elif method == "smoothgrad":
        spread = 1.0 if what == "image" else float(inputs.detach().std()) or 1.0
        attr = NoiseTunnel(Saliency(scores)).attribute(
            inputs, nt_type="smoothgrad", nt_samples=SMOOTH_SAMPLES, stdevs=SMOOTH_NOISE * spread,
            target=targets, abs=True)  # fmt: skip
    else:
        base = torch.zeros_like(inputs) if baseline is None else baseline.expand_as(inputs).float()
        attr, delta = IntegratedGradients(scores).attribute(
            inputs, baselines=base, target=targets, n_steps=IG_STEPS, return_convergence_delta=True)  # fmt: skip
        result["delta"] = delta.abs().max().item()
    result["attributions"] = attr.detach().numpy()
    return result


def source_columns(meta: dict) -> list[str]:
    """The source column of each encoded feature (a one-hot column's is the column it came from)."""
    from engine.data.tabular import feature_sources

    return feature_sources(meta["preprocessing"])


def by_column(attributions: np.ndarray, meta: dict) -> list[dict[str, float]]:
    """Per row, each source column's attribution (its encoded columns' summed)."""
    sources = source_columns(meta)
    frame = pd.DataFrame(attributions, columns=range(attributions.shape[1]))
    summed = frame.T.groupby(np.asarray(sources), sort=False).sum().T
    return [{c: float(v) for c, v in row.items()} for _, row in summed.iterrows()]


def token_attributions(
    ids: torch.Tensor, attributions: np.ndarray, meta: dict
) -> list[list[tuple[str, float]]]:
    """Per row, (token, attribution) for each token that is not padding."""
    vocab = meta["vocab"]
    return [[(vocab[int(t)], float(a)) for t, a in zip(row_ids, row_attr, strict=True) if int(t) != 0]
            for row_ids, row_attr in zip(ids.long(), attributions, strict=True)]  # fmt: skip


def heatmap(attributions: np.ndarray) -> np.ndarray:
    """One image's attributions as a [0, 1] map (H, W): the channels' largest absolute value, scaled to its own
    99th percentile (so a few extreme pixels do not wash out the rest)."""
    a = np.abs(attributions)
    a = a.max(0) if a.ndim == 3 else a
    top = np.percentile(a, 99) or a.max() or 1.0
    return np.clip(a / top, 0, 1)


def overlay_png(image: np.ndarray, heat: np.ndarray, alpha: float = 0.55) -> bytes:
    """The image (C, H, W, uint8 or [0, 1] floats) with the heatmap over it in a warm colour map, as PNG bytes,
    scaled up to at least 224 pixels wide so small images can be seen."""
    from matplotlib import colormaps
    from PIL import Image

    img = np.asarray(image, dtype=np.float32)
    img = img / 255.0 if img.max() > 1.0 else img
    rgb = np.repeat(img, 3, 0) if img.shape[0] == 1 else img[:3]
    rgb = rgb.transpose(1, 2, 0)
    colour = colormaps["inferno"](heat)[..., :3]
    mixed = (1 - alpha * heat[..., None]) * rgb + alpha * heat[..., None] * colour
    out = Image.fromarray((np.clip(mixed, 0, 1) * 255).astype(np.uint8))
    scale = max(1, 224 // out.width)
    out = out.resize((out.width * scale, out.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def _metric(meta: dict, out: torch.Tensor, y: torch.Tensor) -> tuple[str, float]:
    """The score permutation importance watches: accuracy for classes (higher is better), else the mean absolute
    error (lower is better; returned negated, so a drop is always a loss)."""
    if meta.get("task") == "classification":
        pred = out.argmax(1) if out.shape[1] > 1 else (out[:, 0] > 0).long()
        return "accuracy", float((pred == y.long()).float().mean())
    return "mae", -float((out.reshape(len(out), -1) - y.reshape(len(y), -1).float()).abs().mean())


def permutation_importance(
    model, meta: dict, x: torch.Tensor, y: torch.Tensor, *, repeats: int = PERMUTATION_REPEATS, seed: int = 0,
    progress: Callable[[float, str], None] = lambda done, what: None,
) -> dict:  # fmt: skip
    """{"metric", "baseline", "importances": {column: {"mean", "std"}}} over up to PERMUTATION_ROWS rows: each
    source column's encoded values shuffled together among the rows, `repeats` times."""
    refuse_task(meta)
    if kind(meta) not in ("table", "mixed"):
        raise LayerLabError("permutation importance ranks a table's columns: for images and text, choose a "
                            "per-input method (saliency, integrated_gradients, smoothgrad or gradcam).")  # fmt: skip
    gen = np.random.default_rng(seed)
    if len(x) > PERMUTATION_ROWS:
        keep = np.sort(gen.choice(len(x), PERMUTATION_ROWS, replace=False))
        x, y = x[keep], y[keep]
    scores = _scores(model, meta)
    takes_tokens = bool(getattr(model, "takes_tokens", False))
    with torch.no_grad():
        name, base = _metric(meta, model_outputs(scores, x, takes_tokens), y)
    sources = np.asarray(source_columns(meta))
    columns = list(dict.fromkeys(sources))
    result = {}
    for i, column in enumerate(columns):
        cols = np.flatnonzero(sources == column)
        drops = []
        for _ in range(repeats):
            shuffled = x.clone()
            shuffled[:, cols] = x[torch.from_numpy(gen.permutation(len(x)))][:, cols]
            with torch.no_grad():
                drops.append(
                    base - _metric(meta, model_outputs(scores, shuffled, takes_tokens), y)[1]
                )
        result[str(column)] = {"mean": float(np.mean(drops)), "std": float(np.std(drops))}
        progress((i + 1) / len(columns), f"Shuffled {column} ({i + 1} of {len(columns)})")
    ranked = dict(sorted(result.items(), key=lambda kv: -kv[1]["mean"]))
    return {
        "metric": name,
        "baseline": abs(base),
        "rows": len(x),
        "repeats": repeats,
        "importances": ranked,
    }


# ---- a run's model on its data, or on new rows or images (the pages and the CLI)


def run_parts(run_dir: Path):
    """A finished run's model (eval mode) and its dataset."""
    from engine.evaluate import finished_run

    model, dataset, _ = finished_run(Path(run_dir), "test")
    return model.eval(), dataset


def explain_rows(model, meta: dict, x: torch.Tensor, method: str, *, target=None, layer=None,
                 baseline=None, originals=None) -> dict:  # fmt: skip
    """`attribute` made readable (JSON): per row the class explained and its score, then per source column
    (tables), per token (text), or an overlay image (images, as PNG bytes under "overlays")."""
    found = attribute(model, meta, x, method, target=target, layer=layer, baseline=baseline)
    classes = [str(c) for c in meta.get("classes") or []]
    rows = [{"target": classes[t] if t < len(classes) else t, "target_index": t, "score": s}
            for t, s in zip(found["targets"], found["scores"], strict=True)]  # fmt: skip
    what, attr = kind(meta), found["attributions"]
    result = {
        "method": method,
        "kind": what,
        "rows": rows,
        "delta": found["delta"],
        "layer": found.get("layer"),
    }
    if what == "table":
        for row, values in zip(rows, by_column(attr, meta), strict=True):
            row["columns"] = values
        if originals is not None:
            for row, (_, original) in zip(rows, originals.iterrows(), strict=True):
                row["values"] = {k: (None if pd.isna(v) else v if isinstance(v, (int, float, str)) else str(v))
                                 for k, v in original.items()}  # fmt: skip
    elif what == "text":
        for row, pairs in zip(rows, token_attributions(x, attr, meta), strict=True):
            row["tokens"] = pairs
    elif what == "image":
        result["overlays"] = [
            overlay_png(img.numpy(), heatmap(a)) for img, a in zip(x, attr, strict=True)
        ]
    else:  # a series window: per step and column
        for row, a in zip(rows, attr, strict=True):
            row["steps"] = np.asarray(a).tolist()
    return result


def training_mean(dataset) -> torch.Tensor:
    """The baseline of a table's Integrated Gradients: the training split's average encoded row."""
    return dataset.split("train")[0].float().mean(0, keepdim=True)


def run_job(job: dict, progress: Callable[[float, str], None]) -> dict:
    """engine.jobs runs it. Rows of a run's split: {"run_dir", "method", "split", "rows": [row indices], "target",
    "layer"}. New inputs (the Predict page): {"weights": a run folder, bundle or weights file (a name: a file beside
    the job), "inputs": an .npy beside the job, "dataset_dir" (for a table's baseline; may be absent), "method"}.
    Images' overlays are written as PNG files into the job's folder, named in the result."""
    from engine.data.store import load_dataset
    from engine.predict import load_predictor

    folder = Path(job["folder"])
    if "inputs" in job:  # new rows or images, as the model takes them
        weights = Path(job["weights"])
        model, meta = load_predictor(weights if weights.is_absolute() else folder / weights)
        model.eval()
        x = torch.from_numpy(np.load(folder / job["inputs"], allow_pickle=False))
        rows = list(range(len(x)))
        base = (
            training_mean(load_dataset(job["dataset_dir"]))
            if job.get("dataset_dir") and kind(meta) == "table"
            else None
        )
    else:
        model, dataset = run_parts(Path(job["run_dir"]))
        meta = dataset.meta
        x, y = dataset.split(job.get("split", "test"))
        if job["method"] == "permutation":
            return permutation_importance(model, meta, x, y, progress=progress)
        rows = job["rows"]
        x = x[torch.as_tensor(rows, dtype=torch.long)]
        base = training_mean(dataset) if kind(meta) == "table" else None
    progress(0.1, f"{TITLES[job['method']]} for {len(rows)} input(s)")
    result = explain_rows(model, meta, x, job["method"], target=job.get("target"), layer=job.get("layer"),
                          baseline=base)  # fmt: skip
    overlays = result.pop("overlays", None)
    if overlays:
        result["images"] = []
        for i, png in zip(rows, overlays, strict=True):
            (folder / f"{i}.png").write_bytes(png)
            result["images"].append(str(folder / f"{i}.png"))
    return result


# ---- attention maps


def attention_layers(model) -> list[tuple[str, nn.MultiheadAttention]]:
    """Each multi-head attention in the model, named by its layer (and block, in a transformer encoder)."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            parts = name.split(".")
            node = parts[1] if len(parts) > 1 and parts[0] == "layers" else name
            block = next(
                (parts[i + 1] for i, p in enumerate(parts[:-1]) if p == "layers" and i > 0), None
            )
            found.append(
                (f"{node} · block {int(block) + 1}" if block is not None else node, module)
            )
    return found


def attention_maps(model, meta: dict, x: torch.Tensor) -> dict:
    """For one input (a batch of 1): every attention layer's weights per head, {"layers": [{"name", "weights":
    [head][query step][key step]}], "steps": a label per step (the tokens of a text)}."""
    layers = attention_layers(model)
    if not layers:
        raise LayerLabError(
            "this model has no attention layer: add Self-attention or a Transformer encoder."
        )
    if len(x) != 1:
        raise LayerLabError("attention maps are drawn for one input at a time.")
    kept: dict[str, torch.Tensor] = {}

    def ask(module, args, kwargs):  # every head's weights, not their mean
        return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

    hooks = []
    for name, module in layers:
        hooks.append(module.register_forward_pre_hook(ask, with_kwargs=True))
        hooks.append(
            module.register_forward_hook(
                lambda m, a, out, name=name: kept.__setitem__(name, out[1])
            )
        )
    was = model.training
    model.eval()
    try:  # with gradients on, so a transformer layer takes its plain path (its fused one skips the hooks)
        model(x.long() if getattr(model, "takes_tokens", False) else as_input(x).float())
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    ids = x[0].long().tolist() if kind(meta) == "text" else None
    steps = [meta["vocab"][i] for i in ids] if ids is not None and meta.get("vocab") else None
    return {"layers": [{"name": name, "weights": kept[name][0].detach().float().tolist()} for name, _ in layers
                       if name in kept],
            "steps": steps}  # fmt: skip
