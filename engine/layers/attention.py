"""Attention ops on sequences (time, features): self-attention, transformer encoder, positional encoding."""

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from engine.errors import SpecError
from engine.layers.recurrent import require_sequence
from engine.registry import OpParams, make, register


def _heads(features, heads):
    if features % heads:
        divisors = [d for d in range(1, min(features, 16) + 1) if features % d == 0]
        raise SpecError(
            None,
            f"{features} features cannot be split into {heads} heads: choose a number of heads "
            f"that divides {features} (e.g. {', '.join(map(str, divisors[-3:]))}).",
        )


class AttentionParams(OpParams):
    num_heads: int = Field(
        4,
        ge=1,
        le=64,
        title="Heads",
        description="Parallel attention heads; must divide the feature size. 4-8 is usual.",
    )
    dropout: float = Field(
        0.0, ge=0, lt=1, title="Dropout", description="Dropout on the attention weights."
    )
    causal: bool = Field(
        False,
        title="Causal",
        description="Each step sees only itself and the steps before it, as a language model must (it "
        "predicts the next token from the past). Off: every step sees every other.",
    )


class SelfAttention(nn.Module):
    """Multi-head self-attention on (batch, time, features): queries, keys and values are the input; with
    `causal`, each step attends only to itself and earlier steps."""

    def __init__(self, features: int, num_heads: int, dropout: float, causal: bool = False):
        super().__init__()
        self.attn = nn.MultiheadAttention(features, num_heads, dropout=dropout, batch_first=True)
        self.causal = causal

    def forward(self, x):
        # (time, time), True where a step may not look: at the steps after it (model.py copies this class alone)
        steps = x.shape[1]
        mask = (
            torch.ones(steps, steps, dtype=torch.bool, device=x.device).triu(1)
            if self.causal
            else None
        )
        return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]


class CausalTransformerEncoder(nn.Module):
    """Transformer encoder blocks whose self-attention sees only the current and earlier steps (GPT-style)."""

    def __init__(
        self, features: int, num_heads: int, dim_feedforward: int, dropout: float, num_layers: int
    ):
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            features, num_heads, dim_feedforward, dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)

    def forward(self, x):
        steps = x.shape[1]  # True where a step may not look: at the steps after it
        mask = torch.ones(steps, steps, dtype=torch.bool, device=x.device).triu(1)
        return self.encoder(x, mask=mask, is_causal=True)


@register(
    "attention",
    family="attention",
    title="Self-attention",
    params=AttentionParams,
    doc="Multi-head self-attention: every time step looks at every other and mixes in what is relevant.",
)
def build_attention(p: AttentionParams, shapes):
    (shape,) = shapes
    require_sequence(shape, "Self-attention")
    _heads(shape[1], p.num_heads)
    if p.causal:
        return make(SelfAttention, shape[1], p.num_heads, p.dropout, True)
    return make(SelfAttention, shape[1], p.num_heads, p.dropout)


class TransformerParams(OpParams):
    num_heads: int = Field(
        4, ge=1, le=64, title="Heads", description="Attention heads; must divide the feature size."
    )
    dim_feedforward: int = Field(
        128,
        ge=1,
        le=65536,
        title="Feed-forward size",
        description="Width of each block's inner MLP; usually 2-4x the feature size.",
    )
    num_layers: int = Field(
        2, ge=1, le=24, title="Layers", description="Stacked encoder blocks; 2-6 for small tasks."
    )
    dropout: float = Field(
        0.1, ge=0, lt=1, title="Dropout", description="Dropout inside each block; 0.1 is usual."
    )
    causal: bool = Field(
        False,
        title="Causal",
        description="Each step sees only itself and the steps before it (a GPT-style decoder for language "
        "models). Off: every step sees every other, as in BERT.",
    )


@register(
    "transformer_encoder",
    family="attention",
    title="Transformer encoder",
    params=TransformerParams,
    doc="Stacked blocks of self-attention and a feed-forward MLP with residuals and layer norm (as in BERT).",
)
def build_transformer_encoder(p: TransformerParams, shapes):
    (shape,) = shapes
    require_sequence(shape, "A transformer encoder")
    _heads(shape[1], p.num_heads)
    if p.causal:
        return make(
            CausalTransformerEncoder,
            shape[1],
            p.num_heads,
            p.dim_feedforward,
            p.dropout,
            p.num_layers,
        )
    layer = make(
        nn.TransformerEncoderLayer,
        shape[1],
        p.num_heads,
        p.dim_feedforward,
        p.dropout,
        batch_first=True,
    )
    return make(nn.TransformerEncoder, layer, p.num_layers, enable_nested_tensor=False)


class PositionalParams(OpParams):
    kind: Literal["sinusoidal", "learned"] = Field(
        "sinusoidal",
        title="Kind",
        description="sinusoidal: fixed sine waves (no weights); learned: one trained "
        "vector per position.",
    )
    dropout: float = Field(
        0.0, ge=0, lt=1, title="Dropout", description="Dropout after adding the positions."
    )


class PositionalEncoding(nn.Module):
    """Adds a position signature to (batch, time, features): fixed sine waves, or one learned vector per step."""

    def __init__(self, length: int, features: int, kind: str, dropout: float):
        super().__init__()
        if kind == "learned":
            self.pe = nn.Parameter(torch.randn(length, features) * 0.02)
        else:
            pos = torch.arange(length, dtype=torch.float32)[:, None]
            div = torch.exp(
                torch.arange(0, features, 2, dtype=torch.float32) * (-math.log(10000.0) / features)
            )
            pe = torch.zeros(length, features)
            pe[:, 0::2] = torch.sin(pos * div)
            pe[:, 1::2] = torch.cos(pos * div)[:, : features // 2]
            self.register_buffer("pe", pe, persistent=False)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x
    ):  # a shorter sequence (a prompt while generating) takes the first positions
        return self.drop(x + self.pe[: x.shape[1]])


@register(
    "positional_encoding",
    family="attention",
    title="Positional encoding",
    params=PositionalParams,
    doc="Adds each position's signature to a sequence so attention knows the order of the steps.",
)
def build_positional_encoding(p: PositionalParams, shapes):
    (shape,) = shapes
    require_sequence(shape, "Positional encoding")
    return make(PositionalEncoding, shape[0], shape[1], p.kind, p.dropout)
