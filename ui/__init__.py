"""Streamlit-only helpers for the pages. Never imported by engine/."""
