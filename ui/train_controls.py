"""Train page: the learning-rate schedule, early stopping, regularization, speed and diagnostics settings."""

import streamlit as st
import torch

from engine.launch import storage_warning
from engine.limits import CORES
from engine.tasks import Task
from engine.train.config import TrainConfig
from engine.train.distributed import uses_cuda
from engine.train.options import SCHEDULES
from engine.workspace import home
from ui.forms import settings_inputs

PRECISIONS = {
    "auto": "auto (bf16 on a GPU, 32-bit on the CPU)",
    "32": "32-bit",
    "bf16": "bf16 mixed",
    "16": "fp16 mixed (CUDA)",
}
LAYOUTS = {None: "auto (on a GPU)", True: "on", False: "off"}


def schedule_and_regularization(saved: dict, task: Task) -> dict:
    """The widgets, filled from the saved settings, for what `task` reports; returns the settings they hold."""
    out = {}
    with st.expander("Schedule and early stopping"):
        out["scheduler"] = st.selectbox(
            "Learning-rate schedule",
            list(SCHEDULES),
            format_func=lambda k: SCHEDULES[k].title,
            index=list(SCHEDULES).index(saved["scheduler"]),
            key="train.scheduler",
            help="How the learning rate changes while training; plotted live.\n"
            + "\n".join(f"- **{s.title}**: {s.description}" for s in SCHEDULES.values()),
        )
        out.update(
            settings_inputs(TrainConfig, SCHEDULES[out["scheduler"]].settings, saved, "train.")
        )
        stop = st.checkbox(
            "Early stopping",
            value=saved["early_stopping"] > 0,
            key="train.early",
            help="Stop when the validation score stops improving, keeping the best epoch.",
        )
        out["early_stopping"] = 0
        if stop:
            watch = task.monitors()
            out["monitor"] = st.selectbox(
                "Watch",
                watch,
                key="train.monitor",
                index=watch.index(saved["monitor"]) if saved["monitor"] in watch else 0,
            )
            e1, e2 = st.columns(2)
            out["early_stopping"] = e1.number_input(
                "Patience",
                1,
                1000,
                max(int(saved["early_stopping"]), 5),
                key="train.patience",
                help="Epochs without improvement before training stops.",
            )
            out["min_delta"] = e2.number_input(
                "Min. change",
                0.0,
                value=float(saved["min_delta"]),
                format="%g",
                key="train.min_delta",
                help="The least change that counts as an improvement.",
            )
            out["restore_best"] = st.checkbox(
                "Keep the best epoch's weights",
                value=saved["restore_best"],
                key="train.restore_best",
            )
    with st.expander("Regularization and gradients"):
        r1, r2 = st.columns(2)
        out["l1"] = r1.number_input(
            "L1 penalty",
            0.0,
            value=float(saved["l1"]),
            format="%g",
            step=1e-5,
            key="train.l1",
            help="Adds this times Σ|w| over the weight matrices.",
        )
        out["l2"] = r2.number_input(
            "L2 penalty",
            0.0,
            value=float(saved["l2"]),
            format="%g",
            step=1e-5,
            key="train.l2",
            help="Adds this times Σw² over the weight matrices.",
        )
        clip = r1.number_input(
            "Max grad norm",
            0.0,
            value=float(saved["clip_grad_norm"] or 0),
            format="%g",
            key="train.clip_norm",
            help="Rescale the gradients when their total "
            "norm exceeds this; 1.0 is common. 0 = off.",
        )
        value = r2.number_input(
            "Max grad value",
            0.0,
            value=float(saved["clip_grad_value"] or 0),
            format="%g",
            key="train.clip_value",
            help="Clamp each gradient entry to ± this. 0 = off.",
        )
        out["clip_grad_norm"], out["clip_grad_value"] = clip or None, value or None
        out["accumulate"] = r1.number_input(
            "Accumulate",
            1,
            1024,
            int(saved["accumulate"]),
            key="train.accumulate",
            help="Batches per update (gradient accumulation): a larger effective batch.",
        )
        out["label_smoothing"] = r2.number_input(
            "Label smoothing",
            0.0,
            0.99,
            float(saved["label_smoothing"]),
            format="%g",
            step=0.05,
            key="train.smoothing",
            disabled=task.predictions != "classes",
            help="Classification: soften the targets (0.1 is usual).",
        )
    with st.expander("Speed and diagnostics"):
        choices = list(PRECISIONS) if torch.cuda.is_available() else ["auto", "32", "bf16"]
        out["precision"] = st.selectbox(
            "Precision",
            choices,
            format_func=PRECISIONS.get,
            key="train.precision",
            index=choices.index(saved["precision"]) if saved["precision"] in choices else 0,
            help="Mixed precision runs most layers in 16-bit floats on a GPU: faster, "
            "less memory. fp16 uses loss scaling.",
        )
        s1, s2 = st.columns(2)
        out["compile"] = s1.checkbox(
            "torch.compile",
            value=saved["compile"],
            key="train.compile",
            help="Compile the model first: a slower start, faster steps on a GPU.",
        )
        out["diagnostics"] = s2.checkbox(
            "Diagnostics",
            value=saved["diagnostics"],
            key="train.diagnostics",
            help="Every 2 s, sample each layer's gradient norm, weight and output "
            "histograms and dead ReLUs, and coach on what they show.",
        )
        layouts = list(LAYOUTS)
        out["channels_last"] = st.selectbox(
            "Channels-last images",
            layouts,
            format_func=LAYOUTS.get,
            index=layouts.index(saved["channels_last"]),
            key="train.channels_last",
            help="Memory order of image batches; channels-last is faster for "
            "convolutions on recent GPUs.",
        )
    return out


RUN_ON = {
    "here": "This machine, one process",
    "local": "This machine, several processes",
    "cluster": "Several machines",
    "ray": "A Ray cluster",
}


def run_on(device: str) -> tuple[int, int, str | None]:
    """Where a run trains: (processes per machine, machines, a Ray cluster's address)."""
    where = st.selectbox(
        "Run on",
        list(RUN_ON),
        format_func=RUN_ON.get,
        key="train.run_on",
        help="Several processes train one model with DistributedDataParallel (torchrun): each takes "
        "a share of every batch, and the batch size stays the global batch.",
    )
    if where == "here":
        return 1, 1, None
    cuda = uses_cuda(device)
    gpus = torch.cuda.device_count() if cuda else 0
    if where == "local":
        most = gpus if cuda else max(2, CORES)
        processes = st.number_input(
            "Processes", min_value=2, max_value=max(2, most), value=2, step=1,
            key="train.processes",
            help="On CUDA, one per GPU." if cuda else "CPU processes, one model.",
        )  # fmt: skip
        if not cuda:
            st.caption(
                "CPU processes are for trying several processes out (the model trains as on one); "
                f"on a machine with {CORES} cores they are not faster."
            )
        return int(processes), 1, None
    if where == "ray":
        address = st.text_input(
            "Ray address", value="auto", key="train.ray_address",
            help="auto: the cluster this machine belongs to; else HOST:6379 or ray://HOST:10001.",
        )  # fmt: skip
        workers = st.number_input("Workers", min_value=1, max_value=4096, value=2, step=1,
                                  key="train.ray_workers", help="One process each (a GPU each on CUDA).")  # fmt: skip
        st.caption(
            "Ray places the workers; each runs LayerLab's worker, and the curves appear here. Every "
            "Ray node needs LayerLab and the workspace at the same paths."
        )
        return int(workers), 1, address.strip() or "auto"
    nodes = st.number_input("Machines", min_value=2, max_value=4096, value=2, step=1,
                            key="train.nodes")  # fmt: skip
    processes = st.number_input(
        "Processes per machine", min_value=1, max_value=256, value=max(1, gpus), step=1,
        key="train.per_machine", help="One per GPU on each machine.",
    )  # fmt: skip
    st.caption(
        "Start creates the run and its launch files (torchrun, Slurm, Kubernetes); the run waits "
        "until the machines start it, and its curves appear here."
    )
    warning = storage_warning(home())
    if warning:
        st.warning(warning, icon=":material/lan:")
    return int(processes), int(nodes), None
