"""The will-it-learn check on the Train page: its quick checks by themselves whenever the model or its learning
settings change while nothing trains, all of it with its button (a job); each failing item with its cause and fix."""

import hashlib
import json
from pathlib import Path

import streamlit as st

from engine import jobs
from engine.errors import LayerLabError
from engine.train.learncheck import OVERFIT_STEPS
from ui import state
from ui.progress import job_view

FULL = "train.check"  # the full check's {"key": what was checked, "folder": its job}
JOB = "train.check_job"  # the job's folder, for job_view
IGNORED = ("epochs", "device", "memory_budget_mb", "threads", "seed", "checkpoint_every")


def _key(spec: dict, train: dict, dataset_dir: str) -> str:
    kept = {k: v for k, v in train.items() if k not in IGNORED}
    return hashlib.sha1(
        json.dumps([spec, kept, str(dataset_dir)], sort_keys=True, default=str).encode()
    ).hexdigest()


def will_it_learn(
    spec: dict, config: dict, dataset_dir: str, refused: str | None, busy: bool
) -> None:
    """The four quick checks (single passes) run by itself whenever the model or its learning settings change; the
    button runs all five (overfitting one batch too) as a job. `refused`: why no check can run (the model does not
    fit the data); `busy`: a run is training, so the quick checks wait instead of taking its CPU."""
    key = _key(spec, config, dataset_dir)
    pressed = st.button("Will it learn?", icon=":material/health_and_safety:", key="train.will_learn",
                        disabled=refused is not None, width="stretch",
                        help=refused or "Checks the model before a long run: the loss at the start, a gradient for "
                        "every layer, samples kept apart in a batch, the scales through the layers (these four run "
                        "by themselves whenever the model or these settings change), and that a fresh copy of the "
                        f"model can overfit one small batch ({OVERFIT_STEPS} steps at most).")  # fmt: skip
    if refused is not None:
        return
    if pressed:
        folder = jobs.start(
            "will-learn", {"spec": spec, "train": config, "dataset_dir": str(dataset_dir)}
        )
        st.session_state[FULL] = {"key": key, "folder": str(folder)}
        st.session_state[JOB] = str(folder)
    full = st.session_state.get(FULL) or {}
    if full.get("key") == key:
        result = job_view(JOB, "Checking")
        if result is not None:
            _show(result, "")
        return
    if busy:
        return
    try:
        result = _quick(key, spec, config, str(dataset_dir))
    except LayerLabError as e:  # (what validate would also refuse: shown by the page)
        st.caption(f"Will it learn? The quick checks could not run: {e}")
        return
    _show(
        result,
        f" Press **Will it learn?** to also overfit one batch ({OVERFIT_STEPS} steps at most).",
    )


@st.cache_data(max_entries=32, show_spinner="Checking the model…")
def _quick(key: str, spec: dict, config: dict, dataset_dir: str) -> dict:
    from engine.data.folds import run_dataset
    from engine.train.learncheck import check_learning

    return check_learning(spec, run_dataset({"dataset_dir": dataset_dir}), config, quick=True)


def _show(result: dict, more: str) -> None:
    items = result["items"]
    failed = [i for i in items if not i["passed"]]
    kind = "quick checks" if len(items) < 5 else "checks"
    if not failed:
        with st.expander(
            f":green[:material/check_circle:] Will it learn? All {len(items)} {kind} passed"
        ):
            for item in items:
                st.markdown(f"- **{item['title']}**: {item['message']}")
            if more:
                st.caption(more.strip())
        return
    st.markdown(
        f"**Will it learn?** {len(items) - len(failed)} of {len(items)} {kind} passed.{more}"
    )
    for i, item in enumerate(failed):
        st.warning(f"**{item['title']}**: {item['message']}", icon=":material/report:")
        if item["fix"]:
            st.button(item["fix"]["label"], key=f"train.check_fix.{item['id']}", on_click=_apply,
                      args=(item["fix"],), type="primary" if i == 0 else "secondary")  # fmt: skip
    with st.expander("Every check"):
        for item in items:
            mark = ":green[:material/check:]" if item["passed"] else ":red[:material/close:]"
            st.markdown(f"- {mark} **{item['title']}**: {item['message']}")


def _apply(fix: dict) -> None:
    """Before the page's widgets are drawn (a button's callback), so the learning-rate box shows the new value."""
    if fix.get("spec") is not None:
        state.set_spec(fix["spec"], whole=True)
    if fix.get("train") is not None:
        state.set_train(fix["train"])
        st.session_state["train.lr"] = float(fix["train"]["lr"])


# ---- would more data help? (the learning curve)


def more_data_button(
    spec: dict, config: dict, dataset_dir: str, name: str, refused: str | None
) -> None:
    from engine.errors import LayerLabError
    from engine.learning_curve import SHARES, create_curve
    from engine.scheduler import enqueue
    from ui.common import show_error

    shares = ", ".join(f"{s:.0%}" for s in SHARES)
    if st.button("Would more data help?", icon=":material/stacked_line_chart:", key="train.more_data",
                 disabled=refused is not None, width="stretch",
                 help=refused or f"Trains this model with these settings on {shares} of the training rows (four "
                 "runs, queued), scores each on its rows and on the validation split, and says whether more data, "
                 "a larger model or more regularization would help most."):  # fmt: skip
        try:
            runs = [
                enqueue(r)
                for r in create_curve(spec, config, Path(dataset_dir), name=f"{name} curve")
            ]
            state.set_run(runs[-1].name)
            st.rerun()
        except LayerLabError as e:
            show_error(e)


def curve_view(run_dir: Path) -> None:
    """The learning curve this run belongs to: the training and validation score against the training rows, and
    the verdict once the half and the whole have trained."""
    import plotly.graph_objects as go

    from engine import learning_curve
    from ui.charts import COLORS, layout

    curve = learning_curve.curve_of(run_dir)
    if not curve:
        return
    runs = learning_curve.group_runs(curve["group"])
    found = _points(
        tuple(str(r) for r in runs), tuple(_mtime(r / "model.safetensors") for r in runs)
    )
    pts = [p for p in found["points"] if p["val"] is not None]
    st.subheader("Would more data help?")
    st.caption(f"{len(pts)} of {len(found['points'])} runs finished: "
               + ", ".join(f"{p['share']:.0%} ({p['state']})" for p in found["points"]))  # fmt: skip
    if pts:
        metric = found["metric"]
        fig = go.Figure()
        for key, label, colour in (
            ("train", "on its training rows", COLORS[0]),
            ("val", "validation", COLORS[1]),
        ):
            fig.add_trace(go.Scatter(x=[p["rows"] for p in pts], y=[p[key] for p in pts], mode="lines+markers",
                                     name=label, line=dict(color=colour)))  # fmt: skip
        fig.update_xaxes(title="training rows", type="log")
        fig.update_yaxes(title=metric, tickformat=".0%" if metric == "accuracy" else None)
        st.plotly_chart(layout(fig, f"{metric} against the number of training rows", height=300), width="stretch",
                        key=f"curve.{curve['group']}")  # fmt: skip
    if found["verdict"]:
        icon = {"more_data": ":material/trending_up:", "high_variance": ":material/call_split:",
                "high_bias": ":material/trending_flat:"}[found["verdict"]["kind"]]  # fmt: skip
        st.info(found["verdict"]["message"], icon=icon)


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


@st.cache_data(max_entries=8, show_spinner="Scoring the curve's runs…")
def _points(runs: tuple[str, ...], weights_mtimes: tuple[float, ...]) -> dict:
    """Each run scored once per version of its weights (scoring a large training split takes a while)."""
    from engine import learning_curve

    return learning_curve.points([Path(r) for r in runs])
