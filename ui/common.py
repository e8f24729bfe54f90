"""Page scaffolding: the header line and the status strip shown on every page."""

from pathlib import Path

import streamlit as st
from streamlit.errors import StreamlitAPIException

from engine.compiler import analyse, infer_shapes, memory_estimate
from engine.errors import LayerLabError
from engine.runs import list_runs
from ui import router, state


def page(title: str, purpose: str) -> None:
    """Every page starts here: defaults loaded, the title, one line on what the page is for, the status strip."""
    router.ensure_routed()
    state.ensure()
    st.title(title)
    st.caption(purpose)
    status_strip()
    slot = st.empty()  # always present, so a one-time notice never shifts (and resets) the elements below it
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


def status_strip() -> None:
    meta = state.dataset_meta()
    runs = list_runs()
    c1, c2, c3 = st.columns(3, border=True)
    with c1:
        link("data", f"Dataset: {meta['name']}", ":material/table_chart:")
        st.caption(f"{meta['task']} · {sum(meta['sizes'].values()):,} rows · input {tuple(meta['input_shape'])}")
    with c2:
        link("build", "Model", ":material/account_tree:")
        st.caption(model_summary_line(state.spec(), meta["input_shape"]))
    with c3:
        link("train", "Latest run", ":material/monitoring:")
        if runs:
            r = runs[0]
            metric = format_metrics(r.get("metrics") or {})
            st.caption(f"{r['name']} · {r['state']}" + (f" · {metric}" if metric else ""))
        else:
            st.caption("No runs yet: start one on the Train page.")


def format_metrics(metrics: dict) -> str:
    parts = []
    for key, label, fmt in (("val/accuracy", "val acc", "{:.1%}"), ("val/mae", "val MAE", "{:.3g}"),
                            ("val/loss", "val loss", "{:.4f}")):
        if metrics.get(key) is not None:
            parts.append(f"{label} {fmt.format(metrics[key])}")
    return " · ".join(parts[:2])


def show_error(err: Exception) -> None:
    """A LayerLabError message for the user; never a traceback."""
    st.error(str(err), icon=":material/error:")


def preflight_line(spec: dict, meta: dict, train: dict) -> None:
    """Before training: the memory estimate for this batch size and the linter's findings, in one caption."""
    from engine.linter import lint

    infos, error = analyse(spec, meta["input_shape"])
    if error:
        st.error(f"The model does not fit the data: {error}. Fix it on the Build page.")
        return
    memory = memory_estimate(infos, int(train["batch_size"]), train["optimizer"])
    parts = ", ".join(f"{k} {v / 2**20:,.2f}" for k, v in memory.items() if k != "total")
    st.caption(f"{sum(i.params for i in infos):,} parameters · {sum(i.macs for i in infos):,} multiply-adds per "
               f"sample · about {memory['total'] / 2**20:,.2f} MB to train at batch {train['batch_size']} "
               f"({parts} MB)")
    findings = lint(spec, meta, train, (infos, error))
    if findings:
        st.warning(f"{len(findings)} finding(s) about this model: " + " ".join(f.message for f in findings[:2])
                   + " One-click fixes are on the Build page.", icon=":material/lightbulb:")


def trained_run(label: str, key: str, where=st) -> dict:
    """Pick one of the runs that have trained weights, the run open on the Train page first; with none, a hint
    to train one and the page stops."""
    runs = {r["id"]: r for r in list_runs() if (Path(r["path"]) / "model.safetensors").exists()}
    if not runs:
        st.info("No trained model yet: start a run on the Train page.")
        link("train", "Go to Train", ":material/monitoring:")
        st.stop()
    ids, current = list(runs), st.session_state.get(state.RUN)
    run_id = where.selectbox(label, ids, index=ids.index(current) if current in ids else 0, key=key,
                             format_func=lambda i: f"{runs[i]['name']} · {runs[i]['state']} · {runs[i]['dataset']} · "
                                                   f"{format_metrics(runs[i].get('metrics') or {})}")
    return runs[run_id]
