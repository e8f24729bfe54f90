"""Where a run runs when it is more than one process on this machine: the files that start it on several
machines (a torchrun command per node, a Slurm batch script, a Kubernetes PyTorchJob), and a check that the
run folder sits on storage other machines can reach.

Every node runs the same worker, `python -m engine.runs RUN_DIR`, under torchrun; rank 0 writes the run
folder, which the app reads as it reads a local run's. So the run folder, its dataset and a LayerLab checkout
must be at the same paths on every node.
"""

import json
import os
import shlex
import sys
from pathlib import Path

from engine.errors import LayerLabError

KINDS = ("torchrun", "slurm", "kubernetes")
FILES = {
    "torchrun": "launch-torchrun.sh",
    "slurm": "launch.sbatch",
    "kubernetes": "pytorchjob.yaml",
}
PORT = 29500
ROOT = Path(__file__).resolve().parent.parent
# file systems a run folder can be shared on between machines
SHARED_FS = ("nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "beegfs", "ceph", "cephfs", "glusterfs",
             "fuse.glusterfs", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs", "wekafs",
             "9p", "virtiofs", "panfs", "orangefs")  # fmt: skip


def _torchrun(run_dir: Path, nodes: int, processes: int, endpoint: str, rdzv_id: str) -> str:
    """The same command on every node: this Python (LayerLab's environment, at the same path on
    each machine) runs torchrun with a c10d rendezvous at `endpoint`."""
    return shlex.join(
        [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}",
         f"--nproc-per-node={processes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
         f"--rdzv-id={rdzv_id}", "--max-restarts=3", "-m", "engine.runs", str(run_dir)]
    )  # fmt: skip


def torchrun_script(run_dir: Path, nodes: int, processes: int) -> str:
    run_dir = Path(run_dir).resolve()
    command = _torchrun(run_dir, nodes, processes, "$HEAD:$PORT", run_dir.name)
    command = command.replace("'--rdzv-endpoint=$HEAD:$PORT'", '"--rdzv-endpoint=$HEAD:$PORT"')
    return f"""#!/usr/bin/env bash
# LayerLab run {run_dir.name}: {nodes} machine(s) x {processes} process(es) = {nodes * processes} in all.
# Run this same script on each of the {nodes} machines, with HEAD set to the host name of one of them
# (the rendezvous, on port PORT, {PORT} unless set, which must be open between them):
#     HEAD=node1 bash {FILES["torchrun"]}
# Every machine needs this LayerLab checkout at {ROOT}, its Python at {sys.executable},
# and the run folder at {run_dir}
# (shared storage: NFS, Lustre, ...). The app shows the run's curves as rank 0 writes them.
set -euo pipefail
: "${{HEAD:?set HEAD to the host name of the first machine}}"
PORT=${{PORT:-{PORT}}}
cd {shlex.quote(str(ROOT))}
{command}
"""


def slurm_script(run_dir: Path, nodes: int, processes: int, gpus: bool) -> str:
    run_dir = Path(run_dir).resolve()
    command = _torchrun(run_dir, nodes, processes, f"$HEAD:{PORT}", "$SLURM_JOB_ID")
    command = command.replace(f"'--rdzv-endpoint=$HEAD:{PORT}'", f'"--rdzv-endpoint=$HEAD:{PORT}"')
    command = command.replace("'--rdzv-id=$SLURM_JOB_ID'", '"--rdzv-id=$SLURM_JOB_ID"')
    gpu_line = f"#SBATCH --gpus-per-node={processes}\n" if gpus else ""
    return f"""#!/usr/bin/env bash
# LayerLab run {run_dir.name} on Slurm: sbatch {FILES["slurm"]}
# One task per node starts torchrun, which starts {processes} process(es) on its node.
#SBATCH --job-name=layerlab-{run_dir.name}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
{gpu_line}#SBATCH --output={run_dir}/slurm-%j.log
set -euo pipefail
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
cd {shlex.quote(str(ROOT))}
srun {command}
"""


def kubernetes_manifest(
    run_dir: Path, nodes: int, processes: int, gpus: bool, image: str = "", claim: str = ""
) -> str:
    """A Kubeflow PyTorchJob (kubeflow.org/v1): the operator sets torchrun's PET_* variables (nodes,
    node rank, master address) in each pod, so every pod runs the same command."""
    run_dir = Path(run_dir).resolve()
    dataset = json.loads((run_dir / "train.json").read_text()).get("dataset_dir", run_dir)
    shared = Path(os.path.commonpath([run_dir, Path(dataset).resolve()]))
    image = image or "YOUR-REGISTRY/layerlab:latest"
    claim = claim or "layerlab-workspace"
    command = ["python", "-m", "torch.distributed.run", "-m", "engine.runs", str(run_dir)]
    limits = {"nvidia.com/gpu": processes} if gpus else {}

    def replica(count: int) -> dict:
        container = {
            "name": "pytorch",
            "image": image,
            "workingDir": str(ROOT),
            "command": command,
            "volumeMounts": [{"name": "workspace", "mountPath": str(shared)}],
            **({"resources": {"limits": limits}} if limits else {}),
        }
        return {
            "replicas": count,
            "restartPolicy": "OnFailure",
            "template": {
                "spec": {
                    "containers": [container],
                    "volumes": [
                        {"name": "workspace", "persistentVolumeClaim": {"claimName": claim}}
                    ],
                }
            },
        }

    specs = {"Master": replica(1)}
    if nodes > 1:
        specs["Worker"] = replica(nodes - 1)
    job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": f"layerlab-{run_dir.name}".lower()},
        "spec": {"nprocPerNode": str(processes), "pytorchReplicaSpecs": specs},
    }
    header = (
        f"# LayerLab run {run_dir.name} as a Kubeflow PyTorchJob: kubectl apply -f {FILES['kubernetes']}\n"
        f"# Set the image (LayerLab installed at {ROOT}) and the PersistentVolumeClaim that holds the\n"
        f"# workspace (mounted at {run_dir.parent.parent}). JSON is YAML: kubectl reads this file as it is.\n"
    )
    return header + json.dumps(job, indent=2) + "\n"


def launch_files(
    run_dir: Path, kind: str, nodes: int, processes: int, gpus: bool
) -> dict[str, str]:
    """{file name: text} for `kind` (one of KINDS, or "all")."""
    if nodes < 1 or processes < 1:
        raise LayerLabError("--nodes and --nproc must be 1 or more.")
    makers = {
        "torchrun": lambda: torchrun_script(run_dir, nodes, processes),
        "slurm": lambda: slurm_script(run_dir, nodes, processes, gpus),
        "kubernetes": lambda: kubernetes_manifest(run_dir, nodes, processes, gpus),
    }
    kinds = KINDS if kind == "all" else (kind,)
    return {FILES[k]: makers[k]() for k in kinds}


def mount_of(path: Path) -> tuple[str, str]:
    """(mount point, file system type) that holds `path`, from /proc/mounts; ("", "") elsewhere."""
    path, best = Path(path).resolve(), ("", "")
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        if (path == Path(point) or Path(point) in path.parents) and len(point) >= len(best[0]):
            best = (point, parts[2])
    return best


def storage_warning(path: Path) -> str | None:
    """Why other machines may not reach `path` (a local file system), or None when it looks shared."""
    point, fs = mount_of(path)
    if not fs or fs in SHARED_FS or fs.startswith("fuse"):
        return None
    return (
        f"The workspace ({path}) is on a local {fs} file system (mounted at {point}), which other "
        "machines cannot reach: every node reads the dataset and rank 0 writes the run folder there. "
        "Put the workspace on shared storage (NFS, Lustre, a Kubernetes volume) with LAYERLAB_HOME, "
        "at the same path on every machine."
    )
