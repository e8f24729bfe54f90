"""Page scaffolding: the header line and the status strip shown on every page."""

import math
from pathlib import Path

import streamlit as st
from streamlit.errors import StreamlitAPIException

from engine.compiler import analyse, infer_shapes, memory_estimate
from engine.errors import LayerLabError
from engine.runs import list_runs
from engine.spec import data_inputs, data_parts
from engine.tasks import TASKS
from engine.workspace import record_error
from ui import router, state
from ui.layout import narrow_layout


def page(title: str, purpose: str) -> None:
    """Every page starts here: defaults loaded, the title, one line on what the page is for, the status strip."""
    router.ensure_routed()
    state.ensure()
    narrow_layout()
    st.title(title)
    st.caption(purpose)
    status_strip()
    slot = (
        st.empty()
    )  # always present, so a one-time notice never shifts (and resets) the elements below it
    if text := state.pop_notice():
        slot.info(text)


def link(page_key: str, label: str, icon: str) -> None:
    """A link to one of our pages; plain text when a page runs on its own (no navigation to link into)."""
    try:
        st.page_link(router.PAGES[page_key], label=label, icon=icon)
    except StreamlitAPIException:
        st.markdown(f"{icon} **{label}**")


def model_summary_line(spec: dict, input_shape) -> str:
    try:
        infos = infer_shapes(spec, input_shape)
    except LayerLabError:
        return f"{len(spec['nodes'])} layers · shapes do not fit"
    return f"{len(infos)} layers · {sum(i.params for i in infos):,} parameters"


def input_text(meta: dict) -> str:
    """A dataset's input in words: "2 features", "3×32×32 images", "24 tokens", "7 features + 64 tokens"."""
    return " + ".join(_part_text(p["shape"], p.get("tokens")) for p in data_parts(meta).values())


def _part_text(shape, tokens: bool) -> str:
    shape = tuple(shape)
    if len(shape) == 1:
        return f"{shape[0]:,} {'tokens' if tokens else 'features'}"
    if len(shape) == 3:
        return f"{shape[0]}×{shape[1]}×{shape[2]} images"
    return "×".join(str(d) for d in shape)


def status_strip() -> None:
    meta = state.dataset_meta()
    c1, c2, c3 = st.columns(3, border=True)
    with c1:
        link(
            "data", "Dataset", ":material/table_chart:"
        )  # a link's label does not wrap: the name goes below
        st.caption(
            f"**{meta['name']}** · {TASKS[meta['task']].title.lower()} · {sum(meta['sizes'].values()):,} "
            f"{TASKS[meta['task']].samples} · "
            f"{input_text(meta)}"
        )
    with c2:
        link("build", "Model", ":material/account_tree:")
        if state.gan_part():
            whole = state.whole_spec()
            st.caption(
                f"GAN · generator {len(whole['generator']['nodes'])} layers · discriminator "
                f"{len(whole['discriminator']['nodes'])} layers"
            )
        else:
            st.caption(model_summary_line(state.spec(), data_inputs(meta)))
    runs = list_runs()
    with c3:
        runs_cell(runs)
    from ui.run_view import watch_runs

    watch_runs(runs)


def runs_cell(runs: list[dict]) -> None:
    """This tab's run and every run training anywhere, each with Stop (the app-wide indicator). It shows states,
    not counts, so it needs no redraws of its own: the page reruns when a state changes (ui.run_view.watch_runs)."""
    from engine.runs import ACTIVE
    from ui.run_view import stop_button

    training = [r for r in runs if r["state"] in ACTIVE]
    mine = next((r for r in runs if r["id"] == st.session_state.get(state.RUN)), None)
    link("train", "Run", ":material/monitoring:")
    if mine and mine["state"] not in ACTIVE:
        metric = format_metrics(mine.get("metrics") or {})
        st.caption(f"{mine['name']} · {mine['state']}" + (f" · {metric}" if metric else ""))
    elif not training:
        st.caption("No run in this session yet: start one on the Train page.")
    for r in training:
        st.caption(
            f":material/progress_activity: **{r['name']}** · {'training' if r['state'] == 'running' else r['state']}"
        )
        stop_button(r["path"], r["name"], f"strip.stop.{r['id']}", "tertiary")


def fmt_value(x: float) -> str:
    """A loss or metric for a card or a caption: 4 significant digits, thousands separated, tiny and huge values in
    powers of ten ("3e-05", "18,537", "6.2e+19"), never rounded to zero."""
    if not math.isfinite(x):
        return str(x)
    a = abs(x)
    if a >= 1e6 or 0 < a < 1e-3:
        return f"{x:.3g}"
    if a >= 1000:
        return f"{x:,.0f}"
    return f"{x:.4g}"


def fmt_seconds(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def origin(parent: dict | None, trial: dict | None = None) -> str:
    """Where a branched run came from, or the settings a search's trial tried, in words."""
    if trial:
        shown = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in trial["params"].items()
        )
        return f"trial {trial['number']}: {shown}"
    if not parent:
        return ""
    epoch = f", epoch {parent['epoch']}" if parent.get("epoch") else ""
    return f"{parent.get('name') or parent['run']} · {parent['checkpoint']}{epoch}"


def format_metrics(metrics: dict) -> str:
    parts = []
    for key, label, fmt in (
        ("val/accuracy", "val acc", "{:.1%}".format),
        ("val/mae", "val MAE", fmt_value),
        ("val/loss", "val loss", fmt_value),
    ):
        if metrics.get(key) is not None:
            parts.append(f"{label} {fmt(metrics[key])}")
    return " · ".join(parts[:2])


def show_error(err: Exception) -> None:
    """A LayerLabError message for the user; never a traceback."""
    st.error(str(err), icon=":material/error:")


def unexpected(e: Exception, where: str) -> None:
    """What a page did not handle: a user's message as it is; anything else as a short message with an error id,
    its traceback in the workspace's error log (never in the browser)."""
    if isinstance(e, LayerLabError):
        show_error(e)
        return
    error_id, path = record_error(where)
    st.error(
        f"Something went wrong in {where} ({type(e).__name__}); nothing you made was lost. Error id "
        f"**{error_id}**: the details are in `{path}`. Reload the page to go on, and please report the id.",
        icon=":material/error:",
    )


def preflight_line(spec: dict, meta: dict, train: dict) -> None:
    """Before training: the memory estimate for this batch size and the linter's findings, in one caption (a
    model whose shapes do not fit says nothing here: the Train page refuses Start with that reason)."""
    from engine.linter import lint

    infos, error = analyse(spec, data_inputs(meta))
    if error:
        return
    memory = memory_estimate(infos, int(train["batch_size"]), train["optimizer"])
    parts = ", ".join(f"{k} {v / 2**20:,.2f}" for k, v in memory.items() if k != "total")
    st.caption(
        f"{sum(i.params for i in infos):,} parameters · {sum(i.macs for i in infos):,} multiply-adds per "
        f"sample · about {memory['total'] / 2**20:,.2f} MB to train at batch {train['batch_size']} "
        f"({parts} MB)"
    )
    findings = lint(spec, meta, train, (infos, error))
    if findings:
        st.warning(
            f"{len(findings)} finding(s) about this model: "
            + " ".join(f.message for f in findings[:2])
            + " One-click fixes are on the Build page.",
            icon=":material/lightbulb:",
        )


def trained_run(label: str, key: str, where=st) -> dict:
    """Pick one of the runs that have trained weights, the run open on the Train page first; with none, a hint
    to train one and the page stops."""
    runs = {r["id"]: r for r in list_runs() if (Path(r["path"]) / "model.safetensors").exists()}
    if not runs:
        st.info("No trained model yet: start a run on the Train page.")
        link("train", "Go to Train", ":material/monitoring:")
        st.stop()
    ids, current = list(runs), st.session_state.get(state.RUN)
    run_id = where.selectbox(
        label,
        ids,
        index=ids.index(current) if current in ids else 0,
        key=key,
        format_func=lambda i: (
            f"{runs[i]['name']} · {runs[i]['state']} · {runs[i]['dataset']} · "
            f"{format_metrics(runs[i].get('metrics') or {})}"
        ),
    )
    return runs[run_id]
