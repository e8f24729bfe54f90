"""The events a run writes to `events.jsonl`, one JSON object per line, each with `type` and `time` (seconds since
the epoch, added by the writer). One model per type documents its fields once; `check` validates an event against
it and the README's "Run folders" table is made from these docstrings and fields. Extra fields are allowed (a
reader must ignore what it does not know), so old run folders stay readable.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Event(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    time: float | None = Field(None, description="Seconds since the epoch, when it was written.")


class RunStarted(Event):
    """Training began: the plan the loop decided once (device, threads, loss, batch, memory estimate)."""

    type: Literal["run_started"]
    device: str
    threads: int | None = None
    params: int = Field(description="Trainable and frozen parameters.")
    loss: str
    optimizer: str
    epochs: int
    steps_per_epoch: int
    n_train: int
    batch_size: int
    memory_bytes: int | float | None = None
    lr: float
    scheduler: str
    precision: str
    compiled: bool
    channels_last: bool | None = None
    loss_ref: float | None = Field(
        None, description="The untrained model's validation loss (divergence yardstick)."
    )
    plan: dict | None = Field(
        None,
        description="What the loop decided once (engine.train.core.Plan: the loss and "
        "the layer it reads, class weights, target scale, evaluation batch, threads); a "
        "bundle's train.py follows it.",
    )
    world_size: int = Field(1, description="Processes that train the run (torchrun, DDP).")


class RunResumed(Event):
    """Training went on from a resume checkpoint."""

    type: Literal["run_resumed"]
    epoch: int
    step: int
    device: str
    world_size: int = Field(1, description="Processes that train the run from here.")


class BatchEnd(Event):
    """A few times a second: the mean training loss since the last one, and where the run is."""

    type: Literal["batch_end"]
    epoch: int
    step: int = Field(description="Optimizer steps so far.")
    loss: float
    lr: float
    progress: float = Field(description="0..1 of all steps.")
    samples_per_second: float
    eta_s: float


class EpochEnd(Event):
    """An epoch ended: its metrics on the training and validation splits."""

    type: Literal["epoch_end"]
    epoch: int
    step: int
    metrics: dict[str, float] = Field(
        description="train/loss, val/loss, and val/accuracy or val/mae, val/r2, …."
    )
    lr: float
    best_epoch: int | None = None
    seconds: float
    progress: float
    samples_per_second: float
    eta_s: float


class CheckpointSaved(Event):
    """A resume checkpoint was written (checkpoints/state.pt)."""

    type: Literal["checkpoint_saved"]
    epoch: int
    step: int


class Diagnostics(Event):
    """Sampled look inside: gradient norms, weight and activation histograms, dead units per layer."""

    type: Literal["diagnostics"]
    epoch: int
    step: int
    loss: float
    layers: list[dict]


class Notice(Event):
    """Something the user should know about this run (a setting adjusted, a fallback taken)."""

    type: Literal["notice"]
    message: str


class Coach(Event):
    """Advice from watching the run (a learning rate too high, overfitting, dead units), once per kind."""

    type: Literal["coach"]
    kind: str
    message: str


class Sample(Event):
    """A language model's text from a fixed prompt, written every few seconds while it trains."""

    type: Literal["sample"]
    epoch: int
    step: int
    prompt: str
    text: str


class RunFinished(Event):
    """The last event of every run, whatever happened."""

    type: Literal["run_finished"]
    status: Literal["completed", "stopped", "failed", "diverged"]
    message: str = ""
    metrics: dict[str, float] = Field(default_factory=dict, description="The last epoch's metrics.")
    epochs_completed: int | None = None
    step: int | None = None
    best: dict | None = Field(None, description="The best epoch and its metrics.")
    early_stopped: bool = False
    seconds: float | None = None
    samples_per_second: float | None = None
    out_of_memory: bool = False


EVENTS: dict[str, type[Event]] = {
    m.model_fields["type"].annotation.__args__[0]: m
    for m in (
        RunStarted,
        RunResumed,
        BatchEnd,
        EpochEnd,
        CheckpointSaved,
        Diagnostics,
        Notice,
        Coach,
        Sample,
        RunFinished,
    )
}


def check(event: dict) -> Event:
    """The event as its type's model; pydantic's ValidationError when a field is missing or of the wrong kind."""
    model = EVENTS.get(event.get("type"))
    if model is None:
        raise ValueError(f"unknown event type {event.get('type')!r}")
    return model.model_validate(event)


def run_finished(status: str, message: str = "", **fields) -> dict:
    """The final event, the one way it is made (the loop, an out-of-memory end, the worker's own failures)."""
    return RunFinished(type="run_finished", status=status, message=message, **fields).model_dump(
        exclude={"time"}
    )


def readme_table() -> str:
    """The README's table of event types and fields (tests keep the two in step)."""
    rows = ["| type | when | fields |", "|---|---|---|"]
    for name, model in EVENTS.items():
        fields = ", ".join(f"`{f}`" for f in model.model_fields if f not in ("type", "time"))
        rows.append(f"| `{name}` | {model.__doc__.strip()} | {fields} |")
    return "\n".join(rows)
