"""The bundle works without LayerLab: model.py loads the weights and matches the engine, predict.py writes the
Predict page's CSV, train.py retrains to the run's weights; each script runs in a fresh interpreter where
`engine` cannot be imported."""

import hashlib
import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from engine.bundle import bundle_bytes
from engine.data.prepare import prepare_builtin, prepare_file
from engine.data.readers import read_table
from engine.errors import LayerLabError
from engine.export import example_input, load_model
from engine.portable import csv_bytes
from engine.predict import load_predictor, predict_images, predict_table
from engine.runs import create_run, execute, read_events
from engine.templates import build
from engine.transfer import read_any_weights
from tests.conftest import ROOT

# Runs a bundle's script as its user would, with LayerLab made unimportable (-I: no cwd or user site on the path).
ISOLATED = (
    "import runpy, sys; sys.modules['engine'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def run_isolated(folder, *args, returncode=0, timeout=300):
    """A bundle script run as its user would, with LayerLab unimportable; it must exit with `returncode`."""
    proc = subprocess.run(
        [sys.executable, "-I", "-c", ISOLATED, *map(str, args)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == returncode, proc.stderr[-3000:]
    return proc


def bundled_run(dataset, template: str, epochs: int, folder):
    """A finished run of a template on `dataset`, and its bundle unzipped into `folder`."""
    run = create_run(build(template, dataset.meta), {"epochs": epochs}, dataset.path)
    execute(run)
    unzip(bundle_bytes(run), folder)
    return run


def unzip(data: bytes, folder):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(folder)
        return set(zf.namelist())


def shop_table(n=400, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "size": rng.normal(100, 20, n),
            "colour": rng.choice(["red", "green", "=blue"], n),
            "member": rng.choice(["yes", "no"], n),
        }
    )
    frame.loc[::13, "size"] = np.nan
    frame["label"] = np.where(
        (frame["size"].fillna(100) > 100) ^ (frame["colour"] == "red"), "buy", "skip"
    )
    return frame


SOFTMAX_MLP = {
    "nodes": [
        {"id": "fc1", "op": "linear", "params": {"out_features": 16}},
        {"id": "act", "op": "activation", "params": {"kind": "relu"}},
        {"id": "drop", "op": "dropout", "params": {"p": 0.2}},
        {"id": "fc2", "op": "linear", "params": {"out_features": 2}},
        {"id": "probs", "op": "activation", "params": {"kind": "softmax"}},
    ]
}


def test_a_table_bundle_runs_without_layerlab(workspace, tmp_path):
    frame = shop_table()
    dataset = prepare_file(frame.to_csv(index=False).encode(), "shop.csv", "label")
    train = {
        "epochs": 6,
        "lr": 0.01,
        "scheduler": "cosine",
        "class_weights": True,
        "label_smoothing": 0.05,
        "clip_grad_norm": 1.0,
    }
    run = create_run(SOFTMAX_MLP, train, dataset.path, name="shop model")
    final = execute(run)
    folder = tmp_path / "bundle"
    names = unzip(bundle_bytes(run), folder)
    assert {
        "model.py",
        "weights.safetensors",
        "state_dict.pt",
        "model.onnx",
        "model.torchscript.pt",
        "preprocessing.json",
        "labels.json",
        "predict.py",
        "train.py",
        "manifest.json",
        "README.md",
        "data.safetensors",
    } <= names
    for script in ("model.py", "predict.py", "train.py"):
        assert "engine" not in [
            line.split()[1].split(".")[0]
            for line in (folder / script).read_text().splitlines()
            if line.startswith(("import ", "from "))
        ]

    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["config"]["scheduler"] == "cosine"
    assert manifest["dataset"]["hash"] == dataset.meta["hash"]
    assert (
        manifest["metrics"] == final["metrics"]
        and manifest["versions"]["torch"] == torch.__version__
    )
    assert (
        manifest["plan"]["train_output"] == "fc2"
    )  # cross-entropy sees the logits, not the softmax
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    assert json.loads((folder / "labels.json").read_text())["classes"] == ["buy", "skip"]

    # model.py + weights.safetensors, in a fresh interpreter with only torch and safetensors, match the engine.
    model, _ = load_model(run / "model.safetensors")
    (x,) = example_input(model, 7)
    torch.save(x, tmp_path / "x.pt")
    check = (
        "import sys, torch; sys.path.insert(0, '.'); from model import load; "
        f"torch.save(load()(torch.load({str(tmp_path / 'x.pt')!r})).detach(), 'y.pt')"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            "import sys; sys.modules['engine'] = None; exec(sys.argv[1])",
            check,
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    with torch.no_grad():
        assert torch.allclose(torch.load(folder / "y.pt"), model(x), atol=1e-6)

    # predict.py on new rows writes exactly the Predict page's CSV (formula cells escaped).
    new = shop_table(60, seed=1).drop(columns="label")
    new.to_csv(tmp_path / "new.csv", index=False)
    run_isolated(folder, "predict.py", tmp_path / "new.csv", "--out", tmp_path / "bundle.csv")
    model, meta = load_predictor(run)
    uploaded = read_table(
        (tmp_path / "new.csv").read_bytes(), "new.csv"
    ).frame  # as the Predict page reads it
    page = csv_bytes(predict_table(model, meta, uploaded))
    assert (tmp_path / "bundle.csv").read_bytes() == page
    assert b"'=blue" in page

    # train.py retrains to the run's weights and metrics.
    proc = run_isolated(folder, "train.py", "--out", tmp_path / "retrained.safetensors")
    assert json.loads(proc.stdout.splitlines()[-1])["metrics"] == pytest.approx(
        final["metrics"], abs=1e-6
    )
    again, original = (
        load_file(tmp_path / "retrained.safetensors"),
        load_file(run / "model.safetensors"),
    )
    assert again.keys() == original.keys()
    assert max((again[k] - original[k]).abs().max().item() for k in again) < 1e-6


def test_an_image_bundle_predicts_a_folder_like_the_predict_page(workspace, tmp_path):
    from PIL import Image

    shapes = prepare_builtin("shapes", n_samples=300)
    folder = tmp_path / "bundle"
    run = bundled_run(shapes, "lenet", 2, folder)
    images = tmp_path / "images"
    images.mkdir()
    for i, img in enumerate((shapes.split("test")[0][:6] * 255).round().to(torch.uint8)):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(images / f"img{i}.png")
    run_isolated(folder, "predict.py", images, "--out", tmp_path / "bundle.csv")
    model, meta = load_predictor(run)
    files = [(p.name, p.read_bytes()) for p in sorted(images.iterdir())]
    page = pd.read_csv(io.BytesIO(csv_bytes(predict_images(model, meta, files))))
    bundle = pd.read_csv(tmp_path / "bundle.csv")
    # The same table; probabilities to float rounding (a conv sums in another order on another thread count).
    pd.testing.assert_frame_equal(bundle, page, check_exact=False, atol=1e-6, rtol=0)
    assert (
        "no such file"
        in run_isolated(folder, "predict.py", tmp_path / "missing", returncode=2).stderr
    )


def test_bundle_from_the_command_line_and_a_run_without_weights(workspace, tmp_path):
    frame = shop_table(200)
    dataset = prepare_file(frame.to_csv(index=False).encode(), "shop.csv", "label")
    run = create_run(SOFTMAX_MLP, {"epochs": 1}, dataset.path)
    with pytest.raises(LayerLabError, match="no trained weights"):
        bundle_bytes(run)
    execute(run)
    assert any(e["type"] == "run_finished" for e in read_events(run)[0])
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "export",
            str(run),
            "--format",
            "bundle",
            "--out",
            str(tmp_path / "b.zip"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    names = unzip((tmp_path / "b.zip").read_bytes(), tmp_path / "b")
    assert "model.py" in names and "train.py" in names
    # A bundle is also something to start from on the Build page: its weights.safetensors is read.
    imported = read_any_weights((tmp_path / "b.zip").read_bytes(), "b.zip")
    original = load_file(run / "model.safetensors")
    assert imported.keys() == original.keys() and all(
        torch.equal(imported[k], original[k]) for k in original
    )
    other = io.BytesIO()
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("notes.txt", "hello")
    with pytest.raises(LayerLabError, match="not a LayerLab bundle"):
        read_any_weights(other.getvalue(), "notes.zip")
    # Too large to include: train.py is told where the data is.
    small = unzip(bundle_bytes(run, data_limit_mb=0), tmp_path / "small")
    assert "data.safetensors" not in small
    manifest = json.loads((tmp_path / "small" / "manifest.json").read_text())
    assert (
        "data.safetensors" in manifest["skipped"]
        and "--data" in manifest["skipped"]["data.safetensors"]
    )
    assert "--data" in run_isolated(tmp_path / "small", "train.py", returncode=2).stderr


def test_a_text_bundle_predicts_raw_text_like_the_stored_tokens(workspace, tmp_path):
    from engine.data.builtin import load_builtin

    reviews = prepare_builtin("reviews", n_samples=400)
    folder = tmp_path / "bundle"
    run = bundled_run(reviews, "lstm_text", 2, folder)
    raw = load_builtin("reviews", n_samples=400)
    texts = [" ".join(raw["vocab"][t] for t in row if t) for row in raw["tokens"][:30]]
    pd.DataFrame({"text": texts}).to_csv(tmp_path / "reviews.csv", index=False)
    run_isolated(folder, "predict.py", tmp_path / "reviews.csv", "--out", tmp_path / "bundle.csv")
    model, meta = load_predictor(run)
    table = predict_table(
        model, meta, read_table((tmp_path / "reviews.csv").read_bytes(), "reviews.csv").frame
    )
    assert (tmp_path / "bundle.csv").read_bytes() == csv_bytes(table)
    with torch.no_grad():  # the words are encoded back into exactly the generated token ids
        stored = torch.softmax(model(torch.from_numpy(raw["tokens"][:30]).float()), 1).numpy()
    assert np.allclose(table[["p(negative)", "p(positive)"]].to_numpy(), stored, atol=1e-6)


def test_model_py_of_every_template_runs_alone_and_matches(tmp_path):
    from engine.codegen import model_code
    from engine.compiler import compile_spec
    from engine.export import save_weights
    from engine.spec import data_inputs
    from engine.templates import TEMPLATES

    metas = {
        "any": {"input_shape": [8], "classes": ["a", "b", "c"]},
        "image": {"input_shape": [3, 32, 32], "classes": ["a", "b", "c", "d"]},
        "text": {"input_shape": [20], "classes": ["neg", "pos"], "vocab_size": 50},
        "mixed": {
            "input_shape": [25],
            "classes": ["neg", "pos"],
            "vocab_size": 50,
            "inputs": {"features": {"shape": [5]}, "review": {"shape": [20], "tokens": True}},
        },
        "series": {"input_shape": [24, 2], "task": "forecast", "preprocessing": {"horizon": 6}},
        "corpus": {"input_shape": [16], "task": "language_model", "vocab_size": 30},
    }
    expected = {}
    for name, template in TEMPLATES.items():
        meta = metas[template.kind]
        model, _ = compile_spec(build(template, meta), data_inputs(meta), seed=1)
        model.eval()
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.py").write_text(model_code(model, name))
        save_weights(model, folder / "weights.safetensors", model.spec)
        x = example_input(model, 5)
        torch.save(x, folder / "x.pt")
        with torch.no_grad():
            expected[name] = model(*x)
    script = (
        "import importlib.util, pathlib, sys, torch\nsys.modules['engine'] = None\n"
        "for folder in sorted(pathlib.Path('.').iterdir()):\n"
        "    spec = importlib.util.spec_from_file_location(f'model_{folder.name}', folder / 'model.py')\n"
        "    module = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(module)\n"
        "    model = module.load(folder / 'weights.safetensors')\n"
        "    with torch.no_grad():\n"
        "        torch.save(model(*torch.load(folder / 'x.pt')), folder / 'y.pt')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, out in expected.items():
        assert torch.allclose(torch.load(tmp_path / name / "y.pt"), out, atol=1e-5), name


def test_predict_takes_a_bundle_a_run_folder_or_a_weights_file_and_names_them_otherwise(
    workspace, tmp_path, capsys
):
    """`python -m engine predict --model bundle.zip` said "not a valid .safetensors file (header too large).
    Download the weights again" of the bundle the Export page offers first."""
    from engine.cli import main

    dataset = prepare_file(shop_table().to_csv(index=False).encode(), "shop.csv", "label")
    run = create_run(SOFTMAX_MLP, {"epochs": 2}, dataset.path, name="shop model")
    execute(run)
    (tmp_path / "bundle.zip").write_bytes(bundle_bytes(run))
    shop_table(20, seed=1).drop(columns="label").to_csv(tmp_path / "new.csv", index=False)

    def predict(model) -> tuple[int, str]:
        try:
            code = main(
                [
                    "predict",
                    "--model",
                    str(model),
                    "--data",
                    str(tmp_path / "new.csv"),
                    "--out",
                    str(tmp_path / "out.csv"),
                ]
            )
        except SystemExit as e:
            code = e.code
        return code, capsys.readouterr().err

    outputs = []
    for model in (tmp_path / "bundle.zip", run, run / "model.safetensors"):
        code, err = predict(model)
        assert code == 0, err
        outputs.append((tmp_path / "out.csv").read_bytes())
    assert outputs[0] == outputs[1] == outputs[2] and outputs[0].count(b"\n") == 21

    (tmp_path / "random.bin").write_bytes(b"\x00" * 64 + bytes(range(256)))
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("notes.txt", "hello")
    whole = (tmp_path / "bundle.zip").read_bytes()
    (tmp_path / "cut.zip").write_bytes(whole[:-4000])  # its directory cut off: no longer a zip
    (tmp_path / "bent.zip").write_bytes(
        whole[:200] + bytes(2000) + whole[2200:]
    )  # a zip whose data is damaged
    for bad, words in (
        ("random.bin", "is not a model LayerLab can read: pass a bundle"),
        ("cut.zip", "is a damaged zip archive"),
        ("other.zip", "a zip without weights.safetensors"),
        ("bent.zip", "is a damaged zip archive"),
        ("nowhere.zip", "no trained model at"),
    ):
        code, err = predict(tmp_path / bad)
        assert (
            code == 2 and words in err and "Traceback" not in err and "header too large" not in err
        ), (bad, err)


def test_a_two_input_bundle_retrains_and_predicts_without_layerlab(workspace, tmp_path):
    """Text beside numbers: the bundle's train.py rebuilds the same weights and its predict.py reads rows with every
    column, as the run does."""
    from engine.templates import starter_for

    orders = prepare_builtin("orders", n_samples=300)
    run = create_run(
        starter_for(orders.meta), {"epochs": 3, "lr": 0.003}, orders.path, name="orders model"
    )
    final = execute(run)
    folder = tmp_path / "bundle"
    unzip(bundle_bytes(run), folder)
    proc = run_isolated(folder, "train.py", "--out", tmp_path / "retrained.safetensors")
    assert json.loads(proc.stdout.splitlines()[-1])["metrics"] == pytest.approx(
        final["metrics"], abs=1e-6
    )
    again, original = (
        load_file(tmp_path / "retrained.safetensors"),
        load_file(run / "model.safetensors"),
    )
    assert max((again[k] - original[k]).abs().max().item() for k in again) < 1e-6
    from engine.data.builtin import _orders

    rows = _orders(8, 0.0, np.random.default_rng(5)).drop(columns="ordered_again")
    rows.to_csv(tmp_path / "new.csv", index=False)
    run_isolated(folder, "predict.py", tmp_path / "new.csv", "--out", tmp_path / "p.csv")
    model, meta = load_predictor(run)
    assert (tmp_path / "p.csv").read_bytes() == csv_bytes(predict_table(model, meta, rows))
