"""How long each explanation takes, per built-in set with its proposed model, on this machine.

    python bench/explain.py [--sets moons,wine,...] [--rows 1] [--repeats 3]

For each set: train its proposed model for one epoch (the time of an explanation does not depend on how well the
model learned), then time every method that applies to it on --rows inputs of the test split (median of --repeats),
and permutation importance over the whole test split for tables, next to one plain forward pass of the same inputs
(the floor: Integrated Gradients costs about IG_STEPS forward and backward passes).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def timed(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        work()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--sets", default="moons,iris,wine,breast_cancer,diabetes,digits,shapes,reviews,orders"
    )
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ["LAYERLAB_HOME"] = tempfile.mkdtemp()
    from engine import explain
    from engine.data.prepare import prepare_builtin
    from engine.runs import create_run, execute
    from engine.templates import starter_for

    torch.set_num_threads(os.cpu_count() or 1)
    print(f"# seconds per call on {args.rows} input(s), median of {args.repeats}; {os.cpu_count()} cores, "
          f"torch {torch.__version__}")  # fmt: skip
    print("| set (model) | kind | forward | saliency | Integrated Gradients | SmoothGrad | Grad-CAM | permutation "
          "(test split) |\n|---|---|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    for name in args.sets.split(","):
        ds = prepare_builtin(name)
        if ds.task not in ("classification", "regression"):
            continue
        spec = starter_for(ds.meta)
        run = create_run(spec, {"epochs": 1}, ds.path)
        execute(run)
        model, dataset = explain.run_parts(run)
        meta, kind = dataset.meta, explain.kind(dataset.meta)
        x, y = dataset.split("test")
        rows = x[: args.rows]
        base = explain.training_mean(dataset) if kind == "table" else None
        cells = [
            f"{timed(partial(explain.model_outputs, model, rows, model.takes_tokens), args.repeats):.4f}"
        ]
        for method in ("saliency", "integrated_gradients", "smoothgrad", "gradcam"):
            try:
                work = partial(explain.attribute, model, meta, rows, method, baseline=base)
                cells.append(f"{timed(work, args.repeats):.4f}")
            except Exception:  # noqa: BLE001 - the method does not apply to this model
                cells.append("n/a")
        try:
            cells.append(
                f"{timed(partial(explain.permutation_importance, model, meta, x, y), 1):.3f}"
            )
        except Exception:  # noqa: BLE001
            cells.append("n/a")
        model_name = f"{len(spec['nodes'])}-layer " + ("CNN" if any(
            n["op"].startswith("conv") for n in spec["nodes"]) else "model")  # fmt: skip
        print(f"| {name} ({model_name}) | {kind} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
