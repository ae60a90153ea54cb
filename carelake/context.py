"""What every stage runner gets: configuration, lake, engine session, run id, and a progress reporter."""

from __future__ import annotations

import logging
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from carelake.config import Config
from carelake.lake import Lake

__all__ = ["RunContext", "Progress", "new_run_id"]

log = logging.getLogger("carelake")


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


class Progress:
    """Step-by-step progress on stderr: a spinner while a step runs on a terminal, a line when it ends.

    Lines carry counts and timings only, never record content.
    """

    def __init__(self, *, enabled: bool = True):
        self.enabled = enabled
        self._console = None
        if enabled:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)

    @contextmanager
    def step(self, label: str):
        started = time.monotonic()
        note: dict = {}
        # one spinner at a time (rich allows one live display): steps of helper threads just print their line
        if self._console is not None and self._console.is_terminal and threading.current_thread() is threading.main_thread():
            with self._console.status(f"{label} ..."):
                yield note
        else:
            yield note
        seconds = time.monotonic() - started
        detail = f" ({note['detail']})" if note.get("detail") else ""
        log.info("%s done in %.1fs%s", label, seconds, detail)
        if self._console is not None:
            self._console.print(f"  [green]✓[/green] {label}{detail} [dim]{seconds:.1f}s[/dim]")


@dataclass
class RunContext:
    config: Config
    lake: Lake
    spark: object
    run_id: str = field(default_factory=new_run_id)
    as_of: date = field(default_factory=lambda: datetime.now(timezone.utc).date())
    progress: Progress = field(default_factory=lambda: Progress(enabled=sys.stderr.isatty()))
    results: dict = field(default_factory=dict)  # stage -> its summary dict
    stages: tuple[str, ...] = ()  # the stages this run does, in order (set by carelake.pipeline.run_pipeline)
    #: None: each validation builds its Data Docs pages; a list (run_pipeline's): validations add their
    #: pages to it and the run builds them once at its end (`carelake.quality.build_data_docs`)
    data_docs: list | None = None
