"""Quantized variants against the original on built-in sets: file size, latency per sample and the test metric.

    python bench/quantize.py [--epochs 5]

Trains each (dataset, template) pair below for `--epochs`, then runs `engine.quantize.compare` (what the Export page's
**Quantize and compare** and `export --format quantized-dynamic|onnx-int8|onnx-int8-static` run): each variant's
size beside its own format in float32, ms per sample at batch 1 and 32 on this machine, and the test metric.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("LAYERLAB_HOME", tempfile.mkdtemp(prefix="layerlab-bench-"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.data.prepare import prepare_builtin  # noqa: E402
from engine.quantize import compare  # noqa: E402
from engine.runs import create_run, execute  # noqa: E402
from engine.templates import TEMPLATES, build  # noqa: E402

CASES = [("digits", "lenet"), ("shapes", "small_cnn"), ("reviews", "lstm_text"), ("orders", "text_and_numbers"),
         ("traffic", "gru_forecaster"), ("diabetes", "keras_mlp")]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    print(
        "| model | variant | KiB (float32 of its format) | ms/sample b1 | ms/sample b32 | test metric (change) |"
    )
    print("|---|---|---:|---:|---:|---|")
    for dataset_name, template in CASES:
        dataset = prepare_builtin(dataset_name)
        run = create_run(build(template, dataset.meta), {**TEMPLATES[template].train, "epochs": args.epochs},
                         dataset.path)  # fmt: skip
        execute(run)
        result = compare(run)
        for row in result["rows"]:
            if "error" in row:
                print(f"| {dataset_name} {template} | {row['name']} | {row['error']} | | | |")
                continue
            print(f"| {dataset_name} {template} | {row['name']} | {row['bytes'] / 1024:.1f} "
                  f"({row['float_bytes'] / 1024:.1f}) | {row['ms_b1']:.3f} | {row['ms_b32']:.4f} | "
                  f"{result['metric']} {row['value']:.4g} ({row['change_pct']:+.2f}%) |")  # fmt: skip


if __name__ == "__main__":
    main()
