"""Predict with this bundle: `python predict.py DATA --out predictions.csv`. DATA is a table with the
training columns (CSV, Parquet, Excel, JSON Lines) or an image file or folder; for a forecaster, a table of the
series' history (its time and value columns), and the output is the forecast of the next steps. Needs torch,
safetensors, numpy, pandas, pillow.

portable.py beside it is LayerLab's own preprocessing and prediction code (engine/portable.py),
unchanged. (In LayerLab this file is engine/bundle_predict.py; it runs only inside a bundle.)
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from portable import (  # noqa: E402
    IMAGE_EXTENSIONS,
    InputError,
    csv_bytes,
    decode_image,
    encode_rows,
    forecast,
    model_outputs,
    prediction_table,
    with_rows,
)


def read_rows(path: Path) -> pd.DataFrame:
    """A table by its extension: CSV/TSV (delimiter sniffed), Parquet, Excel or JSON Lines."""
    ext = path.suffix.lower()
    if ext in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if ext == ".xlsx":
        return pd.read_excel(path)
    if ext in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True)
    head = path.open(encoding="utf-8-sig", errors="replace").read(65536)
    try:
        sep = csv.Sniffer().sniff(head, delimiters=",\t;|").delimiter
    except csv.Error:  # one column, or nothing to tell from
        sep = "\t" if ext in (".tsv", ".tab") else ","
    return pd.read_csv(path, sep=sep, encoding="utf-8-sig")


def predict(data: Path) -> pd.DataFrame:
    """The predictions for a table of rows, or for an image file or a folder of images."""
    sys.path.insert(0, str(HERE))
    from model import load

    info = json.loads((HERE / "preprocessing.json").read_text())
    info["classes"] = json.loads((HERE / "labels.json").read_text())["classes"]
    model = load(HERE / "weights.safetensors")
    if info.get("task") == "language_model":
        raise InputError("this model writes text: run generate.py --prompt '...' instead.")
    if (info["preprocessing"] or {}).get("kind") == "image":
        files = (
            [data]
            if data.is_file()
            else sorted(p for p in data.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        )
        if not files:
            raise InputError(f"{data} holds no PNG, JPEG, BMP, GIF or WebP images.")
        channels, size = int(info["input_shape"][0]), int(info["input_shape"][-1])
        x = torch.from_numpy(
            np.stack([decode_image(p.read_bytes(), p.name, size, channels == 1) for p in files])
        )
        out = model_outputs(model, x, info["takes_tokens"])
        return pd.concat(
            [
                pd.DataFrame({"file": [p.name for p in files]}),
                prediction_table(out, info, info["outputs_are_probabilities"]),
            ],
            axis=1,
        )
    if data.is_dir():
        raise InputError(
            "this model was trained on a table: pass a CSV, Parquet, Excel or JSON Lines file."
        )
    frame = read_rows(data)
    if not len(frame):
        raise InputError("the table has no rows to predict.")
    if (info["preprocessing"] or {}).get(
        "kind"
    ) == "series":  # a forecaster: the table is the history
        return forecast(model, frame, info)
    out = model_outputs(
        model, torch.from_numpy(encode_rows(frame, info["preprocessing"])), info["takes_tokens"]
    )
    return with_rows(
        prediction_table(out, info, info["outputs_are_probabilities"]), frame, info["preprocessing"]
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Predict with this bundle's model, preparing the data exactly as training did."
    )
    parser.add_argument(
        "data",
        type=Path,
        help="a table (CSV, Parquet, Excel, JSON Lines) with the training "
        "columns, or an image file or folder of images",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("predictions.csv"), help="the CSV to write"
    )
    args = parser.parse_args()
    if not args.data.exists():
        print(f"error: no such file or folder: {args.data}", file=sys.stderr)
        return 2
    try:
        table = predict(args.data)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:  # a file pandas cannot parse
        print(f"error: {args.data} could not be read ({str(e)[:200]}).", file=sys.stderr)
        return 2
    args.out.write_bytes(csv_bytes(table))
    print(f"{len(table)} prediction(s) written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
