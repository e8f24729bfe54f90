"""Runs in the browser: resume a stopped run, branch from it, compare runs side by side."""

from engine.data.prepare import prepare_builtin
from engine.runs import (
    create_run,
    execute,
    launch,
    list_runs,
    read_events,
    read_status,
    request_stop,
)
from engine.spec import starter_spec
from tests.browser.conftest import (
    add_to_multiselect,
    new_run_finished,
    no_exceptions,
    settle,
    shot,
    use_session,
    wait_until,
)

TRACES = """(title) => { const p = Array.from(document.querySelectorAll('.js-plotly-plot'))
    .find(p => p.layout && p.layout.title && (p.layout.title.text || "").includes(title));
    return p ? p.data.map(t => [t.name, t.y.length]) : null; }"""


def test_resume_branch_and_compare(server, page):
    dataset = prepare_builtin("moons")
    spec = starter_spec(dataset.task, dataset.input_shape, dataset.num_classes)
    fast = create_run(spec, {"epochs": 6, "lr": 0.01}, dataset.path, name="fast-lr")
    slow = create_run(spec, {"epochs": 6, "lr": 0.001}, dataset.path, name="slow-lr")
    for run in (fast, slow):
        execute(run)
    long = create_run(spec, {"epochs": 300}, dataset.path, name="long")
    launch(long)
    wait_until(
        lambda: any(e["type"] == "epoch_end" and e["epoch"] >= 3 for e in read_events(long)[0])
    )
    request_stop(long)
    wait_until(lambda: read_status(long)["state"] == "stopped")
    stopped_at = read_events(long)[0][-1]["step"]
    use_session(server, dataset, spec, long.name, epochs=4, lr=0.0005)

    page.goto(f"{server.url}/train")
    settle(page)
    page.get_by_text("Run stopped").wait_for()
    page.get_by_role("button", name="Resume").click()
    page.get_by_text("Run completed").wait_for(timeout=120_000)
    no_exceptions(page)
    events = read_events(long)[0]
    assert [e["epoch"] for e in events if e["type"] == "epoch_end"] == list(range(1, 301))
    assert next(e for e in events if e["type"] == "run_resumed")["step"] == stopped_at
    page.get_by_text("Resumed at epoch").wait_for()  # drawn with the resumed run's events
    assert page.get_by_text("Resumed at epoch").count() == 1
    settle(page)
    shot(page, "runs-1-resumed")

    before = {r["id"] for r in list_runs()}
    page.get_by_role("button", name="Branch with these settings").click()
    child = new_run_finished(page, before)
    assert child["parent"]["run"] == long.name and child["parent"]["checkpoint"] == "best"
    assert child["config"]["epochs"] == 4 and child["config"]["lr"] == 0.0005
    page.get_by_role("heading", name=child["name"]).first.wait_for()
    wait_until(
        lambda: read_status(child["path"])["state"] == "completed"
    )  # its end reruns the page: wait it out
    page.get_by_text("4/4 epochs").first.wait_for()
    settle(page)
    heading = page.get_by_role("heading", name=child["name"])
    heading.first.wait_for()  # a rerun may redraw it: count once the page is still
    assert heading.count() == 1
    page.get_by_text("long · best").first.wait_for(
        state="attached"
    )  # the run list says where it came from

    for name in ("fast-lr", "slow-lr"):
        add_to_multiselect(page, "Compare runs", name)
    page.wait_for_function(f"({TRACES})('Validation loss per epoch') !== null", timeout=30_000)
    traces = page.evaluate(TRACES, "Validation loss per epoch")
    assert sorted(traces) == [[f"fast-lr ({fast.name})", 6], [f"slow-lr ({slow.name})", 6]]
    table = page.locator('[data-testid="stTable"]')
    lr_row = table.locator("tr", has=page.locator("th", has_text="lr")).filter(has_text="0.001")
    same_row = table.locator("tr", has=page.locator("th", has_text="batch_size"))
    lr_style = lr_row.locator("td").first.evaluate("td => getComputedStyle(td).backgroundColor")
    same_style = same_row.locator("td").first.evaluate("td => getComputedStyle(td).backgroundColor")
    assert lr_row.locator("td").all_inner_texts() == ["0.01", "0.001"]
    assert lr_style != same_style  # the differing setting is highlighted, the shared one is not
    shot(page, "runs-2-compare")
    no_exceptions(page)
