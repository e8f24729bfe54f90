"""Seeing inside a model while it trains, and the coach that turns what it sees into advice.

`inspect_model` samples one batch: the gradient norm of each layer, histograms of its weights and of its
output, and the share of dead units after each ReLU. It runs in eval mode and with `torch.autograd.grad`,
so it changes nothing the training sees (no `.grad`, no batch-norm statistics, no random numbers): a run
is the same with diagnostics on or off.
"""

import math

import torch

BINS = 24
SAMPLE = 4096  # values per histogram: a strided sample keeps the cost flat for big layers
VANISHING_RATIO = 1e-4  # first layer's gradient norm / last layer's, below this: vanishing
EXPLODING_NORM = 1e3  # total gradient norm above this: exploding
LR_TOO_HIGH = (
    10.0  # a sampled loss this many times the untrained model's: the learning rate is named first
)
DEAD_SHARE = 0.5  # a ReLU layer with this share of dead units
SATURATING = {"sigmoid", "tanh"}
SATURATED = 0.97  # |tanh| above this (a sigmoid's 0.015 from 0 or 1): the unit's gradient is under 6% of its peak
OVERFIT_EPOCHS = 3  # the best validation loss this many epochs back,
OVERFIT_RISE = (
    1.1  # the validation loss now this much above it, and the training loss lower than then,
)
OVERFIT_GAP = 1.2  # and the validation loss this much above the training loss,
OVERFIT_ABS = (
    0.05  # and the rise over its best at least this share of the first epoch's validation loss
)
PLATEAU_EPOCHS = (
    5  # neither loss better than PLATEAU_TOLERANCE below its earlier best for this many epochs
)
PLATEAU_TOLERANCE = 0.01


def histogram(t: torch.Tensor) -> dict:
    v = t.detach().flatten()
    if v.numel() > SAMPLE:
        v = v[:: v.numel() // SAMPLE]
    v = v.float()
    lo, hi = v.min().item(), v.max().item()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return {"lo": lo, "hi": hi, "counts": []}
    if hi <= lo:
        hi = lo + 1e-6
    return {"lo": lo, "hi": hi, "counts": torch.histc(v, BINS, lo, hi).int().tolist()}


def inspect_model(model, xb: torch.Tensor, yb: torch.Tensor, criterion, autocast) -> dict:
    """Per-layer gradient norms, weight and output histograms and dead-ReLU shares on one batch."""
    outputs: dict[str, torch.Tensor] = {}
    ids = [nid for nid, _ in model.plan]
    hooks = [
        model.layers[nid].register_forward_hook(
            lambda m, i, o, nid=nid: outputs.__setitem__(nid, o)
        )
        for nid in ids
    ]
    was_training = model.training
    model.eval()
    try:
        with autocast():
            loss = criterion(model(xb), yb)
        params = {
            nid: [p for p in model.layers[nid].parameters() if p.requires_grad] for nid in ids
        }
        flat = [p for nid in ids for p in params[nid]]
        grads = torch.autograd.grad(loss, flat, allow_unused=True) if flat else []
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    grad_of = dict(zip(map(id, flat), grads, strict=True))
    nodes = {n.id: n for n in model.spec.nodes}
    layers, total_sq = [], 0.0
    for nid in ids:
        node, out = nodes[nid], outputs.get(nid)
        entry = {"id": nid, "op": node.op}
        weights = [p for p in params[nid] if p.dim() > 1]
        if params[nid]:
            sq = sum(
                float(g.float().square().sum())
                for p in params[nid]
                if (g := grad_of[id(p)]) is not None
            )
            total_sq += sq
            entry["grad_norm"] = math.sqrt(sq)
        if weights:
            entry["weights"] = histogram(torch.cat([w.detach().flatten() for w in weights]))
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            entry["activations"] = histogram(out)
            kind = node.params.get("kind") if node.op == "activation" else None
            if kind == "relu" and out.dim() > 1:
                entry["dead"] = float((out <= 0).all(0).float().mean())
            elif (
                kind in SATURATING
            ):  # outputs in the flat tails, where the gradient all but vanishes
                centred = out.detach().float() if kind == "tanh" else 2 * out.detach().float() - 1
                entry["saturated"] = float((centred.abs() > SATURATED).float().mean())
        layers.append(entry)
    return {"loss": float(loss.detach()), "grad_norm": math.sqrt(total_sq), "layers": layers}


class Coach:
    """Advice in plain words, each kind at most once a run: vanishing or exploding gradients (from
    `inspect_model`), overfitting and plateaus (from the epoch curves). Its state goes into checkpoints."""

    def __init__(
        self, state: dict | None = None, activations: set | None = None, lr: float | None = None
    ):
        state = state or {}
        self.activations = set(
            activations or ()
        )  # the model's activation kinds: advice names what it lacks
        self.lr = lr
        self.loss_ref: float | None = (
            None  # the untrained model's validation loss (set by the loop)
        )
        self.fired: list[str] = list(state.get("fired", []))
        self.train: list[float] = list(state.get("train", []))
        self.val: list[float] = list(state.get("val", []))

    def state(self) -> dict:
        return {"fired": self.fired, "train": self.train, "val": self.val}

    def _say(self, kind: str, message: str, **where) -> list[dict]:
        if kind in self.fired:
            return []
        self.fired.append(kind)
        return [{"type": "coach", "kind": kind, "message": message, **where}]

    def gradients(self, diag: dict, **where) -> list[dict]:
        norms = [
            (layer["id"], layer["grad_norm"])
            for layer in diag["layers"]
            if layer.get("grad_norm") is not None
        ]
        said = []
        if self.loss_ref is not None and not diag["loss"] <= LR_TOO_HIGH * max(self.loss_ref, 1e-3):
            # A loss far above where it started: the learning rate comes first, whatever the gradients look like.
            lr = f", {self.lr:g}," if self.lr is not None else ""
            return self._say(
                "lr_too_high",
                f"The loss is {diag['loss']:.3g}, {LR_TOO_HIGH:g}× or more the "
                f"untrained model's {self.loss_ref:.3g}: the learning rate{lr} is most likely too high. "
                "Lower it by 10×, or clip the gradient norm (Regularization and gradients).",
                **where,
            )
        if diag["grad_norm"] > EXPLODING_NORM or not math.isfinite(diag["grad_norm"]):
            said += self._say(
                "exploding",
                f"Exploding gradients: their total norm is {diag['grad_norm']:.3g}. "
                "Scale the input features (Data page: standard scaling), lower the learning rate, "
                "clip the gradient norm (Regularization and gradients, e.g. 1.0), or add batch norm.",
                **where,
            )
        if len(norms) >= 2 and norms[-1][1] > 0 and norms[0][1] / norms[-1][1] < VANISHING_RATIO:
            (first, g0), (last, g1) = norms[0], norms[-1]
            dead = max((layer.get("dead") or 0.0 for layer in diag["layers"]), default=0.0)
            saturating = sorted(self.activations & SATURATING)
            fixes = []
            if dead >= DEAD_SHARE:
                fixes.append(
                    f"{dead:.0%} of a ReLU layer's units are dead (always 0): lower the learning rate or "
                    "use leaky_relu"
                )
            if saturating:
                fixes.append(f"use relu instead of {' or '.join(saturating)}")
            fixes.append("add batch norm or residual connections, or use fewer layers")
            said += self._say(
                "vanishing",
                f"Vanishing gradients: the first layer '{first}' gets a gradient "
                f"{g1 / max(g0, 1e-30):.2g}x smaller than the last layer '{last}', so it hardly "
                f"learns. To fix it: {'; '.join(fixes)}.",
                **where,
            )
        return said

    def epoch(self, train_loss: float, val_loss: float, **where) -> list[dict]:
        self.train.append(train_loss)
        self.val.append(val_loss)
        said, best = [], min(range(len(self.val)), key=self.val.__getitem__)
        if (
            len(self.val) - 1 - best >= OVERFIT_EPOCHS
            and val_loss > OVERFIT_RISE * self.val[best]
            and train_loss < self.train[best]
            and val_loss > OVERFIT_GAP * train_loss
            and val_loss - self.val[best] > OVERFIT_ABS * self.val[0]
        ):
            said += self._say(
                "overfitting",
                f"Overfitting: the validation loss rose to {val_loss:.4g} from its best, "
                f"{self.val[best]:.4g} at epoch {best + 1}, while the training loss kept falling. Add "
                "dropout, weight decay or L2, get more data, or turn on early stopping.",
                **where,
            )
        k = PLATEAU_EPOCHS
        if len(self.train) > k and "overfitting" not in self.fired:
            stalled = [
                min(c[-k:]) > min(c[:-k]) * (1 - PLATEAU_TOLERANCE) for c in (self.train, self.val)
            ]
            if all(stalled) and min(self.train[-k:]) > 0.1 * self.train[0]:
                said += self._say(
                    "plateau",
                    f"Plateau: neither the training nor the validation loss improved by "
                    f"{PLATEAU_TOLERANCE:.0%} in {k} epochs, and the training loss is still "
                    f"{min(self.train[-k:]) / self.train[0]:.0%} of its first epoch's. Try a larger "
                    "learning rate, a schedule such as one-cycle, or a bigger model.",
                    **where,
                )
        return said
