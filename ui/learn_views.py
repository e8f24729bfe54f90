"""The will-it-learn check on the Train page: run by itself (in a process of its own) whenever the model or its
learning settings change while nothing trains, or with its button; each failing item with its cause and fix."""

import hashlib
import json

import streamlit as st

from engine import jobs
from engine.train.learncheck import OVERFIT_STEPS
from ui import state
from ui.progress import job_view

CHECK = "train.check"  # {"key": what was checked, "folder": its job}
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
    """`refused`: why the check cannot run (the model does not fit the data); `busy`: a run is training, so the
    check waits for its button instead of starting by itself."""
    key = _key(spec, config, dataset_dir)
    known = st.session_state.get(CHECK) or {}
    pressed = st.button("Will it learn?", icon=":material/health_and_safety:", key="train.will_learn",
                        disabled=refused is not None, width="stretch",
                        help=refused or "Checks in a few seconds, before a long run: the loss at the start, a gradient "
                        "for every layer, samples kept apart in a batch, the scales through the layers, and that "
                        f"a fresh copy of the model can overfit one small batch ({OVERFIT_STEPS} steps at most). "
                        "It also runs by itself when the model or these settings change.")  # fmt: skip
    if refused is None and (pressed or (known.get("key") != key and not busy)):
        folder = jobs.start(
            "will-learn", {"spec": spec, "train": config, "dataset_dir": str(dataset_dir)}
        )
        st.session_state[CHECK] = known = {"key": key, "folder": str(folder)}
        st.session_state[JOB] = str(folder)
    if not known:
        return
    result = job_view(JOB, "Checking")
    if result is None:
        return
    stale = known.get("key") != key
    items = result["items"]
    failed = [i for i in items if not i["passed"]]
    when = " (for the model and settings before your last change)" if stale else ""
    if not failed:
        with st.expander(
            f":green[:material/check_circle:] Will it learn? All {len(items)} checks passed{when}"
        ):
            for item in items:
                st.markdown(f"- **{item['title']}**: {item['message']}")
        return
    st.markdown(
        f"**Will it learn?** {len(items) - len(failed)} of {len(items)} checks passed{when}."
    )
    for i, item in enumerate(failed):
        st.warning(f"**{item['title']}**: {item['message']}", icon=":material/report:")
        fix = item["fix"]
        if fix and not stale:
            st.button(fix["label"], key=f"train.check_fix.{item['id']}", on_click=_apply, args=(fix,),
                      type="primary" if i == 0 else "secondary")  # fmt: skip
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
