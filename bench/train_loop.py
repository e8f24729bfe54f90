"""Training-loop speed: LayerLab's engine vs hand-written PyTorch loops vs Keras 3 `model.fit`, same models, same data.

    python bench/train_loop.py [--cases mlp784-32 mlp784-256 mlp100-32 cnn lstm] [--epochs 3] [--repeats 2]
                               [--device cpu|cuda] [--precision auto|32|bf16] [--compile] [--no-keras]

Cases (learnable synthetic data: labels from a random teacher):
  mlp784-32, mlp784-256  784-64-32-10 MLP on 60,000 rows, batch 32 / 256
  mlp100-32              100-64-32-10 MLP on 60,000 rows, batch 32
  cnn                    conv16-pool-conv32-pool-dense10 on 12,000 1x28x28 images, batch 64
  lstm                   embedding 32 + LSTM 64 + dense 2 on 8,000 sequences of 40 tokens, batch 64
Loops (Adam lr 1e-3, cross-entropy, the same thread count; each also scores a validation split of 10% after
every epoch, as `fit` does, so all do the same work):
  keras     Keras 3 `model.fit(validation_data=...)` on the torch backend (pip install keras; skipped when absent)
  tutorial  the PyTorch tutorial loop: DataLoader(TensorDataset, shuffle=True), loss.item() every step
  careful   a careful hand-written loop: tensors on the device, shuffled index slices, Adam(fused=True), loss
            summed on the device
  layerlab  engine.train.fit (with its events), diagnostics on (its default) and off
Each loop runs `--repeats` times interleaved; the table gives medians of samples/s.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.data.store import Dataset  # noqa: E402
from engine.train import TrainConfig, fit  # noqa: E402
from engine.train.loop import pick_threads  # noqa: E402


def linear(n):
    return {"id": f"fc{n}", "op": "linear", "params": {"out_features": n}}


def relu(i):
    return {"id": f"r{i}", "op": "activation", "params": {"kind": "relu"}}


CASES = {
    "mlp784-32": dict(shape=(784,), rows=60000, bs=32, classes=10),
    "mlp784-256": dict(shape=(784,), rows=60000, bs=256, classes=10),
    "mlp100-32": dict(shape=(100,), rows=60000, bs=32, classes=10),
    "cnn": dict(shape=(1, 28, 28), rows=12000, bs=64, classes=10),
    "lstm": dict(shape=(40,), rows=8000, bs=64, classes=2, vocab=1000),
}


def spec(case: str) -> dict:
    if case.startswith("mlp"):
        return {"nodes": [linear(64), relu(1), linear(32), relu(2), linear(10)]}
    if case == "cnn":

        def conv(i, c):
            return {"id": f"c{i}", "op": "conv2d", "params": {"out_channels": c, "padding": 1}}

        pool = lambda i: {"id": f"p{i}", "op": "maxpool2d", "params": {"kernel_size": 2}}  # noqa: E731
        return {
            "nodes": [
                conv(1, 16),
                relu(1),
                pool(1),
                conv(2, 32),
                relu(2),
                pool(2),
                {"id": "flat", "op": "flatten"},
                linear(10),
            ]
        }
    return {
        "nodes": [
            {
                "id": "emb",
                "op": "embedding",
                "params": {"num_embeddings": 1000, "embedding_dim": 32},
            },
            {"id": "lstm", "op": "lstm", "params": {"hidden_size": 64}},
            linear(2),
        ]
    }


class LastStep(nn.Module):
    def forward(self, out):
        return out[0][:, -1]


def torch_model(case: str) -> nn.Module:
    d = CASES[case]["shape"][0]
    if case.startswith("mlp"):
        return nn.Sequential(
            nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)
        )
    if case == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 10),
        )
    return nn.Sequential(
        nn.Embedding(1000, 32), nn.LSTM(32, 64, batch_first=True), LastStep(), nn.Linear(64, 2)
    )


def keras_model(case: str):
    import keras

    layers = keras.layers
    if case.startswith("mlp"):
        body = [
            keras.Input(CASES[case]["shape"]),
            layers.Dense(64, activation="relu"),
            layers.Dense(32, activation="relu"),
            layers.Dense(10),
        ]
    elif case == "cnn":
        body = [
            keras.Input((28, 28, 1)),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(10),
        ]
    else:
        body = [
            keras.Input((40,), dtype="int32"),
            layers.Embedding(1000, 32),
            layers.LSTM(64),
            layers.Dense(2),
        ]
    model = keras.Sequential(body)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def make_data(case: str, seed: int = 0):
    d = CASES[case]
    g = torch.Generator().manual_seed(seed)
    n = d["rows"] + d["rows"] // 10
    if case == "lstm":
        x = torch.randint(0, 1000, (n, 40), generator=g)
        y = (
            (x < 100).sum(1) > 4
        ).long()  # is a rare token frequent: order-free but needs the whole sequence
    else:
        x = torch.randn(n, *d["shape"], generator=g)
        teacher = nn.Sequential(
            nn.Flatten(), nn.Linear(x[0].numel(), 32), nn.Tanh(), nn.Linear(32, d["classes"])
        )
        with torch.no_grad():
            y = teacher(x).argmax(1)
    return x[: d["rows"]], y[: d["rows"]], x[d["rows"] :], y[d["rows"] :]


@torch.no_grad()
def validate(model, x_val, y_val, device):
    model.eval()
    out = torch.cat([model(x_val[i : i + 512].to(device)) for i in range(0, len(x_val), 512)])
    y_val = y_val.to(device)
    model.train()
    return nn.functional.cross_entropy(out, y_val).item(), (
        out.argmax(1) == y_val
    ).float().mean().item()


def tutorial(case, x, y, epochs, device, x_val, y_val):
    model = torch_model(case).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x, y), batch_size=CASES[case]["bs"], shuffle=True)
    t = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
        validate(model, x_val, y_val, device)
    return len(x) * epochs / (time.perf_counter() - t)


def careful(case, x, y, epochs, device, x_val, y_val):
    model = torch_model(case).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    x, y, n, bs = x.to(device), y.to(device), len(x), CASES[case]["bs"]
    x_val, y_val = x_val.to(device), y_val.to(device)
    t = time.perf_counter()
    for _ in range(epochs):
        total = torch.zeros((), device=device)
        perm = torch.randperm(n, device=device)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        total.item()
        validate(model, x_val, y_val, device)
    return n * epochs / (time.perf_counter() - t)


def keras_fit(case, x, y, epochs, device, x_val, y_val):
    model = keras_model(case)
    to_keras = lambda t: t.permute(0, 2, 3, 1).numpy() if case == "cnn" else t.numpy()  # noqa: E731
    xk, yk, val = to_keras(x), y.numpy(), (to_keras(x_val), y_val.numpy())
    model.fit(
        xk[: CASES[case]["bs"] * 4],
        yk[: CASES[case]["bs"] * 4],
        batch_size=CASES[case]["bs"],
        epochs=1,
        verbose=0,
    )  # warm-up: tracing and first-call costs out of the timing
    t = time.perf_counter()
    model.fit(
        xk,
        yk,
        batch_size=CASES[case]["bs"],
        epochs=epochs,
        verbose=0,
        shuffle=True,
        validation_data=val,
    )
    return len(x) * epochs / (time.perf_counter() - t)


def layerlab(case, x, y, epochs, device, x_val, y_val, **cfg):
    d = CASES[case]
    ds = Dataset(
        Path("."),
        {
            "id": "bench",
            "name": "bench",
            "task": "classification",
            "input_shape": list(d["shape"]),
            "classes": [str(i) for i in range(d["classes"])],
            "sizes": {"train": len(x)},
        },
        {"x_train": x, "y_train": y, "x_val": x_val, "y_val": y_val},
    )
    t = time.perf_counter()
    result = fit(
        spec(case),
        ds,
        TrainConfig(epochs=epochs, batch_size=d["bs"], lr=1e-3, device=str(device), **cfg),
        emit=lambda e: None,
    )
    return len(x) * epochs / (time.perf_counter() - t), result["metrics"]["val/accuracy"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="auto", choices=["auto", "32", "bf16"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--no-keras", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    try:
        if args.no_keras:
            raise ImportError
        import keras

        have_keras = f"Keras {keras.__version__} ({keras.backend.backend()} backend)"
    except ImportError:
        have_keras = None
    name = (
        torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    )
    print(
        f"# torch {torch.__version__}, {name}, {args.epochs} epochs, medians of {args.repeats}; "
        f"precision {args.precision}, compile {args.compile}; {have_keras or 'Keras not installed'}"
    )
    print(
        "| case | batch | threads | Keras fit | tutorial | careful | LayerLab | LayerLab, no diagnostics "
        "| LayerLab / careful | LayerLab / Keras | diagnostics cost | val acc |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    extra = {"precision": args.precision, "compile": args.compile}
    for case in args.cases:
        x, y, x_val, y_val = make_data(case)
        n_params = sum(p.numel() for p in torch_model(case).parameters())
        threads = pick_threads(n_params, CASES[case]["bs"])
        if device.type == "cpu":
            torch.set_num_threads(threads)
        runs = {k: [] for k in ("keras", "tutorial", "careful", "layerlab", "nodiag")}
        acc = 0.0
        for _ in range(args.repeats):
            if have_keras:
                runs["keras"].append(keras_fit(case, x, y, args.epochs, device, x_val, y_val))
            runs["tutorial"].append(tutorial(case, x, y, args.epochs, device, x_val, y_val))
            runs["careful"].append(careful(case, x, y, args.epochs, device, x_val, y_val))
            sps, acc = layerlab(case, x, y, args.epochs, device, x_val, y_val, **extra)
            runs["layerlab"].append(sps)
            runs["nodiag"].append(
                layerlab(case, x, y, args.epochs, device, x_val, y_val, diagnostics=False, **extra)[
                    0
                ]
            )
        med = {k: statistics.median(v) if v else None for k, v in runs.items()}
        fmt = lambda v: f"{v:,.0f}" if v else "-"  # noqa: E731
        cells = [
            case,
            CASES[case]["bs"],
            threads if device.type == "cpu" else "-",
            fmt(med["keras"]),
            fmt(med["tutorial"]),
            fmt(med["careful"]),
            fmt(med["layerlab"]),
            fmt(med["nodiag"]),
            f"{med['layerlab'] / med['careful']:.2f}x",
            f"{med['layerlab'] / med['keras']:.2f}x" if med["keras"] else "-",
            f"{1 - med['layerlab'] / med['nodiag']:+.1%}",
            f"{acc:.3f}",
        ]
        print("| " + " | ".join(map(str, cells)) + " |", flush=True)


if __name__ == "__main__":
    main()
