"""Train: choose the loss, optimizer and settings; watch the run live; browse past runs."""

from pathlib import Path

import pandas as pd
import streamlit as st
import torch

from engine.data.store import load_dataset
from engine.errors import LayerLabError
from engine.runs import create_run, launch, list_runs, runs_dir
from engine.train.config import LOSSES, OPTIMIZERS, TrainConfig, default_loss, losses_for_task, resolve_device
from ui import state
from ui.common import format_metrics, page, show_error
from ui.run_view import fmt_seconds, live_panel

page("Train", "Pick how the model learns, start a run and watch it live. Runs keep going if you switch pages.")
meta = state.dataset_meta()
n_classes = len(meta["classes"] or []) or None
defaults = TrainConfig()

settings, charts = st.columns([1, 2.2], gap="large")
with settings:
    st.subheader("Settings")
    loss_options = losses_for_task(meta["task"], n_classes)
    loss = st.selectbox("Loss", loss_options, index=loss_options.index(default_loss(meta["task"])),
                        format_func=lambda k: LOSSES[k][0], key="train.loss",
                        help="Cross-entropy for classes (it applies softmax itself); MSE, L1 or Huber for numbers.")
    optimizer = st.selectbox("Optimizer", list(OPTIMIZERS), format_func=OPTIMIZERS.get, key="train.optimizer",
                             help="Adam is a good default; SGD with momentum can generalize better with tuning.")
    lr = st.number_input("Learning rate", value=defaults.lr, format="%g", step=1e-4, key="train.lr",
                         help="Step size of each update: 0.001 is usual for Adam, 0.01-0.1 for SGD.")
    c1, c2 = st.columns(2)
    batch_size = c1.number_input("Batch size", min_value=1, value=defaults.batch_size, step=1, key="train.bs",
                                 help="Rows per update. 32-256 is usual.")
    epochs = c2.number_input("Epochs", min_value=1, max_value=10000, value=defaults.epochs, step=1,
                             key="train.epochs", help="Passes over the training data.")
    devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else []) + \
              (["mps"] if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else [])
    device = st.selectbox("Device", devices, key="train.device",
                          format_func=lambda d: f"auto ({resolve_device('auto').type})" if d == "auto" else d,
                          help="auto picks CUDA, then Apple MPS, then the CPU.")
    with st.expander("Advanced"):
        weight_decay = st.number_input("Weight decay", min_value=0.0, max_value=1.0, value=0.0, format="%g",
                                       step=1e-4, key="train.wd", help="L2 penalty on the weights; try 1e-4.")
        momentum = st.number_input("Momentum", 0.0, 0.99, defaults.momentum, key="train.momentum",
                                   help="SGD and RMSprop only.", disabled=optimizer not in ("sgd", "rmsprop"))
        nesterov = st.checkbox("Nesterov momentum", key="train.nesterov", disabled=optimizer != "sgd")
        seed = st.number_input("Seed", 0, 2**31 - 1, 0, key="train.seed",
                               help="Same seed, same data and settings: the same run.")
    if st.button("Start training", type="primary", icon=":material/play_arrow:", width="stretch"):
        config = {"loss": loss, "optimizer": optimizer, "lr": lr, "batch_size": int(batch_size),
                  "epochs": int(epochs), "device": device, "weight_decay": weight_decay, "momentum": momentum,
                  "nesterov": nesterov, "seed": int(seed)}
        try:
            run_dir = create_run(state.spec(), config, load_dataset(meta["id"]).path)
            launch(run_dir)
            state.set_run(run_dir.name)
            st.rerun()
        except LayerLabError as e:
            show_error(e)

with charts:
    run_id = st.session_state.get(state.RUN)
    run_dir = runs_dir() / run_id if run_id else None
    if run_dir and run_dir.exists():
        st.subheader(f"Run {run_id}")
        live_panel(Path(run_dir))
    else:
        st.info("No run yet. The settings on the left already fit this dataset and model: press **Start training**.")

st.subheader("Runs")
runs = list_runs()
if runs:
    rows = []
    for r in runs:
        m = r.get("metrics") or {}
        took = (r.get("finished") or 0) - (r.get("started") or 0)
        rows.append({"run": r["id"], "status": r["state"], "dataset": r["dataset"], "layers": r["layers"],
                     "epochs": r["config"].get("epochs"), "result": format_metrics(m),
                     "samples/s": round(r["samples_per_second"]) if r.get("samples_per_second") else None,
                     "duration": fmt_seconds(took) if took > 0 else ""})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    ids = [r["id"] for r in runs]
    pick = st.selectbox("Show run", ids, index=ids.index(run_id) if run_id in ids else 0, key="train.pick")
    if pick != run_id and st.button("Open", key="train.open"):
        state.set_run(pick)
        st.rerun()
else:
    st.caption("Runs you start appear here, newest first.")
