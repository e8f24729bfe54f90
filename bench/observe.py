"""What watching costs: the same run trained headless, with the Train page open in Chromium following it live, and
with a user clicking from page to page while it trains; and how long a page switch takes meanwhile.

    python bench/observe.py [--repeats 3] [--rows 20000] [--epochs 40]

Every run is the app's own worker process (`python -m engine.runs RUN_DIR`) on the starter MLP for two moons; the
observed ones are launched while a Streamlit server serves the app to a headless Chromium. "clicking" switches
pages (Data, Build, Train, Evaluate, Export, Train, …) for as long as the run trains and times each switch, from
the click until the new page has drawn and no script runs. Prints each run's samples/s (from its run_finished
event), medians, the ratios to headless, and the median and 90th percentile page-switch time.
"""

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["LAYERLAB_HOME"] = tempfile.mkdtemp(prefix="layerlab-observe-")

from engine.data.prepare import prepare_builtin  # noqa: E402
from engine.runs import create_run, launch, read_events, read_status  # noqa: E402
from engine.spec import starter_spec  # noqa: E402
from ui.state import write_session  # noqa: E402

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


def wait_done(run: Path) -> dict:
    while read_status(run)["state"] in ("queued", "running"):
        time.sleep(0.2)
    return read_events(run)[0][-1]


def server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
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
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("streamlit did not start")


def settle(page) -> None:
    page.wait_for_selector("h1", timeout=60_000)
    page.wait_for_timeout(100)
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=60_000)


def click_around(page, run: Path) -> list[float]:
    """Switch pages until the run ends; the seconds each switch took."""
    times, order = [], ["Data", "Build", "Train", "Evaluate", "Export", "Train"]
    i = 0
    while read_status(run)["state"] in ("queued", "running"):
        t = time.perf_counter()
        page.locator('[data-testid="stSidebarNav"] a', has_text=order[i % len(order)]).click()
        page.wait_for_function(
            f"document.querySelector('h1')?.innerText === {order[i % len(order)]!r}", timeout=60_000
        )
        settle(page)
        times.append(time.perf_counter() - t)
        i += 1
        page.wait_for_timeout(500)  # a person reads for a moment
    return times


def main():
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()
    dataset = prepare_builtin("moons", n_samples=args.rows, noise=0.2)
    spec = starter_spec(dataset.task, dataset.input_shape, dataset.num_classes)
    train = {"epochs": args.epochs}
    proc, url = server()
    speeds = {"headless": [], "observed": [], "clicking": []}
    switches: list[float] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for i in range(args.repeats):
                run = create_run(spec, train, dataset.path, name=f"headless-{i}")
                launch(run)
                speeds["headless"].append(wait_done(run)["samples_per_second"])
                run = create_run(spec, train, dataset.path, name=f"observed-{i}")
                write_session(dataset.id, spec, run.name, train)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"{url}/train")
                page.wait_for_selector("h1", timeout=60_000)
                launch(run)
                page.get_by_text(re.compile(r"\d+/\d+ epochs done|epoch \d+/\d+")).first.wait_for(
                    timeout=60_000
                )
                speeds["observed"].append(wait_done(run)["samples_per_second"])
                page.close()
                run = create_run(spec, train, dataset.path, name=f"clicking-{i}")
                write_session(dataset.id, spec, run.name, train)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"{url}/train")
                settle(page)
                launch(run)
                switches += click_around(page, run)
                speeds["clicking"].append(wait_done(run)["samples_per_second"])
                page.close()
                print(
                    f"repeat {i + 1}: headless {speeds['headless'][-1]:,.0f}, observed {speeds['observed'][-1]:,.0f}, "
                    f"clicking {speeds['clicking'][-1]:,.0f} samples/s; {len(switches)} page switches so far",
                    flush=True,
                )
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
    h, o, c = (statistics.median(speeds[k]) for k in ("headless", "observed", "clicking"))
    switches.sort()
    p50, p90 = statistics.median(switches), switches[int(0.9 * (len(switches) - 1))]
    print(
        "| headless | Train page open | clicking around | open / headless | clicking / headless | page switch, "
        "median | page switch, 90th pct |\n|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {h:,.0f} | {o:,.0f} | {c:,.0f} | {o / h:.3f} | {c / h:.3f} | {p50:.2f} s | {p90:.2f} s |"
    )


if __name__ == "__main__":
    main()
