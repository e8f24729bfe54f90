"""Text for a language model: a corpus (a text file, or a table's text column, rows joined by a new line) becomes
windows of `context` token ids, each with the same window one token later as its targets.

Tokens are characters ("char") or words and punctuation marks ("word"), with a vocabulary fitted on the training
part (its most frequent tokens; id 0 is <unk>, for any other). The corpus is split by position, never shuffled:
its first 80% trains, the next 10% validates, the last 10% tests. Training windows overlap by half; the others
do not.
"""

from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from engine.data.store import SPLITS, Choices, Dataset, require_columns, save_dataset
from engine.errors import DataError
from engine.limits import DATA_BYTES
from engine.portable import corpus_tokens, encode_corpus
from engine.progress import Progress, quiet

PARTS = (0.8, 0.1, 0.1)
UNK = "<unk>"


class CorpusOptions(Choices):
    tokens: Literal["char", "word"] = Field(
        "char", description="Characters, or words and punctuation marks."
    )
    context: int = Field(
        64, ge=4, le=2048, description="Tokens the model reads to predict the next one."
    )
    vocab_size: int = Field(
        10_000, ge=2, le=200_000, description="Keep the most frequent tokens; others: <unk>."
    )
    lowercase: bool | None = Field(
        None, description="Lowercase the text first (default: for words only)."
    )


def corpus_text(frame: pd.DataFrame, column: str) -> str:
    """A table's text column as one corpus: its filled rows, each on its own line."""
    require_columns(frame, [column])
    rows = frame[column].dropna().astype(str)
    if not len(rows):
        raise DataError(f"the column '{column}' holds no text.")
    return "\n".join(rows)


def _vocabulary(tokens: list[str], size: int) -> list[str]:
    """<unk>, then the `size` - 1 most frequent tokens (ties: the one seen first)."""
    counts = Counter(tokens)
    return [UNK, *[t for t, _ in counts.most_common(size - 1) if t != UNK]]


def prepare_corpus(
    text: str,
    options: CorpusOptions,
    *,
    name: str,
    source: str,
    root: Path | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """Windows of the corpus `text` as a language-model dataset (see the module's docstring)."""
    progress = progress or quiet
    o = options
    prep = {
        "kind": "corpus",
        "tokens": o.tokens,
        "context": o.context,
        "lowercase": o.tokens == "word" if o.lowercase is None else o.lowercase,
    }
    if len(text) * 8 > DATA_BYTES.value:  # a token id (int64) per character at most
        raise DATA_BYTES.refuse(
            "the text", f"it holds {len(text):,} characters", "Use a part of it."
        )
    progress(0.1, "Fitting the vocabulary")
    cut = int(len(text) * PARTS[0])
    vocab = _vocabulary(corpus_tokens(text[:cut], prep), o.vocab_size)
    meta = {"preprocessing": prep, "vocab": vocab}
    progress(0.4, "Encoding the text")
    ids = encode_corpus(text, meta)
    n = len(ids)
    bounds = np.array([0, int(n * PARTS[0]), int(n * (PARTS[0] + PARTS[1])), n])
    need = int(np.ceil((o.context + 1) / min(PARTS)))
    if min(np.diff(bounds)) < o.context + 1:
        raise DataError(
            f"the text has {n:,} {'characters' if o.tokens == 'char' else 'tokens'}, too few for a context of "
            f"{o.context}: each part (80% training, 10% validation, 10% test) needs more than the context. Bring "
            f"at least {need:,}, or shorten the context."
        )
    x, y = {}, {}
    for split, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:], strict=True):
        stride = max(1, o.context // 2) if split == "train" else o.context
        starts = np.arange(lo, hi - o.context, stride)
        steps = starts[:, None] + np.arange(o.context)
        x[split], y[split] = ids[steps].astype(np.float32), ids[steps + 1]
    progress(0.7, "Saving")
    words = "characters" if o.tokens == "char" else "words and marks"
    notices = [
        f"{n:,} tokens ({words}), a vocabulary of {len(vocab):,} fitted on the first 80%; "
        f"{int((ids == 0).sum()):,} token(s) outside it read as <unk>."
    ]
    return save_dataset(
        name=name,
        source=source,
        task="language_model",
        x=x,
        y=y,
        classes=None,
        feature_names=[f"token{i}" for i in range(o.context)],
        preprocessing=prep,
        notices=notices,
        preview=pd.DataFrame(
            {"text": [text[i : i + 200] for i in range(0, min(len(text), 40_000), 200)]}
        ),
        root=root,
        extra={"vocab": vocab, "vocab_size": len(vocab)},
    )
