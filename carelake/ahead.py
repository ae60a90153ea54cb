"""A mapping whose values are built in a background thread, in order, ahead of whoever reads them.

The validate stage stages a quality view per silver table (engine work: Rust threads, no GIL) and then
runs Great Expectations on each (single-threaded Python, mostly waiting on small queries). Reading the
views through `Ahead` lets GE check one table while the engine stages the next, instead of one core
idling through each half in turn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["Ahead"]

V = TypeVar("V")


class Ahead(Mapping[str, V]):
    """name -> value of `builders[name]()`; every builder starts at once, one at a time in key order.

    Reading a value waits for its builder and re-raises what it raised. Use as a context manager:
    leaving it cancels the builders not yet started and waits for the running one, so no engine work
    outlives the stage (say, after a failure of the reader)."""

    def __init__(self, builders: Mapping[str, Callable[[], V]]):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="carelake-ahead")
        self._futures = {name: self._executor.submit(build) for name, build in builders.items()}

    def __getitem__(self, name: str) -> V:
        return self._futures[name].result()

    def __iter__(self) -> Iterator[str]:
        return iter(self._futures)

    def __len__(self) -> int:
        return len(self._futures)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Ahead[V]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
