"""Serve this bundle's model over HTTP: `python serve.py [--host 127.0.0.1] [--port 8000]`. Needs torch, safetensors,
numpy, pandas, pillow (requirements.txt); the Dockerfile beside it builds an image that runs it.

    curl -s http://127.0.0.1:8000/metadata            # the inputs, their types, the classes, an example request
    curl -s -X POST http://127.0.0.1:8000/predict -H 'Content-Type: application/json' -d '{"rows": [{...}]}'

service.py beside it is LayerLab's own service (engine/service.py) and portable.py its preprocessing and
prediction code (engine/portable.py), unchanged: `/predict` gives what the Predict page gives. (In LayerLab this
file is engine/bundle_serve.py; it runs only inside a bundle.)
"""

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from service import Service, serve  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description="Serve this bundle's model over HTTP (JSON).")
    parser.add_argument(
        "--host", default="127.0.0.1", help="0.0.0.0 to answer other machines (as in Docker)"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args()
    from model import INPUTS, load

    info = json.loads((HERE / "preprocessing.json").read_text())
    info["classes"] = json.loads((HERE / "labels.json").read_text())["classes"]
    manifest = json.loads((HERE / "manifest.json").read_text())
    noise = (
        INPUTS["noise"][0] if list(INPUTS) == ["noise"] else None
    )  # a GAN's generator reads noise
    service = Service(
        load(HERE / "weights.safetensors"),
        info,
        manifest["run"]["name"],
        manifest["versions"],
        noise,
    )
    return serve(service, args.host, args.port, args.quiet)


if __name__ == "__main__":
    sys.exit(main())
