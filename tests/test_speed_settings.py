"""Mixed precision, torch.compile, channels-last and CUDA out-of-memory: each setting does what it says."""

import shutil
import subprocess
import sys

import pytest
import torch

from engine.compiler import GraphModel
from engine.data.prepare import prepare_builtin
from engine.errors import ConfigError
from engine.runs import create_run, read_events
from engine.templates import build
from engine.train.config import TrainConfig
from engine.train.loop import fit
from engine.workspace import read_json
from tests.conftest import ROOT, mlp_spec


def train(spec, dataset, **cfg) -> list[dict]:
    events = []
    fit(spec, dataset, TrainConfig.parse(cfg), emit=events.append)
    return events


def test_defaults_are_plain_32_bit_and_uncompiled_on_the_cpu(moons):
    started = train(mlp_spec(2), moons, epochs=1)[0]
    assert (started["precision"], started["compiled"], started["channels_last"]) == (
        "32",
        False,
        False,
    )


def linear_output_dtypes(run) -> set:
    """The dtypes Linear layers produce on training batches (32 rows) while `run()` trains."""
    seen = set()
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: (
            seen.add(o.dtype) if isinstance(m, torch.nn.Linear) and len(o) == 32 else None
        )
    )
    try:
        run()
    finally:
        hook.remove()
    return seen


def test_bf16_autocast_trains_on_the_cpu(moons):
    events = []
    dtypes = linear_output_dtypes(
        lambda: events.extend(train(mlp_spec(2), moons, epochs=15, lr=0.01, precision="bf16"))
    )
    assert events[0]["precision"] == "bf16" and dtypes == {torch.bfloat16}
    assert events[-1]["metrics"]["val/accuracy"] >= 0.95
    assert linear_output_dtypes(lambda: train(mlp_spec(2), moons, epochs=1)) == {torch.float32}


def test_fp16_needs_cuda_and_says_so(moons):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="precision 16 .* needs a CUDA GPU"):
        create_run(mlp_spec(2), {"precision": "16"}, moons.path)


@pytest.mark.skipif(
    not shutil.which("gcc") and not shutil.which("cc"), reason="torch.compile needs a C compiler"
)
def test_compiled_run_learns_like_the_eager_one(moons):
    eager = train(mlp_spec(2), moons, epochs=10, lr=0.01)
    compiled = train(mlp_spec(2), moons, epochs=10, lr=0.01, compile=True)
    assert compiled[0]["compiled"] is True, [e for e in compiled if e["type"] == "notice"]
    assert compiled[-1]["metrics"]["val/accuracy"] >= 0.95
    assert compiled[-1]["metrics"]["val/loss"] == pytest.approx(
        eager[-1]["metrics"]["val/loss"], rel=0.2, abs=0.01
    )


def test_channels_last_image_batches(workspace):
    shapes = prepare_builtin("shapes", n_samples=300)
    events = train(build("lenet", shapes.meta), shapes, epochs=2, channels_last=True)
    assert events[0]["channels_last"] is True and events[-1]["status"] == "completed"
    assert (
        train(mlp_spec(2), prepare_builtin("moons"), epochs=1, channels_last=True)[0][
            "channels_last"
        ]
        is False
    )


def test_out_of_memory_fails_the_run_cleanly_with_the_batch_size(moons, tmp_path):
    run = create_run(mlp_spec(2), {"epochs": 5, "batch_size": 64}, moons.path)
    events, calls = [], []

    def exhaust(
        module, inputs, output
    ):  # the allocator's own error, raised where a real one would be
        calls.append(1)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: exhaust(m, i, o) if isinstance(m, GraphModel) else None
    )
    try:
        result = fit(
            mlp_spec(2),
            moons,
            TrainConfig(epochs=5, batch_size=64),
            emit=events.append,
            out_dir=run,
        )
    finally:
        hook.remove()
    assert result["status"] == "failed" and result["out_of_memory"]
    assert "batch size 64" in result["message"] and "try 32" in result["message"]
    assert events[-1] == result
    after = fit(
        mlp_spec(2), moons, TrainConfig(epochs=2), emit=lambda e: None
    )  # the process goes on training
    assert after["status"] == "completed"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_cuda_out_of_memory_releases_the_gpu(moons):
    wide = {
        "version": 1,
        "nodes": [
            {"id": "fc", "op": "linear", "params": {"out_features": 2**20}},
            {"id": "out", "op": "linear", "params": {"out_features": 2}},
        ],
    }
    free_before = torch.cuda.mem_get_info()[0]
    result = fit(
        wide,
        moons,
        TrainConfig(
            epochs=1, batch_size=700, device="cuda", memory_budget_mb=10**7, precision="32"
        ),
        emit=lambda e: None,
    )
    assert result["status"] == "failed" and "batch size 700" in result["message"]
    assert torch.cuda.mem_get_info()[0] >= free_before - 2**28
    assert (
        fit(mlp_spec(2), moons, TrainConfig(epochs=2, device="cuda"), emit=lambda e: None)["status"]
        == "completed"
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_mixed_precision_on_cuda(moons, precision):
    result = fit(
        mlp_spec(2),
        moons,
        TrainConfig(epochs=20, lr=0.01, device="cuda", precision=precision),
        emit=lambda e: None,
    )
    assert result["metrics"]["val/accuracy"] >= 0.95


def test_cli_speed_flags_reach_train_json(moons, tmp_path):
    csv = tmp_path / "moons.csv"
    x, y = moons.split("train")
    csv.write_text(
        "a,b,label\n"
        + "\n".join(f"{p[0]:.4f},{p[1]:.4f},{int(t)}" for p, t in zip(x, y, strict=True))
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "train",
            "--data",
            str(csv),
            "--target",
            "label",
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--precision",
            "bf16",
            "--no-diagnostics",
            "--no-channels-last",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    config = read_json(tmp_path / "run" / "train.json")["config"]
    assert (config["precision"], config["diagnostics"], config["channels_last"]) == (
        "bf16",
        False,
        False,
    )
    assert not any(e["type"] == "diagnostics" for e in read_events(tmp_path / "run")[0])
