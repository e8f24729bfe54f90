"""The app's navigation: our pages, the shared sidebar, then the chosen page."""

import gc
from pathlib import Path

import streamlit as st

from engine.scheduler import serve
from ui import sidebar

ICON = Path(__file__).resolve().parent / "favicon.png"
PAGES = {
    "data": "pages/data.py",
    "build": "pages/build.py",
    "train": "pages/train.py",
    "tune": "pages/tune.py",
    "evaluate": "pages/evaluate.py",
    "predict": "pages/predict.py",
    "export": "pages/export.py",
}


def run() -> None:
    # A local icon: a material icon as page_icon makes every page load fetch the favicon from a font CDN (an error
    # offline, and a request out of a local tool).
    st.set_page_config(
        page_title="LayerLab", page_icon=str(ICON), layout="wide", initial_sidebar_state="auto"
    )
    nav = st.navigation(
        [
            st.Page(PAGES["data"], title="Data", icon=":material/table_chart:", default=True),
            st.Page(PAGES["build"], title="Build", icon=":material/account_tree:"),
            st.Page(PAGES["train"], title="Train", icon=":material/monitoring:"),
            st.Page(PAGES["tune"], title="Tune", icon=":material/tune:"),
            st.Page(PAGES["evaluate"], title="Evaluate", icon=":material/fact_check:"),
            st.Page(PAGES["predict"], title="Predict", icon=":material/online_prediction:"),
            st.Page(PAGES["export"], title="Export", icon=":material/download:"),
        ]
    )
    serve()  # the run queue: queued runs start when their device has room (once per server)
    try:
        sidebar.render()
        nav.run()
    except Exception as e:  # noqa: BLE001 - Streamlit's own reruns and stops are BaseExceptions and pass through
        from ui.common import unexpected  # ui.common imports this module

        unexpected(e, f"the {nav.title} page")
    finally:
        _freeze_imports()


def _freeze_imports() -> None:
    """Once, after the first page: move what is alive (torch, pandas, plotly and the rest of the imports, about a
    million objects) out of the garbage collector's sight. A full collection over them takes about 0.6 s on a small
    machine, which would stall page switches and live redraws (.streamlit/config.toml turns off Streamlit's
    collection after every script run for the same reason)."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


_frozen = False


def ensure_routed() -> None:
    """On a freshly started server Streamlit serves the files in pages/ directly (its old multipage mode) until
    app.py has called st.navigation once, so a deep link such as /build as the first request would run a page
    without the router. Then run the router here, in this same script run (a rerun would drop the user's
    click), and stop: the router has drawn the page."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        run()
        st.stop()
