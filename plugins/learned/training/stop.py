"""A polite stop for training loops: the first SIGINT or SIGTERM is a request to stop after the
current iteration (with a checkpoint); a second SIGINT interrupts at once."""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopFlag:
    """Context manager: while inside, SIGINT/SIGTERM set :attr:`requested` to the signal's name
    (``"SIGTERM"``) instead of ending the process; the previous handlers come back on exit.
    Outside the main thread (no signal handlers allowed) it only holds ``None``."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
