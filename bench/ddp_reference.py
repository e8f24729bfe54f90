"""The reference for bench/scale.py: a careful hand-written DDP loop, started by torchrun.

    python -m torch.distributed.run --standalone --nproc-per-node N bench/ddp_reference.py \
        DATASET_DIR SPEC.json BATCH EPOCHS DEVICE OUT.json

The same model (compiled from the spec), the same data and global batch as a LayerLab run: tensors on the
device, one shared shuffle, each rank its contiguous share of every batch, Adam (fused), the loss summed on
the device, a validation pass per epoch. Rank 0 writes {"samples_per_second": ...} to OUT.json.
"""

import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.compiler import compile_spec  # noqa: E402
from engine.data.store import load_dataset  # noqa: E402
from engine.spec import data_inputs, parse_spec  # noqa: E402


def main(data_dir, spec_path, batch, epochs, device, out) -> None:
    batch, epochs = int(batch), int(epochs)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    cuda = device == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dev = torch.device("cuda" if cuda else "cpu")
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
    torch.set_num_threads(1 if not cuda else torch.get_num_threads())
    data = load_dataset(data_dir)
    x, y = (t.to(dev) for t in data.split("train"))
    xv, yv = (t.to(dev) for t in data.split("val"))
    model, _ = compile_spec(parse_spec(json.loads(Path(spec_path).read_text())),
                            data_inputs(data.meta), seed=0)  # fmt: skip
    model.to(dev)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator(device=dev).manual_seed(0)
    n = len(y)
    t = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, device=dev, generator=gen)
        total = torch.zeros((), device=dev)
        for start in range(0, n, batch):
            idx = perm[start : start + batch].tensor_split(world)[rank]
            loss = loss_fn(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        total.item()
        with torch.no_grad():
            model.eval()
            outs = torch.cat([model(xv[i : i + 4096]) for i in range(0, len(xv), 4096)])
            loss_fn(outs, yv).item()
            model.train()
    elapsed = time.perf_counter() - t
    steps = math.ceil(n / batch) * epochs
    if rank == 0:
        Path(out).write_text(json.dumps({"samples_per_second": steps * batch / elapsed}))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
