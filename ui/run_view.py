"""A run drawn from its events.jsonl: live curves, progress, stop, and the finished state."""

import os
from pathlib import Path

import streamlit as st

from engine.errors import LayerLabError
from engine.runs import branch_run, launch, prepare_resume, read_events, read_status, request_stop, resumable, saved_checkpoints
from ui import state
from ui.charts import curves, smooth
from ui.common import format_metrics, show_error
from ui.inside import boundary_chart, gradient_chart, inside_panel

# The browser's redrawing of the charts competes with training for the CPU. Measured with bench/observe.py on a
# 2-core machine, the Train page open while a run trains: redrawn every 1 s, training ran 33% slower; every 2 s,
# 16%; every 5 s, 3-6%. (A status line redrawn every second apart from the charts, or static charts without
# hover, did not help: any redraw made the browser repaint the charts.) More cores leave room for 1 s.
LIVE_EVERY_S = 1.0 if (os.cpu_count() or 1) > 2 else 5.0
_CACHE = "run_view.events"  # (run path, times resumed) -> (byte offset, events so far): polls read only new bytes


def events(run_dir: Path, resumes: int = 0) -> list[dict]:
    """The run's events; a resume cuts the file back to its checkpoint, so each resume starts a fresh read."""
    cache = st.session_state.setdefault(_CACHE, {})
    key = f"{run_dir}#{resumes}"
    offset, seen = cache.get(key, (0, []))
    new, offset = read_events(run_dir, offset)
    seen = seen + new
    cache[key] = (offset, seen)
    return seen


def origin(parent: dict | None) -> str:
    """Where a branched run came from, in words."""
    if not parent:
        return ""
    epoch = f", epoch {parent['epoch']}" if parent.get("epoch") else ""
    return f"{parent.get('name') or parent['run']} · {parent['checkpoint']}{epoch}"


def run_actions(run_dir: Path, status: dict, settings: dict | None) -> None:
    """Resume a stopped or killed run; branch a new run from one of its checkpoints with the page's settings."""
    checkpoints = saved_checkpoints(run_dir)
    c1, c2, c3 = st.columns([1, 1, 1.3], vertical_alignment="bottom")
    if resumable(run_dir, status) and c1.button("Resume", icon=":material/resume:", key=f"resume.{run_dir.name}",
                                                help="Continue from the last checkpoint with the same settings, "
                                                     "optimizer and schedule state, to the planned epochs."):
        try:
            launch(prepare_resume(run_dir), resume=True)
            st.rerun(scope="app")
        except LayerLabError as e:
            show_error(e)
    if settings is None or not checkpoints:
        return
    which = c2.selectbox("Branch from", checkpoints, key=f"branch.pick.{run_dir.name}",
                         help="best: the best epoch's weights; last: the latest checkpoint; final: where it ended.")
    if c3.button("Branch with these settings", icon=":material/call_split:", key=f"branch.{run_dir.name}",
                 help="A new run of this model and data, starting from these weights, trained with the settings "
                      "on the left."):
        try:
            child = branch_run(run_dir, which, settings)
            launch(child)
            state.set_run(child.name)
            st.rerun(scope="app")
        except LayerLabError as e:
            show_error(e)


def fmt_seconds(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def draw(run_dir: Path, settings: dict | None = None) -> bool:
    """Everything about one run; while it is live a fragment redraws it every second. Returns whether it is live.
    `settings`: the Train page's settings, offered for branching."""
    status = read_status(run_dir)
    evs = events(run_dir, status.get("resumes", 0))
    epochs = [e for e in evs if e["type"] == "epoch_end"]
    batches = [e for e in evs if e["type"] == "batch_end"]
    started = next((e for e in evs if e["type"] == "run_started"), None)
    finished = next((e for e in evs if e["type"] == "run_finished"), None)
    live = status["state"] in ("queued", "running") and finished is None

    last = batches[-1] if batches else (epochs[-1] if epochs else None)
    progress = (finished and finished["status"] == "completed" and 1.0) or (last or {}).get("progress", 0.0)
    label = status["state"]
    if last and live:
        label = (f"epoch {last['epoch']}/{started['epochs'] if started else '?'} · "
                 f"{last['samples_per_second']:,.0f} samples/s · ETA {fmt_seconds(last['eta_s'])}")
    st.progress(min(max(float(progress), 0.0), 1.0), text=label)
    if live:
        if st.button("Stop", icon=":material/stop_circle:", key=f"stop.{run_dir.name}"):
            request_stop(run_dir)
            st.toast("Stopping… the weights at this point are kept.")

    for e in evs:
        if e["type"] == "notice":
            st.info(e["message"], icon=":material/info:")
        elif e["type"] == "coach":
            st.warning(f"**Epoch {e['epoch']}.** {e['message']}", icon=":material/school:")
        elif e["type"] == "run_resumed":
            st.caption(f"Resumed at epoch {e['epoch']}, step {e['step']:,}.")
    if finished:
        kind = {"completed": st.success, "stopped": st.warning}.get(finished["status"], st.error)
        kind(f"Run {finished['status']}. {finished.get('message', '')} "
             f"{format_metrics(finished.get('metrics') or {})}".strip())
        weights = run_dir / "model.safetensors"
        if weights.exists():
            st.download_button("Download weights (.safetensors)", weights.read_bytes(), file_name=f"{run_dir.name}.safetensors",
                               mime="application/octet-stream", on_click="ignore", icon=":material/download:",
                               key=f"dl.{run_dir.name}", help="More formats on the Export page.")
    elif status["state"] == "failed":
        st.error(status.get("message", "The run failed."))
    if not live:
        run_actions(run_dir, status, settings)

    if epochs:
        m = epochs[-1]["metrics"]
        cards = st.columns(4)
        cards[0].metric("Epoch", epochs[-1]["epoch"])
        cards[1].metric("Validation loss", f"{m['val/loss']:.4f}")
        if "val/accuracy" in m:
            cards[2].metric("Validation accuracy", f"{m['val/accuracy']:.1%}")
        if "val/mae" in m:
            cards[2].metric("Validation MAE", f"{m['val/mae']:.3g}")
            cards[3].metric("Validation R²", f"{m['val/r2']:.3f}")
        else:
            cards[3].metric("Samples / s", f"{epochs[-1]['samples_per_second']:,.0f}")
    best_epoch = epochs[-1].get("best_epoch") if epochs else None
    xs = [e["epoch"] for e in epochs]
    c1, c2 = st.columns(2)
    with c1:
        st.plotly_chart(curves({"train loss": (xs, [e["metrics"]["train/loss"] for e in epochs]),
                                "validation loss": (xs, [e["metrics"]["val/loss"] for e in epochs])},
                               "Loss per epoch", "epoch", "loss", best_x=best_epoch),
                        width="stretch", key=f"loss.{run_dir.name}")
    with c2:
        if epochs and "val/accuracy" in epochs[0]["metrics"]:
            fig = curves({"validation accuracy": (xs, [e["metrics"]["val/accuracy"] for e in epochs])},
                         "Accuracy per epoch", "epoch", "accuracy", percent=True, best_x=best_epoch)
        else:
            fig = curves({"validation MAE": (xs, [e["metrics"].get("val/mae") for e in epochs])},
                         "Mean absolute error per epoch", "epoch", "MAE", best_x=best_epoch)
        st.plotly_chart(fig, width="stretch", key=f"metric.{run_dir.name}")
    steps = [b["step"] for b in batches]
    losses = [b["loss"] for b in batches]
    c3, c4 = st.columns(2)
    with c3:
        st.plotly_chart(curves({"batch loss": (steps, losses), "smoothed": (steps, smooth(losses))},
                               "Training loss by step (sampled)", "step", "loss"),
                        width="stretch", key=f"batch.{run_dir.name}")
    with c4:
        rates = [(b["step"], b["lr"]) for b in batches if "lr" in b] + [(e["step"], e["lr"]) for e in epochs if "lr" in e]
        rates.sort()
        st.plotly_chart(curves({"learning rate": ([s for s, _ in rates], [r for _, r in rates])},
                               "Learning rate by step", "step", "learning rate"),
                        width="stretch", key=f"lr.{run_dir.name}")
    looks = [e for e in evs if e["type"] == "diagnostics"]
    c5, c6 = st.columns(2)
    with c5:
        drawn = boundary_chart(run_dir)
    if looks:
        with c6 if drawn else c5:
            gradient_chart(looks, key=f"grad.{run_dir.name}")
        with st.expander("Inside the model: histograms and dead ReLUs"):
            inside_panel(looks, key=f"inside.{run_dir.name}")
    return live


def live_panel(run_dir: Path, settings: dict | None = None) -> None:
    """Redraw the run every LIVE_EVERY_S while it is live; one full rerun when it ends (to stop polling)."""
    active = read_status(run_dir)["state"] in ("queued", "running")

    def body():
        still_live = draw(run_dir, settings)
        if active and not still_live:
            st.rerun(scope="app")

    st.fragment(body, run_every=LIVE_EVERY_S if active else None)()
