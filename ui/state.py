"""The session-state keys other pages rely on, in one place, mirrored to <workspace>/session.json
so a refresh, a page switch or a second tab loses nothing."""

import streamlit as st

from engine.data.prepare import prepare_builtin
from engine.data.store import load_meta
from engine.spec import starter_spec
from engine.workspace import atomic_write_json, home, read_json

DATASET = "ll.dataset_id"      # id of the prepared dataset in use
SPEC = "ll.spec"               # the model being built (spec dict)
SPEC_IS_STARTER = "ll.spec_is_starter"
SELECTED = "ll.selected_node"  # node id whose form is open on the Build page
RUN = "ll.run_id"              # the run shown on the Train page
TRAIN = "ll.train"             # training settings (train.json's config), shared by Build's linter and Train
NOTICE = "ll.notice"           # a one-shot message for the next page render
INIT = "ll.init"               # imported weights to start the next run from: {"path", "name", "loaded", ...}

DEFAULT_DATASET = "moons"
_PERSISTED = (DATASET, SPEC, SPEC_IS_STARTER, RUN, TRAIN, INIT)


def _session_file():
    return home() / "session.json"


def save() -> None:
    atomic_write_json(_session_file(), {k: st.session_state.get(k) for k in _PERSISTED})


def write_session(dataset_id: str, spec: dict, run_id: str | None = None, train: dict | None = None,
                  path=None) -> None:
    """The session the next browser visit starts from, as if the user had chosen this dataset, model, open run
    and training settings (browser tests and benchmarks prepare a visit this way)."""
    from engine.train.config import TrainConfig

    atomic_write_json(path or _session_file(), {
        DATASET: dataset_id, SPEC: spec, SPEC_IS_STARTER: True, RUN: run_id,
        TRAIN: {**TrainConfig().model_dump(mode="json"), **(train or {})}})


def ensure() -> None:
    """Fill the session from disk, or on a first visit prepare the default dataset and starter model."""
    if st.session_state.get(DATASET) and load_meta(st.session_state[DATASET]):
        return
    saved = read_json(_session_file(), {}) or {}
    if saved.get(DATASET) and load_meta(saved[DATASET]):
        for k in _PERSISTED:
            st.session_state[k] = saved.get(k)
    else:
        ds = prepare_builtin(DEFAULT_DATASET)
        use_dataset(ds.meta)
    if not st.session_state.get(SPEC):
        meta = dataset_meta()
        st.session_state[SPEC] = starter_spec(meta["task"], meta["input_shape"], len(meta["classes"] or []) or None)
        st.session_state[SPEC_IS_STARTER] = True
        save()


def dataset_meta() -> dict:
    return load_meta(st.session_state[DATASET])


def use_dataset(meta: dict) -> None:
    """Make a dataset current. Its starter model replaces the model unless the user edited one that still fits."""
    from engine.compiler import infer_shapes
    from engine.errors import LayerLabError

    st.session_state[DATASET] = meta["id"]
    train = dict(st.session_state.get(TRAIN) or {})
    if train.get("loss") or train.get("target") == "input":
        train.pop("loss", None)
        train.pop("target", None)
        st.session_state[TRAIN] = train
    spec = st.session_state.get(SPEC)
    edited = bool(spec) and not st.session_state.get(SPEC_IS_STARTER)
    classes = len(meta["classes"] or []) or None
    keep = False
    if edited:
        try:
            out = infer_shapes(spec, meta["input_shape"])[-1].output_shape
            keep = out == ((classes,) if meta["task"] == "classification" else (1,))
        except LayerLabError:
            keep = False
    if not keep:
        st.session_state[SPEC] = starter_spec(meta["task"], meta["input_shape"], classes)
        st.session_state[SPEC_IS_STARTER] = True
        st.session_state[SELECTED] = None
        if edited:
            notice(f"Your model did not fit '{meta['name']}', so the Build page now holds its starter model.")
    save()


def spec() -> dict:
    return st.session_state[SPEC]


def set_spec(new_spec: dict) -> None:
    st.session_state[SPEC] = new_spec
    st.session_state[SPEC_IS_STARTER] = False
    save()


def train_settings() -> dict:
    """The training settings in use (defaults until the Train page or a template changes them)."""
    from engine.train.config import TrainConfig

    return {**TrainConfig().model_dump(mode="json"), **(st.session_state.get(TRAIN) or {})}


def set_train(settings: dict) -> None:
    if settings != st.session_state.get(TRAIN):
        st.session_state[TRAIN] = settings
        save()


def set_init(imported: dict | None) -> None:
    st.session_state[INIT] = imported
    save()


def set_run(run_id: str | None) -> None:
    st.session_state[RUN] = run_id
    save()


def notice(text: str) -> None:
    st.session_state[NOTICE] = text


def pop_notice() -> str | None:
    return st.session_state.pop(NOTICE, None)
