"""Training-loop speed: LayerLab's engine vs hand-written PyTorch loops, same model, same data, one process.

    python bench/train_loop.py [--epochs 5] [--rows 60000] [--batch-sizes 32 256] [--repeats 1] [--device cpu]

Model: 784-64-32-10 MLP, ReLU, Adam(lr=1e-3), cross-entropy, on learnable synthetic data (labels from a
random teacher network). Loops compared:
  tutorial  the PyTorch tutorial loop: DataLoader(TensorDataset, shuffle=True), Adam defaults, loss.item() per step
  careful   a careful hand-written loop: tensors stay on the device, shuffled index slices, Adam(fused=True),
            loss summed on the device
  layerlab  engine.train.fit on the same data (plus its per-epoch validation pass, events and final save)
The three main columns use the same thread count (the engine's choice for this model); the tutorial loop is
also timed at torch's default thread count, which is what a script that never sets it gets.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.data.store import Dataset  # noqa: E402
from engine.train import TrainConfig, fit  # noqa: E402
from engine.train.loop import pick_threads  # noqa: E402

SPEC = {"nodes": [{"id": "fc1", "op": "linear", "params": {"out_features": 64}},
                  {"id": "r1", "op": "activation", "params": {"kind": "relu"}},
                  {"id": "fc2", "op": "linear", "params": {"out_features": 32}},
                  {"id": "r2", "op": "activation", "params": {"kind": "relu"}},
                  {"id": "out", "op": "linear", "params": {"out_features": 10}}]}


def make_data(rows: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 784, generator=g)
    teacher = nn.Sequential(nn.Linear(784, 32), nn.Tanh(), nn.Linear(32, 10))
    with torch.no_grad():
        y = teacher(x).argmax(1)
    return x, y


def reference_model():
    return nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def tutorial(x, y, bs, epochs, device):
    model = reference_model().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True)
    loss_fn = nn.CrossEntropyLoss()
    t = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
    return len(x) * epochs / (time.perf_counter() - t)


def careful(x, y, bs, epochs, device):
    model = reference_model().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    x, y = x.to(device), y.to(device)
    n = len(x)
    t = time.perf_counter()
    for _ in range(epochs):
        total = torch.zeros((), device=device)
        perm = torch.randperm(n, device=device)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        total.item()
    return n * epochs / (time.perf_counter() - t)


def layerlab(x, y, bs, epochs, device, x_val, y_val):
    ds = Dataset(Path("."), {"id": "bench", "name": "bench", "task": "classification", "input_shape": [784],
                             "classes": [str(i) for i in range(10)], "sizes": {"train": len(x)}},
                 {"x_train": x, "y_train": y, "x_val": x_val, "y_val": y_val})
    t = time.perf_counter()
    result = fit(SPEC, ds, TrainConfig(epochs=epochs, batch_size=bs, lr=1e-3, device=device), emit=lambda e: None)
    wall = time.perf_counter() - t
    return len(x) * epochs / wall, result["metrics"]["val/accuracy"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--rows", type=int, default=60000)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    x, y = make_data(args.rows + 6000)
    x_val, y_val = x[args.rows:], y[args.rows:]
    x, y = x[:args.rows], y[:args.rows]
    n_params = sum(p.numel() for p in reference_model().parameters())
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads available"
    print(f"# {args.rows} rows x 784 -> 10, {args.epochs} epochs, torch {torch.__version__}, {name}")
    default_threads = torch.get_num_threads()
    print(f"| batch | threads | tutorial, {default_threads} threads (torch default) | tutorial DataLoader | careful loop "
          "| LayerLab | LayerLab / tutorial | LayerLab / careful | val acc |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for bs in args.batch_sizes:
        threads = pick_threads(n_params, bs)
        torch.set_num_threads(default_threads)
        at_default = tutorial(x, y, bs, args.epochs, device)
        if device.type == "cpu":
            torch.set_num_threads(threads)
        best = {"tutorial": 0.0, "careful": 0.0, "layerlab": 0.0}
        acc = 0.0
        for _ in range(args.repeats):
            best["tutorial"] = max(best["tutorial"], tutorial(x, y, bs, args.epochs, device))
            best["careful"] = max(best["careful"], careful(x, y, bs, args.epochs, device))
            sps, acc = layerlab(x, y, bs, args.epochs, args.device, x_val, y_val)
            best["layerlab"] = max(best["layerlab"], sps)
        cells = [bs, threads if device.type == "cpu" else "-", f"{at_default:,.0f}", f"{best['tutorial']:,.0f}",
                 f"{best['careful']:,.0f}", f"{best['layerlab']:,.0f}", f"{best['layerlab'] / best['tutorial']:.2f}x",
                 f"{best['layerlab'] / best['careful']:.2f}x", f"{acc:.3f}"]
        print("| " + " | ".join(map(str, cells)) + " |", flush=True)


if __name__ == "__main__":
    main()
