"""LayerLab: the router and the shared sidebar. Nothing else lives here."""

import streamlit as st

from ui import sidebar

st.set_page_config(page_title="LayerLab", page_icon=":material/hub:", layout="wide")
nav = st.navigation([
    st.Page("pages/data.py", title="Data", icon=":material/table_chart:", default=True),
    st.Page("pages/build.py", title="Build", icon=":material/account_tree:"),
    st.Page("pages/train.py", title="Train", icon=":material/monitoring:"),
    st.Page("pages/export.py", title="Export", icon=":material/download:"),
])
sidebar.render()
nav.run()
