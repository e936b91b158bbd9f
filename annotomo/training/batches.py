"""Training batches made ahead in a background thread (on GPUs, whose steps would wait for the CPU)."""

from __future__ import annotations

import queue
import threading


class BatchMaker:
    """Makes training batches ahead in a background thread, so the network's step does not wait while the
    CPU crops, warps and augments patches (on a GPU, batch making is a large part of a step: RESULTS.md#gpu).

    One producer calls `make` in order, so the batches are those an inline loop would make with the same
    random generator (which nothing else may use meanwhile). `depth` 0 makes each batch on demand.
    """

    def __init__(self, make, depth: int):
        self._make, self._depth = make, depth
        self._queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = None
        if depth:
            self._thread = threading.Thread(target=self._produce, name="annotomo-batches", daemon=True)
            self._thread.start()

    def _produce(self):
        try:
            while not self._stop.is_set():
                self._put(self._make())
        except BaseException as exc:  # noqa: BLE001 - handed to the training loop, which raises it
            self._put(exc)

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self):
        """The next batch (made ahead, or now when depth is 0); re-raises an error of the producer."""
        if not self._depth:
            return self._make()
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        """Stop the producer thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
