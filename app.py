"""LayerLab: the router and the shared sidebar (ui/router.py). Nothing else lives here."""

import sys

import streamlit as st

# A freshly started server imports torch on its first page (several seconds): say so instead of a blank page.
loading = st.empty()
if "ui.router" not in sys.modules:
    loading.info(
        "Loading LayerLab… the first page of a freshly started app takes a few seconds.",
        icon=":material/hourglass_top:",
    )

from ui import router  # noqa: E402 - after the loading line, on purpose

loading.empty()
router.run()
