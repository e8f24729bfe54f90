""" "Will it learn?": the checks a careful practitioner runs before a long training run (Karpathy's "recipe"), each
reported in plain words with its likely cause and, where one is clear, a fix that the page applies in one click.

- the loss at initialization against a neutral guess's (ln C for C classes, the targets' variance for numbers);
- every trainable parameter gets a non-zero gradient (a layer cut off from the output gets none);
- one sample's inputs change no other sample's outputs (a reshape or an op that mixes the batch);
- the scale of the activations and of the gradients through the layers at initialization;
- a fresh copy of the model overfits one small batch within a few hundred steps.

Nothing here touches the user's model or runs: each check builds its own model from the spec.
"""

import math
import time
from collections.abc import Callable

import torch

from engine.data.store import Dataset
from engine.errors import ConfigError
from engine.gan import is_gan
from engine.spec import ModelSpec, migrate, remove_node
from engine.tasks import task_for
from engine.train import core
from engine.train.config import TrainConfig
from engine.train.distributed import World

OVERFIT_ROWS = 16
OVERFIT_STEPS = 300
OVERFIT_GOAL = 0.2  # the loss on the one batch must fall to this share of where it started
INIT_FACTOR = (
    2.0  # the loss at initialization at most this times a neutral guess's (plus INIT_SLACK)
)
INIT_SLACK = 0.1
MIXING_ROWS = 8
SCALE_RANGE = 1e3  # activations: the last weighted layer's spread within this factor of the first's
VANISHING = 1e-4  # gradients: the first weighted layer's at least this share of the last's
EXPLODING = 1e4
DEFAULT_LR = TrainConfig.model_fields["lr"].default


def _item(
    id_: str, title: str, passed: bool, message: str, fix: dict | None = None, **details
) -> dict:
    return {
        "id": id_,
        "title": title,
        "passed": passed,
        "message": message,
        "fix": fix,
        "details": details,
    }


def _fix(label: str, spec: dict, train: dict) -> dict:
    return {"label": label, "spec": spec, "train": train}


def _outputs(out) -> list[torch.Tensor]:
    """The floating tensors of a model's output (a VAE's is a tuple)."""
    items = out if isinstance(out, (tuple, list)) else [out]
    return [t for t in items if isinstance(t, torch.Tensor) and t.is_floating_point()]


def check_learning(
    spec: dict,
    dataset: Dataset,
    train: dict,
    *,
    progress: Callable[[float, str], None] = lambda done, what: None,
    quick: bool = False,
) -> dict:
    """{"passed", "items": [{"id", "title", "passed", "message", "fix", "details"}], "seconds"}. `train`: the
    run's settings as the page or CLI has them (a learning rate of 0 is checked, not refused). `quick`: the four
    checks of single passes only (no overfitting), on the CPU, leaving the process's torch threads as they were:
    the Train page runs these by itself, in its own process (well under a second for most models), whenever the
    model or settings change."""
    threads = torch.get_num_threads()
    try:
        return _check(spec, dataset, train, progress, quick)
    finally:
        torch.set_num_threads(threads)


def _check(spec, dataset, train, progress, quick) -> dict:
    from engine.train.loop import _setup, task_step

    if is_gan(spec):
        raise ConfigError(
            "the will-it-learn check trains one model: a GAN's two networks are checked by training."
        )
    t0 = time.perf_counter()
    lr = float(train.get("lr", DEFAULT_LR))
    cfg = TrainConfig.parse({**train, "lr": lr if lr > 0 else 1e-30})
    cfg = cfg.model_copy(update={"scheduler": None, "accumulate": 1, "early_stopping": None, "compile": False,
                                 "diagnostics": False, **({"device": "cpu"} if quick else {})})  # fmt: skip
    s, _, _ = _setup(spec, dataset, cfg, None, World())
    step = task_step(s, task_for(dataset.task, cfg.target))
    x_train, y_train = s.data[0], s.data[1]
    n = len(y_train)
    if n < 2:
        raise ConfigError("the check needs at least 2 training rows.")
    gen = torch.Generator().manual_seed(cfg.seed)
    rows = torch.randperm(n, generator=gen)[: max(OVERFIT_ROWS, MIXING_ROWS) + 1].to(y_train.device)
    batch = lambda idx: (core.as_input(x_train[idx]), core.as_input(y_train[idx]))  # noqa: E731
    initial = {k: v.detach().clone() for k, v in s.model.state_dict().items()}
    items = []
    progress(0.0, "Loss at initialization")
    sample = torch.randperm(n, generator=gen)[: 256 if quick else 1024].to(y_train.device)
    items.append(_init_loss(s, *batch(sample)))
    progress(0.05, "Gradients of every layer")
    items.append(_gradients(s, *batch(rows[:OVERFIT_ROWS]), spec, train))
    progress(0.1, "Samples kept apart")
    items.append(_independence(s, x_train, rows[: MIXING_ROWS + 1]))
    progress(0.15, "Scales through the layers")
    items.append(_scales(s, *batch(rows[:OVERFIT_ROWS])))
    if quick:
        return {
            "passed": all(i["passed"] for i in items),
            "items": items,
            "seconds": time.perf_counter() - t0,
        }
    s.model.load_state_dict(initial)
    items.append(
        _overfit(
            s,
            step,
            *batch(rows[:OVERFIT_ROWS]),
            lr,
            train,
            lambda done, what: progress(0.2 + 0.8 * done, what),
        )  # fmt: skip
    )
    progress(1.0, "Done")
    return {
        "passed": all(i["passed"] for i in items),
        "items": items,
        "seconds": time.perf_counter() - t0,
    }


def _init_loss(s, xb, yb) -> dict:
    title = "Loss at initialization"
    s.net.eval()
    with torch.no_grad():
        out = s.net(xb)
        try:
            loss = float(s.criterion(out, yb))
            neutral = (
                float(s.criterion(torch.zeros_like(out), yb))
                if isinstance(out, torch.Tensor)
                else None
            )
        except (RuntimeError, TypeError, ValueError):
            neutral = None
    s.net.train()
    if neutral is None or not math.isfinite(neutral):
        return _item("init_loss", title, True, f"The untrained model's loss is {loss:.4g} (this task has no "
                     "neutral guess to compare it with).", loss=loss)  # fmt: skip
    guess = f"{neutral:.3g}, a neutral guess's (" + (
        f"ln {round(math.exp(neutral))} for {round(math.exp(neutral))} equally likely classes)"
        if s.plan.loss == "cross_entropy"
        else "outputs of 0)"
    )
    if math.isfinite(loss) and loss <= INIT_FACTOR * neutral + INIT_SLACK:
        return _item("init_loss", title, True, f"The untrained model's loss, {loss:.3g}, is near {guess}.",
                     loss=loss, expected=neutral)  # fmt: skip
    return _item(
        "init_loss", title, False,
        f"The untrained model's loss is {loss:.3g}, far above {guess}: it starts out confidently wrong, and the "
        "first steps go to undoing that. Likely causes: input features that are not scaled (Data page: standard "
        "scaling), or an output layer whose weights start too large (its init).",
        loss=loss, expected=neutral,
    )  # fmt: skip


def _by_node(model) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    return {nid: [(name, p) for name, p in m.named_parameters() if p.requires_grad]
            for nid, m in model.layers.items()}  # fmt: skip


def _gradients(s, xb, yb, spec: dict, train: dict) -> dict:
    title = "Every layer gets a gradient"
    params = _by_node(s.model)
    flat = [p for ps in params.values() for _, p in ps]
    s.net.eval()
    loss = s.criterion(s.net(xb), yb)
    grads = dict(
        zip(map(id, flat), torch.autograd.grad(loss, flat, allow_unused=True), strict=True)
    )
    s.net.train()
    ran = {nid for nid, _ in s.net.plan}
    cut, zero = [], []
    for nid, ps in params.items():
        got = [grads[id(p)] for _, p in ps]
        if ps and all(g is None for g in got):
            cut.append(nid)
        elif ps and all(g is None or not bool(g.abs().sum() > 0) for g in got):
            zero.append(nid)
    frozen = [nid for nid in train.get("freeze") or [] if nid in s.model.layers]
    note = f" Frozen on purpose: {', '.join(frozen)}." if frozen else ""
    if not cut and not zero:
        return _item(
            "gradients",
            title,
            True,
            f"All {len(flat)} trainable tensors get a non-zero gradient.{note}",
        )
    said, fix = [], None
    if cut:
        off = [nid for nid in cut if nid not in ran]
        said.append(f"{_names(cut)} no gradient at all: "
                    + (("it is not connected to the model's output, so it never learns and only costs time."
                        if len(off) == 1 else "they are not connected to the model's output, so they never learn "
                        "and only cost time.") if off else "nothing that reaches the loss depends on their "
                       "weights."))  # fmt: skip
        unused = _unused_nodes(spec)
        if unused:
            fixed = spec
            for nid in unused:
                fixed = remove_node(fixed, nid)
            fix = _fix(f"Remove {', '.join(unused)}", fixed, train)
            said.append("Connect them on the path to the output, or remove them.")
    if zero:
        said.append(f"{_names(zero)} a gradient of exactly 0 on a batch: the units after "
                    "them are dead (a ReLU that is always 0) or their output is multiplied away. Try leaky_relu, a "
                    "lower learning rate, or batch norm before the activation.")  # fmt: skip
    return _item("gradients", title, False, " ".join(said) + note, fix, cut=cut, zero=zero)


def _names(ids: list[str]) -> str:
    """ "'a' gets" or "'a' and 'b' get"."""
    quoted = [f"'{i}'" for i in ids]
    if len(quoted) == 1:
        return f"{quoted[0]} gets"
    return f"{', '.join(quoted[:-1])} and {quoted[-1]} get"


def _unused_nodes(spec: dict) -> list[str]:
    """The spec's nodes that do not lead to its output, last first (so removing them one by one keeps the rest)."""
    model = ModelSpec.model_validate(migrate(spec))
    inputs, needed, stack = model.input_ids(), set(), [model.output_id()]
    while stack:
        nid = stack.pop()
        if nid in inputs and nid not in needed:
            needed.add(nid)
            stack.extend(inputs[nid])
    return [n.id for n in reversed(model.nodes) if n.id not in needed]


def _independence(s, x_train, rows) -> dict:
    """Change sample 0 of a batch and watch the others' outputs, in eval mode (where batch norm uses its running
    statistics, so a healthy model keeps samples apart exactly)."""
    title = "Samples stay apart in a batch"
    idx = rows[:-1]
    other = idx.clone()
    other[0] = rows[-1]
    s.net.eval()
    with torch.no_grad():
        a, b = (_outputs(s.net(core.as_input(x_train[i]))) for i in (idx, other))
    s.net.train()
    wrong = [t for t in a if t.shape[0] != len(idx)]
    if wrong:
        return _item("independence", title, False,
                     f"A batch of {len(idx)} samples gave an output of shape {tuple(wrong[0].shape)}: the model "
                     "does not keep one output per sample. A reshape that moves values across samples is the "
                     "usual cause; keep the batch dimension first.")  # fmt: skip
    moved = max((float((u[1:] - v[1:]).abs().max()) / (1.0 + float(u.abs().max())) for u, v in zip(a, b, strict=True)),
                default=0.0)  # fmt: skip
    if moved <= 1e-4:
        return _item("independence", title, True,
                     "Changing one sample changes no other sample's output.", moved=moved)  # fmt: skip
    return _item(
        "independence", title, False,
        f"Changing sample 0 of a batch changed the outputs of the other samples (by up to {moved:.2g} of their "
        "scale): the model mixes samples. A reshape or permute that moves the batch dimension, or a layer that "
        "pools over the batch, is the usual cause; keep the batch dimension first in every reshape.",
        moved=moved,
    )  # fmt: skip


def _scales(s, xb, yb) -> dict:
    """The spread of each layer's output and of the loss's gradient with respect to it, at initialization."""
    title = "Activation and gradient scales"
    kept: dict[str, torch.Tensor] = {}
    hooks = [s.net.layers[nid].register_forward_hook(lambda m, i, o, nid=nid: kept.__setitem__(nid, o))
             for nid, _ in s.net.plan]  # fmt: skip
    s.net.eval()
    try:
        loss = s.criterion(s.net(xb), yb)
    finally:
        for h in hooks:
            h.remove()
    outs = {nid: o for nid, o in kept.items() if isinstance(o, torch.Tensor) and o.requires_grad}
    grads = torch.autograd.grad(loss, list(outs.values()), allow_unused=True) if outs else []
    s.net.train()
    layers = []
    for (nid, o), g in zip(outs.items(), grads, strict=True):
        weighted = any(True for _ in s.net.layers[nid].parameters())
        layers.append({"id": nid, "weighted": weighted, "activation_std": float(o.detach().float().std()),
                       "gradient_std": float(g.float().std()) if g is not None else 0.0})  # fmt: skip
    ws = [layer for layer in layers if layer["weighted"]]
    said = []
    if any(
        not (math.isfinite(v["activation_std"]) and math.isfinite(v["gradient_std"]))
        for v in layers
    ):
        said.append(
            "Some outputs or gradients are not finite (NaN or infinite) before training: scale the inputs."
        )
    elif len(ws) >= 2:
        (first, last) = ws[0], ws[-1]
        ratio = last["activation_std"] / max(first["activation_std"], 1e-30)
        if not 1 / SCALE_RANGE <= ratio <= SCALE_RANGE:
            said.append(f"The outputs' spread goes from {first['activation_std']:.2g} at '{first['id']}' to "
                        f"{last['activation_std']:.2g} at '{last['id']}': it "
                        f"{'grows' if ratio > 1 else 'shrinks'} {max(ratio, 1 / ratio):.2g}× through the layers. Add "
                        "batch or layer norm between them, or use fewer layers.")  # fmt: skip
        g0, g1 = first["gradient_std"], last["gradient_std"]
        if g1 > 0 and g0 / g1 < VANISHING:
            said.append(f"The gradient at '{first['id']}' is {g0 / g1:.2g}× the one at '{last['id']}': it vanishes "
                        "on its way back, so the first layers hardly learn. Use relu rather than sigmoid or tanh, "
                        "add batch norm or residual connections, or use fewer layers.")  # fmt: skip
        elif g1 > 0 and g0 / g1 > EXPLODING:
            said.append(f"The gradient at '{first['id']}' is {g0 / g1:.2g}× the one at '{last['id']}': it grows on "
                        "its way back. Add batch norm, or clip the gradient norm.")  # fmt: skip
    if said:
        return _item("scales", title, False, " ".join(said), layers=layers)
    return _item("scales", title, True, f"Activations and gradients keep a workable scale through {len(layers)} "
                 "layers.", layers=layers)  # fmt: skip


def _overfit(s, step, xb, yb, lr: float, train: dict, progress) -> dict:
    """Train the fresh model on one batch of OVERFIT_ROWS rows: a model that cannot memorize 16 samples will not
    learn thousands."""
    title = f"Overfits one batch of {len(yb)}"
    losses = []
    s.model.train()
    for i in range(OVERFIT_STEPS):
        s.epoch_steps = i + 1
        loss = float(step(s, xb, yb, True))
        losses.append(loss)
        if not math.isfinite(loss) or (i >= 10 and loss <= 0.05 * losses[0]):
            break
        if i % 10 == 0:
            progress(
                (i + 1) / OVERFIT_STEPS, f"Overfitting one batch: step {i + 1}, loss {loss:.4g}"
            )
    first, last = losses[0], losses[-1]
    best = (
        min(v for v in losses if math.isfinite(v))
        if any(math.isfinite(v) for v in losses)
        else math.nan
    )
    details = {"losses": losses, "steps": len(losses)}
    if math.isfinite(last) and last <= OVERFIT_GOAL * first:
        return _item("overfit", title, True, f"The loss on one batch fell from {first:.3g} to {last:.3g} in "
                     f"{len(losses)} steps: the model can learn from this data.", **details)  # fmt: skip
    if lr <= 0 or (math.isfinite(last) and abs(first - last) <= 1e-3 * max(abs(first), 1e-12)):
        why = ("The learning rate is 0: no step changes the weights." if lr <= 0 else
               f"The loss stayed at {first:.3g} for {len(losses)} steps: no step changed the model (the learning "
               f"rate, {lr:g}, is too small, or every layer is frozen).")  # fmt: skip
        fix = _fix(f"Set the learning rate to {DEFAULT_LR:g}", None, {**train, "lr": DEFAULT_LR})
        return _item("overfit", title, False, why, fix, **details)
    if not math.isfinite(last) or last > 3 * first:
        lower = max(lr / 10, 1e-7)
        return _item(
            "overfit", title, False,
            f"The loss rose from {first:.3g} to {last:.4g} on one batch: the learning rate, {lr:g}, is too high.",
            _fix(f"Set the learning rate to {lower:g}", None, {**train, "lr": lower}), **details,
        )  # fmt: skip
    higher = lr * 3
    fix = (
        _fix(f"Set the learning rate to {higher:g}", None, {**train, "lr": higher})
        if higher <= 0.1
        else None
    )
    return _item(
        "overfit", title, False,
        f"In {len(losses)} steps the loss on one batch only fell from {first:.3g} to {best:.3g} (the goal: "
        f"{OVERFIT_GOAL:.0%} of where it started). The model learns slowly or cannot fit even these "
        f"{len(yb)} samples: raise the learning rate, lower the dropout, weight decay or L1/L2, or make the model "
        "larger.",
        fix, **details,
    )  # fmt: skip


def run_job(job: dict, progress: Callable[[float, str], None]) -> dict:
    """job: {"spec", "train", "dataset_dir"} (engine.jobs runs it for the Train page)."""
    from engine.data.folds import run_dataset

    return check_learning(job["spec"], run_dataset(job), job["train"], progress=progress)
