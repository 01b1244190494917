"""A run's progress on the console: a live bar on a terminal, plain lines everywhere else.

With output to a file or a CI log a live bar prints nothing useful until the end, so when the
console is not a terminal :class:`RunProgress` prints one plain line every
``$BENCH_PROGRESS_INTERVAL`` seconds (default 30) and one at the end::

    progress: 120/480 points (25 %), 6/24 units, 0 failed, elapsed 0:05:10, eta 0:15:30

Points are (codec, image, target bpp) rows, units (codec, image) pairs. A resumed run starts
from what is already stored (the bar and the counts include it) and says so first; the ETA is
the points still to measure over the rate of this attempt.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: Environment variable: seconds between plain progress lines (default 30).
INTERVAL_ENV = "BENCH_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0


def progress_interval() -> float:
    """Seconds between plain progress lines, from ``$BENCH_PROGRESS_INTERVAL`` (> 0)."""
    raw = os.environ.get(INTERVAL_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        raise ValueError(f"${INTERVAL_ENV} must be a number of seconds, not {raw!r}") from None
    if not value > 0:
        raise ValueError(f"${INTERVAL_ENV} must be > 0 seconds, not {raw!r}")
    return value


def progress_bar(console: Console, *fields: str) -> Progress:
    """A live bar on ``console``: the task's description, the bar, done/total, elapsed time and
    eta, then one text column per template of ``fields`` (e.g. ``"{task.fields[status]}"``)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        *(TextColumn(template) for template in fields),
        console=console,
        transient=False,
    )


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


class RunProgress:
    """Counts a run's points, units and failures and shows them on ``console``.

    ``points_total``/``units_total``: the whole run's, including the ``points_done``/
    ``units_done`` already stored before this attempt. ``on_tick`` is called with every plain
    line's tick (e.g. to sample the machine load). Use as a context manager; call
    :meth:`point`, :meth:`unit_done`, :meth:`failed` as results arrive.
    """

    def __init__(
        self,
        console: Console,
        *,
        points_total: int,
        points_done: int = 0,
        units_total: int,
        units_done: int = 0,
        interval_s: float | None = None,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self.console = console
        self.points_total, self.points_done = points_total, points_done
        self.units_total, self.units_done = units_total, units_done
        self.points_before = points_done
        self.failures = 0
        self.interval_s = progress_interval() if interval_s is None else interval_s
        self.on_tick = on_tick
        self.live = console.is_terminal
        self._start = time.perf_counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Progress | None = None
        self._task = None

    def __enter__(self) -> RunProgress:
        self._start = time.perf_counter()
        if self.points_before:
            self.console.print(
                f"resuming: {self.points_before} of {self.points_total} points already measured "
                f"({self.units_done} of {self.units_total} units complete); "
                f"{self.points_total - self.points_before} to go",
                highlight=False,
                soft_wrap=True,
            )
        if self.live:
            self._bar = progress_bar(self.console)
            self._bar.__enter__()
            self._task = self._bar.add_task(
                "starting workers", total=self.points_total, completed=self.points_done
            )
        else:
            self.console.print(
                f"measuring {self.points_total - self.points_done} points in "
                f"{self.units_total - self.units_done} units; a progress line every "
                f"{self.interval_s:g} s (${INTERVAL_ENV})",
                highlight=False,
                soft_wrap=True,
            )
        self._thread = threading.Thread(target=self._ticker, name="bench-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self._bar.__exit__(*exc)
        else:
            label = "done" if exc[0] is None else "stopped"
            self.console.print(self.line(label), highlight=False, soft_wrap=True)

    def _ticker(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self.on_tick is not None:
                self.on_tick()
            if self._bar is None:
                self.console.print(self.line("progress"), highlight=False, soft_wrap=True)

    def line(self, label: str) -> str:
        """``label: N/M points (p %), u/U units, f failed, elapsed h:mm:ss, eta h:mm:ss``."""
        elapsed = time.perf_counter() - self._start
        measured = self.points_done - self.points_before
        remaining = self.points_total - self.points_done
        if remaining == 0:
            eta = "0:00:00"
        elif measured and elapsed > 0:
            eta = _clock(remaining * elapsed / measured)
        else:
            eta = "unknown"
        share = 100.0 * self.points_done / self.points_total if self.points_total else 100.0
        return (
            f"{label}: {self.points_done}/{self.points_total} points ({share:.0f} %), "
            f"{self.units_done}/{self.units_total} units, {self.failures} failed, "
            f"elapsed {_clock(elapsed)}, eta {eta}"
        )

    def describe(self, text: str) -> None:
        """What the run is doing now (the bar's description; plain mode shows none)."""
        if self._bar is not None:
            self._bar.update(self._task, description=text)

    def point(self, description: str) -> None:
        """One point measured; ``description`` names it (codec, image, bpp)."""
        self.points_done += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=description)

    def unit_done(self) -> None:
        self.units_done += 1

    def failed(self, message: str) -> None:
        """A unit failed: counted, and ``message`` printed at once (plain text, not markup)."""
        self.failures += 1
        self.console.print(f"[red]failed[/] {escape(message)}", highlight=False, soft_wrap=True)
