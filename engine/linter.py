"""Findings about a model before it trains, each with a one-click fix.

`lint(spec, dataset_meta, train)` returns Findings; `finding.fix(spec, train)` returns the fixed
(spec, train) pair. The spec may be one that does not compile yet (the missing-flatten rule fixes that).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

from engine.compiler import analyse
from engine.errors import SpecError
from engine.spec import (
    ModelSpec,
    data_inputs,
    data_parts,
    insert_node,
    migrate,
    remove_node,
    set_inputs,
    set_params,
)
from engine.tasks import TASKS, task_for, usual_loss, variational, width
from engine.templates import starter_for
from engine.train.options import LOSSES

Fix = Callable[[dict, dict], tuple[dict, dict]]


@dataclass
class Finding:
    rule: str
    node_id: str | None
    message: str
    fix_label: str
    fix: Fix


def _remove(node_id) -> Fix:
    return lambda spec, train: (remove_node(spec, node_id), train)


def _set_loss(loss) -> Fix:
    return lambda spec, train: (spec, {**train, "loss": loss})


def _output_width(spec, linear_id, width) -> Fix:
    def fix(spec, train):
        node = next(n for n in spec["nodes"] if n["id"] == linear_id)
        return set_params(spec, linear_id, {**node["params"], "out_features": width}), train

    return fix


def _set_param(node_id, key, value) -> Fix:
    def fix(spec, train):
        node = next(n for n in spec["nodes"] if n["id"] == node_id)
        return set_params(spec, node_id, {**node["params"], key: value}), train

    return fix


def _embedding_size(node_id, vocab) -> Fix:
    def fix(spec, train):
        node = next(n for n in spec["nodes"] if n["id"] == node_id)
        return set_params(spec, node_id, {**node["params"], "num_embeddings": vocab}), train

    return fix


def _insert_before(node_id, explicit_inputs, op: str, params: dict | None = None) -> Fix:
    """Put a new `op` node between `node_id` and its input."""

    def fix(spec, train):
        index = [n["id"] for n in spec["nodes"]].index(node_id)
        spec, new = insert_node(spec, op, index)
        if params:
            spec = set_params(
                spec, new, {**next(n for n in spec["nodes"] if n["id"] == new)["params"], **params}
            )
        if explicit_inputs:
            spec = set_inputs(spec, new, explicit_inputs)
            spec = set_inputs(spec, node_id, [new])
        return spec, train

    return fix


def _embed_tokens(node_id, explicit_inputs, vocab) -> Fix:
    """Embedding (sized to the vocabulary) then a mean Sequence pool, between `node_id` and its token input."""

    def fix(spec, train):
        index = [n["id"] for n in spec["nodes"]].index(node_id)
        spec, embed = insert_node(spec, "embedding", index, {"vocab_size": vocab})
        spec, pool = insert_node(spec, "seq_pool", index + 1)
        spec = set_params(spec, pool, {"mode": "masked_mean"})
        if explicit_inputs:
            spec = set_inputs(spec, embed, explicit_inputs)
            spec = set_inputs(spec, pool, [embed])
            spec = set_inputs(spec, node_id, [pool])
        return spec, train

    return fix


def _last_linear(spec, inputs, out_id):
    """The Dense layer that sets the output width: the output itself, or the nearest one before it."""
    by_id = {n["id"]: n for n in spec["nodes"]}
    node = out_id
    while node in by_id and by_id[node]["op"] != "linear":
        ins = inputs[node]
        if len(ins) != 1 or by_id[node]["op"] in ("reshape", "flatten"):
            return None
        node = ins[0]
    return node if node in by_id else None


def lint(spec: dict, meta: dict, train: dict, analysed: tuple | None = None) -> list[Finding]:
    """`analysed`: the (infos, error) of `analyse(spec, ...)` when the caller already has them."""
    try:
        infos, error = analysed if analysed is not None else analyse(spec, data_inputs(meta))
    except SpecError:
        return []
    model = ModelSpec.model_validate(migrate(spec))
    nodes = {n.id: n for n in model.nodes}
    inputs = model.input_ids()
    parts = data_parts(meta, model.first_input)
    refs = model.input_refs()
    shapes = {refs[n]: tuple(p["shape"]) for n, p in parts.items() if n in refs}
    shapes.update({i.id: i.output_shape for i in infos})
    task = meta["task"]
    target = "vae" if variational(spec, meta) else train.get("target", "label")
    kind = task_for(task, target)
    loss = train.get("loss") or usual_loss(kind, meta["input_shape"])
    classes = width(meta)
    out_id = model.output_id()
    out = nodes[out_id]
    findings: list[Finding] = []

    if (
        error is not None
        and error.node_id in nodes
        and nodes[error.node_id].op == "linear"
        and inputs[error.node_id]
    ):
        src = inputs[error.node_id][0]
        if len(shapes.get(src, ())) >= 3:
            findings.append(
                Finding(
                    "missing_flatten",
                    error.node_id,
                    f"Dense layer '{error.node_id}' gets {shapes[src]} from '{src}', an image-shaped output: "
                    "Dense needs a flat vector. Add a Flatten between them.",
                    "Insert Flatten",
                    _insert_before(error.node_id, nodes[error.node_id].inputs, "flatten"),
                )
            )

    if out.op == "activation" and out.params["kind"] == "softmax" and loss == "cross_entropy":
        findings.append(
            Finding(
                "softmax_before_cross_entropy",
                out_id,
                f"'{out_id}' applies softmax, but cross-entropy applies softmax itself. LayerLab trains on the logits "
                "anyway; remove the layer for a model whose outputs are logits everywhere.",
                "Remove softmax",
                _remove(out_id),
            )
        )
    squashed = out.op == "activation" and out.params["kind"] == "sigmoid"
    if kind.name == "vae" and len(meta["input_shape"]) == 3 and not squashed:
        findings.append(
            Finding(
                "vae_images_without_sigmoid",
                out_id,
                f"This VAE rebuilds images, whose pixels lie between 0 and 1, but it ends in '{out_id}' ({out.op}), "
                "so its reconstructions and samples are not pixels. End it in a sigmoid: with binary cross-entropy, "
                "training still reads the logits before it.",
                "Add a sigmoid",
                _append_sigmoid,
            )
        )
    # A reconstruction's sigmoid makes its pixels (the loss reads the logits before it): a classifier's is in the way.
    if squashed and loss == "bce_with_logits" and kind.outputs != "input":
        findings.append(
            Finding(
                "sigmoid_before_bce",
                out_id,
                f"'{out_id}' applies sigmoid, but BCE-with-logits applies it itself. Remove it.",
                "Remove sigmoid",
                _remove(out_id),
            )
        )
    if out.op in ("dropout", "dropout2d"):
        findings.append(
            Finding(
                "dropout_after_output",
                out_id,
                f"The model ends in dropout '{out_id}': it would randomly zero the predictions while training. Dropout "
                "belongs between hidden layers.",
                "Remove dropout",
                _remove(out_id),
            )
        )
    after_head = _after_head(model, inputs, target)
    for node in model.nodes:
        ins = inputs[node.id]
        if (
            node.op == "activation"
            and len(ins) == 1
            and ins[0] in nodes
            and nodes[ins[0]].op == "activation"
        ):
            findings.append(
                Finding(
                    "double_activation",
                    node.id,
                    f"'{node.id}' ({node.params['kind']}) comes right after another activation '{ins[0]}' "
                    f"({nodes[ins[0]].params['kind']}): two non-linearities in a row add nothing but cost.",
                    f"Remove '{node.id}'",
                    _remove(node.id),
                )
            )

        if (
            node.op == "linear"
            and len(ins) == 1
            and ins[0] in nodes
            and nodes[ins[0]].op == "linear"
            and node.id not in after_head
        ):
            findings.append(
                Finding(
                    "dense_without_activation",
                    node.id,
                    f"Dense '{node.id}' comes right after Dense '{ins[0]}' with no activation between them: "
                    "two linear maps in a row are just one linear map, so the extra layer adds parameters but "
                    "no power. Put a ReLU between them.",
                    "Insert ReLU",
                    _insert_before(node.id, node.inputs, "activation", {"kind": "relu"}),
                )
            )
    for node_id in after_head:
        if nodes[node_id].op not in (
            "dropout",
            "dropout2d",
        ):  # dropout at the end has its own finding
            findings.append(
                Finding(
                    "layer_after_output",
                    node_id,
                    f"'{node_id}' ({nodes[node_id].op}) comes after the output layer "
                    f"'{_head(model, inputs)}': it changes the predictions themselves (a ReLU there "
                    "zeroes every negative score; another Dense hides the output width). Remove it, or move "
                    "it before the output layer.",
                    f"Remove '{node_id}'",
                    _remove(node_id),
                )
            )

    vocab = meta.get("vocab_size")
    token_refs = {refs[n] for n, p in parts.items() if p.get("tokens") and n in refs}
    for node in model.nodes:
        if node.op in ("linear", "conv1d") and token_refs & set(inputs[node.id]):
            findings.append(
                Finding(
                    "tokens_without_embedding",
                    node.id,
                    f"'{node.id}' ({node.op}) reads the token ids as if they were numbers (id 57 is not 'more' than id "
                    "3): it cannot learn from text that way. Put an Embedding (a learned vector per token) and a "
                    "Sequence pool (the mean over the tokens) before it.",
                    "Insert Embedding and pooling",
                    _embed_tokens(node.id, node.inputs, vocab),
                )
            )
    read = {i for ins in inputs.values() for i in ins}
    unread = [n for n in parts if n not in refs or refs[n] not in read]
    if meta.get("inputs") and unread:
        findings.append(
            Finding(
                "input_not_read",
                None,
                f"The data has the input(s) {', '.join(unread)} (of {', '.join(parts)}), but no layer reads "
                f"them, so the model learns without them. Wire a layer to input:{unread[0]}, or use the "
                "proposed two-input model.",
                "Use the proposed two-input model",
                lambda spec, train: (starter_for(meta), train),
            )
        )
    for node in model.nodes:
        if node.op == "embedding" and vocab and node.params["num_embeddings"] < vocab:
            findings.append(
                Finding(
                    "embedding_smaller_than_vocabulary",
                    node.id,
                    f"Embedding '{node.id}' has room for {node.params['num_embeddings']} token ids but the dataset's "
                    f"vocabulary has {vocab}: larger ids would fail. Set its vocabulary size to {vocab}.",
                    f"Set vocabulary to {vocab}",
                    _embedding_size(node.id, vocab),
                )
            )

    if loss not in kind.losses(classes) and LOSSES[loss].task != kind.losses_for:
        usual = TASKS[task].default_loss if target == "label" else kind.default_loss
        findings.append(
            Finding(
                f"{LOSSES[loss].task}_loss_on_{'classes' if kind.losses_for == 'classification' else 'numbers'}",
                None,
                f"The loss is {LOSSES[loss].title}, a {LOSSES[loss].task} loss, but the target is "
                f"{'a class label' if kind.losses_for == 'classification' else 'a number'}. Use "
                f"{LOSSES[usual].title.lower()}.",
                f"Use {LOSSES[usual].title.lower()}",
                _set_loss(usual),
            )
        )

    if error is None and out_id in shapes:
        want = (
            kind.output_shape(loss, classes, meta["input_shape"])
            if LOSSES[loss].task == kind.losses_for
            else None
        )
        got = shapes[out_id]
        linear = _last_linear(spec, inputs, out_id)
        if want and got != want and linear and len(want) == 1 and len(got) == 1:
            what = (
                "one output per step of the forecast's horizon"
                if kind.outputs == "steps"
                else "one output per class"
                if want == (classes,) and LOSSES[loss].targets == "classes"
                else "one output"
            )
            findings.append(
                Finding(
                    "output_width",
                    linear,
                    f"The model outputs {got[0]} values but needs {want[0]} ({what}). Set the units of '{linear}' to "
                    f"{want[0]}.",
                    f"Set units to {want[0]}",
                    _output_width(spec, linear, want[0]),
                )
            )
        elif want and got != want and math.prod(got) == math.prod(want):
            findings.append(
                Finding(
                    "output_shape",
                    out_id,
                    f"The model outputs {got} but the target has shape {want}: add a Reshape "
                    f"to {list(want)} at the end.",
                    "Add Reshape",
                    lambda s, t: (_append_reshape(s, want), t),
                )
            )
    if kind.outputs == "tokens":
        findings += _sees_ahead(model.nodes)
    return findings


LOOKS_AHEAD = {  # a language model's layers that can read later positions, and the setting that stops it
    "attention": ("causal", True),
    "transformer_encoder": ("causal", True),
    "rnn": ("bidirectional", False),
    "lstm": ("bidirectional", False),
    "gru": ("bidirectional", False),
}


def _sees_ahead(nodes) -> list[Finding]:
    """A layer of a language model that reads the positions after the one it predicts for: without a causal mask
    (attention) or reading backwards too (a bidirectional RNN), it learns to copy the next token from its input,
    and scores far better in training than it can write."""
    findings = []
    for n in nodes:
        if n.op in LOOKS_AHEAD and n.params.get(LOOKS_AHEAD[n.op][0]) != LOOKS_AHEAD[n.op][1]:
            key, value = LOOKS_AHEAD[n.op]
            what = (
                "has no causal mask" if key == "causal" else "also reads backwards (bidirectional)"
            )
            findings.append(
                Finding(
                    "sees_ahead",
                    n.id,
                    f"'{n.id}' {what}, so each position sees the token it is meant to predict: the model learns to "
                    "copy it and cannot write text. A language model must only look back.",
                    "Make it causal" if key == "causal" else "Read forwards only",
                    _set_param(n.id, key, value),
                )
            )
    return findings


SQUASH = {
    "softmax",
    "sigmoid",
    "log_softmax",
}  # may follow the output layer: they turn scores into probabilities


def _head(model: ModelSpec, inputs: dict) -> str | None:
    """The output layer: the last Dense on the single-input chain that ends at the model's output."""
    by_id = {n.id: n for n in model.nodes}
    node = model.output_id()
    while node in by_id and by_id[node].op != "linear":
        if len(inputs[node]) != 1:
            return None
        node = inputs[node][0]
    return node if node in by_id else None


def _after_head(model: ModelSpec, inputs: dict, target: str) -> list[str]:
    """Nodes between the output layer and the model's output, other than a final softmax/sigmoid (predicting a
    label; an autoencoder may end in anything)."""
    head = _head(model, inputs)
    if head is None or target != "label":
        return []
    by_id = {n.id: n for n in model.nodes}
    after, node = [], model.output_id()
    while node != head:
        n = by_id[node]
        if not (
            n.op == "activation" and n.params.get("kind") in SQUASH and node == model.output_id()
        ):
            after.append(node)
        node = inputs[node][0]
    return after[::-1]


def lint_gan_part(part: str, spec: dict, meta: dict) -> list[Finding]:
    """A GAN network's mistakes, with fixes: a discriminator that ends in a sigmoid (the loss takes logits), a
    generator of images whose last layer is not a sigmoid (pixels lie between 0 and 1)."""
    if not spec.get("nodes"):
        return []
    last = spec["nodes"][-1]
    squashed = last["op"] == "activation" and last["params"].get("kind") == "sigmoid"
    if part == "discriminator" and squashed:
        return [
            Finding(
                "discriminator_sigmoid",
                last["id"],
                f"The discriminator ends in a sigmoid ('{last['id']}'), but the GAN's loss is binary cross-entropy "
                "on logits, which applies the sigmoid itself. Remove it.",
                "Remove sigmoid",
                _remove(last["id"]),
            )
        ]
    if part == "generator" and len(meta["input_shape"]) == 3 and not squashed:
        return [
            Finding(
                "generator_images_without_sigmoid",
                last["id"],
                f"The generator makes images, whose pixels lie between 0 and 1, but it ends in '{last['id']}' "
                f"({last['op']}). End it in a sigmoid.",
                "Add a sigmoid",
                _append_sigmoid,
            )
        ]
    return []


def _append_sigmoid(spec: dict, train: dict) -> tuple[dict, dict]:
    spec, node_id = insert_node(spec, "activation")
    return set_params(spec, node_id, {"kind": "sigmoid"}), train


def _append_reshape(spec: dict, shape) -> dict:
    spec, node_id = insert_node(spec, "reshape")
    return set_params(spec, node_id, {"shape": list(shape)})
