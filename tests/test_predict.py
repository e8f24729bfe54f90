"""Predictions on new data: the saved preprocessing reproduces training's inputs; CSV cells cannot become
formulas; images predict like the dataset's own; the CLI writes the same table."""

import csv
import io
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from engine.data.prepare import prepare_builtin, prepare_file
from engine.errors import LayerLabError
from engine.evaluate import evaluate_run
from engine.portable import csv_bytes
from engine.predict import load_predictor, predict_images, predict_table
from engine.runs import create_run, execute
from engine.templates import build
from tests.conftest import ROOT, mlp_spec


def test_new_rows_get_the_training_preprocessing_and_the_models_predictions(workspace, tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "size": rng.normal(100, 20, 400),
            "colour": rng.choice(["red", "green", "blue"], 400),
            "note": ['=HYPERLINK("x")' if i % 50 == 0 else "ok" for i in range(400)],
        }
    )
    frame["label"] = np.where((frame["size"] > 100) ^ (frame["colour"] == "red"), "yes", "no")
    data = frame.to_csv(index=False).encode()
    dataset = prepare_file(data, "shop.csv", "label")
    run = create_run(mlp_spec(2), {"epochs": 40, "lr": 0.01}, dataset.path)
    execute(run)
    model, meta = load_predictor(run)
    table = predict_table(model, meta, frame.drop(columns="label").sample(frac=1, random_state=0))
    assert list(table.columns[:4]) == ["prediction", "confidence", "p(no)", "p(yes)"]
    assert np.allclose(table[["p(no)", "p(yes)"]].sum(1), 1)
    # The same rows through the stored test split give the same probabilities.
    x_test = dataset.split("test")[0]
    with torch.no_grad():
        stored = torch.softmax(model(x_test), 1).numpy()
    again = predict_table(model, meta, frame.drop(columns="label"))
    as_rows = again[["p(no)", "p(yes)"]].to_numpy()
    matches = [np.abs(as_rows - row).max(1).min() < 1e-6 for row in stored]
    assert all(matches)
    accuracy = (again["prediction"] == frame["label"]).mean()
    assert accuracy >= evaluate_run(run)["summary"]["accuracy"] - 0.1
    written = csv_bytes(again).decode()
    notes = [row["note"] for row in csv.DictReader(io.StringIO(written))]
    assert (
        notes[0] == '\'=HYPERLINK("x")' and notes[1] == "ok"
    )  # a formula stays text in a spreadsheet
    with pytest.raises(LayerLabError, match="lacks the column"):
        predict_table(model, meta, frame.drop(columns=["label", "size"]))

    (tmp_path / "new.csv").write_bytes(frame.drop(columns="label").to_csv(index=False).encode())
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "predict",
            "--model",
            str(run / "model.safetensors"),
            "--data",
            str(tmp_path / "new.csv"),
            "--out",
            str(tmp_path / "p.csv"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "p.csv").read_bytes() == written.encode()


def test_images_predict_like_the_training_images(workspace, tmp_path):
    from PIL import Image

    shapes = prepare_builtin("shapes", n_samples=300)
    run = create_run(build("lenet", shapes.meta), {"epochs": 3}, shapes.path)
    execute(run)
    model, meta = load_predictor(run)
    x = (
        (shapes.split("test")[0][:5] * 255).round().to(torch.uint8)
    )  # the test images as 8-bit PNG files
    files = []
    for i, img in enumerate(x):
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="PNG")
        files.append((f"img{i}.png", buf.getvalue()))
    table = predict_images(model, meta, files)
    with torch.no_grad():
        expected = torch.softmax(model(x.float() / 255), 1).numpy()
    assert np.allclose(table[[f"p({c})" for c in meta["classes"]]].to_numpy(), expected, atol=1e-5)
    with pytest.raises(LayerLabError, match="none of the 1 image.*unreadable"):
        predict_images(model, meta, [("bad.png", b"not an image")])
    mixed = predict_images(model, meta, [files[0], ("bad.png", b"not an image"), files[1]])
    assert mixed["file"].tolist() == ["img0.png", "bad.png", "img1.png"]
    assert np.allclose(
        mixed[[f"p({c})" for c in meta["classes"]]].to_numpy()[[0, 2]], expected[:2], atol=1e-5
    )
    assert mixed["error"][0] == mixed["error"][2] == "" and "unreadable" in mixed["error"][1]
    assert mixed[[f"p({c})" for c in meta["classes"]]].iloc[1].isna().all()
    with pytest.raises(LayerLabError, match="trained on images"):
        predict_table(model, meta, pd.DataFrame({"a": [1]}))


def test_rows_for_a_model_without_a_fitted_vocabulary_get_a_message():
    from engine.data.tabular import apply_preprocessing

    with pytest.raises(LayerLabError, match="prepare the dataset again"):
        apply_preprocessing(
            pd.DataFrame({"text": ["good film"]}), {"kind": "tokens", "vocab_size": 40}
        )


def test_key_columns_come_first_and_the_users_rows_are_kept_for_evaluate(workspace):
    from engine.data.prepare import kept_rows
    from engine.portable import with_rows

    rng = np.random.default_rng(0)
    n = 120
    df = pd.DataFrame(
        {
            "size": rng.normal(0, 1, n),
            "colour": rng.choice(["red", "blue"], n),
            "passenger_id": [f"P{i:04d}" for i in range(n)],
        }
    )
    df["label"] = np.where(df["size"] > 0, "yes", "no")
    ds = prepare_file(df.to_csv(index=False).encode(), "people.csv", "label")
    run = create_run(mlp_spec(2), {"epochs": 2}, ds.path)
    execute(run)
    model, meta = load_predictor(run)
    table = predict_table(model, meta, df.drop(columns=["label"]).assign(note="x"))
    assert list(table.columns[:3]) == ["passenger_id", "prediction", "confidence"]  # the key first
    assert list(table.columns[-3:]) == ["size", "colour", "note"]
    assert list(with_rows(table[["prediction"]], df.head(3), meta["preprocessing"]).columns) == [
        "passenger_id",
        "prediction",
        "size",
        "colour",
        "label",
    ]
    # Evaluate's misclassified rows come back as the user's own rows, not scaled numbers
    report = evaluate_run(run, "test")
    rows = [r["row"] for r in report["misclassified"]] or [0, 1]
    own = kept_rows(ds, "test", rows)
    x_test = ds.split("test")[0].numpy()
    size = meta["preprocessing"]["columns"][0]
    assert np.allclose((own["size"] - size["shift"]) / size["scale"], x_test[rows, 0], atol=1e-5)
    assert set(own.columns) == {"size", "colour", "passenger_id", "label"}


def test_a_drawing_unlike_the_training_images_is_flagged(workspace):
    from engine.predict import novelty, novelty_reference

    ds = prepare_builtin("digits")
    reference = novelty_reference(ds)
    test_image = ds.split("test")[0][0].numpy()
    assert not novelty(test_image, reference)[1]  # a real digit is like the training images
    outline = np.zeros_like(test_image)
    outline[..., 0, :] = outline[..., -1, :] = outline[..., :, 0] = outline[..., :, -1] = (
        255  # a square's outline
    )
    assert novelty(outline, reference)[1]
    assert novelty(np.full_like(test_image, 255), reference)[1]  # all white
