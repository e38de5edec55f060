"""Ctrl-C and SIGTERM (a cluster's pre-emption notice) stop a run at a step boundary, checkpointed.

The first signal only asks: the trainer finishes the step it is in, writes a checkpoint at that
step and raises `Interrupted`, so `--resume` loses no steps. A second signal stops at once
(KeyboardInterrupt), leaving the checkpoints written before; a write it cuts short leaves only a
temporary file, which `--resume` removes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Set by the first SIGINT or SIGTERM while `installed`; `signum` is the signal, or None."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Within: the two signals set this request instead of stopping the process. Signal handlers
        belong to the main thread; elsewhere (a run in a worker thread) nothing is installed."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
