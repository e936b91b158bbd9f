"""The panel's one background job at a time: a napari thread worker, its progress bar, status and Stop.

Every long job (training, segmenting, retraining, picking) runs in a worker thread, so the viewer stays
responsive; Stop asks the job to end at its next safe point (training keeps the best model so far). The
job's exceptions come back as values and become messages in the viewer, never exceptions in Qt's loop.
"""

from __future__ import annotations

import threading

from napari.qt.threading import thread_worker
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..errors import AnnotomoError


class Stopped(Exception):
    """Raised inside a job when the user pressed Stop."""


class JobSignals(QObject):
    """Signals a worker thread emits; Qt delivers them on the GUI thread."""

    progress = Signal(float, float)  # fraction done, seconds so far
    epoch = Signal(dict)
    message = Signal(str)  # what training says (where it starts from, its recipe's choices)
    preview = Signal(str, int, object, list)  # image layer name, slice, its labels, feature names


class JobRunner(QWidget):
    """Runs one job at a time off the GUI thread, with a progress bar, a status line and Stop.

    `notify` is the panel's messages ({"info", "warning", "error"} -> callable).
    """

    def __init__(self, notify):
        super().__init__()
        self.notify = notify
        self.worker = None
        self.stop_event = threading.Event()
        self.signals = JobSignals()
        self.name = ""  # what the progress line calls the running job
        self.buttons: list[QPushButton] = []  # disabled while a job runs
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.progress)
        layout.addWidget(row(self.status, self.stop_button))
        self.signals.progress.connect(self._show_progress)

    def run(self, job, on_done, what: str):
        """Run `job()` in a worker thread; call `on_done(result)` on the GUI thread; errors as messages."""
        if self.worker is not None:
            self.notify["warning"]("annotomo is busy; press Stop first")
            return None
        self.stop_event.clear()
        self._set_busy(True, what)

        def guarded():
            try:
                return "done", job()
            except Stopped:
                return "stopped", None
            except AnnotomoError as exc:
                return "error", str(exc)
            except Exception as exc:  # noqa: BLE001 - shown in the viewer, which must not crash
                return "error", f"{type(exc).__name__}: {exc}"

        self.worker = thread_worker(guarded, start_thread=False)()

        def finished(outcome):
            status, value = outcome
            self.worker = None
            self._set_busy(False, f"{what}: {status}")
            if status == "done":
                self.progress.setValue(1000)
                on_done(value)
            elif status == "stopped":
                self.notify["info"](f"{what}: stopped")
            else:
                self.notify["error"](f"{what} failed: {value}")

        self.worker.returned.connect(finished)
        self.worker.start()
        return self.worker

    def stop(self):
        """Ask the running job to stop (training keeps its best model so far)."""
        self.stop_event.set()
        self.status.setText(self.status.text() + " - stopping")

    def _set_busy(self, busy: bool, what: str):
        for button in self.buttons:
            button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)
        if busy:
            self.progress.setValue(0)
        self.status.setText(what)

    def _show_progress(self, fraction: float, seconds: float):
        self.progress.setValue(int(1000 * min(max(fraction, 0.0), 1.0)))
        if fraction > 0.01:
            eta = seconds * (1 - fraction) / fraction
            self.status.setText(f"{self.name}: {100 * fraction:.0f}%, {seconds:.0f} s, about {eta:.0f} s left")


def row(*widgets):
    """The widgets side by side, without margins."""
    widget = QWidget()
    layout = QHBoxLayout(widget)
    layout.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        layout.addWidget(w)
    return widget
