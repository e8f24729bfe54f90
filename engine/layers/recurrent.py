"""Sequence ops: embedding, RNN / LSTM / GRU and sequence pooling. Sequences are (time, features)."""

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from engine.errors import SpecError
from engine.registry import OpParams, make, register


class EmbeddingParams(OpParams):
    num_embeddings: int = Field(
        10000,
        ge=2,
        le=2_000_000,
        title="Vocabulary size",
        description="How many distinct token ids there are (set from the dataset's "
        "vocabulary when it has one). Ids must be below this.",
    )
    embedding_dim: int = Field(
        64,
        ge=1,
        le=4096,
        title="Dimensions",
        description="Length of the vector learned for each token; 32-300 is usual.",
    )
    pad_zero: bool = Field(
        True,
        title="Id 0 pads",
        description="Token id 0 is padding (as in LayerLab's text columns): its vector stays zero "
        "and never trains, so a masked mean can skip it.",
    )


class Embedding(nn.Embedding):
    def forward(self, x):  # token ids arrive as float tensors from the dataset store
        return super().forward(x.long())


@register(
    "embedding",
    family="recurrent",
    title="Embedding",
    params=EmbeddingParams,
    doc="Turns token ids (time,) into learned vectors (time, dimensions): the first layer for text.",
)
def build_embedding(p: EmbeddingParams, shapes):
    (shape,) = shapes
    if len(shape) != 1:
        raise SpecError(
            None, f"an embedding needs a sequence of token ids (time,) but got {tuple(shape)}."
        )
    return make(Embedding, p.num_embeddings, p.embedding_dim, padding_idx=0 if p.pad_zero else None)


class RecurrentParams(OpParams):
    hidden_size: int = Field(
        64, ge=1, le=8192, title="Units", description="Size of the hidden state; 32-512 is usual."
    )
    num_layers: int = Field(
        1, ge=1, le=8, title="Layers", description="Stacked recurrent layers; 1-2 is usual."
    )
    bidirectional: bool = Field(
        False,
        title="Bidirectional",
        description="Also read the sequence backwards; doubles the output features.",
    )
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        title="Dropout between layers",
        description="Dropout between stacked layers (needs 2+ layers).",
    )
    return_sequences: bool = Field(
        False,
        title="Return sequences",
        description="Off: output only the last step (for a classifier head). On: output "
        "every step (to stack another recurrent or attention layer).",
    )


class Recurrent(nn.Module):
    """An RNN, LSTM or GRU (`kind`) on (batch, time, features) that returns every step or only the last."""

    def __init__(
        self,
        kind,
        in_features: int,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        dropout: float,
        return_sequences: bool,
    ):
        super().__init__()
        self.rnn = kind(
            in_features,
            hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.return_sequences = return_sequences
        self.hidden = hidden_size

    def forward(self, x):
        out, _ = self.rnn(x)
        if self.return_sequences:
            return out
        if (
            self.rnn.bidirectional
        ):  # last step forwards, first step backwards: each has read the whole sequence
            return torch.cat([out[:, -1, : self.hidden], out[:, 0, self.hidden :]], dim=1)
        return out[:, -1]


def require_sequence(shape, title: str) -> None:
    """Sequence ops take (time, features); say how to get there from what arrived."""
    if len(shape) != 2:
        raise SpecError(
            None,
            f"{title} needs a sequence (time, features) but got {tuple(shape)}: "
            + (
                "add an Embedding before it for token ids."
                if len(shape) == 1
                else "add a Reshape or Permute to (time, features)."
            ),
        )


def _recurrent(kind, p: RecurrentParams, shapes, title):
    (shape,) = shapes
    require_sequence(shape, title)
    return make(
        Recurrent,
        kind,
        shape[1],
        p.hidden_size,
        p.num_layers,
        p.bidirectional,
        p.dropout,
        p.return_sequences,
    )


@register(
    "rnn",
    family="recurrent",
    title="Simple RNN",
    params=RecurrentParams,
    doc="A plain recurrent layer (tanh). Reads a sequence step by step; forgets quickly over long ones.",
)
def build_rnn(p, shapes):
    return _recurrent(nn.RNN, p, shapes, "Simple RNN")


@register(
    "lstm",
    family="recurrent",
    title="LSTM",
    params=RecurrentParams,
    doc="Long short-term memory: a recurrent layer with gates that remembers over long sequences.",
)
def build_lstm(p, shapes):
    return _recurrent(nn.LSTM, p, shapes, "LSTM")


@register(
    "gru",
    family="recurrent",
    title="GRU",
    params=RecurrentParams,
    doc="Gated recurrent unit: like an LSTM with fewer parameters; often as good.",
)
def build_gru(p, shapes):
    return _recurrent(nn.GRU, p, shapes, "GRU")


class SeqPoolParams(OpParams):
    mode: Literal["mean", "masked_mean", "max", "last", "first"] = Field(
        "mean",
        title="Pooling",
        description="How the time steps become one vector: mean or max over time, the "
        "last / first step, or masked_mean: the mean over the steps that are "
        "not all zero (after an Embedding whose id 0 pads: the real tokens).",
    )


class SeqPool(nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        if self.mode == "mean":
            return x.mean(1)
        if self.mode == "masked_mean":  # padding's vectors are all zero: average the other steps
            real = (x != 0).any(-1, keepdim=True).to(x.dtype)
            return (x * real).sum(1) / real.sum(1).clamp_min(1)
        if self.mode == "max":
            return x.amax(1)
        return x[:, -1] if self.mode == "last" else x[:, 0]


@register(
    "seq_pool",
    family="recurrent",
    title="Sequence pool",
    params=SeqPoolParams,
    doc="Turns a sequence (time, features) into one vector (features,), e.g. after a transformer encoder.",
)
def build_seq_pool(p: SeqPoolParams, shapes):
    (shape,) = shapes
    require_sequence(shape, "Sequence pooling")
    return make(SeqPool, p.mode)
