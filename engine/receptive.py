"""Receptive field and resolution of convolution and pooling layers: how many input pixels (or steps) one output
position of a layer sees, and the layer's spatial size. The standard recurrence along the graph: a layer with
kernel k, stride s and dilation d grows the field by (k - 1) * d * jump and multiplies the jump (the input pixels
between two neighbouring outputs) by s; a merge takes the largest field of its inputs; global pooling sees it all.
"""

from engine.compiler import analyse
from engine.registry import get_op
from engine.spec import ModelSpec, data_inputs, migrate

SPATIAL = {"conv1d", "conv2d", "maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d", "conv_transpose2d", "upsample",
           "global_avgpool"}  # fmt: skip


def receptive_fields(spec: dict, meta: dict) -> dict:
    """{"layers": [{"id", "op", "size", "field", "jump"}] for each convolution and pooling layer, in order, and
    "warnings": [plain words]} (empty when the model has no such layer or does not fit its data)."""
    model = ModelSpec.model_validate(migrate(spec))
    infos, error = analyse(spec, data_inputs(meta))
    shapes = {i.id: i.output_shape for i in infos}
    inputs = model.input_ids()
    refs = model.input_refs()
    parts = {
        refs[name]: tuple(p["shape"]) for name, p in _parts(meta, model).items() if name in refs
    }
    field: dict[str, tuple[int, int]] = {ref: (1, 1) for ref in parts}  # (field, jump) per node
    layers, warnings = [], []
    nodes = {n.id: n for n in model.nodes}
    for nid in [i.id for i in infos]:
        node, ins = nodes[nid], inputs[nid]
        fr, jump = max((field.get(i, (1, 1)) for i in ins), default=(1, 1))
        if node.op not in SPATIAL:
            field[nid] = (fr, jump)
            continue
        p = get_op(node.op).params.model_validate(node.params).model_dump()
        if node.op == "global_avgpool":
            fr = _input_extent(parts)
        elif node.op == "upsample":
            jump = max(1, round(jump / float(p.get("scale_factor") or 2)))
        elif node.op == "conv_transpose2d":
            jump = max(1, jump // p["stride"])
            fr += (p["kernel_size"] - 1) * jump
        else:
            k, d = p["kernel_size"], p.get("dilation") or 1
            fr += (k - 1) * d * jump
            jump *= p.get("stride") or k
        field[nid] = (fr, jump)
        size = tuple(shapes[nid][1:]) if nid in shapes else ()
        layers.append({"id": nid, "op": node.op, "size": list(size), "field": fr, "jump": jump})
    extent = _input_extent(parts)
    if layers:
        last = layers[-1]
        if last["op"] != "global_avgpool" and last["field"] < extent:
            warnings.append(
                f"The last spatial layer, '{last['id']}', sees {last['field']} of the input's {extent} pixels per "
                "position: the layers after it never see a whole object at once. Add a convolution or pooling "
                "layer (or a global average pooling) so the field covers the input."
            )
    if error is not None and error.node_id in nodes and nodes[error.node_id].op in SPATIAL:
        warnings.append(f"'{error.node_id}' would shrink the size below 1: {error.message}")
    return {"layers": layers, "warnings": warnings, "input": extent}


def _parts(meta: dict, model: ModelSpec) -> dict:
    from engine.spec import data_parts

    return data_parts(meta, model.first_input)


def _input_extent(parts: dict) -> int:
    """The input's largest spatial size (an image's side, a sequence's length)."""
    return max(
        (max(shape[1:], default=1) for shape in parts.values() if len(shape) >= 2), default=1
    )
