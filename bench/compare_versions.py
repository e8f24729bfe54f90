"""Time `fit` of this checkout against another LayerLab checkout, back to back, on bench/train_loop.py's models
and data: for a change to the training loop, without a reference loop in the same process to share the noise with.

    git worktree add /tmp/before <commit>
    python bench/compare_versions.py /tmp/before [--cases lstm mlp784-256] [--epochs 2] [--repeats 3]

Each checkout runs in its own interpreter (`--one ROOT CASE` below); the table gives the best wall time of the
repeats, with diagnostics on and off, and how many diagnostic looks each took.
"""

import argparse
import collections
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one(root: str, case: str, epochs: int, repeats: int) -> dict:
    """Runs inside a fresh interpreter with `root` first on the path."""
    sys.path[:0] = [root, str(HERE)]
    import train_loop as bench  # noqa: PLC0415 - bench/train_loop.py: the cases' models and data

    from engine.data.store import Dataset
    from engine.train import TrainConfig, fit

    x, y, x_val, y_val = bench.make_data(case)
    d = bench.CASES[case]
    meta = {"id": "b", "name": "b", "task": "classification", "input_shape": list(d["shape"]),
            "classes": [str(i) for i in range(d["classes"])], "sizes": {"train": len(x)}}  # fmt: skip
    tensors = {"x_train": x, "y_train": y, "x_val": x_val, "y_val": y_val}
    dataset = Dataset(Path("."), meta, tensors)
    result = {}
    for diagnostics in (True, False) * repeats:
        seen = collections.Counter()
        cfg = TrainConfig(epochs=epochs, batch_size=d["bs"], lr=1e-3, diagnostics=diagnostics)
        start = time.perf_counter()
        fit(bench.spec(case), dataset, cfg, emit=lambda e, seen=seen: seen.update([e["type"]]))
        seconds = time.perf_counter() - start
        key = "on" if diagnostics else "off"
        best = result.get(key, {"seconds": float("inf")})
        if seconds < best["seconds"]:
            result[key] = {"seconds": seconds, "looks": seen["diagnostics"]}
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("other", nargs="?", help="the other checkout's folder")
    ap.add_argument("--cases", nargs="+", default=["mlp784-256", "lstm"])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one", nargs=2, metavar=("ROOT", "CASE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.epochs, args.repeats)))
        return
    roots = {"this": str(HERE.parent), "other": str(Path(args.other).resolve())}
    print("| case | diagnostics | this (s) | other (s) | this / other | looks (this, other) |")
    print("|---|---|---:|---:|---:|---|")
    for case in args.cases:
        found = {}
        for name, root in roots.items():
            command = [sys.executable, __file__, "--one", root, case, "--epochs", str(args.epochs),
                       "--repeats", str(args.repeats)]  # fmt: skip
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            found[name] = json.loads(out.strip().splitlines()[-1])
        for key in ("on", "off"):
            a, b = found["this"][key], found["other"][key]
            print(f"| {case} | {key} | {a['seconds']:.3f} | {b['seconds']:.3f} | "
                  f"{a['seconds'] / b['seconds']:.2f} | {a['looks']}, {b['looks']} |")  # fmt: skip


if __name__ == "__main__":
    main()
