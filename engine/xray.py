"""Training X-ray: the diagnostics a run samples (engine.train.diagnostics), per layer, as colours for the
architecture diagram and as each layer's history. Every colour comes from a recorded look; nothing is computed here
but the scale.

Badness in [0, 1] per signal, drawn from green (healthy) through amber to red:
- gradient norm: how far below the largest layer's a layer's gradient is, on a log scale (4 decades: red);
- dead units: the share of a ReLU's units that are 0 for every row of the batch;
- saturation: the share of a sigmoid's or tanh's outputs in its flat tails;
- update ratio: how far the per-step |update| / |weights| is from about 1e-3, on a log scale (2 decades: red).
"""

import math
from pathlib import Path

SIGNALS = {
    "grad_norm": "Gradient norm",
    "dead": "Dead units (ReLU)",
    "saturated": "Saturation (sigmoid, tanh)",
    "update_ratio": "Update / weight ratio",
}
EXPLAIN = {
    "grad_norm": "each layer's gradient against the largest one: red layers get 10,000 times less and hardly learn",
    "dead": "the share of a ReLU's units that output 0 for every row: red ones have stopped learning",
    "saturated": "the share of a sigmoid's or tanh's outputs stuck near their limits, where the gradient vanishes",
    "update_ratio": "how much a step changes the weights, relative to their size: about 0.001 is healthy; blue is "
    "far below (the layer hardly moves), red far above (it is thrown about)",
}
HEALTHY_UPDATE = 1e-3


def values(look: dict, signal: str) -> dict[str, float]:
    """The signal's value per layer in one diagnostics event (layers without it are left out)."""
    return {
        layer["id"]: float(layer[signal])
        for layer in look.get("layers", [])
        if layer.get(signal) is not None
    }


def badness(signal: str, value: float, all_values: dict[str, float]) -> float:
    if not math.isfinite(value):
        return 1.0
    if signal in ("dead", "saturated"):
        return min(max(value, 0.0) / 0.5, 1.0)
    if signal == "grad_norm":
        top = max((v for v in all_values.values() if math.isfinite(v)), default=0.0)
        return 0.0 if top <= 0 else min(math.log10(top / max(value, top * 1e-12)) / 4, 1.0)
    return min(abs(math.log10(max(value, 1e-12) / HEALTHY_UPDATE)) / 2, 1.0)


def colour(signal: str, value: float, all_values: dict[str, float]) -> str:
    """A hex colour: green (healthy) to amber to red; an update ratio far below healthy is blue."""
    b = badness(signal, value, all_values)
    if signal == "update_ratio" and math.isfinite(value) and value < HEALTHY_UPDATE and b > 0.5:
        return "#2563EB"
    stops = [(0.0, (22, 163, 74)), (0.5, (234, 179, 8)), (1.0, (220, 38, 38))]
    for (x0, c0), (x1, c1) in zip(stops, stops[1:], strict=False):
        if b <= x1:
            t = (b - x0) / (x1 - x0)
            return "#" + "".join(
                f"{round(a + (z - a) * t):02X}" for a, z in zip(c0, c1, strict=True)
            )
    return "#DC2626"


def colours(look: dict, signal: str) -> dict[str, str]:
    found = values(look, signal)
    return {nid: colour(signal, v, found) for nid, v in found.items()}


def history(looks: list[dict], node_id: str) -> dict[str, tuple[list[int], list[float]]]:
    """Each signal's values for one layer over the run's looks: {signal: (steps, values)}."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for look in looks:
        for layer in look.get("layers", []):
            if layer["id"] != node_id:
                continue
            for signal in SIGNALS:
                if layer.get(signal) is not None:
                    steps, vals = out.setdefault(signal, ([], []))
                    steps.append(look["step"]), vals.append(float(layer[signal]))
    return out


def looks(run_dir: Path) -> list[dict]:
    """A run's diagnostics events, oldest first."""
    from engine.runs import read_events

    return [e for e in read_events(Path(run_dir))[0] if e.get("type") == "diagnostics"]
