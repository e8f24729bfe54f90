"""A run as one zip that works without LayerLab: the model as plain PyTorch code with its weights, the other
export formats, the preprocessing, a predict.py and a train.py, and a manifest.

The scripts are LayerLab's own code, not copies, shipped as files: predict.py is engine/bundle_predict.py
and runs portable.py (engine/portable.py: the preprocessing and prediction code the Predict page runs);
train.py is engine/train/retrain.py and runs trainer/ (engine/train/core.py, state.py, options.py, vae.py,
augment.py) with the plan the run recorded in `run_started`. What runs outside is what ran inside.
"""

import hashlib
import io
import json
import platform
import time
import zipfile
from dataclasses import asdict
from importlib import metadata as package_metadata
from pathlib import Path

import torch

from engine import __version__, portable
from engine.codegen import model_code
from engine.compiler import infer_shapes
from engine.data.folds import run_dataset
from engine.errors import LayerLabError
from engine.export import load_model, onnx_bytes, state_dict_bytes, torchscript_bytes
from engine.modelcard import model_card
from engine.predict import noise_size, serving_info
from engine.runs import read_events, run_info
from engine.service import curl_example, kind_of
from engine.spec import data_inputs
from engine.train import core, loop
from engine.train.config import TrainConfig

DATA_LIMIT_MB = 64  # the prepared splits go into the bundle (for train.py) up to this size
PACKAGES = ("numpy", "pandas", "safetensors", "pillow", "onnx", "onnxruntime", "streamlit")

README = """# {name}

A model trained with LayerLab {version} on *{dataset}* ({task}), exported {created}.
It runs without LayerLab: `pip install -r requirements.txt` (torch, safetensors, numpy, pandas, pillow) is enough.

| file | what it is |
|---|---|
| `model.py` | the model as a plain PyTorch `nn.Module` (`from model import load; model = load()`) |
| `weights.safetensors` | the trained weights (the LayerLab spec and preprocessing are in its metadata) |
| `state_dict.pt` | the same weights as a PyTorch state_dict (`torch.load(..., weights_only=True)`) |
{optional_rows}| `preprocessing.json` | how raw rows or images become model inputs (fitted on the training split) |
| `labels.json` | the class names, in output order |
| `predict.py` | `python predict.py new_rows.csv --out predictions.csv` (or a folder of images) |
| `serve.py` | `python serve.py --port 8000`: an HTTP JSON API (`POST /predict`, `GET /metadata`), code in service.py |
| `Dockerfile` | `docker build -t model . && docker run -p 8000:8000 model`: serve.py in a container |
| `requirements.txt` | what the scripts need: CPU torch and the versions that trained the model |
| `MODEL_CARD.md` | what the model is for, its data, architecture, training, test metrics and limitations |
| `generate.py` | text (`--prompt "once upon" --length 200`) or a VAE's samples (`--n 16 --out samples/`) |
| `portable.py` | LayerLab's preprocessing and prediction code, which predict.py and generate.py run |
| `train.py` | `python train.py`: retrains the model with the run's settings, plan and seed |
| `trainer/` | LayerLab's training core, which train.py runs |
| `manifest.json` | versions, seed, dataset hash, the full configuration and the final metrics |

Final metrics: {metrics}.
{skipped}"""


def versions() -> dict:
    found = {
        "python": platform.python_version(),
        "layerlab": __version__,
        "torch": torch.__version__,
    }
    for name in PACKAGES:
        try:
            found[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            pass
    return found


def predict_files() -> dict[str, bytes]:
    """predict.py (engine/bundle_predict.py), generate.py (engine/bundle_generate.py), serve.py
    (engine/bundle_serve.py) with service.py (engine/service.py), and portable.py (engine/portable.py), verbatim."""
    folder = Path(
        portable.__file__
    ).parent  # (bundle_predict.py runs only in a bundle: read, not imported)
    return {name: (folder / source).read_bytes() for name, source in
            (("predict.py", "bundle_predict.py"), ("generate.py", "bundle_generate.py"),
             ("serve.py", "bundle_serve.py"), ("service.py", "service.py"),
             ("portable.py", "portable.py"))}  # fmt: skip


def trainer_files() -> dict[str, bytes]:
    """train.py (engine/train/retrain.py) and trainer/: the training core with its options and augmentation,
    verbatim."""
    folder = Path(
        core.__file__
    ).parent  # (retrain.py runs only in a bundle: it is read, not imported)
    files = {
        "train.py": (folder / "retrain.py").read_bytes(),
        "trainer/__init__.py": b'"""LayerLab\'s training core."""\n',
    }
    files.update(
        {
            f"trainer/{name}.py": (folder / f"{name}.py").read_bytes()
            for name in ("core", "state", "options", "augment", "vae")
        }
    )
    return files


def _plan(model, dataset, cfg: TrainConfig, events: list[dict]) -> dict:
    """The plan the run recorded when it started; for a run of an earlier LayerLab that did not record it, the
    same plan made again by the same function."""
    started = next((e for e in events if e["type"] == "run_started"), {})
    if started.get("plan"):
        return started["plan"]
    plan = loop.make_plan(
        model,
        infer_shapes(model.spec, data_inputs(dataset.meta)),
        dataset,
        cfg,
        started.get("threads"),
    )[0]
    plan.loss_ref = started.get("loss_ref")
    return asdict(plan)


def bundle_bytes(run_dir: Path, data_limit_mb: float = DATA_LIMIT_MB) -> bytes:
    """The zip of a finished run (see the module docstring); LayerLabError if the run has no weights."""
    run_dir = Path(run_dir)
    weights_path = run_dir / "model.safetensors"
    if not weights_path.exists():
        raise LayerLabError(
            f"run {run_dir.name} has no trained weights yet: let it finish an epoch first."
        )
    weights = weights_path.read_bytes()
    model, metadata = load_model(weights)
    meta = json.loads(metadata.get("dataset", "{}"))
    info = run_info(run_dir)
    events = read_events(run_dir)[0]
    cfg = TrainConfig.parse(info["config"])
    files: dict[str, bytes] = {
        "model.py": model_code(model, info["name"]).encode(),
        "weights.safetensors": weights,
        "state_dict.pt": state_dict_bytes(model),
    }
    skipped = {}
    for name, build in (("model.onnx", onnx_bytes), ("model.torchscript.pt", torchscript_bytes)):
        try:
            files[name] = build(model)
        except LayerLabError as e:
            skipped[name] = str(e)
    prediction = {k: v for k, v in serving_info(model, meta).items() if k != "classes"}
    files["preprocessing.json"] = json.dumps(prediction, indent=1).encode()
    files["labels.json"] = json.dumps({"classes": meta.get("classes")}, indent=1).encode()
    files.update(predict_files())
    manifest = _manifest(model, info, cfg, events)
    dataset = _dataset(run_dir)
    if dataset is None:
        skipped["train.py"] = "the run's dataset is no longer in the workspace"
    if dataset is not None and cfg.target == "gan":
        skipped["train.py"] = (
            "the bundle holds a GAN's generator alone: retrain it in LayerLab (python -m engine train --task gan)"
        )
    elif dataset is not None:
        manifest["dataset"] = {
            k: dataset.meta.get(k) for k in ("id", "name", "source", "hash", "sizes", "task")
        }
        manifest["plan"] = _plan(model, dataset, cfg, events)
        files.update(trainer_files())
        data_path = dataset.path / "data.safetensors"
        if data_path.stat().st_size <= data_limit_mb * 2**20:
            files["data.safetensors"] = data_path.read_bytes()
        else:
            skipped["data.safetensors"] = (
                f"the prepared data is {data_path.stat().st_size / 2**20:,.0f} MB, over "
                f"{data_limit_mb:g} MB: pass train.py --data {data_path}"
            )
    if (run_dir / "init.safetensors").exists():
        files["init.safetensors"] = (run_dir / "init.safetensors").read_bytes()
    files["requirements.txt"] = requirements(manifest["versions"]).encode()
    files["Dockerfile"] = DOCKERFILE.format(
        python=".".join(platform.python_version_tuple()[:2])
    ).encode()
    files["MODEL_CARD.md"] = _card(run_dir, model, meta, info, manifest, dataset).encode()
    manifest["skipped"] = skipped
    manifest["files"] = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    files["manifest.json"] = json.dumps(manifest, indent=1).encode()
    files["README.md"] = _readme(manifest, meta, files, skipped).encode()
    return zip_bytes(files)


def _manifest(model, info: dict, cfg: TrainConfig, events: list[dict]) -> dict:
    final = next((e for e in reversed(events) if e["type"] == "run_finished"), {})
    return {
        "format": "layerlab-bundle/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions(),
        "run": {k: info.get(k) for k in ("id", "name", "state", "parent")},
        "seed": cfg.seed,
        "config": cfg.model_dump(mode="json"),
        "spec": json.loads(model.spec.to_json()),
        "metrics": final.get("metrics", {}),
        "best": final.get("best"),
        "status": final.get("status"),
    }


def _dataset(run_dir: Path):
    """The run's dataset, or None when it is no longer in the workspace."""
    try:
        return run_dataset(json.loads((run_dir / "train.json").read_text()))
    except (KeyError, OSError, LayerLabError):
        return None


def _card(run_dir: Path, model, meta: dict, info: dict, manifest: dict, dataset) -> str:
    return model_card(
        run_dir, info, manifest, dataset, usage(serving_info(model, meta), noise_size(model))
    )


def run_model_card(run_dir: Path) -> str:
    """The MODEL_CARD.md that the run's bundle holds (the Export page previews it)."""
    run_dir = Path(run_dir)
    model, metadata = load_model(run_dir / "model.safetensors")
    info = run_info(run_dir)
    manifest = _manifest(model, info, TrainConfig.parse(info["config"]), read_events(run_dir)[0])
    return _card(
        run_dir, model, json.loads(metadata.get("dataset", "{}")), info, manifest, _dataset(run_dir)
    )


def requirements(found: dict) -> str:
    """What serve.py, predict.py and generate.py need, pinned to the versions that trained the model; torch from
    PyTorch's CPU wheels (a GPU build is several GB)."""
    torch_version = found["torch"].split("+")[0]
    pins = [
        f"{name}=={found[name]}"
        for name in ("numpy", "pandas", "safetensors", "pillow")
        if name in found
    ]
    return "\n".join(
        [
            "--extra-index-url https://download.pytorch.org/whl/cpu",
            f"torch=={torch_version}",
            *pins,
            "",
        ]
    )


DOCKERFILE = """# The model behind its HTTP API: docker build -t my-model . && docker run -p 8000:8000 my-model
FROM python:{python}-slim
WORKDIR /model
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
CMD ["python", "serve.py", "--host", "0.0.0.0", "--port", "8000"]
"""


def usage(info: dict, noise: int | None) -> str:
    """How to call the bundled model: predict.py, serve.py with a curl example, and Docker (the model card's
    last section)."""
    return "\n".join([
        "```",
        "pip install -r requirements.txt",
        "python predict.py new_rows.csv --out predictions.csv   # a table, an image or a folder of images"
        if kind_of(info, noise) in ("table", "image", "series") else "python generate.py --help",
        "python serve.py --port 8000                            # an HTTP JSON API (GET /metadata lists the inputs)",
        curl_example("http://127.0.0.1:8000", info, noise),
        "docker build -t model . && docker run -p 8000:8000 model   # the same service in a container",
        "```",
    ])  # fmt: skip


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """A zip of these files (name: bytes), readable by everyone once unzipped."""
    buf = io.BytesIO()
    now = time.localtime()[:6]
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            entry = zipfile.ZipInfo(name, date_time=now)
            entry.external_attr = 0o644 << 16  # the default is owner-only
            zf.writestr(entry, data, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _readme(manifest: dict, meta: dict, files: dict, skipped: dict) -> str:
    optional = {
        "model.onnx": "ONNX, dynamic batch, checked with onnxruntime (input `input`, output `output`)",
        "model.torchscript.pt": "TorchScript (`torch.jit.load`)",
        "data.safetensors": "the prepared train/val/test splits that train.py reads",
        "init.safetensors": "the weights the run started from",
    }
    rows = "".join(f"| `{name}` | {text} |\n" for name, text in optional.items() if name in files)
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in manifest["metrics"].items()) or "none recorded"
    left_out = "".join(f"\nNot included: `{name}` ({why}).\n" for name, why in skipped.items())
    return README.format(
        name=manifest["run"]["name"],
        version=__version__,
        dataset=meta.get("name", "?"),
        task=meta.get("task", "?"),
        created=manifest["created"],
        optional_rows=rows,
        metrics=metrics,
        skipped=left_out,
    )
