"""The prediction service's throughput and latency on loopback, beside the model's own time for the same row.

    python bench/serve.py [--seconds 5] [--dataset digits]

Trains the built-in set's proposed model for a few epochs, starts `python -m engine serve RUN --quiet`, then sends
`POST /predict` with one row (batch 1) for `--seconds` from 1 and from 8 concurrent clients (each a thread with its
own keep-alive connection). Prints requests per second and the p50 / p99 latency, and the reference: the same row
encoded and run through the model in this process (no HTTP, no JSON), with the ratio of the two medians.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LAYERLAB_HOME", tempfile.mkdtemp(prefix="layerlab-bench-"))
sys.path.insert(0, str(ROOT))
from engine.data.prepare import prepare_builtin  # noqa: E402
from engine.local_service import free_port, wait_for_health  # noqa: E402
from engine.predict import load_predictor, serving_info  # noqa: E402
from engine.runs import create_run, execute  # noqa: E402
from engine.service import Service, example_request  # noqa: E402
from engine.templates import starter_for  # noqa: E402


def clients(port: int, body: bytes, n: int, seconds: float) -> list[float]:
    """Latencies (s) of the requests `n` clients completed in `seconds`, each on its own connection."""
    times: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while time.perf_counter() < stop:
            start = time.perf_counter()
            conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 200, answer.status
            mine.append(time.perf_counter() - start)
        conn.close()
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--dataset", default="digits")
    args = parser.parse_args()
    dataset = prepare_builtin(args.dataset)
    run = create_run(starter_for(dataset.meta), {"epochs": 3}, dataset.path)
    execute(run)
    model, meta = load_predictor(run)
    info = serving_info(model, meta)
    path, body = example_request(info)
    assert path == "/predict"
    reference = Service(model, info, "reference", {})
    for _ in range(50):  # warm-up
        reference.predict(body)
    own = []
    for _ in range(500):
        start = time.perf_counter()
        reference.predict(body)
        own.append(time.perf_counter() - start)
    own_p50 = statistics.median(own)

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", str(run), "--port", str(port), "--quiet"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        if not wait_for_health(f"http://127.0.0.1:{port}", 60, lambda: proc.poll() is None):
            raise SystemExit("the service did not answer /health within 60 s")
        data = json.dumps(body).encode()
        clients(port, data, 1, 1.0)  # warm-up
        print(
            f"{args.dataset}: {dataset.meta['input_shape']} per row, {os.cpu_count()} CPU cores, batch 1"
        )
        print(f"reference (in process, no HTTP): p50 {own_p50 * 1000:.2f} ms")
        for n in (1, 8):
            times = sorted(clients(port, data, n, args.seconds))
            p50, p99 = statistics.median(times), times[int(0.99 * (len(times) - 1))]
            print(f"{n} client(s): {len(times) / args.seconds:,.0f} requests/s, p50 {p50 * 1000:.2f} ms, "
                  f"p99 {p99 * 1000:.2f} ms, p50 ÷ reference {p50 / own_p50:.1f}×")  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
