"""Scaling: samples per second of LayerLab runs on 1, 2, 4 and 8 processes (torchrun, DDP), and the efficiency.

    python bench/scale.py [--models mlp cnn transformer] [--procs 1 2 4 8] [--modes strong weak]
                          [--epochs 2] [--device cpu|cuda] [--batch 64]

Each cell is a real run through `engine.runs.supervise` (the path `--nproc` and the Train page take), timed by
the run itself (`run_finished.samples_per_second`: training and validation, not the processes' start-up).
  strong  the global batch stays `--batch`: each of N processes takes batch/N rows of every step
  weak    each process keeps `--batch` rows: the global batch grows to N x batch
Efficiency = samples/s on N processes / (N x samples/s on 1). Each cell also runs
bench/ddp_reference.py, a careful hand-written DDP loop on the same model, data and batch, and prints
LayerLab's ratio to it. On a GPU machine each process has a GPU
(--procs up to the number of GPUs); on the CPU the processes share the cores, so the figures check that
the path works, not speed (a 2-core machine cannot run 8 processes faster than 1).
Models (synthetic data, labels from a random teacher):
  mlp          100-256-256-10 on 40,000 rows
  cnn          LayerLab's small CNN template on 8,000 3x32x32 images
  transformer  2 encoder layers (4 heads) over 16 steps of 32 features, mean-pooled, 8,000 rows
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODELS = {
    "mlp": dict(shape=(100,), rows=40000),
    "cnn": dict(shape=(3, 32, 32), rows=8000),
    "transformer": dict(shape=(16, 32), rows=8000),
}


def spec(model: str) -> dict:
    from engine.templates import _n, small_cnn

    if model == "mlp":
        nodes = [_n("fc1", "linear", out_features=256), _n("r1", "activation", kind="relu"),
                 _n("fc2", "linear", out_features=256), _n("r2", "activation", kind="relu"),
                 _n("out", "linear", out_features=10)]  # fmt: skip
    elif model == "cnn":
        nodes = small_cnn({"classes": [str(i) for i in range(10)]})
    else:
        nodes = [_n("positions", "positional_encoding"),
                 _n("encoder", "transformer_encoder", num_heads=4, dim_feedforward=64,
                    num_layers=2, dropout=0.0),
                 _n("pool", "seq_pool", mode="mean"), _n("out", "linear", out_features=10)]  # fmt: skip
    return {"version": 1, "nodes": nodes}


def dataset(model: str):
    from engine.data.store import save_dataset

    d = MODELS[model]
    g = torch.Generator().manual_seed(0)
    n = d["rows"] + d["rows"] // 5
    x = torch.randn(n, *d["shape"], generator=g)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].numel(), 10))
    with torch.no_grad():
        y = teacher(x).argmax(1)
    cut, val = d["rows"], d["rows"] + d["rows"] // 10
    return save_dataset(
        name=f"scale-{model}", source="bench/scale.py", task="classification",
        x={"train": x[:cut].numpy(), "val": x[cut:val].numpy(), "test": x[val:].numpy()},
        y={"train": y[:cut].numpy(), "val": y[cut:val].numpy(), "test": y[val:].numpy()},
        classes=[str(i) for i in range(10)], feature_names=None, preprocessing=None,
        notices=[], preview=None,
    )  # fmt: skip


def measure(model: str, data, procs: int, batch: int, epochs: int, device: str) -> float:
    from engine.runs import create_run, supervise

    train = {"epochs": epochs, "batch_size": batch, "lr": 1e-3, "device": device,
             "diagnostics": False}  # fmt: skip
    run = create_run(spec(model), train, data.path, processes=procs)
    final = supervise(run, procs)
    if final["status"] != "completed":
        raise SystemExit(f"{model} on {procs} processes: {final['status']}: {final.get('message')}")
    return final["samples_per_second"]


def reference(model: str, data, procs: int, batch: int, epochs: int, device: str) -> float:
    """The same cell with bench/ddp_reference.py, a careful hand-written DDP loop."""
    import json
    import subprocess

    from engine.train.distributed import torchrun

    work = Path(tempfile.mkdtemp(prefix="layerlab-ref-"))
    (work / "spec.json").write_text(json.dumps(spec(model)))
    script = Path(__file__).resolve().parent / "ddp_reference.py"
    subprocess.run(torchrun(procs) + [str(script), str(data.path), str(work / "spec.json"), str(batch),
                                      str(epochs), device, str(work / "out.json")],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return json.loads((work / "out.json").read_text())["samples_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--procs", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument(
        "--modes", nargs="+", default=["strong", "weak"], choices=["strong", "weak"]
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.device == "cuda":
        args.procs = [p for p in args.procs if p <= torch.cuda.device_count()]
    os.environ.setdefault("LAYERLAB_HOME", tempfile.mkdtemp(prefix="layerlab-scale-"))
    from engine.limits import CORES

    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {CORES} cores"
    print(f"# scaling on {gpu}: {args.epochs} epochs, batch {args.batch} (global for strong, per "
          f"process for weak)\n")  # fmt: skip
    print(
        "| model | mode | processes | global batch | samples/s | speed-up | efficiency "
        "| hand-written DDP | LayerLab / hand-written |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for model in args.models:
        data = dataset(model)
        for mode in args.modes:
            base = None
            for procs in args.procs:
                batch = args.batch if mode == "strong" else args.batch * procs
                if batch < procs:
                    continue
                sps = measure(model, data, procs, batch, args.epochs, args.device)
                ref = reference(model, data, procs, batch, args.epochs, args.device)
                base = sps if procs == 1 else base
                scaled = f"{sps / base:.2f}x | {sps / base / procs:.0%}" if base else "– | –"
                print(f"| {model} | {mode} | {procs} | {batch} | {sps:,.0f} | {scaled} | "
                      f"{ref:,.0f} | {sps / ref:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
