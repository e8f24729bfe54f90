"""A bundle's train.py reproduces its run's final weights bit for bit (32-bit, CPU) across the training options:
every optimizer, every schedule, clipping, accumulation, class weights, label smoothing, L1/L2, early stopping
with restore-best, and images with augmentation. All bundles retrain in one interpreter where `engine` cannot be
imported (one torch import for the whole matrix)."""

import json
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

from engine.bundle import bundle_bytes
from engine.data.prepare import prepare_builtin
from engine.runs import create_run, execute
from engine.templates import build
from engine.train import core
from engine.train.options import OPTIMIZERS, SCHEDULES
from tests.test_bundle import unzip

MLP = {
    "nodes": [
        {"id": "fc1", "op": "linear", "params": {"out_features": 16, "init": "kaiming_uniform"}},
        {"id": "act", "op": "activation", "params": {"kind": "tanh"}},
        {"id": "drop", "op": "dropout", "params": {"p": 0.1}},
        {"id": "fc2", "op": "linear", "params": {"out_features": 2}},
    ]
}
LR = {"adadelta": 1.0, "sgd": 0.05, "asgd": 0.05, "adagrad": 0.05}

# Each optimizer once, the schedules spread over them; then the other options, several to a run.
CASES = {
    f"{name}+{schedule}": {"optimizer": name, "scheduler": schedule, "lr": LR.get(name, 0.01)}
    for name, schedule in zip(OPTIMIZERS, [*SCHEDULES] * 2, strict=False)
}
CASES.update(
    {
        "clipping+accumulation": {
            "clip_grad_norm": 0.5,
            "clip_grad_value": 0.05,
            "accumulate": 3,
            "scheduler": "onecycle",
        },
        "class weights+smoothing+l1/l2": {
            "class_weights": True,
            "label_smoothing": 0.1,
            "l1": 1e-4,
            "l2": 1e-3,
            "optimizer": "sgd",
            "momentum": 0.9,
            "nesterov": True,
            "lr": 0.05,
        },
        "early stopping, restore best": {
            "epochs": 30,
            "lr": 0.3,
            "early_stopping": 2,
            "monitor": "val/accuracy",
            "restore_best": True,
        },
    }
)
DRIVER = """
import json, os, runpy, sys
sys.modules['engine'] = None
for folder in json.loads(sys.argv[1]):
    for name in [m for m in sys.modules if m == 'model' or m.split('.')[0] == 'trainer']:
        del sys.modules[name]
    os.chdir(folder)
    sys.argv = ['train.py', '--out', 'retrained.safetensors']
    try:
        runpy.run_path('train.py', run_name='__main__')
    except SystemExit as e:
        if e.code:
            raise
    sys.path.remove(folder)
"""


def test_every_training_option_retrains_to_the_runs_exact_weights(workspace, tmp_path):
    assert set(SCHEDULES) <= {c.get("scheduler", "none") for c in CASES.values()}
    moons = prepare_builtin("moons", n_samples=240)
    shapes = prepare_builtin("shapes", n_samples=120)
    runs = {}
    for name, settings in CASES.items():
        runs[name] = create_run(
            MLP,
            {"epochs": 4, "batch_size": 16, "seed": 3, "precision": "32", **settings},
            moons.path,
            name=name,
        )
    runs["images+augmentation"] = create_run(
        build("lenet", shapes.meta),
        {
            "epochs": 2,
            "batch_size": 16,
            "precision": "32",
            "flip": True,
            "crop_padding": 2,
            "rotation": 10,
            "noise": 0.05,
        },
        shapes.path,
    )
    folders, finals = {}, {}
    for name, run in runs.items():
        finals[name] = execute(run)
        assert finals[name]["status"] == "completed", (name, finals[name])
        folders[name] = tmp_path / f"bundle{len(folders)}"
        unzip(bundle_bytes(run), folders[name])
    assert finals["early stopping, restore best"]["early_stopped"]

    proc = subprocess.run(
        [sys.executable, "-I", "-c", DRIVER, json.dumps([str(f) for f in folders.values()])],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, run in runs.items():
        again = load_file(folders[name] / "retrained.safetensors")
        original = load_file(run / "model.safetensors")
        assert again.keys() == original.keys(), name
        different = [k for k in original if not (again[k] == original[k]).all()]
        assert not different, (
            f"{name}: {different} differ by up to "
            + f"{max((again[k] - original[k]).abs().max().item() for k in different):.3g}"
        )

    # What trained outside is the engine's own code: trainer/ holds its files unchanged.
    engine_train = Path(core.__file__).parent
    for name in ("core.py", "state.py", "options.py", "augment.py"):
        assert (folders["images+augmentation"] / "trainer" / name).read_bytes() == (
            engine_train / name
        ).read_bytes()
