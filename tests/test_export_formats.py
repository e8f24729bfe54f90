"""ONNX and TorchScript exports reproduce the model: onnxruntime at batch 1 and 7, torch.jit.load; and the CLI."""

import io
import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from engine.data.prepare import prepare_builtin
from engine.export import example_input, input_names, load_model, onnx_bytes, torchscript_bytes
from engine.runs import create_run, execute
from engine.templates import build
from tests.conftest import ROOT, mlp_spec


@pytest.fixture
def models(workspace):
    out = {}
    for template, data in (("keras_mlp", "iris"), ("resnet", "shapes"), ("lstm_text", "reviews")):
        dataset = prepare_builtin(data, n_samples=120) if data != "iris" else prepare_builtin(data)
        run = create_run(
            build(template, dataset.meta), {"epochs": 1, "batch_size": 16}, dataset.path
        )
        execute(run)
        out[template] = load_model(run / "model.safetensors")[0]
    return out


def test_onnx_runs_in_onnxruntime_at_batch_1_and_7(models):
    for name, model in models.items():
        session = ort.InferenceSession(onnx_bytes(model), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape[0] == "batch", name  # a dynamic batch dimension
        for batch in (1, 7):
            xs = example_input(model, batch)
            with torch.no_grad():
                expected = model(*xs).numpy()
            feed = {n: x.numpy() for n, x in zip(input_names(model), xs, strict=True)}
            assert np.allclose(session.run(None, feed)[0], expected, rtol=1e-4, atol=1e-5), name


def test_torchscript_loads_and_matches(models):
    for name, model in models.items():
        loaded = torch.jit.load(io.BytesIO(torchscript_bytes(model)))
        xs = example_input(model, 5)
        with torch.no_grad():
            assert torch.allclose(loaded(*xs), model(*xs), rtol=1e-4, atol=1e-5), name


def test_cli_exports_each_format(moons, tmp_path):
    run = create_run(mlp_spec(2), {"epochs": 2}, moons.path)
    execute(run)
    for fmt, name in (
        ("onnx", "m.onnx"),
        ("torchscript", "m.ts"),
        ("safetensors", "m.safetensors"),
        ("state_dict", "m.pt"),
    ):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "engine",
                "export",
                str(run),
                "--format",
                fmt,
                "--out",
                str(tmp_path / name),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["bytes"] == (tmp_path / name).stat().st_size > 0
    x = moons.split("test")[0][:7].numpy()
    model, _ = load_model(run / "model.safetensors")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        assert np.allclose(
            session.run(None, {"input": x})[0], model(torch.from_numpy(x)).numpy(), atol=1e-5
        )
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert set(state) == set(model.state_dict())
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "export",
            str(tmp_path),
            "--format",
            "onnx",
            "--out",
            str(tmp_path / "x.onnx"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "no model.safetensors" in bad.stderr
