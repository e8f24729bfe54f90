import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    """Every test gets its own LayerLab workspace."""
    home = tmp_path / "workspace"
    monkeypatch.setenv("LAYERLAB_HOME", str(home))
    return home


@pytest.fixture
def moons(workspace):
    from engine.data.prepare import prepare_builtin

    return prepare_builtin("moons", n_samples=1000, noise=0.1)


def mlp_spec(out: int, hidden: int = 32) -> dict:
    return {
        "version": 1,
        "nodes": [
            {"id": "fc1", "op": "linear", "params": {"out_features": hidden}},
            {"id": "act1", "op": "activation", "params": {"kind": "relu"}},
            {"id": "fc2", "op": "linear", "params": {"out_features": hidden}},
            {"id": "act2", "op": "activation", "params": {"kind": "tanh"}},
            {"id": "head", "op": "linear", "params": {"out_features": out}},
        ],
    }


os.environ.setdefault("PYTHONUNBUFFERED", "1")
os.environ.setdefault(
    "LAYERLAB_SPARE_WORKER", "0"
)  # see engine.runs.warm_spare; its own test turns it on
os.environ.setdefault(
    "LAYERLAB_QUEUE_THREAD", "0"
)  # see engine.scheduler.serve; browser servers run it


# Property-based tests (tests/test_fuzz.py): a bounded number of examples in CI; `--hypothesis-profile=thorough`
# for a longer hunt.
try:
    from hypothesis import settings

    settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
    settings.register_profile("thorough", max_examples=3000, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except (
    ImportError
):  # hypothesis comes with the dev extras; without it only the fuzz tests are missing
    pass
