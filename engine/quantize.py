"""Smaller and faster copies of a trained model, and what they trade: int8 weights.

- `quantized-dynamic`: torch's dynamic int8 quantization of the Linear, LSTM and GRU layers (weights stored as
  int8, activations quantized on the fly), saved as TorchScript (`torch.jit.load`).
- `onnx-int8`: ONNX Runtime's dynamic int8 quantization of the ONNX export (MatMul, Gemm, Conv, LSTM, GRU).
- `onnx-int8-static`: ONNX Runtime's static int8 quantization (QDQ), its activation ranges calibrated on rows of the
  training split: what conv models need, since dynamic quantization leaves their activations in float.

`compare` measures each against the original on this machine: the file's size, the latency per sample at batch 1
and 32, and the metric on the test split (accuracy, or the mean absolute error in the target's units), flagging a
variant whose metric worsens by more than a threshold.
"""

from __future__ import annotations

import copy
import io
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import LayerLabError

if TYPE_CHECKING:
    import numpy as np
    import torch

# torch, numpy and the exporters are imported where they are used: the CLI reads FORMATS for its --help.

FORMATS = {
    "quantized-dynamic": "int8 Linear/LSTM/GRU weights (torch dynamic quantization), TorchScript",
    "onnx-int8": "ONNX with int8 weights (ONNX Runtime dynamic quantization)",
    "onnx-int8-static": "ONNX with int8 weights and activations, calibrated on the training split (ONNX Runtime)",
}
FLOAT = {
    "quantized-dynamic": "torchscript",
    "onnx-int8": "onnx",
    "onnx-int8-static": "onnx",
}  # each one's format
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}
CALIBRATION_ROWS = 256  # training rows that set a static variant's activation ranges
TEST_ROWS = 5000  # test rows each variant is scored on, at most
TIMING_S = 0.4  # seconds spent timing one variant at one batch size (at least 5 runs)
DEFAULT_MAX_DROP = 1.0  # % worse than the original before a variant is flagged


def _parts(model, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A batch as the model's inputs: one tensor, or a packed row split into each input, each in the type the
    exported model takes (token ids as integers, the rest as floats)."""
    from engine.export import example_input

    parts = tuple(model.unpack(x)) if len(model.layout) > 1 else (x,)
    return tuple(p.to(e.dtype) for p, e in zip(parts, example_input(model, 1), strict=True))


def dynamic_int8(model) -> tuple[bytes, Callable]:
    """torch dynamic int8 of the Linear, LSTM and GRU layers, as TorchScript bytes, and a function that runs it."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    from engine.export import example_input

    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # torch.ao.quantization and jit are marked deprecated; both still work
        quantized = quantize_dynamic(copy.deepcopy(model).eval(), {torch.nn.Linear, torch.nn.LSTM, torch.nn.GRU},
                                     dtype=torch.qint8)  # fmt: skip
        if not any(
            type(m).__module__.startswith("torch.ao.nn.quantized") for m in quantized.modules()
        ):
            raise LayerLabError(
                "this model has no Linear, LSTM or GRU layer to quantize dynamically: try onnx-int8-static."
            )
        quantized._seq = [
            quantized.layers[nid] for nid, _ in quantized.plan
        ]  # the chain's list, to the new layers
        traced = torch.jit.trace(quantized, example_input(model, 2), check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        loaded = torch.jit.load(io.BytesIO(buffer.getvalue()))

    def run(xs):
        with torch.no_grad():
            return loaded(*xs).float().numpy()

    return buffer.getvalue(), run


class _Calibration:
    """ONNX Runtime's calibration reader: batches of the training split's first rows."""

    def __init__(self, model, x: torch.Tensor):
        from engine.export import input_names

        self.batches = iter([
            {n: p.numpy() for n, p in zip(input_names(model), _parts(model, x[i : i + 32]), strict=True)}
            for i in range(0, len(x), 32)
        ])  # fmt: skip

    def get_next(self):
        return next(self.batches, None)


def onnx_int8(model, source: bytes, calibration: torch.Tensor | None = None) -> bytes:
    """The model's ONNX export `source` quantized to int8 by ONNX Runtime: dynamic, or static with `calibration`
    rows (as the model takes them)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    with tempfile.TemporaryDirectory() as folder:
        fp32, int8 = Path(folder) / "model.onnx", Path(folder) / "int8.onnx"
        fp32.write_bytes(source)
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(
            logging.ERROR
        )  # its advice to pre-process the model, printed on each call
        try:
            if calibration is None:
                quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
            else:
                quantize_static(str(fp32), str(int8), _Calibration(model, calibration), quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)  # fmt: skip
        except Exception as e:  # noqa: BLE001 - an op ONNX Runtime's quantizer cannot handle
            raise LayerLabError(
                f"ONNX Runtime could not quantize this model ({type(e).__name__}: {str(e)[:200]})."
            ) from None
        finally:
            logging.getLogger().setLevel(quiet)
        return int8.read_bytes()


def onnx_runner(model, data: bytes) -> Callable:
    import onnxruntime as ort

    from engine.export import input_names

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = input_names(model)
    return lambda xs: session.run(None, {n: x.numpy() for n, x in zip(names, xs, strict=True)})[0]


def variant(
    model, fmt: str, exported: Callable[[str], bytes], calibration: torch.Tensor | None = None
) -> tuple[bytes, Callable]:
    """The file of one format (FORMATS) and a function from the model's inputs to its outputs (numpy).
    `exported(fmt)`: the model in that format's float32 form (`float_export`, made once per format by `compare`)."""
    if fmt == "quantized-dynamic":
        return dynamic_int8(model)
    if fmt not in FORMATS:
        raise LayerLabError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}.")
    if fmt == "onnx-int8-static" and calibration is None:
        raise LayerLabError(
            "static quantization needs calibration rows: the run's dataset is not in the workspace."
        )
    data = onnx_int8(model, exported(fmt), calibration if fmt == "onnx-int8-static" else None)
    return data, onnx_runner(model, data)


def flagged(row: dict, higher_is_better: bool, max_drop: float) -> bool:
    """Whether a variant's metric is worse than the original's by more than `max_drop` percent."""
    change = row.get("change_pct") or 0.0
    return (-change if higher_is_better else change) > max_drop


def float_export(model, fmt: str) -> bytes:
    """The model in a variant's own format, in float32 (TorchScript or ONNX, checked against the model): what ONNX
    Runtime quantizes, and the size a variant is set beside, since a small model's file is mostly the format's
    overhead."""
    from engine.export import onnx_bytes, torchscript_bytes

    return torchscript_bytes(model) if FLOAT[fmt] == "torchscript" else onnx_bytes(model)


def latency_ms(run: Callable, model, batch: int) -> float:
    """Median milliseconds per sample over repeated runs at `batch` (one warm-up run first)."""
    from engine.export import example_input

    xs = example_input(model, batch)
    run(xs)
    times, spent = [], 0.0
    while len(times) < 5 or spent < TIMING_S:
        start = time.perf_counter()
        run(xs)
        times.append(time.perf_counter() - start)
        spent += times[-1]
        if len(times) >= 200:
            break
    return statistics.median(times) / batch * 1000


def _metric(
    task, meta: dict, squashed: bool
) -> tuple[str, bool, Callable[[np.ndarray, np.ndarray], float]]:
    """The metric a variant is judged on: name, whether higher is better, and (outputs, targets) -> value."""
    import numpy as np
    import torch

    from engine.portable import probabilities, target_units

    if task.predictions == "classes":

        def accuracy(out, y):
            return float(
                (probabilities(torch.from_numpy(out), squashed).argmax(1).numpy() == y).mean()
            )

        return "accuracy", True, accuracy
    if task.predictions in ("values", "forecast"):
        scale, _ = target_units(meta)
        return "MAE", False, lambda out, y: float(np.abs(out.reshape(y.shape) - y).mean() * scale)
    raise LayerLabError(f"quantized variants are compared on classifiers, regressors and forecasters; this run "
                        f"is a {task.name}: export it as it is.")  # fmt: skip


def compare(run_dir: Path, formats=tuple(FORMATS), max_drop: float = DEFAULT_MAX_DROP,
            progress: Callable[[float, str], None] = lambda done, what: None,
            keep: Path | None = None) -> dict:  # fmt: skip
    """The original and each variant on this machine: {"metric", "higher_is_better", "max_drop", "test_rows",
    "rows": [{"name", "format", "bytes", "float_bytes", "ms_b1", "ms_b32", "value", "change_pct" (the metric's
    relative change, %), "flagged" (worse by more than `max_drop` %)} or {"name", "format", "error"}]}.
    `keep`: a folder to write each variant's file into (named in its row's "file")."""
    import numpy as np
    import torch

    from engine.evaluate import ends_in_squash, finished_run
    from engine.portable import as_input
    from engine.tasks import task_for

    run_dir = Path(run_dir)
    model, dataset, train = finished_run(run_dir, "test")
    task = task_for(dataset.task, train.get("config", {}).get("target", "label"))
    name, higher, score = _metric(task, dataset.meta, ends_in_squash(model))
    x, y = dataset.split("test")
    x, y = as_input(x[:TEST_ROWS]), y[:TEST_ROWS].numpy()
    calibration = as_input(dataset.split("train")[0][:CALIBRATION_ROWS])

    def judged(run: Callable) -> float:
        out = np.concatenate([run(_parts(model, x[i : i + 256])) for i in range(0, len(x), 256)])
        return score(out, y)

    def torch_run(xs):
        with torch.no_grad():
            return model(*xs).float().numpy()

    exports: dict[
        str, bytes
    ] = {}  # each float format exported once: the two ONNX variants share theirs

    def exported(fmt: str) -> bytes:
        if FLOAT[fmt] not in exports:
            exports[FLOAT[fmt]] = float_export(model, fmt)
        return exports[FLOAT[fmt]]

    progress(0.0, "Timing the original")
    original = judged(torch_run)
    size = (run_dir / "model.safetensors").stat().st_size
    rows = [{"name": "original (float32)", "format": "safetensors", "bytes": size, "float_bytes": size,
             "ms_b1": latency_ms(torch_run, model, 1), "ms_b32": latency_ms(torch_run, model, 32),
             "value": original, "change_pct": 0.0, "flagged": False}]  # fmt: skip
    for i, fmt in enumerate(formats):
        progress((i + 1) / (len(formats) + 1), f"Quantizing: {fmt}")
        try:
            data, run = variant(model, fmt, exported, calibration)
            value = judged(run)
        except LayerLabError as e:
            rows.append({"name": fmt, "format": fmt, "error": str(e)})
            continue
        except Exception as e:  # noqa: BLE001 - a variant that builds but cannot run this model's inputs
            rows.append(
                {
                    "name": fmt,
                    "format": fmt,
                    "error": f"it does not run ({type(e).__name__}: {str(e)[:200]})",
                }
            )
            continue
        change = 100.0 * (value - original) / abs(original) if original else 0.0
        row = {"name": fmt, "format": fmt, "bytes": len(data), "float_bytes": len(exported(fmt)),
               "ms_b1": latency_ms(run, model, 1), "ms_b32": latency_ms(run, model, 32), "value": value,
               "change_pct": change}  # fmt: skip
        row["flagged"] = flagged(row, higher, max_drop)
        if keep is not None:
            row["file"] = f"{run_dir.name}-{fmt}{SUFFIX[FLOAT[fmt]]}"
            (Path(keep) / row["file"]).write_bytes(data)
        rows.append(row)
    progress(1.0, "Done")
    return {
        "metric": name,
        "higher_is_better": higher,
        "max_drop": max_drop,
        "test_rows": len(x),
        "rows": rows,
    }


def run_job(job: dict, progress: Callable[[float, str], None]) -> dict:
    """engine.jobs runs it: {"run_dir", "formats", "max_drop"}; the variants' files are written into the job's
    folder."""
    formats = job.get("formats") or tuple(FORMATS)
    max_drop = float(job.get("max_drop", DEFAULT_MAX_DROP))
    return compare(Path(job["run_dir"]), formats, max_drop, progress, keep=Path(job["folder"]))
