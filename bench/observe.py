"""What watching costs: the same run trained headless, and with the Train page open in Chromium, polling live.

    python bench/observe.py [--repeats 3] [--rows 20000] [--epochs 40]

Both runs are the app's own worker process (`python -m engine.runs RUN_DIR`) on the starter MLP for two moons;
the observed one is launched while a Streamlit server serves the Train page to a headless Chromium that stays
on it until the run ends. Prints each run's samples/s (from its run_finished event), medians and the ratio.
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
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def wait_done(run: Path) -> dict:
    while read_status(run)["state"] in ("queued", "running"):
        time.sleep(0.2)
    return read_events(run)[0][-1]


def server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("streamlit did not start")


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
    speeds = {"headless": [], "observed": []}
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
                page.get_by_text(re.compile(r"epoch \d+/\d+")).first.wait_for(timeout=60_000)  # following it live
                speeds["observed"].append(wait_done(run)["samples_per_second"])
                page.close()
                print(f"repeat {i + 1}: headless {speeds['headless'][-1]:,.0f}, observed {speeds['observed'][-1]:,.0f} "
                      "samples/s", flush=True)
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
    h, o = statistics.median(speeds["headless"]), statistics.median(speeds["observed"])
    print(f"| headless | Train page open | observed / headless |\n|---:|---:|---:|\n| {h:,.0f} | {o:,.0f} | {o / h:.3f} |")


if __name__ == "__main__":
    main()
