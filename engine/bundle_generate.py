"""Write text with this bundle's language model: `python generate.py --prompt "once upon" --length 200`. Needs
torch, safetensors, numpy, pandas, pillow.

portable.py beside it is LayerLab's own code (engine/portable.py), unchanged: the same tokens, vocabulary and
sampling as the Predict page. (In LayerLab this file is engine/bundle_generate.py; it runs only inside a bundle.)
"""

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from portable import InputError, generate  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description="Write text with this bundle's language model.")
    parser.add_argument("--prompt", default="", help="the text to continue")
    parser.add_argument("--length", type=int, default=200, help="tokens to write")
    parser.add_argument("--temperature", type=float, default=0.8, help="below 1: more predictable")
    parser.add_argument(
        "--top-k", type=int, default=20, help="draw from the k likeliest tokens (0: all)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from model import load

    info = json.loads((HERE / "preprocessing.json").read_text())
    if info.get("task") != "language_model":
        print("error: this bundle's model does not write text: use predict.py.", file=sys.stderr)
        return 2
    try:
        text = generate(
            load(HERE / "weights.safetensors"), info, args.prompt, args.length, args.temperature, args.top_k,
            args.seed,
        )  # fmt: skip
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
