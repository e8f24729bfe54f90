"""Training controls: each changes what it should. Schedules follow torch's; early stopping stops and keeps the
best weights; clipping bounds the gradient norm; accumulation steps less often with the same first update;
penalties shrink weights; label smoothing raises the loss floor; the CLI passes them all to train.json."""

import json
import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from engine.errors import ConfigError
from engine.train import TrainConfig, fit
from tests.conftest import ROOT, mlp_spec


def run(ds, events=None, out_dir=None, **settings):
    events = [] if events is None else events
    result = fit(
        mlp_spec(2),
        ds,
        TrainConfig(**{"epochs": 6, "lr": 0.01, **settings}),
        emit=events.append,
        out_dir=out_dir,
    )
    return result, events


def reference_lrs(
    make, epochs: int, steps_per_epoch: int, per_step: bool, lr: float = 0.01
) -> list[float]:
    """The learning rate torch's own scheduler gives at the end of each epoch, stepped at the same cadence."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched, out = make(opt), []
    for _ in range(epochs):
        if per_step:
            for _ in range(steps_per_epoch):
                opt.step()
                sched.step()
        out.append(opt.param_groups[0]["lr"])
        if not per_step:
            opt.step()
            sched.step()
    return out


S = torch.optim.lr_scheduler


@pytest.mark.parametrize(
    "settings, make, per_step",
    [
        ({"scheduler": "step", "step_size": 2, "gamma": 0.5}, lambda o: S.StepLR(o, 2, 0.5), False),
        ({"scheduler": "exponential", "gamma": 0.8}, lambda o: S.ExponentialLR(o, 0.8), False),
        ({"scheduler": "cosine"}, lambda o: S.CosineAnnealingLR(o, T_max=6 * 22), True),
        (
            {"scheduler": "cosine", "warmup_epochs": 2},
            lambda o: S.SequentialLR(
                o,
                [
                    S.LinearLR(o, start_factor=1 / 45, total_iters=44),
                    S.CosineAnnealingLR(o, T_max=6 * 22 - 44),
                ],
                milestones=[44],
            ),
            True,
        ),
        (
            {"scheduler": "onecycle"},
            lambda o: S.OneCycleLR(o, max_lr=0.01, total_steps=6 * 22),
            True,
        ),
    ],
)
def test_schedules_match_torch(moons, settings, make, per_step):
    _, events = run(moons, **settings)
    steps = next(e for e in events if e["type"] == "run_started")["steps_per_epoch"]
    assert steps == 22  # 700 training rows / 32
    got = [e["lr"] for e in events if e["type"] == "epoch_end"]
    assert got == pytest.approx(reference_lrs(make, 6, steps, per_step), rel=1e-6)
    assert len(set(round(v, 9) for v in got)) > 2  # it really moved


def test_plateau_drops_the_rate_when_validation_stalls(moons):
    _, events = run(moons, lr=1e-7, epochs=8, scheduler="plateau", plateau_patience=1, gamma=0.5)
    lrs = [e["lr"] for e in events if e["type"] == "epoch_end"]
    assert lrs[0] == pytest.approx(1e-7) and lrs[-1] < 1e-7 / 3  # halved at least twice


def test_early_stopping_stops_and_keeps_the_best_weights(moons, tmp_path):
    # After epoch 1 nothing counts as an improvement (min_delta is huge), so it stops after `patience` more epochs.
    result, events = run(moons, out_dir=tmp_path, epochs=20, early_stopping=3, min_delta=10.0)
    assert result["early_stopped"] and result["status"] == "completed"
    assert result["epochs_completed"] == 4 and result["best"]["epoch"] == 1
    assert "Stopped early after epoch 4" in result["message"]
    model, best, last = (
        load_file(tmp_path / f)
        for f in (
            "model.safetensors",
            "checkpoints/best.safetensors",
            "checkpoints/last.safetensors",
        )
    )
    assert all(torch.equal(model[k], best[k]) for k in model)
    assert not all(torch.equal(model[k], last[k]) for k in model)
    assert result["metrics"]["val/loss"] == result["best"]["val/loss"]
    assert [e["best_epoch"] for e in events if e["type"] == "epoch_end"] == [1, 1, 1, 1]

    kept, _ = run(moons, epochs=20, early_stopping=3, min_delta=10.0, restore_best=False)
    assert kept["metrics"]["val/loss"] != kept["best"]["val/loss"]


def test_early_stopping_on_accuracy_needs_classification(moons):
    with pytest.raises(ConfigError, match="val/mae, which this run does not report"):
        run(moons, early_stopping=2, monitor="val/mae")


@pytest.fixture
def optimizer_steps():
    """Every optimizer step in this test: the total gradient norm it was given."""
    norms = []

    def hook(opt, args, kwargs):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(
            torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads])
            ).item()
        )

    handle = register_optimizer_step_pre_hook(hook)
    yield norms
    handle.remove()


def test_clipping_bounds_the_gradient_norm(moons, optimizer_steps):
    run(moons, epochs=2, lr=0.05)
    free = max(optimizer_steps)
    assert free > 0.5
    optimizer_steps.clear()
    run(moons, epochs=2, lr=0.05, clip_grad_norm=0.25)
    assert max(optimizer_steps) <= 0.25 + 1e-5
    optimizer_steps.clear()
    run(moons, epochs=2, lr=0.05, clip_grad_value=0.01)
    n_params = (2 * 32 + 32) + (32 * 32 + 32) + (32 * 2 + 2)  # mlp_spec(2) on two inputs
    assert max(optimizer_steps) <= 0.01 * math.sqrt(n_params) + 1e-6  # each entry within ±0.01


def test_accumulation_steps_less_often_with_the_first_update_of_the_bigger_batch(moons, tmp_path):
    snapshots = {}

    def first_update(tag):
        def hook(opt, args, kwargs):
            snapshots.setdefault(
                tag, [p.detach().clone() for g in opt.param_groups for p in g["params"]]
            )

        return register_optimizer_step_post_hook(hook)

    counts = []
    counter = register_optimizer_step_pre_hook(lambda *a: counts.append(1))
    try:
        for tag, settings in (
            ("accumulated", {"batch_size": 8, "accumulate": 4}),
            ("big", {"batch_size": 32}),
        ):
            handle = first_update(tag)
            counts.clear()
            run(moons, epochs=1, optimizer="sgd", momentum=0.0, **settings)
            handle.remove()
            snapshots[tag + " steps"] = len(counts)
    finally:
        counter.remove()
    assert snapshots["accumulated steps"] == math.ceil(
        math.ceil(700 / 8) / 4
    )  # 88 batches -> 22 steps
    # Same seed, same shuffle: the first 32 rows either way, so the same first SGD update (up to rounding).
    for a, b in zip(snapshots["accumulated"], snapshots["big"], strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_penalties_shrink_weights_and_smoothing_raises_the_loss_floor(moons):
    def weight_norm(**settings):
        result, _ = run(moons, epochs=8, **settings)
        return result

    plain = weight_norm()
    smoothed = weight_norm(label_smoothing=0.2)
    assert smoothed["metrics"]["train/loss"] > plain["metrics"]["train/loss"] + 0.1
    penalized = weight_norm(l2=0.05)
    # The training loss includes the penalty, so it ends higher; the validation loss is the plain loss.
    assert penalized["metrics"]["train/loss"] > plain["metrics"]["train/loss"]


def test_cli_takes_the_controls(moons, tmp_path):
    csv = tmp_path / "moons.csv"
    x, y = moons.split("train")
    csv.write_text(
        "a,b,label\n"
        + "".join(
            f"{u:.4f},{v:.4f},{int(c)}\n" for (u, v), c in zip(x.tolist(), y.tolist(), strict=True)
        )
    )
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "train",
            "--data",
            str(csv),
            "--target",
            "label",
            "--epochs",
            "6",
            "--scheduler",
            "cosine",
            "--warmup-epochs",
            "1",
            "--early-stopping",
            "2",
            "--monitor",
            "val/accuracy",
            "--clip-grad-norm",
            "1",
            "--accumulate",
            "2",
            "--label-smoothing",
            "0.1",
            "--l2",
            "1e-4",
            "--class-weights",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "train.json").read_text())["config"]
    assert (
        config["scheduler"] == "cosine"
        and config["warmup_epochs"] == 1
        and config["early_stopping"] == 2
    )
    assert (
        config["monitor"] == "val/accuracy"
        and config["clip_grad_norm"] == 1
        and config["accumulate"] == 2
    )
    assert (
        config["label_smoothing"] == 0.1
        and config["l2"] == 1e-4
        and config["class_weights"] is True
    )
    lrs = [json.loads(line)["lr"] for line in proc.stdout.splitlines() if '"epoch_end"' in line]
    assert lrs[0] > lrs[-1]  # cosine decay after the warm-up
