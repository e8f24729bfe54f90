"""How the Build page's canvas keeps up with a big model: the time from a drag to the redrawn canvas.

    python bench/canvas.py [--layers 100] [--repeats 5]

A chain of `--layers` Dense and activation layers (a 100-node model by default) is opened on the Build page in a
headless Chromium. Each repeat drags one layer 60 px with the mouse (a move: the layout is saved in the spec and the
page reruns), then drags a connection from one layer's output port to another layer (a rewiring: the spec, its
shapes, the shape-aware highlights and the canvas are all recomputed). Each is timed from the mouse's release until
the canvas shows the change and no script runs. Prints each time, their median and the worst.
"""

import argparse
import os
import statistics
import sys
import time

from observe import ARGS, CHROMIUM, ROOT, server, settle  # sets LAYERLAB_HOME first

sys.path.insert(0, str(ROOT))
from engine.data.prepare import prepare_builtin  # noqa: E402
from ui.state import write_session  # noqa: E402


def chain(layers: int) -> dict:
    nodes = []
    for i in range(layers - 1):
        if i % 2 == 0:
            nodes.append({"id": f"dense_{i}", "op": "linear", "params": {"out_features": 32}})
        else:
            nodes.append({"id": f"act_{i}", "op": "activation", "params": {"kind": "relu"}})
    nodes.append({"id": "output", "op": "linear", "params": {"out_features": 2}})
    return {"version": 2, "nodes": nodes}


def centre(locator) -> tuple[float, float]:
    box = locator.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def redrawn(page, selector: str) -> None:
    """Wait until the element at `selector` is a new one (the canvas was drawn again after the rerun)."""
    end = time.perf_counter() + 60
    while time.perf_counter() < end:
        try:
            if page.locator(selector).first.evaluate("e => !e.__old", timeout=1_000):
                return
        except Exception:  # noqa: BLE001 - not drawn yet
            pass
        page.wait_for_timeout(20)
    raise TimeoutError(
        "the canvas was not drawn again within 60 s (did the drag reach its target?)"
    )


def timed_drag(page, start, end, selector: str) -> float:
    """Drag from `start` to `end`; seconds from the release until `selector` is drawn anew and no script runs."""
    page.locator(".lc-node").first.evaluate("e => { e.__old = 1; }")
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(start[0] + 15, start[1] + 10, steps=3)
    page.mouse.move(*end, steps=5)
    began = time.perf_counter()
    page.mouse.up()
    redrawn(page, ".lc-node")
    page.locator(selector).first.wait_for(state="attached", timeout=60_000)
    took = time.perf_counter() - began
    settle(page)
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    dataset = prepare_builtin("moons")
    write_session(dataset.id, chain(args.layers))
    proc, url = server()
    moves, wires = [], []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(f"{url}/build", timeout=120_000)
            page.wait_for_selector(".lc-node", timeout=120_000)
            settle(page)
            page.locator(".lc-board").scroll_into_view_if_needed()
            for _ in range(5):  # about twelve columns of layers in view
                page.locator(".lc-bar button", has_text="−").click()
            nodes = page.locator(".lc-node")
            assert nodes.count() == args.layers + 1, nodes.count()
            for r in range(args.repeats):
                moved = nodes.nth(2 + r)
                node_id = moved.get_attribute("data-id")
                x, y = centre(moved.locator(".t"))
                moves.append(
                    timed_drag(page, (x, y), (x, y + 60), f'.lc-node[data-id="{node_id}"]')
                )
                src_id, dst_id = "dense_0", nodes.nth(3 + r).get_attribute("data-id")
                sx, sy = centre(page.locator(f'.lc-node[data-id="{src_id}"] .lc-port.out'))
                tx, ty = centre(page.locator(f'.lc-node[data-id="{dst_id}"]'))
                edge = f'.lc-edges g[data-edge="{src_id}>{dst_id}"]'
                wires.append(timed_drag(page, (sx, sy), (tx, ty), edge))
            browser.close()
    finally:
        os.killpg(proc.pid, 15)
    for name, times in (("move a layer", moves), ("connect two layers", wires)):
        print(
            f"{name:>20}: "
            + " ".join(f"{t:.2f}" for t in times)
            + f" s · median {statistics.median(times):.2f} s · worst {max(times):.2f} s"
        )


if __name__ == "__main__":
    main()
