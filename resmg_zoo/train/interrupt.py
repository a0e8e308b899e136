"""A clean stop of training on SIGINT/SIGTERM: the signal becomes a flag the loop reads after each step
(it then checkpoints and stops) instead of an exception in the middle of one."""

from __future__ import annotations

import signal
from typing import Any, Optional


class StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop reads after each step; :meth:`restore` puts the
    previous handlers back."""

    def __init__(self) -> None:
        self.received: Optional[str] = None
        self._previous: dict[signal.Signals, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.received = signal.Signals(signum).name

    def restore(self) -> None:
        """Put back the handlers that were in place before."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
