"""Data preparation speed and memory: LayerLab's table preparation vs reading the same CSV with pandas.

    python bench/data_prep.py [--rows 1000000] [--repeats 3] [--text]

Writes a CSV of ROWS rows and 20 columns (14 numeric, 5 categorical, a binary target; about 2% missing values),
then in one process times `pandas.read_csv` and LayerLab's full preparation (read with format/delimiter/encoding
detection, split, fit imputers/scalers/encoders on the training split, encode every split, health report, save).
Memory: the peak resident size of each step in a fresh child process, against the prepared tensors' size.
Prints the ratios (the target is preparation <= 3x the plain read and memory peak <= 3x the tensors) and how long
each step of preparing took, by the names its progress bar shows.
--text replaces one categorical column with a short free-text column (about 12 words a row, from 300 words), so
the table becomes a two-input dataset (its text tokenized into 64 ids a row).
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_csv(path: Path, rows: int, text: bool = False) -> None:
    rng = np.random.default_rng(0)
    data = {f"num{i}": rng.normal(i, 1 + i, rows).round(4) for i in range(14)}
    for i in range(5):
        data[f"cat{i}"] = rng.choice([f"v{j}" for j in range(3 + 4 * i)], rows)
    if text:
        words = np.array([f"w{j}" for j in range(300)])
        picks = words[rng.integers(0, 300, (rows, 12))]
        data["cat4"] = [" ".join(r) for r in picks]
    frame = pd.DataFrame(data)
    for col in ["num0", "num3", "cat1"]:
        frame.loc[rng.random(rows) < 0.02, col] = np.nan
    frame["target"] = (frame["num1"] + rng.normal(0, 1, rows) > 1).astype(int)
    frame.to_csv(path, index=False)


def step(kind: str, path: str, home: str) -> dict:
    """One measured step; run in a child process so its peak memory is its own."""
    os.environ["LAYERLAB_HOME"] = home
    from engine.data.prepare import (
        prepare_file,
    )  # imports (torch, scikit-learn) are not part of the timing

    base = _rss_now()
    t = time.perf_counter()
    if kind == "read":
        frame = pd.read_csv(path)
        out = {"rows": len(frame)}
    else:
        marks = [
            ("reading the file's bytes", t)
        ]  # each step the Data page's progress bar names, as it starts
        ds = prepare_file(
            Path(path).read_bytes(),
            Path(path).name,
            "target",
            progress=lambda done, what: (
                marks[-1][0] != what and marks.append((what, time.perf_counter()))
            ),
        )
        out = {"tensor_bytes": sum(t.numel() * t.element_size() for t in ds.tensors.values())}
        ends = [m[1] for m in marks[1:]] + [time.perf_counter()]
        out["steps"] = {what: end - at for (what, at), end in zip(marks, ends, strict=True)}
    out["seconds"] = time.perf_counter() - t
    # Peak above what the interpreter and its imports already held (torch alone is several hundred MB).
    out["peak_rss"] = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base, 0)
    return out


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def child(kind: str, path: Path, home: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path), str(home)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument(
        "--repeats", type=int, default=3, help="interleaved runs of each step; medians are reported"
    )
    ap.add_argument(
        "--text", action="store_true", help="a free-text column instead of one categorical column"
    )
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(step(*args.child)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "table.csv"
        make_csv(path, args.rows, args.text)
        os.sync()  # the table on disk, as a user's file is: its write-back is not part of either step
        runs = {"read": [], "prepare": []}
        for i in range(args.repeats):  # interleaved, so a slow spell of the machine hits both alike
            for kind in runs:
                runs[kind].append(child(kind, path, Path(tmp) / f"home{i}"))
                # Each step leaves the machine as it found it: the read's memory is freed when its process
                # ends, and the prepared dataset is deleted (its files would otherwise hold that much page
                # cache, and on a virtual machine fresh pages cost far more than pages just freed).
                shutil.rmtree(Path(tmp) / f"home{i}", ignore_errors=True)
        read, prep = (
            {k: statistics.median(r[k] for r in runs[kind]) for k in runs[kind][0] if k != "steps"}
            for kind in runs
        )
        size_mb = path.stat().st_size / 2**20
        tensors = prep["tensor_bytes"]
        ratios = [
            p["seconds"] / r["seconds"] for p, r in zip(runs["prepare"], runs["read"], strict=True)
        ]
        kind = " (one a free-text column)" if args.text else ""
        print(
            f"# {args.rows:,} rows x 20 columns{kind}, {size_mb:,.0f} MB CSV; median of {args.repeats} interleaved runs"
        )
        print("| step | seconds | peak RSS above imports (MB) |")
        print("|---|---:|---:|")
        print(f"| pandas.read_csv | {read['seconds']:.2f} | {read['peak_rss'] / 2**20:,.0f} |")
        print(
            f"| LayerLab prepare (read, split, fit, encode, health, save) | {prep['seconds']:.2f} | "
            f"{prep['peak_rss'] / 2**20:,.0f} |"
        )
        print(
            f"\nprepare / read time: {prep['seconds'] / read['seconds']:.2f}x (target <= 3x; per pair "
            f"{', '.join(f'{r:.2f}x' for r in ratios)})"
        )
        print(
            f"prepared tensors: {tensors / 2**20:,.0f} MB; prepare peak RSS / tensors: "
            f"{prep['peak_rss'] / tensors:.2f}x (target <= 3x); read-only peak RSS / tensors: "
            f"{read['peak_rss'] / tensors:.2f}x"
        )
        print("\n| prepare's step (as its progress bar names it) | median seconds |\n|---|---:|")
        for what in runs["prepare"][0]["steps"]:
            took = statistics.median(r["steps"].get(what, 0.0) for r in runs["prepare"])
            print(f"| {what} | {took:.2f} |")


if __name__ == "__main__":
    main()
