"""What the panel's steps share: the viewer, the chosen tomogram and labels layer, the feature names, the
current model, and the one job runner. Each step reads and sets these, never another step's widgets.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QComboBox, QLineEdit

from ..conventions import SYNTH_CLASSES
from ..errors import AnnotomoError
from ..modelfile import read_model_info
from .jobs import JobRunner


class PanelState(QObject):
    """The shared choices of the annotomo panel (the widgets that hold them are placed by the steps)."""

    model_changed = Signal(str, list)  # model path, its feature names
    segmented = Signal(str)  # an image layer's name: its segmentation (and uncertainty) is new
    annotation_changed = Signal()  # an annotation layer was painted (recounted)

    def __init__(self, viewer, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.model_path: str | None = None  # the model to segment with and fine-tune from
        self.image_box = QComboBox()  # the tomogram layer
        self.labels_box = QComboBox()  # the labels layer to train on (or pick from)
        self.classes_edit = QLineEdit(",".join(SYNTH_CLASSES))
        self.classes_edit.setToolTip("feature names, label 1 first (comma-separated)")
        # napari's notifications, looked up at each call (a test, or an application, may replace them)
        self.notify = {
            "info": lambda m: show_info(m),
            "warning": lambda m: show_warning(m),
            "error": lambda m: show_error(m),
        }
        self.jobs = JobRunner(self.notify)
        # the latest segmentation per image layer: labels, uncertainty (or None), feature names
        self.segmentations: dict[str, dict] = {}
        self.view_z = float(viewer.dims.point[0])  # the world z the viewer shows (kept by the GUI thread)
        viewer.dims.events.current_step.connect(self._moved)

    def _moved(self, event=None):
        self.view_z = float(self.viewer.dims.point[0])

    def slice_in_view(self, image) -> int:
        """The index of `image`'s slice that the viewer shows (any thread: read from a kept copy)."""
        z = int(round((self.view_z - float(image.translate[0])) / float(image.scale[0])))
        return min(max(z, 0), image.data.shape[0] - 1)

    def preview_slice(self, image, predictor, names, invert_contrast=False, match_spectrum=False):
        """Segment the slice of `image` in view (with the context slices the model reads) and send it to
        the preview layer; any thread (training's previews, and segmenting's first slice).
        """
        from ..api import segment_array

        z, halo = self.slice_in_view(image), predictor.halo[0]
        lo, hi = max(0, z - halo), min(image.data.shape[0], z + halo + 1)
        labels, _ = segment_array(
            predictor,
            np.asarray(image.data[lo:hi]),
            voxel_size(image),
            invert_contrast=invert_contrast,
            match_spectrum=match_spectrum,
        )
        self.jobs.signals.preview.emit(image.name, z, labels[z - lo], list(names))

    def go_to_slice(self, image, z: int):
        """Move the viewer to slice `z` of `image` (GUI thread)."""
        self.viewer.dims.set_point(0, float(image.translate[0]) + z * float(image.scale[0]))

    def info(self, message: str):
        """A message in the viewer."""
        self.notify["info"](message)

    def warning(self, message: str):
        """A warning in the viewer."""
        self.notify["warning"](message)

    def error(self, message: str):
        """An error in the viewer (the panel's errors are messages, never exceptions)."""
        self.notify["error"](message)

    def refresh_layer_choices(self):
        """Offer the viewer's image and labels layers, keeping the current choices where they remain."""
        images = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        labels = [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]
        for box, names in ((self.image_box, images), (self.labels_box, labels)):
            current = box.currentText()
            box.blockSignals(True)
            box.clear()
            box.addItems(names)
            if current in names:
                box.setCurrentText(current)
            box.blockSignals(False)

    def image_layer(self) -> Image:
        """The chosen tomogram layer."""
        name = self.image_box.currentText()
        if not name or name not in self.viewer.layers:
            raise AnnotomoError("open a tomogram first (File > Open, or annotomo view TOMO)")
        return self.viewer.layers[name]

    def class_names(self) -> list[str]:
        """The feature names typed in the panel."""
        names = [n.strip() for n in self.classes_edit.text().split(",") if n.strip()]
        if not names:
            raise AnnotomoError("name at least one feature (comma-separated)")
        return names

    def set_model(self, model: str):
        """Make `model` the one to segment with and fine-tune from (its features become the panel's)."""
        info = read_model_info(model)
        self.model_path = model
        self.classes_edit.setText(",".join(info.class_names))
        self.model_changed.emit(model, list(info.class_names))

    def layer(self, name):
        """The layer called `name`, or None."""
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def replace_layer(self, name):
        """Remove the layer called `name` if there is one (a step's output layer is replaced, not added)."""
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)


def voxel_size(layer):
    """(z, y, x) Angstrom from a layer's scale, or None when the layer has napari's default scale of 1."""
    scale = tuple(float(s) for s in layer.scale[-3:])
    return None if all(s == 1.0 for s in scale) else scale


def on_grid_of(image) -> dict:
    """Keyword arguments that put a new layer on `image`'s grid: scale, translate and units (napari warns
    when the layers' units disagree).
    """
    return dict(scale=image.scale, translate=image.translate, units=image.units)
