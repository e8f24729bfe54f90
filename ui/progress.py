"""Long work off the script thread, with a progress bar and an ETA on the page while it runs."""

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

import streamlit as st

from engine.progress import Progress

T = TypeVar("T")
TICK_S = 0.25


def eta_text(seconds: float) -> str:
    return f"about {seconds:.0f} s left" if seconds < 90 else f"about {seconds / 60:.0f} min left"


def eta_suffix(elapsed: float, done: float) -> str:
    """ " · about N s left" from the time so far and the share done; nothing until both say enough."""
    return f" · {eta_text(elapsed * (1 - done) / done)}" if done >= 0.05 and elapsed >= 1 else ""


def with_progress(work: Callable[[Progress], T], label: str, expected_s: float | None = None) -> T:
    """`work(progress)` on a worker thread (it must not call Streamlit) while a bar shows what it reports, with an
    ETA from the time so far. `expected_s`: for work that cannot report (one library call), the bar follows the
    clock up to 95% of this estimate. Exceptions from `work` are raised here."""
    seen = {"done": 0.0, "what": label}

    def report(done: float, what: str) -> None:
        seen["done"], seen["what"] = max(seen["done"], min(float(done), 1.0)), what

    bar = st.progress(0.0, text=f"{label}…")
    start = time.monotonic()
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="layerlab-work") as pool:
            future = pool.submit(work, report)
            while not wait([future], timeout=TICK_S).done:
                elapsed = time.monotonic() - start
                done = seen["done"]
                if expected_s:
                    done = max(done, min(elapsed / expected_s, 0.95))
                left = eta_suffix(elapsed, done)
                bar.progress(done, text=f"{seen['what']}… {done:.0%}{left}")
            return future.result()
    finally:
        bar.empty()


def job_view(key: str, label: str) -> dict | None:
    """The job (engine.jobs) whose folder the session keeps under `key`: while it runs, a bar with what it is doing
    and an ETA that redraws itself and reruns the page when the job ends; then its result (None: no job, or it is
    still running). A failed job shows its message and returns None."""
    from pathlib import Path

    from engine import jobs

    folder = st.session_state.get(key)
    if not folder:
        return None
    folder = Path(folder)
    job = jobs.state(folder)
    if job["state"] == "running":

        def live():
            job = jobs.state(folder)
            if job["state"] != "running":
                st.rerun(scope="app")  # the result is drawn by the page
            started, done = job.get("started"), float(job["progress"])
            left = eta_suffix(time.time() - started, done) if started else ""
            st.progress(min(done, 1.0), text=f"{label}: {job['what']}{left}")

        st.fragment(live, run_every=1.0)()
        return None
    if job["state"] == "failed":
        st.error(job["message"], icon=":material/error:")
        return None
    return job["result"]
