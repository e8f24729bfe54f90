"""Search throughput: trials per hour of a LayerLab study (1 and 2 worker processes) against a plain Optuna loop
that trains the same model with a hand-written PyTorch loop in one process.

    python bench/tune.py [--trials 8] [--epochs 10] [--dataset digits]

Every trial trains the same model (the data's starter MLP, its width searched) for the same epochs on the same
prepared data; pruning is off, so every trial does the same work. LayerLab's trials are full runs: a worker
process each (imports, events, checkpoints, the run folder), queued and placed by the run queue.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def reference(
    dataset, spec, key: str, span: dict, trials: int, epochs: int, lr: float, batch: int
) -> float:
    """Optuna in memory, a hand-written loop per trial; seconds."""
    import optuna
    import torch

    from engine.compiler import compile_spec
    from engine.search import apply
    from engine.spec import data_inputs
    from engine.train.core import as_input

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    x, y = dataset.split("train")
    xv, yv = dataset.split("val")
    x, xv = as_input(x), as_input(xv)  # (images: uint8 scaled to [0, 1], as LayerLab trains them)

    def objective(trial):
        width = trial.suggest_int("dense_1.out_features", 8, 128, log=True)
        model, _ = compile_spec(
            apply(spec, {}, {"dense_1.out_features": width})[0], data_inputs(dataset.meta)
        )
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        loss_fn = torch.nn.CrossEntropyLoss()
        for _ in range(epochs):
            model.train()
            for idx in torch.randperm(len(y)).split(batch):
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x[idx]), y[idx]).backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                accuracy = (model(xv).argmax(1) == yv).float().mean().item()
        return accuracy

    t = time.perf_counter()
    optuna.create_study(direction="maximize").optimize(objective, n_trials=trials)
    return time.perf_counter() - t


def layerlab(dataset, spec, key: str, span: dict, trials: int, epochs: int, lr: float, batch: int,
             workers: int) -> float:  # fmt: skip
    from engine import search

    study = search.create_study({
        "name": f"bench {workers}", "dataset_dir": str(dataset.path), "spec": spec,
        "train": {"epochs": epochs, "lr": lr, "batch_size": batch, "diagnostics": False},
        "space": {key: span},
        "metric": "val/accuracy", "direction": "maximize", "pruner": "none", "trials": trials,
        "workers": workers,
    })  # fmt: skip
    t = time.perf_counter()
    search.start(study)
    while search.running(study):
        time.sleep(0.2)
    took = time.perf_counter() - t
    rows = search.trial_rows(search.load(study))
    assert all(r["state"] == "complete" for r in rows) and len(rows) == trials, [
        (r["state"], r["message"]) for r in rows
    ]
    return took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--dataset", default="digits")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["LAYERLAB_HOME"] = home
        os.environ["LAYERLAB_CPU_RUNS"] = "2"
        from engine import search
        from engine.data.prepare import prepare_builtin
        from engine.templates import starter_for, starter_train

        dataset = prepare_builtin(args.dataset)
        spec, proposed = starter_for(dataset.meta), starter_train(dataset.meta)
        lr, batch = proposed["lr"], 32
        key = next(
            k for k in search.tunable(spec, {}, dataset.meta) if "." in k
        )  # the first layer's width
        span = search.tunable(spec, {}, dataset.meta)[key]["default"]
        work = (dataset, spec, key, span, args.trials, args.epochs, lr, batch)
        ref = reference(*work)
        one = layerlab(*work, 1)
        two = layerlab(*work, 2)
    per_hour = lambda s: args.trials * 3600 / s  # noqa: E731
    print(f"# {args.trials} trials x {args.epochs} epochs of the starter model on {args.dataset}, searching {key} "
          f"({dataset.meta['sizes']['train']:,} training rows), {os.cpu_count()} cores")  # fmt: skip
    print("| search | seconds | trials per hour | vs plain Optuna |\n|---|---:|---:|---:|")
    for name, s in (("plain Optuna + hand-written loop, 1 process", ref),
                    ("LayerLab study, 1 worker", one), ("LayerLab study, 2 workers", two)):  # fmt: skip
        print(f"| {name} | {s:.1f} | {per_hour(s):,.0f} | {ref / s:.2f}x |")


if __name__ == "__main__":
    main()
