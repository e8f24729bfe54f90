"""The Build page's canvas with real mouse drags in Chromium: build a residual block from a model that is only its
output layer, train it, reload and find the same graph and layout, insert a layer by dropping it on an edge, delete
an edge and see the error on the right node, undo it, and export the diagram."""

import json
from pathlib import Path

from engine.data.prepare import prepare_builtin
from engine.runs import read_status
from engine.workspace import read_json
from tests.browser.conftest import (
    centre,
    drop,
    middle,
    no_exceptions,
    open_page,
    settle,
    shot,
    train_and_wait,
    use_session,
)


def node(page, node_id: str):
    return page.locator(f'.lc-node[data-id="{node_id}"]')


def edge(page, src: str, dst: str):
    return page.locator(f'.lc-edges g[data-edge="{src}>{dst}"]')


def wire(page, src: str, dst: str) -> None:
    """Press on `src`'s output port, drag to `dst`, let go: the new edge is drawn after the rerun."""
    x, y = centre(node(page, src).locator(".lc-port.out"))
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 25, y + 15, steps=3)
    tx, ty = centre(node(page, dst))
    page.mouse.move(tx, ty, steps=6)
    page.mouse.up()
    edge(page, src, dst).wait_for(state="attached")
    settle(page)


def saved_spec(server, page) -> dict:
    sid = page.url.split("s=")[1].split("&")[0]
    return read_json(server.home / "sessions" / f"{sid}.json")["ll.spec"]


def test_build_a_residual_block_on_the_canvas(server, page):
    dataset = prepare_builtin("moons")
    only_output = {
        "version": 2,
        "nodes": [{"id": "output", "op": "linear", "params": {"out_features": 2}, "inputs": []}],
    }
    use_session(server, dataset, only_output, None)
    page.set_viewport_size({"width": 1600, "height": 900})
    page.goto(server.url)
    settle(page)
    open_page(page, "Build")
    board = page.locator(".lc-board")
    node(page, "output").wait_for()
    assert (
        "has no input" in node(page, "output").inner_text()
    )  # not connected: red, with what to do
    board.scroll_into_view_if_needed()

    # Drop three layers on empty canvas (above the input and the output), then lay them out.
    for op, new_id in (("linear", "linear_1"), ("activation", "activation_1"), ("add", "add_1")):
        drop(page, op, 200, 30)
        node(page, new_id).wait_for()
        settle(page)
    page.locator(".lc-bar button", has_text="Auto-layout").click()
    settle(page)

    # Four edges make the chain; a fifth, the skip, goes around the activation into the Add.
    for src, dst in (
        ("input", "linear_1"),
        ("linear_1", "activation_1"),
        ("activation_1", "add_1"),
        ("add_1", "output"),
        ("linear_1", "add_1"),
    ):
        wire(page, src, dst)
    assert page.locator(".lc-node.err").count() == 0
    assert (
        page.locator(".lc-edges text").all_text_contents().count("(64,)") == 4
    )  # shapes on the edges
    spec = saved_spec(server, page)
    wires = {n["id"]: n["inputs"] for n in spec["nodes"]}
    assert sorted(wires["add_1"]) == ["activation_1", "linear_1"]
    assert wires["linear_1"] in (None, ["input"]) and wires["output"] in (None, ["add_1"])

    # Move the Add down: every node's place is saved in the spec's layout.
    x, y = centre(node(page, "add_1").locator(".t"))
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 10, y + 70, steps=5)
    page.mouse.up()
    settle(page)
    layout = saved_spec(server, page).get("layout") or {}
    assert {"input", "linear_1", "activation_1", "add_1", "output"} <= set(layout)
    shot(page, "canvas-1-residual")

    open_page(page, "Train")
    run = train_and_wait(page, 2)
    assert read_status(Path(run["path"]))["state"] == "completed"

    places = {}
    page.reload()
    settle(page)
    open_page(page, "Build")
    node(page, "add_1").wait_for()
    for nid in layout:
        style = node(page, nid).get_attribute("style")
        places[nid] = [p for p in style.split(";") if "left" in p or "top" in p]
    assert saved_spec(server, page)["layout"] == layout  # the same graph and layout after a reload
    assert edge(page, "linear_1", "add_1").count() == 1
    assert all(f"left: {layout[n][0]:g}px" in "".join(places[n]) for n in layout)

    # Drop a Dropout on the edge into the output: it is inserted there.
    page.locator(".lc-board").scroll_into_view_if_needed()
    mx, my = middle(page, "add_1", "output")
    b = board.bounding_box()
    drop(page, "dropout", mx - b["x"], my - b["y"])
    edge(page, "dropout_1", "output").wait_for(state="attached")
    settle(page)
    assert (
        edge(page, "add_1", "dropout_1").count() == 1 and edge(page, "add_1", "output").count() == 0
    )

    # Click the activation's edge into the Add and press Delete: the Add, left with one input, is red.
    mx, my = middle(page, "activation_1", "add_1")
    page.mouse.click(mx, my)
    page.keyboard.press("Delete")
    page.locator('.lc-node.err[data-id="add_1"]').wait_for()
    settle(page)
    assert "2-8 inputs" in node(page, "add_1").inner_text()
    shot(page, "canvas-2-error")
    page.locator(".lc-bar button", has_text="Undo").click()
    edge(page, "activation_1", "add_1").wait_for(state="attached")
    settle(page)
    assert page.locator(".lc-node.err").count() == 0

    with page.expect_download() as download:
        page.get_by_role("button", name="Diagram (SVG)").click()
    text = open(download.value.path(), encoding="utf-8").read()
    assert text.startswith("<svg")
    for nid in ("linear_1", "activation_1", "add_1", "dropout_1", "output"):
        assert f'data-id="{nid}"' in text
    assert json.loads(json.dumps(saved_spec(server, page)))["layout"]
    no_exceptions(page)
