"""Retrain this bundle's model from scratch with the run's settings, plan and seed: `python train.py`.

It needs torch and safetensors, not LayerLab. The data is the run's prepared splits (data.safetensors in this
bundle, or --data for the dataset's data.safetensors in LayerLab's workspace when it was too large to include).
On the same kind of device, in 32-bit precision, it gives the run's weights again; mixed precision and
torch.compile are not applied here. trainer/ holds LayerLab's own training core (engine/train/core.py with its
state.py, options.py and augment.py), unchanged.

(In LayerLab this file is engine/train/retrain.py; it runs only inside a bundle, beside model.py and trainer/.)
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import Model  # noqa: E402
from trainer import core, vae  # noqa: E402
from trainer.state import Callback, Plan  # noqa: E402


class Report(Callback):
    """One JSON line per epoch, and a line when it stops early."""

    def on_epoch_end(self, s):
        print(
            json.dumps({"epoch": s.epoch, **{k: round(v, 6) for k, v in s.metrics.items()}}),
            flush=True,
        )

    def on_train_end(self, s):
        if s.early_stopped:
            print(
                f"stopped early after epoch {s.epoch}; the best was epoch {s.best['epoch']}",
                flush=True,
            )


def dataset_hash(tensors: dict) -> str:
    """The dataset's content hash as LayerLab computes it (the tensors in key order)."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(tensors[key].numpy())
    return digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Retrain this bundle's model with the run's settings and seed."
    )
    parser.add_argument(
        "--data", type=Path, default=HERE / "data.safetensors", help="the prepared splits"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("retrained.safetensors"), help="the weights to write"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    args = parser.parse_args()
    manifest = json.loads((HERE / "manifest.json").read_text())
    cfg, plan = SimpleNamespace(**manifest["config"]), Plan(**manifest["plan"])
    if not args.data.exists():
        print(
            f"error: {args.data} is missing. The prepared data was too large to include; pass --data with "
            f"datasets/{manifest['dataset']['id']}/data.safetensors from LayerLab's workspace.",
            file=sys.stderr,
        )
        return 2
    tensors = load_file(str(args.data))
    if dataset_hash(tensors) != manifest["dataset"]["hash"]:
        print(
            "warning: this data is not the data the run trained on (its hash differs).",
            file=sys.stderr,
        )
    device = torch.device(args.device)
    torch.manual_seed(cfg.seed)  # before the model is built: the same initial weights as the run
    model = Model()
    if (
        HERE / "init.safetensors"
    ).exists():  # the run started from imported or a parent run's weights
        model.load_state_dict(load_file(str(HERE / "init.safetensors")), strict=False)
    for node in cfg.freeze:
        model.layers[node].requires_grad_(False)
    if device.type == "cpu" and plan.threads:
        torch.set_num_threads(plan.threads)
    model.to(device)
    if (
        plan.train_output != plan.output
    ):  # the loss applies the final softmax / sigmoid (no weights) itself
        model.layers[plan.output] = torch.nn.Identity()
    s = core.prepare(cfg, plan, model, model, tensors, device)
    validate = core.validate
    if (
        getattr(cfg, "target", "label") == "vae"
    ):  # the reconstruction plus the KL term, as in LayerLab
        s.criterion, validate = vae.criterion(s), vae.validate
    s = core.train(s, [Report()], validate=validate)
    if s.status == "diverged":
        print(
            f"error: the loss became NaN, infinite or exploded at epoch {s.epoch}.", file=sys.stderr
        )
        return 1
    save_file(
        {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}, str(args.out)
    )
    print(
        json.dumps(
            {"written": str(args.out), "metrics": s.metrics, "run_metrics": manifest["metrics"]}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
