"""A table with a text column beside numbers, all the way through the browser: upload it, keep the proposed two-input
model, train, evaluate, predict new rows, and run the bundle's predict.py outside LayerLab."""

import io

import numpy as np
import pandas as pd
from playwright.sync_api import expect

from engine.data.builtin import _orders
from engine.data.readers import read_table
from engine.portable import csv_bytes
from engine.predict import load_predictor, predict_table
from engine.runs import runs_dir
from tests.browser.conftest import (
    download_bundle,
    no_exceptions,
    open_page,
    settle,
    shot,
    train_and_wait,
)
from tests.browser.test_upload import upload
from tests.test_bundle import run_isolated


def same_predictions(path, expected: bytes) -> None:
    """The same table, classes and columns; probabilities equal to float32 rounding (another process may sum the
    embedding's vectors in another order: a last digit differed on CI)."""
    got, want = pd.read_csv(path), pd.read_csv(io.BytesIO(expected))
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-5, atol=1e-6)


def test_a_text_and_numbers_table_trains_two_inputs_and_predicts_outside_layerlab(
    server, page, tmp_path
):
    table = _orders(800, 0.05, np.random.default_rng(3))
    table.insert(
        0, "order_id", [f"o{i:05d}" for i in range(len(table))]
    )  # an ID: ignored, and said so
    path = tmp_path / "food orders.csv"
    table.to_csv(path, index=False)

    upload(server, page, path)
    expect(page.get_by_text("800 rows × 6 columns")).to_be_visible()
    page.get_by_role("button", name="Prepare dataset").click()
    settle(page)
    expect(page.get_by_text("In use: food orders")).to_be_visible()
    expect(
        page.get_by_text("features (7,), review (64,)")
    ).to_be_visible()  # two inputs, the text's own
    shot(page, "mixed-1-data")

    open_page(page, "Build")
    expect(page.get_by_text("a table with text and other columns: two inputs")).to_be_visible()
    expect(page.locator(".ll-input")).to_have_text("input (7,) · input:review (64,)")
    expect(page.locator(".ll-node", has_text="Embedding")).to_contain_text("input:review")
    no_exceptions(page)
    shot(page, "mixed-2-build")

    open_page(page, "Train")
    train_and_wait(page, 15, timeout=180)
    settle(page)
    no_exceptions(page)
    (run,) = [p for p in runs_dir().iterdir() if (p / "model.safetensors").exists()]

    open_page(page, "Evaluate")
    page.get_by_text("rows of the test split").wait_for()
    accuracy = page.locator('[data-testid="stMetric"]', has_text="Accuracy").locator(
        '[data-testid="stMetricValue"]'
    )
    assert float(accuracy.inner_text().rstrip("%")) >= 70, accuracy.inner_text()
    page.get_by_text("Misclassified, most confident first").wait_for()
    no_exceptions(page)
    shot(page, "mixed-3-evaluate")

    # Predict: new rows with every column (and an extra one), through the page and compared with the engine.
    new = tmp_path / "new orders.csv"
    rows = _orders(5, 0.0, np.random.default_rng(9)).drop(columns="ordered_again")
    rows["note"] = "kept beside the predictions"
    rows.to_csv(new, index=False)
    model, meta = load_predictor(run)
    # read as the Predict page reads it (pandas' own float parser may differ in the last digit)
    expected = csv_bytes(predict_table(model, meta, read_table(new.read_bytes(), new.name).frame))
    open_page(page, "Predict")
    page.locator('[data-testid="stFileUploader"]', has_text="Rows to predict").locator(
        'input[type="file"]'
    ).set_input_files(str(new))
    page.get_by_text("5 prediction(s).").wait_for()
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download predictions (CSV)").click()
    dl.value.save_as(tmp_path / "got.csv")
    same_predictions(tmp_path / "got.csv", expected)
    no_exceptions(page)
    shot(page, "mixed-4-predict")

    # The bundle: its predict.py, with LayerLab unimportable, predicts the same.
    open_page(page, "Export")
    names = download_bundle(page, tmp_path / "bundle")
    assert {"model.py", "model.onnx", "predict.py", "train.py"} <= names
    run_isolated(tmp_path / "bundle", "predict.py", new, "--out", tmp_path / "p.csv")
    same_predictions(tmp_path / "p.csv", expected)
    no_exceptions(page)
