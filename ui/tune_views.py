"""Tuning on the pages: a study's live view (Tune), the learning-rate finder and cross-validation's results
(Train)."""

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from engine import crossval, jobs, search
from engine.errors import LayerLabError
from engine.runs import read_events
from engine.scheduler import enqueue
from engine.train import lr_find
from ui import router, state
from ui.charts import COLORS, layout
from ui.common import fmt_value, show_error
from ui.progress import eta_text, job_view

LIVE_EVERY_S = 2.0
FINDER = "train.lr_finder"  # the session's finder job folder


# ---- the learning-rate finder (Train page)


def lr_finder(spec: dict, config: dict, dataset_dir: str, refused: str | None) -> None:
    """A button that sweeps the rate in a process of its own, the loss against the rate as it comes, the
    suggested rate and a button that sets it."""
    c1, c2 = st.columns([1.4, 1], vertical_alignment="center")
    if c1.button("Find a learning rate", icon=":material/search_insights:", key="train.find_lr",
                 disabled=refused is not None, help=refused or
                 f"Trains a copy of the model for {lr_find.STEPS} steps while the rate grows from "
                 f"{lr_find.LOW:g} to {lr_find.HIGH:g}, and suggests the rate where the loss falls fastest. "
                 "The model and its runs are not changed."):  # fmt: skip
        st.session_state[FINDER] = str(
            jobs.start(
                "lr-finder", {"spec": spec, "train": config, "dataset_dir": str(dataset_dir)}
            )
        )
    result = job_view(FINDER, "Finding a rate")
    if result is None:
        return
    suggestion = result["suggestion"]
    st.plotly_chart(finder_figure(result), width="stretch", key="train.lr_finder_chart")
    if suggestion is None:
        st.warning(
            "The loss did not fall over the sweep, so there is no rate to suggest. Check the data and the "
            "model (the Build page's checks), or try another optimizer.",
            icon=":material/trending_flat:",
        )
        return

    def use():
        st.session_state["train.lr"] = float(f"{suggestion:.2g}")

    c2.button(f"Use {suggestion:.2g}", type="primary", on_click=use, key="train.use_lr",
              help="Sets the learning rate (one-cycle rises to it as its maximum).")  # fmt: skip
    st.caption(
        f"Suggested: **{suggestion:.2g}**, where the loss falls fastest (the loss was lowest at "
        f"{result['lrs'][result['min_at']]:.2g}; {result['stopped_at']} steps in {result['seconds']:.2g} s)."
    )


def finder_figure(result: dict) -> go.Figure:
    fig = go.Figure(go.Scatter(x=result["lrs"], y=result["losses"], mode="lines", name="loss (smoothed)",
                               line=dict(color=COLORS[0])))  # fmt: skip
    if result["suggestion"] is not None:
        at = result["steepest_at"]
        fig.add_trace(go.Scatter(x=[result["lrs"][at]], y=[result["losses"][at]], mode="markers",
                                 marker=dict(size=11, color=COLORS[1]), name="suggested"))  # fmt: skip
    fig.update_xaxes(type="log", title="learning rate")
    fig.update_yaxes(title="training loss")
    return layout(fig, "Loss as the rate grows", height=260)


# ---- cross-validation (Train page)


def crossval_view(run_dir: Path) -> None:
    """The folds of the cross-validation this run belongs to: each fold's validation metrics, their mean and
    standard deviation, and the folds' validation curves overlaid."""
    fold = crossval.fold_of(run_dir)
    if not fold:
        return
    runs = crossval.group_runs(fold["group"])
    result = crossval.summary(runs)
    st.subheader(f"Cross-validation: {fold['k']} folds")
    stats = result["metrics"]
    if stats:
        cards = st.columns(len(stats))
        for card, (name, s) in zip(cards, stats.items(), strict=True):
            card.metric(f"{name} (mean ± std)", f"{fmt_value(s['mean'])} ± {fmt_value(s['std'])}",
                        help=f"over {s['n']} finished fold(s)")  # fmt: skip
    table = pd.DataFrame(
        [{"fold": f["fold"], "state": f["state"], **f["metrics"]} for f in result["folds"]]
    )
    st.dataframe(table, hide_index=True, width="stretch")
    fig = go.Figure()
    for i, run in enumerate(runs):
        epochs = [e for e in read_events(run)[0] if e["type"] == "epoch_end"]
        fig.add_trace(go.Scatter(x=[e["epoch"] for e in epochs], y=[e["metrics"]["val/loss"] for e in epochs],
                                 mode="lines", name=f"fold {i + 1}"))  # fmt: skip
    fig.update_xaxes(title="epoch")
    st.plotly_chart(layout(fig, "Validation loss of each fold", height=280), width="stretch",
                    key=f"cv.{fold['group']}")  # fmt: skip


# ---- a study (Tune page)


def study_view(study_dir: Path) -> None:
    """Progress, the trials and Optuna's figures, redrawn every few seconds while the study runs."""
    now = search.state(study_dir)
    st.fragment(
        lambda: _study_body(study_dir),
        run_every=LIVE_EVERY_S if now in ("running", "stopping") else None,
    )()
    if now in (
        "running",
        "stopping",
    ):  # redraw the page once it ends (Stop gives way to Train the best)
        st.fragment(lambda: search.state(study_dir) not in ("running", "stopping") and st.rerun(scope="app"),
                    run_every=LIVE_EVERY_S)()  # fmt: skip


def _study_body(study_dir: Path) -> None:
    config = search.read_config(study_dir)
    study = search.load(study_dir)
    rows = search.trial_rows(study, study_dir)
    now = search.state(study_dir)
    finished = [r for r in rows if r["state"] != "running"]
    took = [r["seconds"] for r in finished if r["seconds"]]
    left = config.trials - len(finished)
    eta = (
        f" · {eta_text(sum(took) / len(took) * left / config.workers)}"
        if took and left and now == "running"
        else ""
    )
    st.progress(min(len(finished) / config.trials, 1.0),
                text=f"{len(finished)} of {config.trials} trials finished ({now}){eta}")  # fmt: skip
    top = search.best(study, study_dir)
    c1, c2, c3 = st.columns(3)
    c1.metric(f"Best {config.metric}", fmt_value(top["value"]) if top else "–",
              help=f"{config.direction} {config.metric}")  # fmt: skip
    c2.metric("Best trial", f"#{top['number']}" if top else "–")
    c3.metric("Pruned", sum(r["state"] == "pruned" for r in rows))
    if top:
        st.caption(
            "Best settings: " + ", ".join(f"`{k}` = {_shown(v)}" for k, v in top["params"].items())
        )
    figures = search.figures(study)
    if figures:
        tabs = st.tabs(list(figures))
        for tab, (title, fig) in zip(tabs, figures.items(), strict=True):
            fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=10))
            tab.plotly_chart(fig, width="stretch", key=f"study.{title}")
    if rows:
        table = pd.DataFrame([{"trial": r["number"], "state": r["state"], config.metric: r["value"],
                               **{k: _shown(v) for k, v in r["params"].items()},
                               "epochs": r["epochs"], "run": Path(r["run"]).name if r["run"] else "",
                               "note": r["message"] if r["state"] == "fail" else ""}
                              for r in rows])  # fmt: skip
        st.dataframe(table, hide_index=True, width="stretch")


def _shown(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def study_actions(study_dir: Path) -> None:
    now = search.state(study_dir)
    c1, c2 = st.columns(2)
    if c1.button("Stop the study", icon=":material/stop_circle:", disabled=now != "running",
                 width="stretch", key="tune.stop",
                 help="Each running trial stops at its next step (a stopped, resumable run)."):  # fmt: skip
        search.request_stop(study_dir)
        st.rerun()
    top = search.best(search.load(study_dir), study_dir)
    if c2.button("Train the best", type="primary", icon=":material/emoji_events:", disabled=top is None,
                 width="stretch", key="tune.best",
                 help="A new run with the best trial's model and settings, ready to export."):  # fmt: skip
        try:
            run_dir = enqueue(search.train_best(study_dir))
        except LayerLabError as e:
            show_error(e)
            return
        state.set_run(run_dir.name)
        st.switch_page(router.PAGES["train"])
