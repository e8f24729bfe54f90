"""Tasks are plug-ins: the registry answers what each task needs, and a task with its own training step runs
on the training core (and through `fit`) without any change to the core."""

import dataclasses

import pytest
import torch

from engine.data.prepare import prepare_builtin
from engine.errors import ConfigError
from engine.spec import starter_spec
from engine.tasks import TASKS, Task, task_for
from engine.train import TrainConfig, core
from engine.train.config import check_compatible
from engine.train.loop import fit
from engine.train.state import Callback, Plan


def test_the_registry_answers_what_each_task_needs():
    assert task_for("classification").default_loss == "cross_entropy"
    assert task_for("regression", "input").name == "reconstruction"
    assert "bce_with_logits" in TASKS["classification"].losses(2)
    assert "bce_with_logits" not in TASKS["classification"].losses(3)
    assert TASKS["classification"].output_shape("bce_with_logits", 2, None) == (1,)
    assert TASKS["reconstruction"].output_shape("mse", None, (1, 8, 8)) == (1, 8, 8)
    assert TASKS["regression"].monitors() == ["val/loss", "val/mae"]
    # The starter model's output width and preflight's checks come from the same answers.
    assert starter_spec("classification", (4,), 3)["nodes"][-1]["params"]["out_features"] == 3
    assert starter_spec("regression", (4,), None)["nodes"][-1]["params"]["out_features"] == 1
    with pytest.raises(ConfigError, match="an autoencoder must output the input's shape"):
        check_compatible(
            TrainConfig.parse({"target": "input"}), "regression", None, (3,), 100, (4,)
        )
    with pytest.raises(ConfigError, match="Choose one of: mse"):
        check_compatible(
            TrainConfig.parse({"loss": "cross_entropy"}), "regression", None, (1,), 100, (4,)
        )


class Counter(Callback):
    def __init__(self):
        self.epochs = 0

    def on_epoch_end(self, s):
        self.epochs += 1


def test_a_gan_with_two_models_and_two_optimizers_trains_on_the_core():
    """A GAN defined here: the generator is the state's model; the discriminator and its optimizer live in the
    task's step, which alternates a discriminator and a generator update. The core is used as it is."""
    torch.manual_seed(0)
    real = torch.randn(2048, 1) * 0.5 + 3.0
    generator = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    critic = torch.nn.Sequential(
        torch.nn.Linear(1, 16), torch.nn.LeakyReLU(0.2), torch.nn.Linear(16, 1)
    )
    critic_opt = torch.optim.Adam(critic.parameters(), lr=5e-3, betas=(0.5, 0.999))
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def gan_step(s, xb, yb, last):
        noise = torch.randn(len(xb), 4, generator=s.gen)
        fake = s.model(noise)
        d_loss = bce(critic(xb), torch.ones(len(xb), 1)) + bce(
            critic(fake.detach()), torch.zeros(len(xb), 1)
        )
        critic_opt.zero_grad()
        d_loss.backward()
        critic_opt.step()
        g_loss = bce(critic(fake), torch.ones(len(xb), 1))
        s.optimizer.zero_grad()
        g_loss.backward()
        s.optimizer.step()
        return g_loss.detach()

    def gan_validate(s):
        with torch.no_grad():
            made = s.model(torch.randn(4096, 4))
        return {"loss": abs(made.mean().item() - s.data[2].mean().item())}

    cfg = TrainConfig.parse({"epochs": 40, "batch_size": 128, "lr": 5e-3, "diagnostics": False})
    plan = Plan(loss="mse", output="g", train_output="g")
    tensors = {
        "x_train": real[:1792],
        "y_train": torch.zeros(1792),
        "x_val": real[1792:],
        "y_val": torch.zeros(256),
    }
    s = core.prepare(cfg, plan, generator, generator, tensors, torch.device("cpu"))
    before = gan_validate(s)["loss"]
    counter = Counter()
    s = core.train(s, [counter], step=gan_step, validate=gan_validate)
    assert s.status == "completed" and counter.epochs == 40
    assert before > 2.0 and s.metrics["val/loss"] < 0.5, (before, s.metrics)
    assert s.best["epoch"] is not None and s.step == 40 * 14


def test_a_registered_task_with_its_own_step_trains_through_fit(workspace, monkeypatch):
    """A denoising regression task defined here: its step adds noise to each batch's inputs. `fit` finds it in
    the registry by the dataset's task and hands its step to the core."""
    calls = []

    def noisy_step(s, xb, yb, last):
        calls.append(len(xb))
        return core.standard_step(s, xb + 0.05 * torch.randn(xb.shape, generator=s.gen), yb, last)

    base = TASKS["regression"]
    monkeypatch.setitem(
        TASKS,
        "denoising",
        dataclasses.replace(base, name="denoising", title="Denoising", step=noisy_step),
    )
    assert isinstance(TASKS["denoising"], Task)
    dataset = prepare_builtin("diabetes")
    dataset = dataclasses.replace(dataset, meta={**dataset.meta, "task": "denoising"})
    spec = starter_spec("regression", dataset.input_shape, None)
    events = []
    final = fit(
        spec,
        dataset,
        TrainConfig.parse({"epochs": 3, "batch_size": 32, "diagnostics": False}),
        emit=events.append,
    )
    assert final["status"] == "completed" and "val/mae" in final["metrics"]
    assert sum(calls) == 3 * dataset.meta["sizes"]["train"]
    assert [e["epoch"] for e in events if e["type"] == "epoch_end"] == [1, 2, 3]
