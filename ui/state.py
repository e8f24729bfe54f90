"""The session-state keys other pages rely on, in one place, mirrored to <workspace>/sessions/<id>.json.

Each browser tab has its own session: its id rides in the URL (`?s=<id>`), so a refresh comes back to the same
dataset, model, settings and open run, while another tab keeps its own. A tab opened without an id starts from a
copy of the latest work (the most recently saved session) under a new id; one opened with the id of a session
that another tab has open right now also gets a copy, so two tabs never write over each other."""

import re
import secrets
import threading
import time

import streamlit as st

from engine.data.prepare import prepare_builtin
from engine.data.store import load_meta
from engine.gan import compile_gan, is_gan
from engine.spec import data_inputs, migrate
from engine.tasks import task_for, width
from engine.templates import starter_for, starter_train
from engine.workspace import atomic_write_json, home, read_json

DATASET = "ll.dataset_id"  # id of the prepared dataset in use
SPEC = "ll.spec"  # the model being built (spec dict)
SPEC_IS_STARTER = "ll.spec_is_starter"
SELECTED = "ll.selected_node"  # node id whose form is open on the Build page
RUN = "ll.run_id"  # the run shown on the Train page
TRAIN = "ll.train"  # training settings (train.json's config), shared by Build's linter and Train
NOTICE = "ll.notice"  # a one-shot message for the next page render
INIT = "ll.init"  # imported weights to start the next run from: {"path", "name", "loaded", ...}
GAN_PART = "ll.gan_part"  # the GAN network the Build page edits
UNDO, REDO = "ll.undo", "ll.redo"  # this tab's earlier (later) models, for undo and redo; not saved
HISTORY = 100

SESSION = "ll.session"  # this tab's session id, also the URL's ?s=
PARAM = "s"

DEFAULT_DATASET = "moons"
_PERSISTED = (DATASET, SPEC, SPEC_IS_STARTER, RUN, TRAIN, INIT)
_ID = re.compile(r"[0-9a-f]{8,32}")
_OPEN: dict[
    str, str
] = {}  # session id -> the Streamlit session (browser tab) that has it open, server-wide
_OPEN_LOCK = threading.Lock()
RELOAD_GRACE_S = 1.5


def _sessions_dir():
    return home() / "sessions"


def _session_file(sid: str):
    return _sessions_dir() / f"{sid}.json"


def _latest() -> dict:
    """The most recently saved session of any tab: where a new tab starts."""
    files = (
        sorted(_sessions_dir().glob("*.json"), key=lambda p: p.stat().st_mtime)
        if _sessions_dir().exists()
        else []
    )
    return (read_json(files[-1], {}) or {}) if files else {}


def save() -> None:
    atomic_write_json(_session_file(session_id()), {k: st.session_state.get(k) for k in _PERSISTED})


def write_session(
    dataset_id: str, spec: dict, run_id: str | None = None, train: dict | None = None
) -> str:
    """A saved session as if a user had chosen this dataset, model, open run and training settings; the next tab
    opened without an id starts from it (browser tests and benchmarks prepare a visit this way). Returns its id."""
    from engine.train.config import TrainConfig

    sid = secrets.token_hex(6)
    atomic_write_json(
        _session_file(sid),
        {
            DATASET: dataset_id,
            SPEC: spec,
            SPEC_IS_STARTER: True,
            RUN: run_id,
            TRAIN: {**TrainConfig().model_dump(mode="json"), **(train or {})},
        },
    )
    return sid


def _tab() -> str:
    """The Streamlit session (one per browser tab and page load) running this script."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx else ""


def _tab_alive(tab: str) -> bool:
    from streamlit import runtime

    try:
        return runtime.exists() and runtime.get_instance().is_active_session(tab)
    except Exception:  # noqa: BLE001 - no runtime (AppTest): nothing else can hold it
        return False


def _claim(asked: str | None) -> tuple[str, dict]:
    """This tab's session id and what it starts from: the asked session if no other open tab holds it, else a copy
    of it (or of the latest work) under a new id. A reloaded tab's old connection may still count as open for a
    moment: the asked session is waited for up to RELOAD_GRACE_S before a copy is made."""
    tab = _tab()
    if asked and _ID.fullmatch(asked) and _session_file(asked).exists():
        deadline = time.monotonic() + RELOAD_GRACE_S
        while True:
            with _OPEN_LOCK:
                holder = _OPEN.get(asked)
                if holder in (None, tab) or not _tab_alive(holder):
                    _OPEN[asked] = tab
                    return asked, read_json(_session_file(asked), {}) or {}
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        saved = read_json(_session_file(asked), {}) or {}
    else:
        saved = _latest()
    with _OPEN_LOCK:
        sid = secrets.token_hex(6)
        _OPEN[sid] = tab
    return sid, saved


def session_id() -> str:
    return st.session_state[SESSION]


def ensure() -> None:
    """Bind this tab to its session (from the URL, or a new one from the latest work), then make sure it has a
    dataset and a model: on a first visit, the default dataset and its starter model."""
    if not st.session_state.get(SESSION):
        sid, saved = _claim(st.query_params.get(PARAM))
        st.session_state[SESSION] = sid
        if saved.get(DATASET) and load_meta(saved[DATASET]):
            for k in _PERSISTED:
                st.session_state[k] = saved.get(k)
            if isinstance(saved.get(SPEC), dict) and not is_gan(
                saved[SPEC]
            ):  # a model saved by an older LayerLab: today's spec format
                st.session_state[SPEC] = migrate(saved[SPEC])
    if (
        st.query_params.get(PARAM) != session_id()
    ):  # page switches may drop it from the URL: put it back
        st.query_params[PARAM] = session_id()
    if st.session_state.get(DATASET) and load_meta(st.session_state[DATASET]):
        return
    ds = prepare_builtin(DEFAULT_DATASET)
    use_dataset(ds.meta)
    if not st.session_state.get(SPEC):
        meta = dataset_meta()
        st.session_state[SPEC] = starter_for(meta)
        st.session_state[SPEC_IS_STARTER] = True
        save()


def dataset_meta() -> dict:
    return load_meta(st.session_state[DATASET])


def use_dataset(meta: dict) -> None:
    """Make a dataset current. Its starter model replaces the model unless the user edited one that still fits."""
    from engine.compiler import infer_shapes
    from engine.errors import LayerLabError

    if (
        st.session_state.get(DATASET) != meta["id"]
    ):  # the open run belongs to the old data: not shown as current
        st.session_state[RUN] = None
    st.session_state[DATASET] = meta["id"]
    train = dict(st.session_state.get(TRAIN) or {})
    if train.get("loss") or train.get("target") in ("input", "vae"):
        train.pop("loss", None)
        train.pop("target", None)
        st.session_state[TRAIN] = train
    spec = st.session_state.get(SPEC)
    edited = bool(spec) and not st.session_state.get(SPEC_IS_STARTER)
    classes = width(meta)
    keep = False
    if edited:
        try:
            if is_gan(spec):  # a GAN fits data whose samples its generator makes
                compile_gan(spec, meta)
                keep = True
            else:
                out = infer_shapes(spec, data_inputs(meta))[-1].output_shape
                task = task_for(meta["task"])
                keep = out == task.output_shape(task.default_loss, classes, meta["input_shape"])
        except LayerLabError:
            keep = False
    if not keep:  # the proposed model, with the epochs and learning rate it is meant to train with
        st.session_state[SPEC] = starter_for(meta)
        st.session_state[SPEC_IS_STARTER] = True
        st.session_state[TRAIN] = {**(st.session_state.get(TRAIN) or {}), **starter_train(meta)}
        st.session_state[SELECTED] = None
        if edited:
            notice(
                f"Your model did not fit '{meta['name']}', so the Build page now holds its starter model."
            )
    save()


def whole_spec() -> dict:
    """The model as it trains: one spec, or a GAN's (its generator and discriminator)."""
    return st.session_state[SPEC]


def gan_part() -> str | None:
    """Which of a GAN's two networks the Build page edits ("generator" or "discriminator"); None for other models."""
    return st.session_state.get(GAN_PART, "generator") if is_gan(whole_spec()) else None


def spec() -> dict:
    """The model being edited: the spec, or the GAN's network chosen on the Build page."""
    part = gan_part()
    return whole_spec()[part] if part else whole_spec()


def edited_meta(meta: dict) -> dict:
    """The dataset's meta as the edited model sees its input: a GAN generator reads noise, not the data."""
    if gan_part() != "generator":
        return meta
    return {**meta, "input_shape": [whole_spec()["noise"]], "inputs": None, "vocab_size": None}


def set_spec(new_spec: dict, whole: bool = False) -> None:
    """Replace the edited model: a GAN's chosen network, or with `whole` (a template, a reset, a loaded file) the
    whole model."""
    part = gan_part()
    if part and not whole:
        new_spec = {**whole_spec(), part: new_spec}
    before = st.session_state.get(SPEC)
    if before is not None and before != new_spec:
        st.session_state[UNDO] = [*st.session_state.get(UNDO, [])[-(HISTORY - 1) :], before]
        st.session_state[REDO] = []
    st.session_state[SPEC] = new_spec
    st.session_state[SPEC_IS_STARTER] = False
    save()


def _step(back: str, forth: str) -> None:
    history = st.session_state.get(back)
    if history:
        st.session_state[back] = history[:-1]
        st.session_state[forth] = [*st.session_state.get(forth, []), st.session_state[SPEC]]
        st.session_state[SPEC] = history[-1]
        st.session_state[SPEC_IS_STARTER] = False
        save()


def undo() -> None:
    """Back to the model before the last edit (this tab's history of edits, not saved with the session)."""
    _step(UNDO, REDO)


def redo() -> None:
    _step(REDO, UNDO)


def can_undo() -> bool:
    return bool(st.session_state.get(UNDO))


def can_redo() -> bool:
    return bool(st.session_state.get(REDO))


def set_gan_part(part: str) -> None:
    st.session_state[GAN_PART] = part


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
