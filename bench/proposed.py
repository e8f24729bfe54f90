"""What the proposed model reaches on each kind of data, with the epochs and learning rate it is proposed with.

    python bench/proposed.py [--sets moons,iris,...] [--csv FILE:TARGET ...]

For each built-in set (default size, noise and seed) and each CSV given, prepares the data, trains
`engine.templates.starter_for(meta)` with `starter_train(meta)` on the CPU, and prints validation and test
accuracy (R² for regression) with the training time. No reference run: these are the bars the README states.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_SETS = "moons,spiral,iris,wine,breast_cancer,diabetes,digits,shapes,reviews,orders"


def main() -> None:
    import os
    import tempfile

    os.environ.setdefault("LAYERLAB_HOME", tempfile.mkdtemp(prefix="layerlab-bench-"))
    from engine.data.prepare import prepare_builtin, prepare_file
    from engine.evaluate import evaluate_run
    from engine.runs import create_run, execute
    from engine.templates import _kind, starter_for, starter_train

    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default=DEFAULT_SETS)
    ap.add_argument("--csv", nargs="*", default=[], help="FILE:TARGET, a table of your own")
    args = ap.parse_args()
    datasets = [prepare_builtin(name) for name in args.sets.split(",") if name]
    for item in args.csv:
        path, target = item.rsplit(":", 1)
        datasets.append(prepare_file(Path(path).read_bytes(), Path(path).name, target))
    print("| data | kind | proposed model | epochs, lr | val | test | seconds |")
    print("|---|---|---|---|---:|---:|---:|")
    for ds in datasets:
        spec, train = starter_for(ds.meta), starter_train(ds.meta)
        start = time.perf_counter()
        run = create_run(spec, {**train, "device": "cpu"}, ds.path)
        final = execute(run)
        seconds = time.perf_counter() - start
        metric = "accuracy" if ds.task == "classification" else "r2"
        test = evaluate_run(run)["summary"].get(metric)
        ops = [n["op"] for n in spec["nodes"]]
        print(
            f"| {ds.meta['name']} | {_kind(ds.meta)} | {len(ops)} layers ({', '.join(dict.fromkeys(ops))}) | "
            f"{train['epochs']}, {train['lr']:g} | {final['metrics'].get('val/' + metric, float('nan')):.3f} | "
            f"{test:.3f} | {seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
