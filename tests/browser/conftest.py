"""A real Chromium against `streamlit run` on a free loopback port (../shared/TESTING.md)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHROMIUM = os.environ.get("LAYERLAB_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    have = os.path.exists(CHROMIUM) or shutil.which("chromium")
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.browser)
            if not have:
                if os.environ.get("LAYERLAB_REQUIRE_BROWSER"):
                    pytest.fail(
                        "Chromium is required here (LAYERLAB_REQUIRE_BROWSER is set) but missing: "
                        "apt-get install -y chromium",
                        pytrace=False,
                    )
                item.add_marker(
                    pytest.mark.skip(
                        reason="no Chromium: `apt-get install -y chromium` to run the "
                        "browser tests (Playwright cannot download its own here)"
                    )
                )


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
        "args": ARGS,
        "headless": True,
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {
        **browser_context_args,
        "viewport": {"width": 1280, "height": 900},
        "accept_downloads": True,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """A freshly started LayerLab server with its own empty workspace."""
    port = _free_port()
    env = {**os.environ, "LAYERLAB_HOME": str(tmp_path / "workspace"), "PYTHONUNBUFFERED": "1",
           "LAYERLAB_QUEUE_THREAD": "1"}  # fmt: skip  # a real server dispatches its run queue
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            raise RuntimeError(
                f"streamlit did not start: {(tmp_path / 'server.log').read_text()[-2000:]}"
            )
        time.sleep(0.3)
    yield type(
        "Server", (), {"url": url, "home": tmp_path / "workspace", "log": tmp_path / "server.log"}
    )
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    # Run workers live in sessions of their own (a run outlives the app): a test that failed mid-run leaves one
    # training, which would slow every test after it. Its workspace's workers end with it.
    for status in (tmp_path / "workspace" / "runs").glob("*/status.json"):
        try:
            info = json.loads(status.read_text())
            pid = int(info.get("pid") or 0)
            if pid > 1 and info.get("state") in (
                "queued",
                "running",
            ):  # (a finished run's pid may be reused)
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass


def use_session(server, dataset, spec: dict, run_id: str | None, **train) -> str:
    """Start the server's next new browser tab on this dataset, model, open run and training settings (the latest
    saved work, as if a user had just chosen them). Returns the session's id (`?s=` reopens it)."""
    from ui.state import write_session

    assert server.home == Path(os.environ["LAYERLAB_HOME"])  # the test's workspace is the server's
    return write_session(dataset.id, spec, run_id, train)


def trained_starter(builtin: str, run_name: str, **train):
    """A built-in dataset, its starter model and a finished run of it: (dataset, spec, run folder)."""
    from engine.data.prepare import prepare_builtin
    from engine.runs import create_run, execute
    from engine.spec import starter_spec

    dataset = prepare_builtin(builtin)
    spec = starter_spec(dataset.task, dataset.input_shape, dataset.num_classes)
    run = create_run(spec, train, dataset.path, name=run_name)
    execute(run)
    return dataset, spec, run


def visit(server, page, dataset, spec: dict, run_id: str | None, label: str) -> None:
    """Open a fresh browser session on this dataset, model and run, at the page named `label`."""
    use_session(server, dataset, spec, run_id)
    page.goto(server.url)
    settle(page)
    open_page(page, label)


def settle(page, timeout: float = 120_000) -> None:
    """Wait until the app has rendered and no script run is in progress (a cold first load of a fresh server, which
    imports torch, has taken over 60 s on a busy 2-core machine)."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout)
    page.wait_for_selector("h1", timeout=timeout)
    page.wait_for_timeout(300)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=timeout)
    page.wait_for_timeout(300)


def choose(page, label: str, option: str) -> None:
    """Pick `option` in the select box `label`: the list opens on a click once the page is idle, and a
    rerun may swallow the click, so it is clicked again until the option shows."""
    for attempt in range(4):
        settle(page)
        page.get_by_role("combobox", name=label).click()
        try:
            page.get_by_role("option", name=option).click(timeout=5_000)
            return
        except Exception:  # noqa: BLE001 - a Playwright timeout: the list did not open
            if attempt == 3:
                raise


def add_to_multiselect(page, label: str, option: str, shown: str | None = None) -> None:
    """Add `option` to the multiselect `label` by typing it and clicking it in the list. The list opens on a click
    once the page is idle, and a rerun may swallow the click or redraw the list under the pointer, so each try
    waits for the page to settle and gives up on the click after 5 s; it is done when the tag shows in the
    widget (`shown`, the option's text by default)."""
    widget = page.locator('[data-testid="stMultiSelect"]').filter(has_text=label)
    tags = widget.locator('[data-testid="stMultiSelectTagsContainer"]')
    for attempt in range(5):
        settle(page)
        if (shown or option) in tags.inner_text():
            return
        try:
            widget.get_by_role("combobox").click(timeout=5_000)
            page.keyboard.type(option)
            page.get_by_role("option", name=option).first.click(timeout=5_000)
        except Exception:  # noqa: BLE001 - a Playwright timeout: the list did not open or was redrawn
            if attempt == 4:
                raise
        page.keyboard.press("Escape")
    settle(page)
    assert (shown or option) in tags.inner_text()


def wait_until(predicate, timeout: float = 60.0):
    """Poll `predicate` until it returns something true (returned), failing after `timeout` seconds."""
    end = time.time() + timeout
    while not (value := predicate()):
        assert time.time() < end, "timed out"
        time.sleep(0.05)
    return value


def stop_and_wait(page, run_dir: Path, timeout: float = 30.0) -> None:
    """Click Stop and wait for the run to be stopped. A click that lands while the page redraws can be lost,
    so Stop is clicked again (while it is there) until the stop request is on disk: the state change the
    click makes."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from engine.runs import read_status

    def requested() -> bool:
        stopping = (Path(run_dir) / "stop").exists()
        return stopping or read_status(run_dir)["state"] not in ("queued", "running")

    for _ in range(5):
        if requested():
            break
        try:
            page.get_by_role("button", name="Stop").first.click(timeout=5_000)
        except PlaywrightTimeout:  # the page was redrawing: look again
            pass
        end = time.time() + 4
        while time.time() < end and not requested():
            time.sleep(0.1)
    wait_until(lambda: read_status(run_dir)["state"] == "stopped", timeout)


def no_exceptions(page) -> None:
    """No traceback on the page, and no "Something went wrong" (the app's own message for an unexpected error)."""
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator(
        '[data-testid="stException"]'
    ).all_inner_texts()
    failed = page.get_by_text("Something went wrong in the")
    assert failed.count() == 0, failed.all_inner_texts()


SCREENSHOTS = ROOT / "screenshots"


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def open_page(page, label: str) -> None:
    page.locator('[data-testid="stSidebarNav"] a', has_text=label).click()
    settle(page)


def start_training(page, epochs: int) -> None:
    """On the Train page: set the epochs and press Start."""
    field = page.locator('input[aria-label="Epochs"]')
    field.fill(str(epochs))
    field.press("Enter")
    settle(page)
    page.get_by_role("button", name="Start training").click()


def live_changes(page, epochs: int, shown) -> tuple[dict, set]:
    """Start a run of `epochs` on the Train page and watch the live view while it trains, until `shown(page)` (what
    the view shows now, "" before anything) has taken two different values. Returns the run and the values seen;
    the caller asserts on them."""
    from engine.runs import list_runs, read_status

    before = {r["id"] for r in list_runs()}
    start_training(page, epochs)
    run = wait_until(lambda: next((r for r in list_runs() if r["id"] not in before), None))
    seen: set = set()
    while read_status(run["path"])["state"] in ("queued", "running") and len(seen) < 2:
        if value := shown(page):
            seen.add(value)
        page.wait_for_timeout(300)
    return run, seen


def new_run_finished(page, before: set[str], timeout: float = 120.0) -> dict:
    """Wait for the run that appeared since `before` (run ids) to finish, on disk and then on the page (its own
    heading, then "Run completed"): never for a text that a run shown before may already have put there."""
    from engine.runs import list_runs, read_status

    run = wait_until(lambda: next((r for r in list_runs() if r["id"] not in before), None), timeout)
    wait_until(
        lambda: read_status(Path(run["path"]))["state"] not in ("queued", "running"), timeout
    )
    page.get_by_role("heading", name=run["name"]).first.wait_for(timeout=timeout * 1000)
    page.get_by_text("Run completed").first.wait_for(timeout=timeout * 1000)
    return run


def train_and_wait(page, epochs: int, timeout: float = 120.0) -> dict:
    """Start training on the Train page and wait for that run to finish (`new_run_finished`)."""
    from engine.runs import list_runs

    before = {r["id"] for r in list_runs()}
    start_training(page, epochs)
    return new_run_finished(page, before, timeout)


def use_template(page, title: str) -> None:
    """On the Build page: open the templates and press the "Use" of the one titled `title`."""
    page.locator('[data-testid="stExpander"] summary', has_text="ready-made models").click()
    card = page.locator(
        '[data-testid="stVerticalBlock"]', has=page.get_by_text(title, exact=True)
    ).last  # the innermost block holding the title: its card
    card.get_by_role("button", name="Use", exact=True).click()
    settle(page)


def download_bundle(page, folder: Path) -> set[str]:
    """On the Export page: build the run's bundle, download it, unzip it into `folder`; its files' names."""
    import zipfile

    page.get_by_role("button", name="Build bundle (.zip)").click()
    download = page.get_by_role("button", name="Download bundle (.zip)")
    download.wait_for(timeout=120_000)
    with page.expect_download() as dl:
        download.click()
    zipped = folder.with_suffix(".zip")
    dl.value.save_as(zipped)
    with zipfile.ZipFile(zipped) as zf:
        zf.extractall(folder)
        return set(zf.namelist())


# The Build page's canvas
MIDDLE = """(g) => { const p = g.getPointAtLength(g.getTotalLength() / 2), m = g.getScreenCTM();
    return [p.x * m.a + p.y * m.c + m.e, p.x * m.b + p.y * m.d + m.f]; }"""


def middle(page, src: str, dst: str) -> tuple[float, float]:
    """Where the middle of the edge src → dst is on the screen."""
    path = page.locator(f'.lc-edges g[data-edge="{src}>{dst}"] path.e')
    return tuple(path.evaluate(MIDDLE))


def centre(locator) -> tuple[float, float]:
    box = locator.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def drop(page, op: str, x: float, y: float) -> None:
    page.locator(f'.lc-palette .ll-op[data-op="{op}"]').drag_to(
        page.locator(".lc-board"), target_position={"x": x, "y": y}
    )
