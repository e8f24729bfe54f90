"""Render an op's parameter form from its pydantic JSON schema (titles, bounds, tooltips).

Widgets hold display values (a list shows as "1, 28, 28"); `pending_params` turns the widgets' current
values back into params so the page can apply an edit before it draws anything.
"""

import streamlit as st
from pydantic import BaseModel

from engine.registry import Op


def widget_key(node_id: str, field: str) -> str:
    return f"param.{node_id}.{field}"


def reset_widgets() -> None:
    """Forget form widget values, e.g. after a spec was loaded from a file."""
    for key in [k for k in st.session_state if str(k).startswith("param.")]:
        del st.session_state[key]


def _kind(prop: dict) -> str:
    types = {b.get("type") for b in prop.get("anyOf", [prop])}
    if "array" in types:
        return "list"
    if "enum" in prop:
        return "choice"
    if types == {"integer", "string"}:
        return "int_or_word"
    if "null" in types:
        return "optional_int"
    return next(iter(types - {None}), "string")


def to_widget(prop: dict, value):
    kind = _kind(prop)
    if kind == "list":
        return ", ".join(str(v) for v in value)
    if kind == "int_or_word":
        return str(value)
    return value


def from_widget(prop: dict, value):
    """The param value for a widget value; text that cannot be read is passed on for validation to explain."""
    kind = _kind(prop)
    if kind == "list":
        try:
            return [
                int(v) for v in str(value).replace("[", "").replace("]", "").split(",") if v.strip()
            ]
        except ValueError:
            return value
    if kind == "int_or_word":
        text = str(value).strip()
        return int(text) if text.lstrip("-").isdigit() else text
    return value


def pending_params(op: Op, node_id: str, params: dict) -> dict:
    props = op.params.model_json_schema().get("properties", {})
    out = {}
    for name, prop in props.items():
        key = widget_key(node_id, name)
        out[name] = (
            from_widget(prop, st.session_state[key])
            if key in st.session_state
            else params.get(name)
        )
    return out


def params_form(op: Op, node_id: str, params: dict) -> None:
    """One widget per parameter, labelled and explained by the schema."""
    props = op.params.model_json_schema().get("properties", {})
    for name, prop in props.items():
        key = widget_key(node_id, name)
        label, help_text = prop.get("title", name), prop.get("description")
        if key not in st.session_state:
            st.session_state[key] = to_widget(prop, params.get(name, prop.get("default")))
        kind = _kind(prop)
        if kind == "choice":
            st.selectbox(label, prop["enum"], key=key, help=help_text)
        elif kind == "boolean":
            st.checkbox(label, key=key, help=help_text)
        elif kind in ("integer", "optional_int"):
            bounds = next(
                (b for b in prop.get("anyOf", [prop]) if b.get("type") == "integer"), prop
            )
            st.number_input(
                label,
                min_value=bounds.get("minimum"),
                max_value=bounds.get("maximum"),
                step=1,
                key=key,
                help=help_text,
                placeholder="empty: default",
            )
        elif kind == "number":
            low = prop.get("minimum", prop.get("exclusiveMinimum"))
            high = prop.get("maximum", prop.get("exclusiveMaximum"))
            st.number_input(
                label,
                min_value=float(low) if low is not None else None,
                max_value=float(high) if high is not None else None,
                step=0.01 if (high or 1) <= 1 else 0.1,
                format="%g",
                key=key,
                help=help_text,
            )
        else:
            st.text_input(label, key=key, help=help_text)
    if not props:
        st.caption("This layer has no settings.")


def settings_inputs(model: type[BaseModel], names, saved: dict, prefix: str) -> dict:
    """One widget per setting of a pydantic model (TrainConfig), labelled, explained and bounded by its
    schema: numbers side by side, then switches, each on its own line. Keys are `prefix` + the field's
    name. Returns the values they hold."""
    props = model.model_json_schema()["properties"]
    numbers = [n for n in names if props[n].get("type") != "boolean"]
    out = {}
    for column, name in zip(st.columns(len(numbers)) if numbers else [], numbers, strict=True):
        prop = props[name]
        cast = int if prop.get("type") == "integer" else float
        low, high = prop.get("minimum", prop.get("exclusiveMinimum")), prop.get("maximum")
        out[name] = column.number_input(
            prop.get("title", name),
            min_value=None if low is None else cast(low),
            max_value=None if high is None else cast(high),
            value=cast(saved[name]),
            key=prefix + name,
            help=prop.get("description"),
            **({} if cast is int else {"format": "%g"}),
        )
    for name in (n for n in names if n not in numbers):
        prop = props[name]
        out[name] = st.checkbox(
            prop.get("title", name),
            value=bool(saved[name]),
            key=prefix + name,
            help=prop.get("description"),
        )
    return out
