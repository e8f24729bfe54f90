"""Transfer learning in the browser: upload saved weights on Build, see the match report, freeze a layer on
Train, and the run starts from those weights with that layer unchanged."""

import torch
from safetensors.torch import load_file

from engine.data.prepare import prepare_builtin
from engine.runs import create_run, execute, list_runs
from engine.spec import starter_spec
from tests.browser.conftest import (
    add_to_multiselect,
    no_exceptions,
    open_page,
    settle,
    shot,
    train_and_wait,
    visit,
)


def test_import_weights_freeze_and_fine_tune(server, page):
    dataset = prepare_builtin("moons")
    spec = starter_spec(dataset.task, dataset.input_shape, dataset.num_classes)
    source = create_run(spec, {"epochs": 5, "lr": 0.01}, dataset.path, name="source")
    execute(source)
    visit(server, page, dataset, spec, None, "Build")
    page.get_by_text("Start from saved weights").scroll_into_view_if_needed()
    page.locator('[data-testid="stFileUploader"]', has_text="Weights").locator(
        'input[type="file"]'
    ).set_input_files(str(source / "model.safetensors"))
    settle(page)
    loaded = page.locator('[data-testid="stMetric"]', has_text="Loaded tensors")
    loaded.wait_for()
    assert loaded.locator('[data-testid="stMetricValue"]').inner_text() == "6"
    shot(page, "transfer-1-report")

    open_page(page, "Train")
    page.get_by_text("Starts from the weights in model.safetensors").wait_for()
    page.get_by_text("Advanced").click()
    add_to_multiselect(page, "Freeze layers", "dense_1")
    train_and_wait(page, 3)
    no_exceptions(page)
    run = next(r for r in list_runs() if r["id"] != source.name)
    assert run["config"]["freeze"] == ["dense_1"] and run["parent"]["checkpoint"] == "imported"
    before, after = (
        load_file(source / "model.safetensors"),
        load_file(f"{run['path']}/model.safetensors"),
    )
    assert torch.equal(after["layers.dense_1.weight"], before["layers.dense_1.weight"])
    assert not torch.equal(after["layers.dense_2.weight"], before["layers.dense_2.weight"])
    shot(page, "transfer-2-trained")
