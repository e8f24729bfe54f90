"""Render an op's parameter form from its pydantic JSON schema (titles, bounds, tooltips)."""

import streamlit as st

from engine.registry import Op


def widget_key(node_id: str, field: str) -> str:
    return f"param.{node_id}.{field}"


def reset_widgets() -> None:
    """Forget form widget values, e.g. after a spec was loaded from a file."""
    for key in [k for k in st.session_state if str(k).startswith("param.")]:
        del st.session_state[key]


def params_form(op: Op, node_id: str, params: dict) -> dict:
    """One widget per parameter; returns the values now shown (validated by the spec afterwards)."""
    schema = op.params.model_json_schema()
    values = {}
    for name, prop in schema.get("properties", {}).items():
        key = widget_key(node_id, name)
        label = prop.get("title", name)
        help_text = prop.get("description")
        current = params.get(name, prop.get("default"))
        if key not in st.session_state:
            st.session_state[key] = current
        if "enum" in prop:
            values[name] = st.selectbox(label, prop["enum"], key=key, help=help_text)
        elif prop.get("type") == "boolean":
            values[name] = st.checkbox(label, key=key, help=help_text)
        elif prop.get("type") == "integer":
            values[name] = int(st.number_input(label, min_value=prop.get("minimum", prop.get("exclusiveMinimum")),
                                               max_value=prop.get("maximum"), step=1, key=key, help=help_text))
        elif prop.get("type") == "number":
            low = prop.get("minimum", prop.get("exclusiveMinimum"))
            high = prop.get("maximum", prop.get("exclusiveMaximum"))
            values[name] = float(st.number_input(label, min_value=float(low) if low is not None else None,
                                                 max_value=float(high) if high is not None else None,
                                                 step=0.01 if (high or 1) <= 1 else 0.1, format="%g", key=key,
                                                 help=help_text))
        else:
            values[name] = st.text_input(label, key=key, help=help_text)
    if not schema.get("properties"):
        st.caption("This layer has no settings.")
    return values
