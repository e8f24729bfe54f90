"""Variational autoencoders: the Gaussian latent op, a VAE that learns (its reconstructions beat the mean row's and
its KL is above zero), samples from the prior and interpolations, the CLI (train --task vae, generate), the
bundle's generate.py outside LayerLab, and the mistakes that get a clear message."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from engine.bundle import bundle_bytes
from engine.codegen import model_code
from engine.compiler import compile_spec
from engine.data.prepare import prepare_builtin
from engine.errors import ConfigError
from engine.evaluate import evaluate_run, vae_interpolation
from engine.export import load_model
from engine.layers.generative import GaussianLatent
from engine.linter import lint
from engine.portable import as_input, decode_latent, encode_latent, prior_samples
from engine.runs import create_run, execute, validate
from engine.spec import remove_node
from engine.templates import TEMPLATES, build, suits, vae_template
from tests.test_bundle import run_isolated, unzip
from tests.test_cli import cli_here, run_cli


def test_the_latent_samples_while_training_gives_its_mean_in_eval_and_keeps_the_kl():
    torch.manual_seed(0)
    layer = GaussianLatent(6, 3)
    x = torch.randn(5, 6)
    layer.eval()
    mean = layer(x)
    assert torch.equal(mean, layer.mean(x))
    layer.train()
    assert not torch.allclose(layer(x), mean)  # a sample: mean + sigma * noise
    prior = torch.distributions.Normal(0.0, 1.0)
    posterior = torch.distributions.Normal(layer.mean_out, (0.5 * layer.log_var_out).exp())
    expected = torch.distributions.kl_divergence(posterior, prior).sum(1)
    assert torch.allclose(layer.kl, expected, atol=1e-5)


def test_a_vae_learns_beats_the_mean_image_and_generates(workspace):
    ds = prepare_builtin("digits")
    spec = build("mlp_vae", ds.meta)
    run = create_run(spec, {**TEMPLATES["mlp_vae"].train, "epochs": 30}, ds.path)
    final = execute(run)
    assert final["status"] == "completed"
    assert {"val/reconstruction", "val/kl"} <= set(final["metrics"])
    report = evaluate_run(run)
    summary = report["summary"]
    # binary cross-entropy per image: well below what the average training image scores on every test image
    assert (
        summary["reconstruction"] < 0.9 * summary["mean_row_reconstruction"]
    )  # (it has a floor: soft pixels)
    assert summary["mse"] < 0.75 * summary["mean_row_mse"]  # a 2-number code: about 0.6 here
    assert summary["kl"] > 0.5  # the codes carry information
    assert len(report["samples"]) == 16 and np.asarray(report["samples"][0]).shape == (8, 8)
    latent = report["latent"]  # 2 numbers: drawn as they are, coloured by digit
    assert latent["explained"] is None and len(latent["x"]) == report["n"]
    assert set(latent["labels"]) == set(ds.meta["classes"])
    # the live view's file: validation images beside what the model rebuilds of them
    rebuilt = json.loads((run / "reconstructions.json").read_text())
    assert len(rebuilt["originals"]) == len(rebuilt["rebuilt"]) == 8 and rebuilt["image"]
    # an interpolation starts and ends at the two rows' reconstructions
    model, _ = load_model(run / "model.safetensors")
    model.eval()
    x = ds.split("test")[0]
    line = vae_interpolation(run, "test", 3, 7, steps=5)["steps"]
    ends = model(as_input(x[[3, 7]]))
    assert np.abs(np.asarray(line[0]) / 255 - ends[0, 0].detach().numpy()).max() < 0.01
    assert np.abs(np.asarray(line[-1]) / 255 - ends[1, 0].detach().numpy()).max() < 0.01
    # samples from the prior are not all alike, and decoding a code equals the model on an input coded alike
    samples = prior_samples(model, 32, ds.input_shape, seed=1)
    assert samples.std(0).mean() > 0.02
    codes = encode_latent(model, x[:4])
    assert torch.allclose(
        decode_latent(model, codes, ds.input_shape), model(as_input(x[:4])), atol=1e-5
    )


def test_the_conv_vae_fits_images_whose_sides_divide_by_4_and_its_model_py_matches(workspace):
    ds = prepare_builtin("digits")
    assert suits(TEMPLATES["conv_vae"], ds.meta) and vae_template(ds.meta).name == "conv_vae"
    odd = {**ds.meta, "input_shape": [1, 30, 30]}
    assert not suits(TEMPLATES["conv_vae"], odd) and vae_template(odd).name == "mlp_vae"
    model, _ = compile_spec(build("conv_vae", ds.meta), ds.input_shape, seed=0)
    namespace = {}
    exec(compile(model_code(model), "model.py", "exec"), namespace)  # noqa: S102 - our own generated code
    plain = namespace["Model"]()
    plain.load_state_dict(model.state_dict())
    model.eval(), plain.eval()
    x = torch.rand(3, *ds.input_shape)
    assert torch.allclose(plain(x), model(x), atol=1e-6)


def test_vae_mistakes_are_refused_with_the_fix(workspace):
    ds = prepare_builtin("digits")
    vae = build("mlp_vae", ds.meta)
    with pytest.raises(ConfigError, match="trains only as a variational autoencoder"):
        validate(vae, {"target": "input"}, ds.meta)
    with pytest.raises(ConfigError, match="needs a Gaussian latent layer"):
        validate(build("autoencoder", ds.meta), {"target": "vae"}, ds.meta)
    wine = prepare_builtin("wine")
    with pytest.raises(ConfigError, match="choose mean squared error"):
        validate(
            build("mlp_vae", wine.meta), {"target": "vae", "loss": "bce_with_logits"}, wine.meta
        )
    validate(build("mlp_vae", wine.meta), {"target": "vae"}, wine.meta)  # MSE by default on a table


def test_the_linter_knows_a_vae_of_images_needs_a_sigmoid_and_leaves_its_sigmoid_alone(workspace):
    ds = prepare_builtin("digits")
    spec = build("mlp_vae", ds.meta)
    assert lint(spec, ds.meta, {}) == []  # its sigmoid makes pixels; BCE reads the logits before it
    bare = remove_node(spec, "pixels")
    (finding,) = [f for f in lint(bare, ds.meta, {}) if f.rule == "vae_images_without_sigmoid"]
    fixed, _ = finding.fix(bare, {})
    assert (
        fixed["nodes"][-1]["op"] == "activation"
        and fixed["nodes"][-1]["params"]["kind"] == "sigmoid"
    )
    assert lint(fixed, ds.meta, {}) == []


@pytest.fixture
def wine_csv(tmp_path):
    from sklearn.datasets import load_wine

    path = tmp_path / "wine.csv"
    load_wine(as_frame=True).frame.to_csv(path, index=False)
    return path


def test_cli_trains_a_vae_of_a_table_and_generates_rows_and_the_bundle_does_too(
    workspace, wine_csv, tmp_path
):
    out = tmp_path / "run"
    proc = run_cli("train", "--data", wine_csv, "--target", "target", "--task", "vae", "--epochs", "40",
                   "--beta", "0.5", "--kl-warmup", "3", "--out", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    assert final["type"] == "run_finished" and final["metrics"]["val/kl"] > 0
    config = json.loads((out / "train.json").read_text())["config"]
    assert config["target"] == "vae" and config["beta"] == 0.5 and config["kl_warmup"] == 3
    proc = run_cli("generate", out, "--n", "7", "--out", tmp_path / "samples")
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(tmp_path / "samples" / "samples.csv")
    assert len(rows) == 7 and "alcohol" in rows.columns and "target" not in rows.columns
    # in the wine's own units: alcohol percentages near the data's (11-15 %)
    assert 9 < rows["alcohol"].median() < 17
    unzip(bundle_bytes(out), tmp_path / "bundle")
    run_isolated(tmp_path / "bundle", "generate.py", "--n", "5", "--out", "made")
    assert len(pd.read_csv(tmp_path / "bundle" / "made" / "samples.csv")) == 5


def test_cli_generates_png_images_from_an_image_vae(workspace, capsys, tmp_path):
    ds = prepare_builtin("digits")
    run = create_run(
        build("conv_vae", ds.meta), {**TEMPLATES["conv_vae"].train, "epochs": 2}, ds.path
    )
    execute(run)
    code, err = cli_here(capsys, "generate", run, "--n", "3", "--out", tmp_path / "png")
    assert code == 0, err
    pictures = sorted((tmp_path / "png").glob("*.png"))
    assert [p.name for p in pictures] == ["sample_000.png", "sample_001.png", "sample_002.png"]
    assert Image.open(pictures[0]).size == (8, 8)
    unzip(bundle_bytes(run), tmp_path / "bundle")
    run_isolated(tmp_path / "bundle", "generate.py", "--n", "2", "--out", "made")
    assert len(list((tmp_path / "bundle" / "made").glob("*.png"))) == 2
    # train.py retrains it as a VAE (the KL term included) to the run's metrics and weights
    proc = run_isolated(tmp_path / "bundle", "train.py", "--out", tmp_path / "again.safetensors")
    final = json.loads(proc.stdout.splitlines()[-1])
    assert final["metrics"] == pytest.approx(final["run_metrics"], abs=1e-5)
    assert final["metrics"]["val/kl"] > 0


def test_cli_refuses_vae_flags_without_the_task_and_a_latent_model_without_it(
    workspace, capsys, wine_csv, tmp_path
):
    code, err = cli_here(capsys, "train", "--data", wine_csv, "--target", "target", "--beta", "2", "--out",
                         tmp_path / "r1")  # fmt: skip
    assert code == 2 and "--beta is for --task vae" in err
    wine = prepare_builtin("wine")
    spec = tmp_path / "vae.json"
    spec.write_text(json.dumps(build("mlp_vae", wine.meta)))
    code, err = cli_here(capsys, "train", "--data", wine_csv, "--target", "target", "--spec", spec, "--out",
                         tmp_path / "r2")  # fmt: skip
    assert code == 2 and "--task vae" in err
    code, err = cli_here(
        capsys, "generate", tmp_path / "nothing", "--n", "2", "--out", tmp_path / "s"
    )
    assert code == 2 and "no trained model" in err
