"""Train: choose the loss, optimizer and settings; watch the run live; browse past runs."""

from pathlib import Path

import streamlit as st
import torch
from safetensors.torch import load_file

from engine import raycluster
from engine.compiler import analyse
from engine.crossval import create_folds
from engine.data.folds import MAX_FOLDS
from engine.data.store import load_dataset
from engine.errors import LayerLabError
from engine.gan import is_gan
from engine.runs import ACTIVE, create_run, list_runs, runs_dir, validate, warm_spare
from engine.scheduler import enqueue
from engine.spec import data_inputs
from engine.tasks import task_for, usual_loss, variational
from engine.train.config import TrainConfig, resolve_device
from engine.train.distributed import check_world
from engine.train.options import LOSSES, OPTIMIZERS
from engine.transfer import match_weights
from ui import state
from ui.common import page, preflight_line, show_error
from ui.compare import compare
from ui.dynamics_views import data_view
from ui.forms import settings_inputs
from ui.layout import split
from ui.learn_views import curve_view, more_data_button, will_it_learn
from ui.run_view import live_panel, rename_box, runs_table
from ui.train_controls import run_on, schedule_and_regularization
from ui.tune_views import crossval_view, lr_finder

page(
    "Train",
    "Pick how the model learns, start a run and watch it live. Runs keep going if you switch pages.",
)
meta = state.dataset_meta()
n_classes = len(meta["classes"] or []) or None
saved = state.train_settings()

with split("train"):
    settings, charts = st.columns([1, 2.2], gap="large")
with settings:
    start_slot = (
        st.container()
    )  # Start sits on top; it is drawn once the settings below say whether it can run
    # The loss choices depend on the autoencoder switch under Advanced, drawn further down: read its value first.
    # An autoencoder reads a table or images; windows of a series or of a text have targets of their own.
    can_reconstruct = meta["task"] in ("classification", "regression")
    # The model decides, not a switch: a GAN's two networks train as one (see the Build page), and a model with a
    # Gaussian latent trains as a VAE, and only as one.
    gan = is_gan(state.whole_spec())
    vae = not gan and variational(state.spec(), meta)
    reconstruct = can_reconstruct and st.session_state.get(
        "train.reconstruct", saved["target"] == "input"
    )
    target = "gan" if gan else "vae" if vae else "input" if reconstruct else "label"
    task = task_for(meta["task"], target)
    loss_options = task.losses(n_classes)
    default = (
        saved["loss"] if saved["loss"] in loss_options else usual_loss(task, meta["input_shape"])
    )
    loss = st.selectbox(
        "Loss",
        loss_options,
        index=loss_options.index(default),
        format_func=lambda k: LOSSES[k].title,
        key="train.loss",
        help="\n".join(f"- **{LOSSES[k].title}**: {LOSSES[k].description}" for k in loss_options),
    )
    optimizer = st.selectbox(
        "Optimizer",
        list(OPTIMIZERS),
        index=list(OPTIMIZERS).index(saved["optimizer"]),
        format_func=lambda k: OPTIMIZERS[k].title,
        key="train.optimizer",
        help="\n".join(
            f"- **{o.title}** (usual rate {o.usual_lr:g}): {o.description}"
            for o in OPTIMIZERS.values()
        ),
    )
    optimizer_settings = settings_inputs(
        TrainConfig, OPTIMIZERS[optimizer].settings, saved, "train."
    )
    lr = st.number_input(
        "Learning rate",
        value=float(saved["lr"]),
        format="%g",
        step=1e-4,
        key="train.lr",
        help="Step size of each update: 0.001 is usual for Adam, 0.01-0.1 for SGD.",
    )
    finder_slot = st.container()  # the finder needs the whole config: drawn below, shown here
    c1, c2 = st.columns(2)
    batch_size = c1.number_input(
        "Batch size",
        min_value=1,
        value=int(saved["batch_size"]),
        step=1,
        key="train.bs",
        help="Rows per update. 32-256 is usual.",
    )
    epochs = c2.number_input(
        "Epochs",
        min_value=1,
        max_value=10000,
        value=int(saved["epochs"]),
        step=1,
        key="train.epochs",
        help="Passes over the training data.",
    )
    devices = (
        ["auto", "cpu"]
        + (["cuda"] if torch.cuda.is_available() else [])
        + (
            ["mps"]
            if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
            else []
        )
    )
    device = st.selectbox(
        "Device",
        devices,
        index=devices.index(saved["device"]) if saved["device"] in devices else 0,
        key="train.device",
        help="auto picks CUDA, then Apple MPS, then the CPU.",
        format_func=lambda d: f"auto ({resolve_device('auto').type})" if d == "auto" else d,
    )
    processes, machines, ray = run_on(device)
    task_settings = {}
    if gan:
        st.caption(
            "A GAN: each batch, the discriminator learns to tell the data from the generator's samples, then the "
            "generator learns to fool it. The learning rate above is the discriminator's."
        )
        task_settings = settings_inputs(TrainConfig, ("g_lr", "d_steps"), {**saved, "g_lr": saved["g_lr"] or lr},
                                       "train.")  # fmt: skip
        task_settings["gan_loss"] = st.selectbox(
            "GAN loss", ["non_saturating", "minimax"],
            index=["non_saturating", "minimax"].index(saved["gan_loss"]), key="train.gan_loss",
            help=TrainConfig.model_fields["gan_loss"].description,
        )  # fmt: skip
    if vae:
        st.caption(
            "The model has a Gaussian latent layer, so it trains as a variational autoencoder: the "
            "reconstruction loss plus β times the KL term."
        )
        task_settings = settings_inputs(TrainConfig, ("beta", "kl_warmup"), saved, "train.")
    with st.expander("Advanced"):
        if can_reconstruct and not vae and not gan:
            st.checkbox(
                "Reconstruct the input (autoencoder)",
                value=reconstruct,
                key="train.reconstruct",
                help="Train the model to output its own input, e.g. the MLP autoencoder template, instead of "
                "predicting the target.",
            )
        weight_decay = st.number_input(
            "Weight decay",
            min_value=0.0,
            max_value=1.0,
            value=saved["weight_decay"],
            format="%g",
            step=1e-4,
            key="train.wd",
            help="L2 penalty on the weights; try 1e-4.",
        )
        seed = st.number_input(
            "Seed",
            0,
            2**31 - 1,
            saved["seed"],
            key="train.seed",
            help="Same seed, same data and settings: the same run.",
        )
        weighted = st.checkbox(
            "Class weights",
            value=bool(saved["class_weights"]),
            key="train.class_weights",
            disabled=not task.class_weights,
            help="Weight each class's loss by how rare it is in the training split; helps "
            "with imbalanced classes.",
        )
        trainable = (
            [] if gan else [i.id for i in analyse(state.spec(), data_inputs(meta))[0] if i.params]
        )
        freeze = st.multiselect(
            "Freeze layers",
            trainable,
            default=[n for n in saved["freeze"] if n in trainable],
            key="train.freeze",
            help="Their weights stay as they are: fine-tune the rest, e.g. "
            "after starting from saved weights (Build page).",
        )
        folds = st.number_input(
            "Cross-validation folds",
            min_value=0,
            max_value=MAX_FOLDS,
            value=0,
            key="train.folds",
            help="0: off. K: K runs, one per fold of the training and validation rows (stratified for classes); "
            "each validates on its fold and trains on the rest. The test split stays held out.",
        )
        budget = st.number_input(
            "Memory budget (MB)",
            min_value=1.0,
            value=float(saved["memory_budget_mb"]),
            step=256.0,
            key="train.budget",
            help="Models estimated to need more memory than "
            "this to train are refused before they start.",
        )
    controls = schedule_and_regularization(saved, task)
    config = {
        **saved,
        "loss": loss,
        "optimizer": optimizer,
        "lr": lr,
        "batch_size": int(batch_size),
        "epochs": int(epochs),
        "device": device,
        "weight_decay": weight_decay,
        **optimizer_settings,
        "seed": int(seed),
        "target": target,
        "memory_budget_mb": budget,
        "class_weights": weighted,
        "freeze": freeze,
        **task_settings,
        **controls,
    }
    state.set_train(config)
    try:  # the checks a run gets when it is created, so Start is only offered when it would be accepted
        validate(state.whole_spec(), config, meta)
        check_world(processes * machines, config["batch_size"], device,
                    processes if machines == 1 and not ray else 0)  # fmt: skip
        if ray:
            raycluster.available()
        refused = None
    except LayerLabError as e:
        refused = str(e)
    if folds and (machines > 1 or ray or processes > 1):
        refused = "cross-validation runs its folds on one process each: choose Run on: This machine, one process"
    with finder_slot:
        lr_finder(state.whole_spec(), config, load_dataset(meta["id"]).path, refused)
    imported = st.session_state.get(state.INIT)
    with start_slot:
        if st.button(
            f"Start {folds}-fold cross-validation"
            if folds
            else "Start training"
            if machines == 1
            else "Create the run and its launch files",
            type="primary",
            icon=":material/play_arrow:",
            width="stretch",
            disabled=refused is not None,
            help=refused and f"Can't start: {refused}",
        ):
            try:
                init = (
                    match_weights(state.spec(), data_inputs(meta), load_file(imported["path"]))[
                        "state"
                    ]
                    if imported
                    else None
                )
                parent = (
                    {"run": imported["name"], "name": imported["name"], "checkpoint": "imported"}
                    if imported
                    else None
                )
                if folds:  # k runs, queued together
                    run_dir = [enqueue(r) for r in create_folds(state.whole_spec(), config,
                               load_dataset(meta["id"]).path, int(folds), name=f"{meta['name']} CV")][0]  # fmt: skip
                else:
                    run_dir = create_run(state.whole_spec(), config, load_dataset(meta["id"]).path,
                                         init=init, parent=parent, processes=processes, nodes=machines,
                                         ray=ray)  # fmt: skip
                if (
                    machines == 1 and not folds
                ):  # (several machines: it waits for the launch files' commands)
                    enqueue(run_dir)
                state.set_run(run_dir.name)
                st.rerun()
            except LayerLabError as e:
                show_error(e)
        if refused:
            st.error(
                f"**Can't start yet.** {refused.rstrip('.')}. Change it here or on the Build page.",
                icon=":material/block:",
            )
        if not gan:  # (a GAN's two networks are checked together by validate)
            preflight_line(state.spec(), meta, config)
            try:  # a learning rate of 0 is one of the things the check explains
                validate(
                    state.whole_spec(),
                    {**config, "lr": config["lr"] if config["lr"] > 0 else 1e-3},
                    meta,
                )
                unfit = None
            except LayerLabError as e:
                unfit = str(e)
            will_it_learn(state.whole_spec(), config, load_dataset(meta["id"]).path, unfit,
                          busy=any(r["state"] in ACTIVE for r in list_runs()))  # fmt: skip
            more_data_button(state.whole_spec(), config, load_dataset(meta["id"]).path, meta["name"],
                             refused or (None if meta["task"] in ("classification", "regression") else
                                         "the learning curve is for classifiers and regressors")
                             or ("choose 0 cross-validation folds first" if folds else None))  # fmt: skip
        if imported:
            st.info(
                f"Starts from the weights in {imported['name']}: {len(imported['loaded'])} tensor(s) loaded, "
                f"{len(imported['missing'])} left fresh (Build page).",
                icon=":material/input:",
            )

with charts:
    run_id = st.session_state.get(state.RUN)
    run_dir = runs_dir() / run_id if run_id else None
    if run_dir and run_dir.exists():
        rename_box(run_dir)
        live_panel(Path(run_dir), config)
        crossval_view(Path(run_dir))
        data_view(Path(run_dir))
        curve_view(Path(run_dir))
    else:
        st.info(
            "No run in this session yet. The settings on the left already fit this dataset and model: press "
            "**Start training**."
        )

st.subheader("Runs")
runs = list_runs()
if not any(r["state"] in ACTIVE for r in runs):
    warm_spare()  # Start then trains at once, not after the worker's 3-6 s of imports
if runs:
    runs_table(runs)
    ids = [r["id"] for r in runs]
    names = {r["id"]: r["name"] for r in runs}
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    pick = c1.selectbox(
        "Show run",
        ids,
        index=ids.index(run_id) if run_id in ids else 0,
        key="train.pick",
        format_func=names.get,
    )
    if c2.button("Open", key="train.open", disabled=pick == run_id, width="stretch"):
        state.set_run(pick)
        st.rerun()
    compare(runs)
else:
    st.caption("Runs you start appear here, newest first.")
