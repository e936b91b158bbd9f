"""The live training curve: training loss and mean Dice per epoch, drawn off the GUI thread."""

from __future__ import annotations

import threading

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QLabel, QSizePolicy


class TrainingCurve(QLabel):
    """Live training curve: training loss and mean Dice per epoch.

    matplotlib draws it off the GUI thread, into an image the label shows: drawn on the GUI thread while
    training keeps a small CPU's cores busy, a redraw stalls the viewer noticeably (see the CHANGELOG).
    """

    drawn = Signal(object, int)  # a QImage, and the number of epochs it shows

    def __init__(self):
        super().__init__()
        from concurrent.futures import ThreadPoolExecutor

        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        # as wide as the panel, a fixed height: the image drawn for one size never dictates the next
        self.setMinimumWidth(240)
        self.setFixedHeight(170)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.figure = Figure(figsize=(3.2, 1.8), dpi=100)
        FigureCanvasAgg(self.figure)  # a canvas of the figure's own, not a widget: any thread may draw it
        # fixed margins: a layout engine would double the time each redraw takes
        self.figure.subplots_adjust(left=0.16, right=0.84, bottom=0.22, top=0.95)
        self.loss_axis = self.figure.add_subplot(111)
        self.dice_axis = self.loss_axis.twinx()
        (self.loss_line,) = self.loss_axis.plot([], [], color="tab:blue", label="loss")
        (self.dice_line,) = self.dice_axis.plot([], [], color="tab:green", label="Dice")
        self.loss_axis.set_xlabel("epoch", fontsize=7)
        self.loss_axis.set_ylabel("loss", fontsize=7, color="tab:blue")
        self.dice_axis.set_ylabel("mean Dice", fontsize=7, color="tab:green")
        self.dice_axis.set_ylim(0, 1)
        for axis in (self.loss_axis, self.dice_axis):
            axis.tick_params(labelsize=6)
        self.drawn_epochs = -1  # none drawn yet
        self._history: list = []
        self._size = (240, 170, 1.0)  # logical pixels and device pixel ratio, read on the GUI thread
        self._drawer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="annotomo-curve")
        self._state = threading.Lock()
        self._dirty = self._busy = False
        self.drawn.connect(self._show)
        self.plot([])

    def plot(self, history):
        """Show the epochs so far; the drawing happens in the background (the latest history wins)."""
        self._history = list(history)
        self._draw_soon()

    def resizeEvent(self, event):  # noqa: N802 (Qt's name)
        """Redraw at the new size."""
        super().resizeEvent(event)
        self._draw_soon()

    def _draw_soon(self):
        self._size = (max(self.width(), 240), self.height(), self.devicePixelRatioF())
        with self._state:
            self._dirty = True
            if self._busy:  # the drawing thread will see the new history when it is done
                return
            self._busy = True
        self._drawer.submit(self._draw_while_dirty)

    def _draw_while_dirty(self):
        """On the drawing thread: draw the latest history until no newer one has come."""
        try:
            while True:
                with self._state:
                    if not self._dirty:
                        self._busy = False
                        return
                    self._dirty = False
                    history, size = self._history, self._size
                self.drawn.emit(self._image(history, *size), len(history))
        except BaseException:
            with self._state:
                self._busy = False
            raise

    def _image(self, history, width, height, ratio):
        """The curves of `history` as a QImage of width x height logical pixels."""
        from qtpy.QtGui import QImage

        from ..preview import DRAWING_LOCK

        with DRAWING_LOCK:  # matplotlib draws one figure at a time (training draws its own curves)
            self.figure.set_dpi(100 * ratio)
            self.figure.set_size_inches(width / 100, height / 100)
            epochs = [h["epoch"] for h in history]
            self.loss_line.set_data(epochs, [h["train_loss"] for h in history])
            self.dice_line.set_data(epochs, [h["mean_dice"] for h in history])
            self.loss_axis.relim()
            self.loss_axis.autoscale_view()
            self.figure.canvas.draw()
            rgba = np.asarray(self.figure.canvas.buffer_rgba())
            image = QImage(rgba.data, rgba.shape[1], rgba.shape[0], QImage.Format.Format_RGBA8888).copy()
        image.setDevicePixelRatio(ratio)
        return image

    def _show(self, image, epochs: int):
        from qtpy.QtGui import QPixmap

        self.setPixmap(QPixmap.fromImage(image))
        self.drawn_epochs = epochs
