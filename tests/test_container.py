"""A bundle's Dockerfile builds an image that serves the model: built and run where a container engine answers (and
can reach the registries for its base image and CPU torch), skipped otherwise."""

import re
import shutil
import subprocess

import pytest

from engine.bundle import bundle_bytes
from engine.data.prepare import prepare_builtin
from engine.local_service import free_port, request, wait_for_health
from engine.runs import create_run, execute
from engine.templates import starter_for
from tests.test_bundle import unzip

OFFLINE = re.compile(r"dial tcp|name resolution|failed to resolve|no such host|network is unreachable|"
                     r"Could not find a version|Temporary failure|connection refused|TLS handshake", re.I)  # fmt: skip


def engine() -> str | None:
    """docker or podman, when its daemon answers."""
    for name in ("docker", "podman"):
        if shutil.which(name):
            if subprocess.run([name, "info"], capture_output=True, timeout=30).returncode == 0:
                return name
    return None


@pytest.mark.skipif(engine() is None, reason="no container engine answers here (docker or podman)")
def test_the_bundles_dockerfile_builds_an_image_that_serves(workspace, tmp_path):
    tool = engine()
    iris = prepare_builtin("iris")
    run = create_run(starter_for(iris.meta), {"epochs": 2}, iris.path)
    execute(run)
    unzip(bundle_bytes(run), tmp_path / "bundle")
    tag = f"layerlab-test-{run.name.lower()}"
    built = subprocess.run([tool, "build", "-t", tag, str(tmp_path / "bundle")], capture_output=True, text=True,
                           timeout=1800)  # fmt: skip
    if built.returncode and OFFLINE.search(built.stdout + built.stderr):
        pytest.skip("the container engine cannot reach the registries for the base image and torch")
    assert built.returncode == 0, built.stderr[-3000:]
    port = free_port()
    container = subprocess.run([tool, "run", "-d", "--rm", "-p", f"127.0.0.1:{port}:8000", tag],
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_for_health(url, 120), "the container did not answer /health"
        status, meta = request(url, "/metadata")
        assert status == 200 and meta["classes"] == [str(c) for c in iris.meta["classes"]]
        status, answer = request(url, meta["example"]["path"], meta["example"]["body"])
        assert status == 200 and answer["predictions"][0]["prediction"] in meta["classes"]
    finally:
        subprocess.run([tool, "rm", "-f", container], capture_output=True)
        subprocess.run([tool, "rmi", "-f", tag], capture_output=True)
