"""Where a run trains, in the browser: two processes on this machine, and the run list's world size."""

from pathlib import Path

from engine.runs import read_events, read_status
from tests.browser.conftest import choose, no_exceptions, settle, shot, train_and_wait

TRACES = """(title) => { const p = Array.from(document.querySelectorAll('.js-plotly-plot'))
    .find(p => p.layout && p.layout.title && (p.layout.title.text || "").includes(title));
    return p ? p.data.map(t => [t.name, t.y.length]) : null; }"""


def test_two_processes_on_this_machine_train_with_live_curves(server, page):
    page.goto(f"{server.url}/train")
    settle(page)
    choose(page, "Run on", "This machine, several processes")
    processes = page.locator('input[aria-label="Processes"]')
    processes.wait_for()  # the choice took: the number of processes appears, at 2
    assert processes.input_value() == "2"
    page.get_by_text("CPU processes are for trying several processes out").wait_for()
    settle(page)
    run = train_and_wait(page, epochs=6, timeout=180)
    status = read_status(Path(run["path"]))
    assert status["world_size"] == 2
    started = next(e for e in read_events(Path(run["path"]))[0] if e["type"] == "run_started")
    assert started["world_size"] == 2
    page.get_by_text("Trains on 2 processes").wait_for()
    # the curves: train and validation loss, one point per epoch (waited for: a redraw may be on its way)
    page.wait_for_function(
        f"(({TRACES})('Loss per epoch') || []).filter(t => t[1] === 6).length === 2", timeout=30_000
    )
    page.locator('[data-testid="stDataFrame"]').scroll_into_view_if_needed()
    row = page.locator('[data-testid="stDataFrame"] [role="row"]', has_text=run["name"])
    row.wait_for(state="attached")  # the runs table lists it (its accessible rows are hidden)
    cells = row.locator('[role="gridcell"]').all_inner_texts()
    header = page.locator('[data-testid="stDataFrame"] [role="columnheader"]').all_inner_texts()
    assert cells[header.index("processes")] == "2", (header, cells)
    no_exceptions(page)
    shot(page, "processes-1-two-on-this-machine")
