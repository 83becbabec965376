"""An ordered, bounded parallel map over chunks of work.

``multiprocessing.Pool.imap`` reads its whole input ahead (its feeder thread does not wait for the
consumer), so a large dataset would pile up in memory; here at most ``max_in_flight`` chunks are
submitted and not yet consumed. Results come back in submission order, so the output does not
depend on the number of processes.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Chunks submitted per worker process before the oldest result is awaited: enough to keep every
#: process busy while the parent writes, small enough to bound memory.
IN_FLIGHT_PER_PROCESS = 2

#: ``spawn`` rather than ``fork``: the parent holds threads (pyarrow, tqdm) that a fork would copy mid-state.
START_METHOD = "spawn"


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    num_proc: int,
    initializer: Callable[..., Any],
    initargs: tuple = (),
) -> Iterator[R]:
    """Yield ``fn(item)`` for each item, in order, using ``num_proc`` processes (1: this process).

    ``initializer(*initargs)`` runs once per process (in this process when ``num_proc == 1``).
    ``fn`` and ``initializer`` must be importable module-level functions (spawned workers import them).
    """
    if num_proc <= 1:
        initializer(*initargs)
        for item in items:
            yield fn(item)
        return
    context = multiprocessing.get_context(START_METHOD)
    max_in_flight = IN_FLIGHT_PER_PROCESS * num_proc
    with context.Pool(num_proc, initializer=initializer, initargs=initargs) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= max_in_flight:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
