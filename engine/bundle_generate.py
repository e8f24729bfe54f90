"""Write with this bundle's model: a language model's text, `python generate.py --prompt "once upon" --length 200`,
or new samples of a VAE or a GAN's generator, `python generate.py --n 16 --out samples/` (PNG images, or the rows in
samples.csv). Needs torch, safetensors, numpy, pandas, pillow.

portable.py beside it is LayerLab's own code (engine/portable.py), unchanged: the same tokens, vocabulary, sampling
and decoding as the Predict page. (In LayerLab this file is engine/bundle_generate.py; it runs only inside a bundle.)
"""

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from portable import (  # noqa: E402
    InputError,
    generate,
    generator_samples,
    latent_layer,
    prior_samples,
    sample_files,
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Write text, or new samples, with this bundle's model."
    )
    parser.add_argument("--prompt", default="", help="a language model: the text to continue")
    parser.add_argument("--length", type=int, default=200, help="a language model: tokens to write")
    parser.add_argument("--temperature", type=float, default=0.8, help="below 1: more predictable")
    parser.add_argument(
        "--top-k", type=int, default=20, help="draw from the k likeliest tokens (0: all)"
    )
    parser.add_argument("--n", type=int, default=16, help="a VAE or a GAN: samples to write")
    parser.add_argument("--out", help="a VAE or a GAN: the folder to write them into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from model import INPUTS, load

    info = json.loads((HERE / "preprocessing.json").read_text())
    model = load(HERE / "weights.safetensors")
    noise = (
        INPUTS["noise"][0] if list(INPUTS) == ["noise"] else None
    )  # a GAN's generator reads noise
    if latent_layer(model) is not None or noise is not None:
        if not args.out or not 1 <= args.n <= 1000:
            print("error: pass --out FOLDER and --n between 1 and 1000.", file=sys.stderr)
            return 2
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        made = (
            generator_samples(model, args.n, noise, args.seed)
            if noise is not None
            else prior_samples(model, args.n, tuple(info["input_shape"]), args.seed)
        )
        files = sample_files(made, info)
        for name, data in files.items():
            (out / name).write_bytes(data)
        print(f"wrote {args.n} samples to {out}")
        return 0
    if info.get("task") != "language_model":
        print(
            "error: this bundle's model neither writes text nor generates samples: use predict.py.",
            file=sys.stderr,
        )
        return 2
    try:
        text = generate(
            model, info, args.prompt, args.length, args.temperature, args.top_k, args.seed,
        )  # fmt: skip
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
