"""The decision boundary (classes) or the regression surface of a model on 2-D data, as a grid for a heatmap.

The grid spans the training points with a margin, in the model's input units (the prepared, scaled
features); `axes` gives each axis's name and how to turn it back into the column's own units.
"""

import torch
import torch.nn.functional as F

from engine.train.options import LOSSES

RESOLUTION = 60
MARGIN = 0.1
BOUNDARY = "boundary.json"


def applies(dataset) -> bool:
    """2 numeric features (not token ids) and a label to predict."""
    x, _ = dataset.split("train")
    return tuple(dataset.input_shape) == (2,) and x.is_floating_point()


def grid_axes(x: torch.Tensor, resolution: int = RESOLUTION) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = x.min(0).values.float(), x.max(0).values.float()
    pad = (hi - lo).clamp_min(1e-6) * MARGIN
    lo, hi = lo - pad, hi + pad
    return (
        torch.linspace(float(lo[0]), float(hi[0]), resolution),
        torch.linspace(float(lo[1]), float(hi[1]), resolution),
    )


def axes(meta: dict) -> list[dict]:
    """Each feature's name, and shift/scale such that column value = prepared value * scale + shift."""
    prep = meta.get("preprocessing") or {}
    cols = prep.get("columns") or [
        {"name": c["name"], "shift": c.get("mean", 0.0), "scale": c.get("scale", 1.0)}
        for c in prep.get("numeric", [])
    ]
    names = meta.get("feature_names") or [c["name"] for c in cols] or ["feature 1", "feature 2"]
    by_name = {c["name"]: c for c in cols}
    return [
        {
            "name": n,
            "shift": float(by_name.get(n, {}).get("shift", 0.0)),
            "scale": float(by_name.get(n, {}).get("scale", 1.0)),
        }
        for n in names[:2]
    ]


@torch.no_grad()
def surface(
    model,
    xs: torch.Tensor,
    ys: torch.Tensor,
    loss_name: str,
    units: tuple[float, float] = (1.0, 0.0),
) -> dict:
    """z[i][j] is the prediction at (xs[j], ys[i]): the class index (with the model's confidence in it), or
    the predicted value in the target's own units."""
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([gx.flatten(), gy.flatten()], 1)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    out = model(points.to(device)).float().cpu()
    model.train(was_training)
    shape = (len(ys), len(xs))
    result = {"x": xs.tolist(), "y": ys.tolist()}
    targets = LOSSES[loss_name].targets
    if targets == "classes":
        conf = F.softmax(out, 1).max(1).values
        return {
            **result,
            "kind": "classes",
            "z": out.argmax(1).reshape(shape).tolist(),
            "confidence": conf.reshape(shape).tolist(),
        }
    if targets == "binary":
        p = torch.sigmoid(out[:, 0])
        return {
            **result,
            "kind": "classes",
            "z": (out[:, 0] > 0).long().reshape(shape).tolist(),
            "confidence": torch.maximum(p, 1 - p).reshape(shape).tolist(),
        }
    scale, shift = units
    value = out[:, 0] * scale + shift
    return {**result, "kind": "value", "z": value.reshape(shape).tolist()}
