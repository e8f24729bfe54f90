"""The sidebar every page shares: where training runs and where work is kept."""

import streamlit as st
import torch

from engine.workspace import home


@st.cache_resource
def _device_line() -> str:
    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)} (CUDA)"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "GPU: Apple (MPS)"
    return "CPU (no GPU found)"


def render() -> None:
    with st.sidebar:
        st.markdown("### LayerLab")
        st.caption("Data → Build → Train → Evaluate → Predict → Export")
        st.markdown(f":material/memory: **Trains on** {_device_line()}")
        st.caption(f"Workspace: `{home()}`")
