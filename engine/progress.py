"""Progress of long work: a callback `progress(done, what)` with `done` from 0 to 1 and what is happening now, in
words. The engine reports; the app draws a bar with an ETA (ui.progress), the CLI stays quiet."""

from collections.abc import Callable

Progress = Callable[[float, str], None]


def quiet(done: float, what: str) -> None:
    """Progress that nobody watches."""


def part(progress: Progress | None, start: float, end: float) -> Progress:
    """A step's own 0-1 progress as the span start-end of the whole."""
    progress = progress or quiet
    return lambda done, what: progress(start + (end - start) * done, what)
