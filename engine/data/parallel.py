"""Column- and block-level parallelism on threads: NumPy and pandas release the GIL on large arrays."""

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor


def threaded(fn: Callable, items: Iterable) -> list:
    """`[fn(item) for item in items]`, run on all cores; in order; the first exception propagates."""
    items = list(items)
    workers = min(len(items), os.cpu_count() or 1)
    if workers < 2:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))
