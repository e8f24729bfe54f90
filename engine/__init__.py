"""LayerLab's engine: pure Python + torch, never Streamlit."""

__version__ = "0.1.0"
