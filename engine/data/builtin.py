"""Built-in datasets: scikit-learn's bundled tables and generated 2-D sets (no download needed)."""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import datasets as skd


@dataclass(frozen=True)
class Builtin:
    name: str
    title: str
    description: str
    generated: bool = False  # takes n_samples and noise
    samples: int = 1000  # its n_samples unless one is chosen

    @property
    def split(self) -> bool:
        """Whether its rows are shared out at random (a series and a text keep their time order)."""
        return self.name not in ("traffic", "tales")


BUILTINS = {
    b.name: b
    for b in [
        Builtin(
            "moons",
            "Two moons",
            "2-D, 2 classes: two interleaving half circles. Needs a non-linear boundary.",
            True,
        ),
        Builtin("circles", "Circles", "2-D, 2 classes: a ring around a disc.", True),
        Builtin(
            "spiral",
            "Spiral",
            "2-D, 3 classes: three interleaved spiral arms. Hard for small models.",
            True,
        ),
        Builtin("xor", "XOR", "2-D, 2 classes: the four quadrants, diagonals alike.", True),
        Builtin("blobs", "Gaussian blobs", "2-D, 4 classes: four Gaussian clusters.", True),
        Builtin(
            "rings",
            "Ring of Gaussians",
            "2-D, 8 classes: eight small Gaussians on a circle. A GAN target: does it make all eight?",
            True,
            2000,
        ),
        Builtin(
            "grid",
            "Grid of Gaussians",
            "2-D, 25 classes: a 5×5 grid of small Gaussians. A harder GAN target.",
            True,
            4000,
        ),
        Builtin(
            "iris", "Iris", "150 flowers, 4 measurements, 3 species. The classic first dataset."
        ),
        Builtin("wine", "Wine", "178 wines, 13 chemical measurements, 3 cultivars."),
        Builtin("breast_cancer", "Breast cancer", "569 tumours, 30 features, benign or malignant."),
        Builtin(
            "digits",
            "Digits (8×8 images)",
            "1,797 handwritten digits as 8×8 grayscale images, 10 classes.",
        ),
        Builtin(
            "diabetes",
            "Diabetes (regression)",
            "442 patients, 10 features; predict disease progression.",
        ),
        Builtin(
            "shapes",
            "Shapes (32×32 colour images)",
            "Generated colour images of circles, squares and triangles "
            "of random size, place and colour. For CNNs.",
            True,
        ),
        Builtin(
            "reviews",
            "Reviews (text)",
            "Generated 24-token 'reviews' over a 40-word vocabulary; positive when "
            "praise words outnumber complaints. For embeddings, RNNs, transformers.",
            True,
        ),
        Builtin(
            "orders",
            "Food orders (text and numbers)",
            "Generated orders: a short review, the delivery time, the "
            "price and the cuisine; did the customer order again? The "
            "review and the delivery time both matter: a two-input model.",
            True,
        ),
        Builtin(
            "traffic",
            "Traffic (hourly time series)",
            "Generated hourly vehicle counts on a road: rush hours, quiet "
            "nights and weekends, a slow trend and noise, with the temperature beside them. For forecasting: "
            "each sample is a number of hours.",
            True,
            4000,  # about 24 weeks: the weekly pattern, seen 16 times in the training part
        ),
        Builtin(
            "tales",
            "Tiny tales (text to generate)",
            "Generated two-sentence tales from a small grammar (who went "
            "where, what they found, how they felt). For language models: each sample is a tale.",
            True,
            2000,
        ),
    ]
}

SHAPE_CLASSES = ["circle", "square", "triangle"]
POSITIVE = ["good", "great", "love", "excellent", "fine", "happy", "best", "nice"]
NEGATIVE = ["bad", "awful", "hate", "poor", "worst", "sad", "broken", "boring"]
NEUTRAL = [
    "the",
    "a",
    "movie",
    "film",
    "plot",
    "actor",
    "was",
    "is",
    "and",
    "it",
    "this",
    "story",
    "very",
    "quite",
    "but",
    "so",
    "scene",
    "ending",
    "music",
    "camera",
    "really",
    "just",
]
VOCAB = ["<pad>", "<unk>", *POSITIVE, *NEGATIVE, *NEUTRAL]


def _spiral(n, noise, rng, arms=3):
    per = n // arms
    xs, ys = [], []
    for k in range(arms):
        r = np.linspace(0.05, 1, per)
        t = np.linspace(k * 2 * np.pi / arms, k * 2 * np.pi / arms + 3.5, per) + rng.normal(
            0, noise, per
        )
        xs.append(np.c_[r * np.sin(t), r * np.cos(t)])
        ys.append(np.full(per, k))
    return np.concatenate(xs), np.concatenate(ys)


def _xor(n, noise, rng):
    x = rng.uniform(-1, 1, (n, 2))
    y = (x[:, 0] * x[:, 1] > 0).astype(int)
    return x + rng.normal(0, noise, x.shape), y


def _shapes(n, noise, rng, size=32):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((n, 3, size, size), np.float32)
    labels = rng.integers(0, len(SHAPE_CLASSES), n)
    for i in range(n):
        r = rng.uniform(5, 11)
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        if labels[i] == 0:
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        elif labels[i] == 1:
            mask = (np.abs(xx - cx) <= r * 0.8) & (np.abs(yy - cy) <= r * 0.8)
        else:
            mask = (yy <= cy + r * 0.8) & (np.abs(xx - cx) <= (yy - (cy - r)) * 0.6)
        bg, fg = rng.uniform(0, 0.45, 3), rng.uniform(0.55, 1, 3)
        img = np.where(mask[None], fg[:, None, None], bg[:, None, None]) + rng.normal(
            0, noise, (3, size, size)
        )
        images[i] = np.clip(img, 0, 1)
    return images, labels


def _reviews(n, noise, rng, length=24):
    """Token ids; label 1 when praise words outnumber complaints. `noise` is the share of flipped labels."""
    pos = [VOCAB.index(w) for w in POSITIVE]
    neg = [VOCAB.index(w) for w in NEGATIVE]
    neutral = [VOCAB.index(w) for w in NEUTRAL]
    x = np.zeros((n, length), np.int64)
    y = np.empty(n, np.int64)
    for i in range(n):
        words = int(rng.integers(10, length + 1))
        n_pos, n_neg = rng.integers(0, 5, 2)
        while n_pos == n_neg:
            n_pos, n_neg = rng.integers(0, 5, 2)
        tokens = list(rng.choice(pos, n_pos)) + list(rng.choice(neg, n_neg))
        tokens += list(rng.choice(neutral, max(words - len(tokens), 0)))
        rng.shuffle(tokens)
        x[i, : len(tokens)] = tokens[:length]
        y[i] = int(n_pos > n_neg) ^ int(rng.random() < noise)
    return x, y


CUISINES = ["pizza", "sushi", "curry", "burger", "salad"]


def _orders(n, noise, rng) -> pd.DataFrame:
    """The review's tone (praise minus complaints) and a late delivery decide, together, whether a customer
    orders again; `noise` is the share of flipped labels."""
    filler = [
        "the",
        "food",
        "was",
        "and",
        "it",
        "order",
        "came",
        "very",
        "quite",
        "but",
        "so",
        "delivery",
        "really",
        "just",
        "meal",
        "portion",
    ]
    reviews, tone = [], np.empty(n)
    for i in range(n):
        n_pos, n_neg = rng.integers(0, 4, 2)
        words = [
            *rng.choice(POSITIVE, n_pos),
            *rng.choice(NEGATIVE, n_neg),
            *rng.choice(filler, rng.integers(4, 12)),
        ]
        rng.shuffle(words)
        reviews.append(" ".join(words))
        tone[i] = n_pos - n_neg
    minutes = rng.gamma(6, 6, n).round()
    price = rng.uniform(6, 40, n).round(2)
    score = tone - (minutes - 36) / 8 + rng.normal(0, 0.5, n)
    again = (score > 0) ^ (rng.random(n) < noise)
    return pd.DataFrame(
        {
            "review": reviews,
            "delivery_minutes": minutes,
            "price": price,
            "cuisine": rng.choice(CUISINES, n),
            "ordered_again": np.where(again, "yes", "no"),
        }
    )


def _traffic(n, noise, rng) -> pd.DataFrame:
    """`n` hours of vehicle counts from 2024-01-01: a morning and an evening peak on weekdays, one broad midday
    hump at weekends, a slow rise, and noise in proportion to `noise`; the temperature follows its own day."""
    time = pd.date_range("2024-01-01", periods=n, freq="h")
    hour, weekend = time.hour.to_numpy(), time.dayofweek.to_numpy() >= 5
    peak = lambda at, width: np.exp(-0.5 * ((hour - at) / width) ** 2)  # noqa: E731
    weekday = 120 + 520 * peak(8, 1.5) + 460 * peak(17.5, 2.0) + 180 * peak(13, 3.0)
    weekend_day = 90 + 300 * peak(14, 3.5)
    level = np.where(weekend, weekend_day, weekday) * (1 + 0.1 * np.arange(n) / max(n, 1))
    temperature = (
        8 + 6 * np.sin((hour - 9) / 24 * 2 * np.pi) + rng.normal(0, 1.0, n).cumsum() * 0.05
    )
    vehicles = np.maximum(level * (1 + rng.normal(0, 0.4 * noise, n)), 0).round()
    return pd.DataFrame({"time": time, "vehicles": vehicles, "temperature": temperature.round(1)})


TALE_WORDS = {
    "who": [
        "the cat",
        "a little fox",
        "the old sailor",
        "my sister",
        "a tired dragon",
        "the baker",
        "a brave mouse",
    ],
    "went": ["walked to", "ran to", "sailed to", "flew over", "crept into", "wandered through"],
    "where": [
        "the forest",
        "the market",
        "a quiet harbour",
        "the castle",
        "the snowy hills",
        "an empty garden",
    ],
    "found": [
        "a golden key",
        "an old map",
        "a sleeping owl",
        "a box of apples",
        "a lost shoe",
        "a singing stone",
    ],
    "felt": ["happy", "surprised", "a little afraid", "very proud", "hungry", "sleepy"],
}


def _tales(n, noise, rng) -> str:
    """`n` tales like "the cat walked to the forest. there it found an old map and felt happy."; `noise` is the
    share of phrases replaced by a random phrase of another kind."""
    kinds = list(TALE_WORDS)
    tales = []
    for _ in range(n):
        pick = {}
        for k in kinds:
            source = TALE_WORDS[rng.choice(kinds)] if rng.random() < noise else TALE_WORDS[k]
            pick[k] = source[rng.integers(len(source))]
        tales.append(
            f"{pick['who']} {pick['went']} {pick['where']}. there it found {pick['found']} and felt {pick['felt']}."
        )
    return "\n".join(tales) + "\n"


def _mixture(name: str, n: int, noise: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Points from equal Gaussians: eight on a circle of radius 2 ("rings") or a 5×5 grid a unit apart ("grid"),
    each of spread 0.02 + noise / 2; the label names the Gaussian a point came from (its centre)."""
    if name == "rings":
        angles = np.arange(8) * 2 * np.pi / 8
        centres = 2.0 * np.c_[np.cos(angles), np.sin(angles)]
    else:
        centres = (
            np.stack(np.meshgrid(np.arange(-2, 3), np.arange(-2, 3)), -1)
            .reshape(-1, 2)
            .astype(float)
        )
    k = rng.integers(0, len(centres), n)
    names = np.array([f"({a:g}, {b:g})" for a, b in centres.round(2)], dtype=object)
    return centres[k] + rng.normal(0, 0.02 + noise / 2, (n, 2)), names[k]


def load_builtin(name: str, n_samples: int = 1000, noise: float = 0.1, seed: int = 0):
    """Return (frame, target column) for tables, or (images uint8-like float array, labels, classes) for digits."""
    rng = np.random.default_rng(seed)
    if name == "digits":
        d = skd.load_digits()
        return {
            "images": (d.images / 16.0).astype(np.float32)[:, None],
            "labels": d.target.astype(np.int64),
            "classes": [str(c) for c in d.target_names],
        }
    if name == "shapes":
        images, labels = _shapes(n_samples, noise, rng)
        return {"images": images, "labels": labels, "classes": SHAPE_CLASSES}
    if name == "reviews":
        tokens, labels = _reviews(n_samples, noise, rng)
        return {
            "tokens": tokens,
            "labels": labels,
            "classes": ["negative", "positive"],
            "vocab": VOCAB,
        }
    if name == "tales":
        return {
            "corpus": _tales(n_samples, noise, rng),
            "options": {"tokens": "char", "context": 64},
        }
    if name == "traffic":
        return {
            "series": _traffic(n_samples, noise, rng),
            "options": {
                "target": "vehicles",
                "time_column": "time",
                "covariates": ["temperature"],
                "window": 48,
                "horizon": 12,
                "season": 24,
            },
        }
    if name == "orders":
        return {"frame": _orders(n_samples, noise, rng), "target": "ordered_again"}
    if name in ("iris", "wine", "breast_cancer", "diabetes"):
        loader = {
            "iris": skd.load_iris,
            "wine": skd.load_wine,
            "breast_cancer": skd.load_breast_cancer,
            "diabetes": skd.load_diabetes,
        }[name]
        d = loader(as_frame=True)
        frame = d.frame.copy()
        if name != "diabetes":
            frame["target"] = [str(d.target_names[i]) for i in d.target]
        return {"frame": frame, "target": "target"}
    if name == "moons":
        x, y = skd.make_moons(n_samples, noise=noise, random_state=seed)
    elif name == "circles":
        x, y = skd.make_circles(n_samples, noise=noise, factor=0.5, random_state=seed)
    elif name == "spiral":
        x, y = _spiral(n_samples, noise, rng)
    elif name == "xor":
        x, y = _xor(n_samples, noise, rng)
    elif name in ("rings", "grid"):  # each point labelled by its mode's centre (a name)
        x, y = _mixture(name, n_samples, noise, rng)
        return {"frame": pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "mode": y}), "target": "mode"}
    elif name == "blobs":
        x, y = skd.make_blobs(n_samples, centers=4, cluster_std=1.0 + 10 * noise, random_state=seed)
    else:
        raise KeyError(name)
    return {
        "frame": pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "label": y.astype(int)}),
        "target": "label",
    }
