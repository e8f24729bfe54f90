"""The whole journey a new user takes, in a real browser: data -> drag-built model -> live training ->
downloaded weights that load into a freshly compiled model."""

import pytest
import torch

from engine.compiler import compile_spec
from engine.export import load_model, read_weights
from engine.spec import parse_spec
from tests.browser.conftest import (
    drop,
    middle,
    no_exceptions,
    open_page,
    settle,
    shot,
    start_training,
)

CHART_POINTS = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
                     .map(p => (p.data || []).reduce((n, t) => n + ((t.x || []).length), 0))"""


def nav_labels(page):
    return [
        t.strip().split("\n")[-1]
        for t in page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
    ]


@pytest.mark.parametrize("path", ["", "build", "train"])
def test_fresh_server_shows_exactly_our_pages(server, page, path):
    # The first request after a start decides Streamlit's multipage mode: a deep link must get the router too.
    page.goto(f"{server.url}/{path}")
    settle(page)
    # the shared sidebar: app.py ran (only there: a template's description on the Build page says "trains on")
    page.get_by_test_id("stSidebarUserContent").get_by_text("Trains on").wait_for()
    assert nav_labels(page) == ["Data", "Build", "Train", "Tune", "Evaluate", "Predict", "Export"]
    assert page.locator("h1").first.inner_text() == (path or "data").capitalize()
    no_exceptions(page)


def test_data_to_downloaded_weights(server, page, tmp_path):
    page.goto(server.url)
    settle(page)
    no_exceptions(page)

    # Data: the biggest two-moons set, so the run lasts long enough to watch.
    page.locator('input[type="range"][aria-label="Samples"]').focus()
    page.keyboard.press("End")
    settle(page)
    page.get_by_role("button", name="Use this dataset").first.click()
    settle(page)
    page.get_by_text("In use: Two moons (n=10000").wait_for()
    shot(page, "journey-1-data")

    # Build: drag Dropout from the palette onto the edge into the second Dense layer.
    open_page(page, "Build")
    nodes = page.locator(".ll-node")
    nodes.nth(4).wait_for()
    assert nodes.count() == 5
    page.locator(".lc-board").scroll_into_view_if_needed()
    x, y = middle(page, "relu_1", "dense_2")
    board = page.locator(".lc-board").bounding_box()
    drop(page, "dropout", x - board["x"], y - board["y"])
    settle(page)
    page.locator(".ll-node").nth(5).wait_for()
    titles = [t.split("\n")[0] for t in page.locator(".ll-node .t").all_inner_texts()]
    assert titles == ["Dense", "Activation", "Dropout", "Dense", "Activation", "Dense"]
    # Clicking a layer in the stack opens its form.
    page.locator(".ll-node", has_text="Dropout").click()
    settle(page)
    page.get_by_label("Drop probability").first.wait_for()
    no_exceptions(page)
    shot(page, "journey-2-build")

    # Train: long enough to see the curves grow, then stop.
    open_page(page, "Train")
    start_training(page, 400)
    page.get_by_text("samples/s").first.wait_for(timeout=60_000)
    growth, last = 0, None
    for _ in range(60):
        page.wait_for_timeout(700)
        points = sum(page.evaluate(CHART_POINTS)[:2])
        if last is not None and points > last:
            growth += 1
        last = points
        if growth >= 3:
            break
    assert growth >= 3, f"the live chart grew only {growth} times"
    shot(page, "journey-3-train-live")
    page.get_by_role("button", name="Stop").first.click()
    page.get_by_text("Run stopped").wait_for(timeout=15_000)
    settle(page)
    no_exceptions(page)
    shot(page, "journey-4-train-stopped")

    # Export: download the weights and load them into a freshly compiled model.
    open_page(page, "Export")
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download model.safetensors").click()
    path = tmp_path / "model.safetensors"
    dl.value.save_as(path)
    shot(page, "journey-5-export")
    tensors, meta = read_weights(path.read_bytes())
    spec = parse_spec(meta["spec"])
    assert [n.op for n in spec.nodes] == [
        "linear",
        "activation",
        "dropout",
        "linear",
        "activation",
        "linear",
    ]
    fresh, _ = compile_spec(spec)
    fresh.load_state_dict(tensors, strict=True)
    fresh.eval()
    engine_model, _ = load_model(path)
    x = torch.randn(32, 2)
    assert torch.equal(fresh(x), engine_model(x))
    assert (fresh(x).argmax(1) >= 0).all()


def test_refresh_mid_run_reattaches(server, page):
    page.goto(server.url)
    settle(page)
    open_page(page, "Train")
    start_training(page, 3000)
    page.get_by_text("samples/s").first.wait_for(timeout=60_000)
    page.reload()
    settle(page)
    page.get_by_text("samples/s").first.wait_for(timeout=30_000)
    page.get_by_role("button", name="Stop").first.click()
    page.get_by_text("Run stopped").wait_for(timeout=15_000)
    no_exceptions(page)
