"""The bundle in the browser: build it on the Export page, download and unzip it, run its predict.py outside
LayerLab, and upload it on the Build page to start a new model from its weights."""

import zipfile

from playwright.sync_api import expect

from engine import local_service
from engine.evaluate import evaluate_run
from engine.portable import csv_bytes
from engine.predict import load_predictor, predict_table
from tests.browser.conftest import no_exceptions, open_page, settle, shot, trained_starter, visit
from tests.test_bundle import run_isolated


def test_download_unzip_and_reuse_the_bundle(server, page, tmp_path):
    dataset, spec, run = trained_starter("iris", "iris-run", epochs=20, lr=0.01)
    visit(server, page, dataset, spec, run.name, "Export")
    page.get_by_role("button", name="Build bundle (.zip)").click()
    download = page.get_by_role("button", name="Download bundle (.zip)")
    download.wait_for(timeout=120_000)
    shot(page, "export-bundle")
    with page.expect_download() as dl:
        download.click()
    zipped = tmp_path / "bundle.zip"
    dl.value.save_as(zipped)
    assert dl.value.suggested_filename == f"{run.name}.zip"
    with zipfile.ZipFile(zipped) as zf:
        zf.extractall(tmp_path / "bundle")
        names = set(zf.namelist())
    assert {
        "model.py",
        "weights.safetensors",
        "model.onnx",
        "predict.py",
        "train.py",
        "manifest.json",
    } <= names

    # Its predict.py, with LayerLab unimportable, predicts like the engine on rows of the same columns.
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)\n5.1,3.5,1.4,0.2\n"
        "6.7,3.0,5.2,2.3\n"
    )
    run_isolated(tmp_path / "bundle", "predict.py", rows, "--out", tmp_path / "p.csv")
    import pandas as pd

    model, meta = load_predictor(run)
    assert (tmp_path / "p.csv").read_bytes() == csv_bytes(
        predict_table(model, meta, pd.read_csv(rows))
    )

    # Deploy: a local service started from the page answers its own example request there, and stops on request.
    assert {"serve.py", "service.py", "Dockerfile", "requirements.txt", "MODEL_CARD.md"} <= names
    page.get_by_role("button", name="Start a local service").click()
    send = page.get_by_role("button", name="Send the example request")
    send.wait_for(timeout=60_000)
    service = local_service.running(run)
    assert (
        service
        and service["url"]
        in page.locator('[data-testid="stCode"]', has_text="curl").first.inner_text()
    )
    send.click()
    answered = page.get_by_text("POST /predict answered HTTP 200")
    answered.wait_for(timeout=60_000)
    answer = page.locator('[data-testid="stJson"]').filter(has_text="probabilities").inner_text()
    assert any(c in answer for c in meta["classes"]), answer
    no_exceptions(page)
    shot(page, "export-serve")
    page.get_by_role("button", name="Stop the service").click()
    page.get_by_role("button", name="Start a local service").wait_for()
    assert local_service.running(run) is None

    # Quantized variants, compared on the page.
    page.get_by_role("button", name="Quantize and compare").click()
    page.get_by_text(f"Scored on {len(dataset.split('test')[1])} test rows").wait_for(
        timeout=120_000
    )
    expect(page.locator('[data-testid="stDataFrame"]')).to_be_visible()
    for fmt in (
        "quantized-dynamic",
        "onnx-int8",
        "onnx-int8-static",
    ):  # each variant built, with its download
        expect(page.get_by_role("button", name=f"Download {fmt}", exact=True)).to_be_visible()
    no_exceptions(page)
    shot(page, "export-quantize")
    # The bundle's model card, with the run's test accuracy in its metrics table.
    page.get_by_text("Preview the model card").click()
    card = page.locator('[data-testid="stMarkdownContainer"]').filter(
        has=page.get_by_role("heading", name="Known limitations")
    )
    card.wait_for(timeout=60_000)
    accuracy = evaluate_run(run, "test")["summary"]["accuracy"]
    expect(card.get_by_role("row", name=f"accuracy {accuracy:.4g}", exact=True)).to_be_visible()

    # The bundle is also a starting point on the Build page: all of its tensors load into the same model.
    open_page(page, "Build")
    page.get_by_text("Start from saved weights").scroll_into_view_if_needed()
    page.locator('[data-testid="stFileUploader"]', has_text="Weights").locator(
        'input[type="file"]'
    ).set_input_files(str(zipped))
    settle(page)
    loaded = page.locator('[data-testid="stMetric"]', has_text="Loaded tensors")
    loaded.wait_for()
    assert loaded.locator('[data-testid="stMetricValue"]').inner_text() == str(
        len(model.state_dict())
    )
    no_exceptions(page)
