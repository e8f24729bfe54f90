"""A run drawn from its events.jsonl: live curves, progress, stop, and the finished state."""

import os
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from engine.errors import LayerLabError
from engine.gan import SAMPLES_FILE as GAN_SAMPLES
from engine.runs import (
    ACTIVE,
    branch_run,
    list_runs,
    prepare_resume,
    read_events,
    read_status,
    rename_run,
    request_stop,
    resumable,
    run_info,
    run_states,
    saved_checkpoints,
)
from engine.scheduler import cancel, enqueue, positions
from engine.train.callbacks import REBUILDS
from engine.workspace import read_json
from ui import state
from ui.charts import curves, smooth
from ui.common import fmt_seconds, fmt_value, format_metrics, origin, show_error, unexpected
from ui.generative_views import show_generated, show_pairs
from ui.inside import boundary_chart, gradient_chart
from ui.xray import xray_panel

# The browser's redrawing of the charts competes with training for the CPU. Measured with bench/observe.py on a
# 2-core machine, the Train page open while a run trains: redrawn every 1 s, training ran 33% slower; every 2 s,
# 16%; every 5 s, 3-6%. (A status line redrawn every second apart from the charts, or static charts without
# hover, did not help: any redraw made the browser repaint the charts.) More cores leave room for 1 s.
LIVE_EVERY_S = 1.0 if (os.cpu_count() or 1) > 2 else 5.0
FAST_EVERY_S, FAST_FOR_S = (
    1.0,
    10.0,
)  # the run view redraws this often in a run's first seconds (as this tab sees it)
WATCH_EVERY_S = (
    2.0  # a run that starts, ends or is lost shows on the page within about this (it draws nothing)
)
MIN_STEP_POINTS = (
    5  # the loss-by-step chart waits for this many samples (it is sampled 4 times a second)
)
_CACHE = "run_view.events"  # (run path, times resumed) -> (byte offset, events so far): polls read only new bytes


def events(run_dir: Path, resumes: int = 0) -> list[dict]:
    """The run's events; a resume cuts the file back to its checkpoint, so each resume starts a fresh read
    (and so does a file found shorter than what was read of it: cut by a resume or an elastic restart
    before the status said so)."""
    cache = st.session_state.setdefault(_CACHE, {})
    key = f"{run_dir}#{resumes}"
    offset, seen = cache.get(key, (0, []))
    try:
        if (run_dir / "events.jsonl").stat().st_size < offset:
            offset, seen = 0, []
    except OSError:
        pass
    new, offset = read_events(run_dir, offset)
    seen = seen + new
    cache[key] = (offset, seen)
    return seen


def run_actions(run_dir: Path, status: dict, settings: dict | None) -> None:
    """Resume a stopped or killed run; branch a new run from one of its checkpoints with the page's settings."""
    checkpoints = saved_checkpoints(run_dir)
    c1, c2, c3 = st.columns([1, 1, 1.3], vertical_alignment="bottom")
    if resumable(run_dir, status) and c1.button(
        "Resume",
        icon=":material/resume:",
        key=f"resume.{run_dir.name}",
        help="Continue from the last checkpoint with the same settings, "
        "optimizer and schedule state, to the planned epochs.",
    ):
        try:
            enqueue(prepare_resume(run_dir), resume=True)
            st.rerun(scope="app")
        except LayerLabError as e:
            show_error(e)
    if settings is None or not checkpoints:
        return
    which = c2.selectbox(
        "Branch from",
        checkpoints,
        key=f"branch.pick.{run_dir.name}",
        help="best: the best epoch's weights; last: the latest checkpoint; final: where it ended.",
    )
    if c3.button(
        "Branch with these settings",
        icon=":material/call_split:",
        key=f"branch.{run_dir.name}",
        help="A new run of this model and data, starting from these weights, trained with the settings "
        "on the left.",
    ):
        try:
            child = enqueue(branch_run(run_dir, which, settings))
            state.set_run(child.name)
            st.rerun(scope="app")
        except LayerLabError as e:
            show_error(e)


def draw(run_dir: Path, settings: dict | None = None) -> str:
    """Everything about one run; while it is live a fragment redraws it. Returns the state it drew (its status,
    or "completed" etc. once `run_finished` is read). `settings`: the Train page's settings, offered for branching."""
    status = read_status(run_dir)
    evs = events(run_dir, status.get("resumes", 0))
    epochs = [e for e in evs if e["type"] == "epoch_end"]
    batches = [e for e in evs if e["type"] == "batch_end"]
    started = next((e for e in evs if e["type"] == "run_started"), None)
    finished = next((e for e in evs if e["type"] == "run_finished"), None)
    live = status["state"] in ("queued", "running") and finished is None
    drawn_state = status["state"] if live else (finished or {}).get("status", status["state"])

    # The newest of the sampled batch and the epoch events: the label and the cards below read the same snapshot.
    last = max(
        batches[-1:] + epochs[-1:],
        key=lambda e: (e["step"], e["type"] == "epoch_end"),
        default=None,
    )
    progress = (finished and finished["status"] == "completed" and 1.0) or (last or {}).get(
        "progress", 0.0
    )
    done = epochs[-1]["epoch"] if epochs else 0
    total = started["epochs"] if started else "?"
    label = {
        "queued": "Starting the worker…",
        "running": "Loading the data and building the model…",
    }.get(status["state"], status["state"])
    if waiting(status) and status.get("queue"):
        place = positions().get(run_dir.name)
        label = f"Waiting in the run queue{f': number {place} in line' if place else ''}…"
    elif waiting(status) and status.get("external"):
        label = "Waiting for the other machines: start it with one of the launch files below."
    if last and live:
        label = (
            f"{done}/{total} epochs done · {last['samples_per_second']:,.0f} samples/s · "
            f"ETA {fmt_seconds(last['eta_s'])}"
        )
    elif not live:
        label = f"{status['state']} · {done}/{total} epochs"
    st.progress(min(max(float(progress), 0.0), 1.0), text=label)
    # The cards come right after the label, so the browser shows both from the same redraw.
    if epochs:
        m = epochs[-1]["metrics"]
        cards = st.columns(4)
        cards[0].metric("Epochs done", f"{done}/{total}")
        cards[1].metric("Validation loss", fmt_value(m["val/loss"]), help=f"{m['val/loss']:.8g}")
        if "val/accuracy" in m:
            cards[2].metric("Validation accuracy", f"{m['val/accuracy']:.1%}")
        if "val/mae" in m:
            cards[2].metric("Validation MAE", f"{m['val/mae']:.3g}")
            cards[3].metric("Validation R²", f"{m['val/r2']:.3f}")
        elif "val/g_loss" in m:  # a GAN
            cards[2].metric(
                "D on real / generated",
                f"{m['val/d_real_accuracy']:.0%} / {m['val/d_fake_accuracy']:.0%}",
                help="The discriminator's accuracy on validation rows and on generated samples.",
            )
            if "val/modes_covered" in m:
                cards[3].metric("Modes covered", f"{m['val/modes_covered']:.0%}")
            else:
                cards[3].metric("Generator loss", fmt_value(m["val/g_loss"]))
        elif "val/kl" in m:  # a VAE
            cards[2].metric(
                "Reconstruction",
                f"{m['val/reconstruction']:.4g}",
                help="Per row, summed over its values.",
            )
            cards[3].metric(
                "KL per row",
                f"{m['val/kl']:.3g}",
                help="The codes' distance from the prior, in nats.",
            )
        else:
            cards[3].metric("Samples / s", f"{(last or epochs[-1])['samples_per_second']:,.0f}")
    if live:
        stop_button(run_dir, "Stop", f"stop.{run_dir.name}", "secondary")
    if waiting(status) and status.get("external"):
        launch_downloads(run_dir)
    if started and started.get("world_size", 1) > 1:
        st.caption(
            f"Trains on {started['world_size']} processes (DistributedDataParallel); batch size "
            f"{started['batch_size']} is the global batch."
        )

    for e in evs:
        if e["type"] == "notice":
            st.info(e["message"], icon=":material/info:")
        elif e["type"] == "coach":
            st.warning(f"**Epoch {e['epoch']}.** {e['message']}", icon=":material/school:")
        elif e["type"] == "run_resumed":
            st.caption(f"Resumed at epoch {e['epoch']}, step {e['step']:,}.")
    if finished:
        kind = {"completed": st.success, "stopped": st.warning}.get(finished["status"], st.error)
        kind(
            f"Run {finished['status']}. {finished.get('message', '')} "
            f"{format_metrics(finished.get('metrics') or {})}".strip()
        )
        weights = run_dir / "model.safetensors"
        if weights.exists():
            st.download_button(
                "Download weights (.safetensors)",
                weights.read_bytes(),
                file_name=f"{run_dir.name}.safetensors",
                mime="application/octet-stream",
                on_click="ignore",
                icon=":material/download:",
                key=f"dl.{run_dir.name}",
                help="More formats on the Export page.",
            )
    elif status["state"] == "failed":
        st.error(status.get("message", "The run failed."), icon=":material/error:")
    if not live:
        run_actions(run_dir, status, settings)
    written = [e for e in evs if e["type"] == "sample"]
    if written:  # a language model: what it writes now, from the same prompt each time
        w = written[-1]
        st.caption(
            f"What it writes now (epoch {w['epoch']}, step {w['step']:,}), after “{w['prompt']}”:"
        )
        st.code(w["text"], language=None, wrap_lines=True)
    made = read_json(run_dir / GAN_SAMPLES, None)
    if made:  # a GAN: what the generator makes of the same noise now
        show_generated(
            made,
            f"Generated from fixed noise (epoch {made['epoch']}, step {made['step']:,})",
            f"gan.{run_dir.name}",
        )
    rebuilt = read_json(run_dir / REBUILDS, None)
    if rebuilt:  # a VAE: validation rows above what it rebuilds of them now
        show_pairs(rebuilt["originals"], rebuilt["rebuilt"], rebuilt["image"],
                   f"Validation rows (top) and what the model rebuilds of them now (epoch {rebuilt['epoch']}, "
                   f"step {rebuilt['step']:,}).")  # fmt: skip

    if not epochs:
        st.caption(
            "The curves appear after the first epoch."
            if live
            else "No epoch finished, so there are no curves."
        )
        boundary_chart(run_dir)
        return drawn_state
    best_epoch = epochs[-1].get("best_epoch")
    xs = [e["epoch"] for e in epochs]
    c1, c2 = st.columns(2)
    with c1:
        st.plotly_chart(
            curves(
                {
                    "train loss": (xs, [e["metrics"]["train/loss"] for e in epochs]),
                    "validation loss": (xs, [e["metrics"]["val/loss"] for e in epochs]),
                },
                "Loss per epoch",
                "epoch",
                "loss",
                best_x=best_epoch,
            ),
            width="stretch",
            key=f"loss.{run_dir.name}",
        )
    with c2:
        if "val/g_loss" in epochs[0]["metrics"]:  # a GAN: both players' losses and D's accuracies
            fig = curves(
                {
                    name: (xs, [e["metrics"][key] for e in epochs])
                    for name, key in (
                        ("D loss", "val/d_loss"),
                        ("G loss", "val/g_loss"),
                        ("D on real", "val/d_real_accuracy"),
                        ("D on generated", "val/d_fake_accuracy"),
                    )
                },
                "Discriminator and generator per epoch",
                "epoch",
                "loss · accuracy",
            )
        elif "val/kl" in epochs[0]["metrics"]:  # a VAE: its loss's two parts
            fig = curves(
                {
                    "reconstruction": (xs, [e["metrics"]["val/reconstruction"] for e in epochs]),
                    "KL": (xs, [e["metrics"]["val/kl"] for e in epochs]),
                },
                "Reconstruction and KL per epoch",
                "epoch",
                "nats",
                best_x=best_epoch,
            )
        elif "val/accuracy" in epochs[0]["metrics"]:
            fig = curves(
                {"validation accuracy": (xs, [e["metrics"]["val/accuracy"] for e in epochs])},
                "Accuracy per epoch",
                "epoch",
                "accuracy",
                percent=True,
                best_x=best_epoch,
            )
        else:
            series = {"validation MAE": (xs, [e["metrics"].get("val/mae") for e in epochs])}
            if "val/naive_mae" in epochs[0]["metrics"]:  # a forecast: the baseline it has to beat
                series["naive forecast's MAE"] = (
                    xs,
                    [e["metrics"]["val/naive_mae"] for e in epochs],
                )
            fig = curves(
                series,
                "Mean absolute error per epoch",
                "epoch",
                "MAE",
                best_x=best_epoch,
            )
        st.plotly_chart(fig, width="stretch", key=f"metric.{run_dir.name}")
    c3, _ = st.columns(2)
    with c3:
        boundary_chart(run_dir)
    # Each live chart costs the browser a redraw per tick, and on a small machine that CPU comes out of training
    # (README benchmarks): the detail charts are drawn only while their section is open.
    more = st.expander(
        "More charts: loss by step, learning rate, gradients, inside the model",
        key=f"more.{run_dir.name}",
        on_change="rerun",
        icon=":material/insights:",
    )
    if more.open:
        with more:
            detail_charts(
                run_dir, batches, epochs, [e for e in evs if e["type"] == "diagnostics"], live
            )
    return drawn_state


def detail_charts(
    run_dir: Path, batches: list[dict], epochs: list[dict], looks: list[dict], live: bool
) -> None:
    """Training loss by step, the learning rate, each layer's gradient norm, histograms and dead ReLUs."""
    steps = [b["step"] for b in batches]
    losses = [b["loss"] for b in batches]
    c1, c2 = st.columns(2)
    with c1:
        if len(steps) >= MIN_STEP_POINTS:
            st.plotly_chart(
                curves(
                    {"batch loss": (steps, losses), "smoothed": (steps, smooth(losses))},
                    "Training loss by step (sampled)",
                    "step",
                    "loss",
                ),
                width="stretch",
                key=f"batch.{run_dir.name}",
            )
        else:
            st.caption(
                "**Training loss by step** is sampled 4 times a second: it appears once the run has trained "
                "for a couple of seconds."
                + ("" if live else " This run was shorter: see the loss per epoch.")
            )
    with c2:
        rates = [(b["step"], b["lr"]) for b in batches if "lr" in b] + [
            (e["step"], e["lr"]) for e in epochs if "lr" in e
        ]
        rates.sort()
        st.plotly_chart(
            curves(
                {"learning rate": ([s for s, _ in rates], [r for _, r in rates])},
                "Learning rate by step",
                "step",
                "learning rate",
            ),
            width="stretch",
            key=f"lr.{run_dir.name}",
        )
    if looks:
        c3, _ = st.columns(2)
        with c3:
            gradient_chart(looks, key=f"grad.{run_dir.name}")
        st.markdown("**Inside the model: X-ray, histograms and history**")
        xray_panel(read_json(run_dir / "spec.json", {}), looks, key=f"inside.{run_dir.name}")


def live_every(runs: list[dict], quick: bool = False) -> float | None:
    """How often a live part of a page redraws: None with no run training, else every LIVE_EVERY_S; `quick` (the
    run view): every FAST_EVERY_S in a run's first seconds as this tab sees it."""
    fast = st.session_state.setdefault("run_view.fast_until", {})
    now, every = time.time(), None
    for r in runs:
        if r["state"] in ACTIVE:
            until = fast.setdefault(f"{r['id']}#{r.get('resumes', 0)}", now + FAST_FOR_S)
            every = FAST_EVERY_S if quick and now < until else (every or LIVE_EVERY_S)
    return every


def live_fragment(body, runs: list[dict], quick: bool = False) -> None:
    """Run `body()` in a fragment redrawn at `live_every(runs, quick)`. `body` returns the states it drew; the whole
    page reruns when they change (a run started, ended or was lost, so every part of the page says the same) or
    when the quick first seconds are over (to slow the polling down). Redraws cost the training CPU on a small
    machine (README benchmarks), so only the run view is ever quick."""
    every = live_every(runs, quick)
    before = {r["id"]: r["state"] for r in runs}

    def run():
        try:
            drawn = body()
        except Exception as e:  # noqa: BLE001 - a fragment's rerun does not pass through the router's guard
            unexpected(e, "the live view")
            return
        if every is None:
            return
        rerun_if_changed(before, drawn)
        if live_every([r for r in runs if drawn.get(r["id"]) in ACTIVE], quick) != every:
            st.rerun(scope="app")  # the quick first seconds are over: poll slower from now on

    st.fragment(run, run_every=every)()


def launch_downloads(run_dir: Path) -> None:
    """The files that start a run on several machines, to download, and whether its folder is shared."""
    from engine.launch import launch_files, storage_warning
    from engine.train.distributed import uses_cuda

    train = read_json(run_dir / "train.json", {})
    where = train.get("launch") or {}
    files = launch_files(run_dir, "all", where.get("nodes", 1), where.get("processes", 1),
                         uses_cuda(train.get("config", {}).get("device", "auto")))  # fmt: skip
    st.markdown(
        f"**Start it on {where.get('nodes', 1)} machines × {where.get('processes', 1)} processes** with one "
        "of these. Every machine needs this LayerLab checkout and the run folder "
        f"(`{run_dir}`) at the same paths; the curves appear here as rank 0 writes them."
    )
    cols = st.columns(len(files))
    for col, (name, text) in zip(cols, files.items(), strict=True):
        col.download_button(name, text, file_name=name, key=f"launch.{run_dir.name}.{name}",
                            icon=":material/download:", width="stretch")  # fmt: skip
    warning = storage_warning(run_dir)
    if warning:
        st.warning(warning, icon=":material/lan:")


def waiting(status: dict) -> bool:
    """Queued and not started: in the run queue, or waiting for its launch files' commands."""
    return status.get("state") == "queued" and not status.get("pid")


def stop_button(run_dir, name: str, key: str, kind: str) -> None:
    """Stop a run, or cancel one that still waits in the queue. The stop is requested in the click's
    callback: the button sits in a fragment that redraws several times a second, and a click read from
    the button's return value could be lost to the next redraw."""
    queued = waiting(read_status(Path(run_dir)))

    def stop():
        if queued:
            try:
                cancel(Path(run_dir))
                st.toast(f"Cancelled {name}: it had not started.")
                return
            except LayerLabError:  # it started in the meantime: stop it
                pass
        request_stop(Path(run_dir))
        st.toast(f"Stopping {name}… the weights at this point are kept.")

    st.button(
        "Cancel" if queued else "Stop",
        icon=":material/cancel:" if queued else ":material/stop_circle:",
        key=key,
        type=kind,
        on_click=stop,
        help=f"Take {name} out of the queue."
        if queued
        else f"Stop {name}; the weights at this point are kept.",
    )


def rerun_if_changed(before: dict[str, str], now: dict[str, str]) -> None:
    """Rerun the whole page when a run's state differs from the one the page was drawn with, or a run appeared,
    so the strip, the runs table, the buttons and the run view all say the same."""
    if any(now.get(k, v) != v for k, v in before.items()) or any(k not in before for k in now):
        st.rerun(scope="app")


def watch_runs(runs: list[dict]) -> None:
    """Every page: while a run trains, check the runs' states every WATCH_EVERY_S without drawing anything (a
    killed worker shows with its Resume button within a couple of seconds, not at the next chart redraw)."""
    before = {r["id"]: r["state"] for r in runs}
    if any(state in ACTIVE for state in before.values()):
        st.fragment(lambda: rerun_if_changed(before, run_states()), run_every=WATCH_EVERY_S)()


def live_panel(run_dir: Path, settings: dict | None = None) -> None:
    """The run, redrawn while it is live."""
    info = run_info(run_dir)
    live_fragment(lambda: {run_dir.name: draw(run_dir, settings)}, [info], quick=True)


def rename_box(run_dir: Path) -> None:
    """The run's name as the heading, with a rename field beside it."""
    info = run_info(run_dir)
    c1, c2 = st.columns([5, 1], vertical_alignment="center")
    c1.markdown(f"#### {info['name']}")
    with c2.popover("", icon=":material/edit:", help="Rename this run"):
        new = st.text_input(
            "Run name", value=info["name"], key=f"rename.{run_dir.name}", max_chars=80
        )
        if new != info["name"]:
            try:
                rename_run(run_dir, new)
                st.rerun(scope="app")
            except LayerLabError as e:
                show_error(e)


def runs_table(runs: list[dict]) -> None:
    """Every run, newest first (`runs`: as the page read them), redrawn with the live view while any trains."""
    first = [runs]  # the page's own read for the first draw; the fragment's redraws read again

    def body():
        runs = first.pop() if first else list_runs()
        rows = []
        for r in runs:
            took = (r.get("finished") or time.time()) - (r.get("started") or time.time())
            rows.append(
                {
                    "run": r["name"],
                    "status": f"queued #{r['queue_position']}"
                    if r.get("queue_position")
                    else r["state"],
                    "from": origin(r.get("parent"), r.get("trial")),
                    "dataset": r["dataset"],
                    "layers": r["layers"],
                    "processes": r.get("world_size")
                    or (r.get("launch") or {}).get("processes", 1)
                    * (r.get("launch") or {}).get("nodes", 1),
                    "epochs": f"{r.get('epoch') or 0}/{r['config'].get('epochs')}",
                    "result": format_metrics(r.get("metrics") or {}),
                    "samples/s": f"{r['samples_per_second']:,.0f}"
                    if r.get("samples_per_second")
                    else "",
                    "duration": fmt_seconds(took) if took > 0 else "",
                    "id": r["id"],
                }
            )
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        return {r["id"]: r["state"] for r in runs}

    live_fragment(body, runs)
