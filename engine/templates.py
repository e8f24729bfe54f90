"""One-click starting points: the architectures every deep-learning guide teaches.

Each template builds a spec that fits a dataset's meta (input shape, classes, vocabulary) and names the
built-in dataset it suits best; `train` holds the settings it is meant to train with.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.spec import FIRST_INPUT, SPEC_VERSION, input_ref, parse_spec, starter_spec, token_vocab


@dataclass(frozen=True)
class Template:
    name: str
    title: str
    description: str
    dataset: str  # the built-in dataset it is shown with
    kind: str  # "any", "image", "text", "mixed" or "series": what input it needs
    nodes: Callable[[dict], list[dict]]
    train: dict = field(default_factory=dict)
    inputs: Callable[[dict], dict] | None = None  # the spec's inputs, for a model with several


def _n(node_id, op, inputs=None, **params):
    node = {"id": node_id, "op": op, "params": params}
    if inputs:
        node["inputs"] = inputs
    return node


def _classes(meta) -> int:
    return len(meta.get("classes") or []) or 1


def _flat(meta) -> list[dict]:
    return [_n("flatten", "flatten")] if len(meta["input_shape"]) > 1 else []


def keras_mlp(meta):
    return _flat(meta) + [
        _n("dense_1", "linear", out_features=64),
        _n("relu_1", "activation", kind="relu"),
        _n("dense_2", "linear", out_features=32),
        _n("relu_2", "activation", kind="relu"),
        _n("dense_3", "linear", out_features=_classes(meta)),
        _n("softmax", "activation", kind="softmax"),
    ]


def lenet(meta):
    return [
        _n("conv_1", "conv2d", out_channels=6, kernel_size=3),
        _n("relu_1", "activation", kind="relu"),
        _n("pool_1", "maxpool2d", kernel_size=2),
        _n("conv_2", "conv2d", out_channels=16, kernel_size=3),
        _n("relu_2", "activation", kind="relu"),
        _n("pool_2", "maxpool2d", kernel_size=2),
        _n("flatten", "flatten"),
        _n("dense_1", "linear", out_features=64),
        _n("relu_3", "activation", kind="relu"),
        _n("output", "linear", out_features=_classes(meta)),
    ]


def cifar_cnn(meta):
    return [
        _n("conv_1", "conv2d", out_channels=16),
        _n("relu_1", "activation", kind="relu"),
        _n("conv_2", "conv2d", out_channels=16),
        _n("relu_2", "activation", kind="relu"),
        _n("pool_1", "maxpool2d"),
        _n("conv_3", "conv2d", out_channels=32),
        _n("relu_3", "activation", kind="relu"),
        _n("conv_4", "conv2d", out_channels=32),
        _n("relu_4", "activation", kind="relu"),
        _n("pool_2", "maxpool2d"),
        _n("drop_1", "dropout2d", p=0.1),
        _n("flatten", "flatten"),
        _n("dense_1", "linear", out_features=64),
        _n("relu_5", "activation", kind="relu"),
        _n("drop_2", "dropout", p=0.3),
        _n("output", "linear", out_features=_classes(meta)),
    ]


def resnet(meta):
    return [
        _n("stem", "conv2d", out_channels=16, bias=False),
        _n("bn_0", "batchnorm"),
        _n("relu_0", "activation", kind="relu"),
        _n("conv_a", "conv2d", out_channels=16, bias=False),
        _n("bn_a", "batchnorm"),
        _n("relu_a", "activation", kind="relu"),
        _n("conv_b", "conv2d", out_channels=16, bias=False),
        _n("bn_b", "batchnorm"),
        _n("skip", "add", inputs=["relu_0", "bn_b"]),
        _n("relu_b", "activation", kind="relu"),
        _n("pool", "global_avgpool"),
        _n("output", "linear", out_features=_classes(meta)),
    ]


def lstm_text(meta):
    return [
        _n("embed", "embedding", num_embeddings=meta.get("vocab_size") or 10000, embedding_dim=32),
        _n("lstm", "lstm", hidden_size=64),
        _n("output", "linear", out_features=_classes(meta)),
    ]


def transformer_text(meta):
    return [
        _n("embed", "embedding", num_embeddings=meta.get("vocab_size") or 10000, embedding_dim=32),
        _n("positions", "positional_encoding"),
        _n(
            "encoder",
            "transformer_encoder",
            num_heads=4,
            dim_feedforward=64,
            num_layers=2,
            dropout=0.1,
        ),
        _n("pool", "seq_pool", mode="mean"),
        _n("output", "linear", out_features=_classes(meta)),
    ]


def small_cnn(meta):
    """Two conv, batch norm, relu and pool blocks, global average pooling, a Dense head."""
    return [
        _n("conv_1", "conv2d", out_channels=32, bias=False),
        _n("bn_1", "batchnorm"),
        _n("relu_1", "activation", kind="relu"),
        _n("pool_1", "maxpool2d"),
        _n("conv_2", "conv2d", out_channels=64, bias=False),
        _n("bn_2", "batchnorm"),
        _n("relu_2", "activation", kind="relu"),
        _n("pool_2", "maxpool2d"),
        _n("gap", "global_avgpool"),
        _n("output", "linear", out_features=_classes(meta)),
    ]


def text_part(meta) -> str:
    """The name of a two-part dataset's token input (its text column's)."""
    return next(name for name, part in meta["inputs"].items() if part.get("tokens"))


def two_inputs(meta) -> dict:
    return {name: {"tokens": bool(part.get("tokens"))} for name, part in meta["inputs"].items()}


def text_and_numbers(meta):
    """A text branch (Embedding, masked mean) and a numbers branch (Dense) joined, then the head."""
    first = next(iter(meta["inputs"]))
    text = input_ref(text_part(meta), first)
    numbers = input_ref(
        next(n for n in meta["inputs"] if not meta["inputs"][n].get("tokens")), first
    )
    return [
        _n(
            "embed",
            "embedding",
            inputs=[text],
            num_embeddings=meta.get("vocab_size") or 10000,
            embedding_dim=32,
        ),
        _n("text_pool", "seq_pool", mode="masked_mean"),
        _n("numbers", "linear", inputs=[numbers], out_features=32),
        _n("numbers_relu", "activation", kind="relu"),
        _n("join", "concat", inputs=["text_pool", "numbers_relu"]),
        _n("drop", "dropout", p=0.3),
        _n("dense_1", "linear", out_features=64),
        _n("relu_1", "activation", kind="relu"),
        _n("output", "linear", out_features=_classes(meta)),
    ]


def autoencoder(meta):
    shape = meta["input_shape"]
    size = math.prod(shape)
    nodes = _flat(meta) + [
        _n("enc_1", "linear", out_features=32),
        _n("relu_1", "activation", kind="relu"),
        _n("code", "linear", out_features=8),
        _n("relu_2", "activation", kind="relu"),
        _n("dec_1", "linear", out_features=32),
        _n("relu_3", "activation", kind="relu"),
        _n("dec_2", "linear", out_features=size),
    ]
    if len(shape) > 1:
        nodes.append(_n("unflatten", "reshape", shape=list(shape)))
    return nodes


def _decoded(meta) -> list[dict]:
    """A decoder's last layers for a flat vector of the input's size: back into the input's shape, and through a
    sigmoid for images (values from 0 to 1; the loss reads the logits before it)."""
    shape = meta["input_shape"]
    nodes = [_n("unflatten", "reshape", shape=list(shape))] if len(shape) > 1 else []
    return nodes + ([_n("pixels", "activation", kind="sigmoid")] if len(shape) == 3 else [])


def mlp_vae(meta):
    """Encoder and decoder of Dense layers around a 2-number Gaussian code (its latent map needs no projection)."""
    size = math.prod(meta["input_shape"])
    hidden = 256 if size > 256 else 64
    return (
        _flat(meta)
        + [
            _n("enc_1", "linear", out_features=hidden),
            _n("relu_1", "activation", kind="relu"),
            _n("code", "gaussian_latent", units=2),
            _n("dec_1", "linear", out_features=hidden),
            _n("relu_2", "activation", kind="relu"),
            _n("dec_2", "linear", out_features=size),
        ]
        + _decoded(meta)
    )


def conv_vae(meta):
    """Two stride-2 convolutions down to a quarter of the size, an 8-number Gaussian code, and two stride-2
    transposed convolutions back up."""
    channels, height, width = meta["input_shape"]
    return [
        _n("conv_1", "conv2d", out_channels=32, kernel_size=3, stride=2, padding=1),
        _n("relu_1", "activation", kind="relu"),
        _n("conv_2", "conv2d", out_channels=64, kernel_size=3, stride=2, padding=1),
        _n("relu_2", "activation", kind="relu"),
        _n("flatten", "flatten"),
        _n("code", "gaussian_latent", units=8),
        _n("dec_1", "linear", out_features=64 * (height // 4) * (width // 4)),
        _n("relu_3", "activation", kind="relu"),
        _n("grid", "reshape", shape=[64, height // 4, width // 4]),
        _n("up_1", "conv_transpose2d", out_channels=32, kernel_size=2, stride=2),
        _n("relu_4", "activation", kind="relu"),
        _n("up_2", "conv_transpose2d", out_channels=channels, kernel_size=2, stride=2),
        _n("pixels", "activation", kind="sigmoid"),
    ]


VAE_TRAIN = {"target": "vae", "epochs": 40, "lr": 0.002, "batch_size": 64, "kl_warmup": 5}


def _horizon(meta) -> int:
    return int((meta.get("preprocessing") or {}).get("horizon") or 1)


def lstm_forecaster(meta, op="lstm"):
    """The window's steps in order through a recurrent layer; its last state gives every step of the horizon."""
    return [
        _n(op, op, hidden_size=64),
        _n("output", "linear", out_features=_horizon(meta)),
    ]


def conv_forecaster(meta):
    """1-D convolutions over time (the columns as channels), then a Dense layer from the whole window."""
    return [
        _n("to_channels", "permute", dims=[1, 0]),
        _n("conv_1", "conv1d", out_channels=32, kernel_size=5),
        _n("relu_1", "activation", kind="relu"),
        _n("conv_2", "conv1d", out_channels=32, kernel_size=3),
        _n("relu_2", "activation", kind="relu"),
        _n("flatten", "flatten"),
        _n("output", "linear", out_features=_horizon(meta)),
    ]


def window_mlp(meta):
    return [
        _n("flatten", "flatten"),
        _n("dense_1", "linear", out_features=64),
        _n("relu_1", "activation", kind="relu"),
        _n("output", "linear", out_features=_horizon(meta)),
    ]


def _vocab(meta) -> int:
    return int(meta.get("vocab_size") or 2)


def char_transformer(meta):
    """nanoGPT in small: token and learned position embeddings, causal transformer blocks, a Dense layer that
    scores every token of the vocabulary at each position."""
    return [
        _n("embed", "embedding", num_embeddings=_vocab(meta), embedding_dim=64),
        _n("positions", "positional_encoding", kind="learned"),
        _n(
            "blocks",
            "transformer_encoder",
            num_heads=4,
            dim_feedforward=256,
            num_layers=2,
            dropout=0.1,
            causal=True,
        ),
        _n("next_token", "linear", out_features=_vocab(meta)),
    ]


def lstm_lm(meta):
    return [
        _n("embed", "embedding", num_embeddings=_vocab(meta), embedding_dim=64),
        _n("lstm", "lstm", hidden_size=128, return_sequences=True),
        _n("next_token", "linear", out_features=_vocab(meta)),
    ]


LM_STEPS = 1200  # optimizer steps the proposed language model trains for (tiny tales reach 0.3 bits a character)

SERIES_TRAIN = {"epochs": 30, "lr": 0.003, "early_stopping": 8}

TEMPLATES = {
    t.name: t
    for t in [
        Template(
            "keras_mlp",
            "Keras guide MLP",
            "Dense 64 relu, Dense 32 relu, Dense softmax with Adam and sparse "
            "categorical cross-entropy, as in the Keras guide (LayerLab trains on the logits and says so).",
            "digits",
            "any",
            keras_mlp,
            {"epochs": 30, "lr": 0.003},
        ),
        Template(
            "lenet",
            "LeNet-style CNN",
            "Two conv + max-pool stages, then Dense layers: the classic CNN for digit images.",
            "digits",
            "image",
            lenet,
            {"epochs": 30, "lr": 0.003},
        ),
        Template(
            "cifar_cnn",
            "CIFAR-style CNN",
            "Conv-conv-pool blocks with dropout for small colour images (32×32, 3 channels).",
            "shapes",
            "image",
            cifar_cnn,
            {"epochs": 8, "lr": 0.002},
        ),
        Template(
            "resnet",
            "Small residual CNN",
            "A conv stem and one residual block (two convs with batch norm and "
            "a skip connection), global average pooling, a Dense head.",
            "digits",
            "image",
            resnet,
            {"epochs": 20, "lr": 0.002},
        ),
        Template(
            "small_cnn",
            "Small CNN",
            "Two blocks of conv, batch norm, ReLU and max-pool, global average "
            "pooling, a Dense head: the proposed model for images.",
            "shapes",
            "image",
            small_cnn,
            {"epochs": 10, "lr": 0.003},
        ),
        Template(
            "text_and_numbers",
            "Text and numbers (two inputs)",
            "A table with a text column and other columns: "
            "the text through an Embedding and a masked mean, the numbers through a Dense layer, joined by "
            "Concatenate, then a Dense head.",
            "orders",
            "mixed",
            text_and_numbers,
            {"epochs": 20, "lr": 0.003},
            two_inputs,
        ),
        Template(
            "lstm_text",
            "Embedding + LSTM text classifier",
            "Token ids become learned vectors; an LSTM reads "
            "them in order; its last state is classified.",
            "reviews",
            "text",
            lstm_text,
            {"epochs": 12, "lr": 0.005},
        ),
        Template(
            "transformer_text",
            "Small transformer text classifier",
            "Embedding, positional encoding, two "
            "transformer encoder blocks, mean pooling over tokens, a Dense head.",
            "reviews",
            "text",
            transformer_text,
            {"epochs": 15, "lr": 0.002},
        ),
        Template(
            "lstm_forecaster",
            "LSTM forecaster",
            "An LSTM reads the window of history step by step; "
            "a Dense layer turns its last state into every step of the horizon at once.",
            "traffic",
            "series",
            lstm_forecaster,
            SERIES_TRAIN,
        ),
        Template(
            "gru_forecaster",
            "GRU forecaster",
            "The LSTM forecaster with a GRU: fewer weights, often as accurate on short windows.",
            "traffic",
            "series",
            lambda meta: lstm_forecaster(meta, "gru"),
            SERIES_TRAIN,
        ),
        Template(
            "conv_forecaster",
            "1-D conv forecaster",
            "Two 1-D convolutions slide over time (each column a channel), "
            "then a Dense layer reads the whole window and predicts the horizon.",
            "traffic",
            "series",
            conv_forecaster,
            SERIES_TRAIN,
        ),
        Template(
            "window_mlp",
            "MLP on the window (baseline)",
            "The window flattened into one row of numbers and a small MLP: "
            "the baseline a sequence model should beat.",
            "traffic",
            "series",
            window_mlp,
            SERIES_TRAIN,
        ),
        Template(
            "char_transformer",
            "Character transformer (nanoGPT-style)",
            "Token and position embeddings, two causal transformer blocks "
            "(each position sees only itself and the ones before), a Dense layer scoring the next token everywhere.",
            "tales",
            "corpus",
            char_transformer,
            {"epochs": 6, "lr": 0.002, "batch_size": 32, "early_stopping": 5},
        ),
        Template(
            "lstm_lm",
            "LSTM language model",
            "An Embedding, an LSTM that returns every step (it reads left to "
            "right, so it never sees ahead), a Dense layer scoring the next token at each step.",
            "tales",
            "corpus",
            lstm_lm,
            {"epochs": 6, "lr": 0.003, "batch_size": 32, "early_stopping": 5},
        ),
        Template(
            "mlp_vae",
            "MLP VAE",
            "A variational autoencoder of Dense layers with a 2-number Gaussian code: it learns to rebuild its "
            "input, and new samples decode from random codes. Its latent map is drawn without a projection.",
            "digits",
            "any",
            mlp_vae,
            VAE_TRAIN,
        ),
        Template(
            "conv_vae",
            "Conv VAE",
            "A convolutional variational autoencoder for images whose sides divide by 4: two stride-2 "
            "convolutions, an 8-number Gaussian code, two transposed convolutions back up.",
            "digits",
            "image",
            conv_vae,
            VAE_TRAIN,
        ),
        Template(
            "autoencoder",
            "MLP autoencoder",
            "Squeezes the input through an 8-unit code and rebuilds it; "
            "trained to reconstruct its input with MSE.",
            "digits",
            "any",
            autoencoder,
            {"epochs": 40, "lr": 0.003, "target": "input", "loss": "mse"},
        ),
    ]
}


def vae_template(meta: dict) -> Template:
    """The VAE a dataset gets unless told: the conv VAE for images whose sides divide by 4, else the MLP VAE."""
    return TEMPLATES["conv_vae"] if suits(TEMPLATES["conv_vae"], meta) else TEMPLATES["mlp_vae"]


def suits(template: Template, meta: dict) -> bool:
    rank = len(meta["input_shape"])
    if (template.kind == "series") != (
        meta.get("task") == "forecast"
    ):  # windows take forecasters only
        return False
    if template.kind == "series":
        return True
    if (template.kind == "corpus") != (
        meta.get("task") == "language_model"
    ):  # next-token models only
        return False
    if template.kind == "corpus":
        return True
    if (template.kind == "mixed") != bool(
        meta.get("inputs")
    ):  # a two-part table takes two-input models only
        return False
    if template.kind == "image":
        sides = meta["input_shape"][1:] if rank == 3 else (0,)
        divides = template.nodes is not conv_vae or all(side % 4 == 0 for side in sides)
        return rank == 3 and min(sides) >= 8 and divides
    if template.kind == "text":
        return bool(meta.get("vocab_size")) and rank == 1
    if template.train.get("target") in ("input", "vae"):
        return True
    return meta["task"] == "classification"


def build(template: Template | str, meta: dict) -> dict:
    """The template's spec for this dataset, every default explicit."""
    template = TEMPLATES[template] if isinstance(template, str) else template
    inputs = template.inputs(meta) if template.inputs else {FIRST_INPUT: {}}
    return parse_spec(
        {"version": SPEC_VERSION, "inputs": inputs, "nodes": template.nodes(meta)}
    ).to_dict()


def _kind(meta: dict) -> str:
    if meta.get("task") == "forecast":
        return "series"
    if meta.get("task") == "language_model":
        return "corpus"
    if meta.get("inputs"):
        return "mixed"
    if token_vocab(meta):
        return "text"
    shape = meta["input_shape"]
    return "image" if len(shape) == 3 and min(shape[1:]) >= 8 else "table"


REASONS = {
    "mixed": "a table with text and other columns: two inputs, the text through an Embedding and a masked mean, "
    "the other columns through a Dense layer, joined, then a Dense head.",
    "text": "text: an Embedding turns each token into a learned vector, the mean over the real tokens (padding "
    "skipped) feeds a small MLP (token ids are not numbers a Dense layer could read).",
    "image": "images: a small CNN, two conv, batch norm, ReLU and pool blocks, then global average pooling and a "
    "Dense head.",
    "table": "a table of numbers: a small MLP, two hidden layers of 64 ReLU units.",
    "corpus": "text to generate: a small causal transformer (each position sees only the tokens before it) scores "
    "the next token at every position.",
    "series": "a time series: an LSTM reads each window of history in order, and a Dense layer predicts every "
    "step of the horizon from its last state.",
}
PROPOSED = {
    "series": "lstm_forecaster",
    "corpus": "char_transformer",
    "mixed": "text_and_numbers",
    "image": "small_cnn",
}  # the others: engine.spec.starter_spec


def starter_for(meta: dict) -> dict:
    """The model LayerLab proposes for a prepared dataset (see starter_reason)."""
    kind = _kind(meta)
    if kind in PROPOSED:
        return build(PROPOSED[kind], meta)
    return starter_spec(
        meta["task"], meta["input_shape"], len(meta.get("classes") or []) or None, token_vocab(meta)
    )


def starter_train(meta: dict) -> dict:
    """The epochs and learning rate the proposed model is meant to train with on this data: a table's epochs shrink
    as its rows grow (200 on a few hundred rows, 10 from 40,000), so a first run stays short; a regression table
    trains at most 20 (a noisy number to predict is overfitted sooner: diabetes' validation R² fell from 0.42 at 20
    epochs to -0.27 at 200); a language model trains for about LM_STEPS steps (a 35,000-character text: 43 epochs,
    3.65 bits a character on its test part where 6 epochs left 4.16)."""
    kind = _kind(meta)
    if (
        kind == "corpus"
    ):  # about LM_STEPS steps whatever the text's size: a short text needs more passes
        train = dict(TEMPLATES[PROPOSED[kind]].train)
        batches = math.ceil(((meta.get("sizes") or {}).get("train") or 1) / train["batch_size"])
        return {
            **train,
            "epochs": int(min(80, max(train["epochs"], math.ceil(LM_STEPS / batches)))),
        }
    if kind in PROPOSED:
        return dict(TEMPLATES[PROPOSED[kind]].train)
    if kind == "text":
        return {"epochs": 10, "lr": 0.001}
    rows = (meta.get("sizes") or {}).get("train") or 1
    most = 20 if meta.get("task") == "regression" else 200
    return {"epochs": int(min(most, max(10, 400_000 // rows))), "lr": 0.001}


def starter_reason(meta: dict) -> str:
    """Why the proposed model for this data looks as it does, in one line."""
    return REASONS[_kind(meta)]
