import math

import pytest
import torch

from engine.data.prepare import prepare_builtin
from engine.errors import ConfigError
from engine.export import load_model
from engine.spec import parse_spec
from engine.train import TrainConfig, fit
from engine.train.options import LOSSES, OPTIMIZERS
from tests.conftest import mlp_spec


def test_moons_reaches_95_percent_validation_accuracy(moons, tmp_path):
    events = []
    result = fit(
        mlp_spec(2), moons, TrainConfig(epochs=40, lr=0.01), emit=events.append, out_dir=tmp_path
    )
    assert result["status"] == "completed"
    assert result["metrics"]["val/accuracy"] >= 0.95
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("epoch_end") == 40
    assert result["samples_per_second"] > 0
    # The saved weights reproduce the model's validation accuracy.
    model, meta = load_model(tmp_path / "model.safetensors")
    x, y = moons.split("val")
    acc = (model(x).argmax(1) == y).float().mean().item()
    assert abs(acc - result["metrics"]["val/accuracy"]) < 1e-6
    assert (tmp_path / "checkpoints" / "best.safetensors").exists()


def test_regression_reports_mae_in_original_units_and_r2():
    ds = prepare_builtin("diabetes")
    result = fit(mlp_spec(1), ds, TrainConfig(epochs=60), emit=lambda e: None)
    m = result["metrics"]
    assert set(m) == {"train/loss", "val/loss", "val/mae", "val/r2"}
    assert (
        20 < m["val/mae"] < 70
    )  # target spans 25..346: MAE is in those units, not standardized ones
    assert m["val/r2"] > 0.3


def test_diverging_run_stops_with_advice():
    ds = prepare_builtin("diabetes")
    result = fit(
        mlp_spec(1), ds, TrainConfig(epochs=5, lr=1e3, optimizer="sgd"), emit=lambda e: None
    )
    assert result["status"] == "diverged"
    assert (
        "learning rate, 1000, is most likely too high for this model: try 0.01" in result["message"]
    )


def test_a_loss_that_explodes_but_stays_finite_is_diverged(moons):
    """Adam at 1e6: the loss goes to ~1e19 and the accuracy to chance without ever being NaN."""
    events = []
    result = fit(mlp_spec(2), moons, TrainConfig(epochs=20, lr=1e6), emit=events.append)
    assert result["status"] == "diverged" and result["epochs_completed"] < 20
    started = events[0]
    assert 0.3 < started["loss_ref"] < 1.5  # the untrained model's validation loss, about ln 2
    assert "exploded" in result["message"] and "the untrained model's" in result["message"]
    assert "try 0.001" in result["message"]


def test_a_healthy_run_with_a_high_but_workable_learning_rate_is_not_diverged(moons):
    result = fit(mlp_spec(2), moons, TrainConfig(epochs=15, lr=0.05), emit=lambda e: None)
    assert result["status"] == "completed" and result["metrics"]["val/accuracy"] > 0.9


def test_stop_request_keeps_weights(moons, tmp_path):
    result = fit(
        mlp_spec(2),
        moons,
        TrainConfig(epochs=50),
        emit=lambda e: None,
        should_stop=lambda: True,
        out_dir=tmp_path,
    )
    assert result["status"] == "stopped"
    assert result["epochs_completed"] < 50
    assert (tmp_path / "model.safetensors").exists()


@pytest.mark.parametrize(
    "cfg, words",
    [
        ({"lr": 0}, "greater than 0"),
        ({"lr": -0.1}, "positive learning rate"),
        ({"batch_size": 0}, "at least 1"),
    ],
)
def test_bad_settings_are_refused(cfg, words):
    with pytest.raises(ConfigError, match=words):
        TrainConfig.parse(cfg)


def test_batch_larger_than_data_and_wrong_output_width(moons):
    with pytest.raises(ConfigError, match="larger than the 700 training rows"):
        fit(mlp_spec(2), moons, TrainConfig(batch_size=5000), emit=lambda e: None)
    with pytest.raises(ConfigError, match="set the last Dense layer's units to 2"):
        fit(mlp_spec(3), moons, TrainConfig(), emit=lambda e: None)
    with pytest.raises(ConfigError, match="is for regression"):
        fit(mlp_spec(2), moons, TrainConfig(loss="mse"), emit=lambda e: None)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_every_optimizer_learns(moons, optimizer):
    """Each optimizer in the registry, at five times its usual rate (15 epochs of two moons)."""
    lr = OPTIMIZERS[optimizer].usual_lr * 5
    result = fit(
        mlp_spec(2),
        moons,
        TrainConfig(epochs=15, optimizer=optimizer, lr=lr, nesterov=True),
        emit=lambda e: None,
    )
    assert result["metrics"]["val/accuracy"] > 0.85


@pytest.mark.parametrize(
    "loss", [name for name, loss in LOSSES.items() if loss.task == "regression"]
)
def test_every_regression_loss_learns(loss):
    from engine.data.prepare import prepare_builtin

    ds = prepare_builtin("diabetes")
    result = fit(mlp_spec(1), ds, TrainConfig(epochs=30, loss=loss, lr=0.003), emit=lambda e: None)
    assert result["metrics"]["val/r2"] > 0.3, result["metrics"]


def test_the_memory_estimate_counts_each_optimizers_state():
    from engine.compiler import infer_shapes, memory_estimate

    infos = infer_shapes(parse_spec(mlp_spec(2)), {"features": (2,)})
    params = sum(i.params for i in infos)
    for name, optimizer in OPTIMIZERS.items():
        assert memory_estimate(infos, 1, name)["optimizer state"] == params * optimizer.state * 4


def test_bce_with_logits_on_binary_target(moons):
    result = fit(
        mlp_spec(1),
        moons,
        TrainConfig(epochs=30, loss="bce_with_logits", lr=0.01),
        emit=lambda e: None,
    )
    assert result["metrics"]["val/accuracy"] > 0.9


@pytest.mark.parametrize("loss", ["l1", "huber"])
def test_regression_losses(loss):
    ds = prepare_builtin("diabetes")
    result = fit(mlp_spec(1), ds, TrainConfig(epochs=10, loss=loss), emit=lambda e: None)
    assert math.isfinite(result["metrics"]["val/mae"])


def test_same_seed_same_run(moons):
    a = fit(mlp_spec(2), moons, TrainConfig(epochs=3, seed=4), emit=lambda e: None)
    b = fit(mlp_spec(2), moons, TrainConfig(epochs=3, seed=4), emit=lambda e: None)
    assert a["metrics"] == b["metrics"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_on_cuda(moons):
    result = fit(
        mlp_spec(2), moons, TrainConfig(epochs=20, device="cuda", lr=0.01), emit=lambda e: None
    )
    assert result["metrics"]["val/accuracy"] >= 0.95


def test_model_over_the_memory_budget_is_refused_with_the_estimate(moons):
    with pytest.raises(ConfigError, match=r"needs about .* MB .*over the memory budget of 0 MB"):
        fit(mlp_spec(2), moons, TrainConfig(memory_budget_mb=0.001), emit=lambda e: None)


def test_autoencoder_target_reconstructs_the_input():
    from engine.templates import build

    ds = prepare_builtin("digits")
    result = fit(
        build("autoencoder", ds.meta),
        ds,
        TrainConfig(epochs=2, target="input"),
        emit=lambda e: None,
    )
    assert set(result["metrics"]) == {"train/loss", "val/loss", "val/mae", "val/r2"}
    with pytest.raises(ConfigError, match="must output the input's shape"):
        fit(
            {"nodes": [{"id": "f", "op": "flatten"}, *mlp_spec(10)["nodes"]]},
            ds,
            TrainConfig(target="input"),
            emit=lambda e: None,
        )


def test_every_schedule_in_the_registry_is_built():
    from engine.train.options import SCHEDULES
    from engine.train.options import build_scheduler as make_scheduler

    model = torch.nn.Linear(2, 2)
    for name in SCHEDULES:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler, every = make_scheduler(
            TrainConfig(scheduler=name, epochs=3, warmup_epochs=1), optimizer, 5
        )
        assert (scheduler is None) == (name == "none") and every in (
            None,
            "step",
            "epoch",
            "plateau",
        ), name


def test_nll_trains_a_model_that_ends_in_log_softmax_and_explains_otherwise(moons):
    spec = mlp_spec(2)
    ended = {
        **spec,
        "nodes": spec["nodes"]
        + [{"id": "logp", "op": "activation", "params": {"kind": "log_softmax"}}],
    }
    result = fit(ended, moons, TrainConfig(epochs=15, loss="nll", lr=0.005), emit=lambda e: None)
    assert result["status"] == "completed" and result["metrics"]["val/accuracy"] > 0.85
    with pytest.raises(
        ConfigError, match="expects the model to end in a log_softmax activation.*cross-entropy"
    ):
        fit(spec, moons, TrainConfig(epochs=1, loss="nll"), emit=lambda e: None)


def test_kl_divergence_trains_on_log_probabilities_and_is_nll_without_smoothing(moons):
    from engine.train.options import loss_function

    spec = mlp_spec(2)
    ended = {
        **spec,
        "nodes": spec["nodes"]
        + [{"id": "logp", "op": "activation", "params": {"kind": "log_softmax"}}],
    }
    settings = {"epochs": 15, "loss": "kl_div", "lr": 0.005, "label_smoothing": 0.1}
    result = fit(ended, moons, TrainConfig(**settings, class_weights=True), emit=lambda e: None)
    assert result["status"] == "completed" and result["metrics"]["val/accuracy"] > 0.85
    logp, y = torch.randn(64, 3).log_softmax(1), torch.randint(0, 3, (64,))
    # Against one-hot targets, KL(target || p) is the negative log-likelihood; weights count as NLL's do.
    assert torch.allclose(loss_function("kl_div")(logp, y), torch.nn.functional.nll_loss(logp, y))
    w = torch.tensor([1.0, 2.0, 0.5])
    weighted = torch.nn.functional.nll_loss(logp, y, weight=w)
    assert torch.allclose(loss_function("kl_div", w)(logp, y), weighted)
    with pytest.raises(ConfigError, match="expects the model to end in a log_softmax"):
        fit(spec, moons, TrainConfig(epochs=1, loss="kl_div"), emit=lambda e: None)
