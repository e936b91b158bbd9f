"""Stopping training at a safe point: SIGINT/SIGTERM (Ctrl-C, kill) become a flag the loop checks."""

from __future__ import annotations

import signal


class StopSignals:
    """Turns SIGINT/SIGTERM into a flag, so training stops at a safe point and keeps its checkpoint."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
