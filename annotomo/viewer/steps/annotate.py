"""Step 1: a new annotation layer with the feature names, a running count of what is annotated, save."""

from __future__ import annotations

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QFileDialog, QFormLayout, QGroupBox, QLabel, QPushButton

from ...errors import AnnotomoError
from .. import layers as L
from ..jobs import row
from ..state import on_grid_of


class AnnotateStep(QGroupBox):
    """New annotation, the sparse-annotation mode, the annotation summary, and Save labels."""

    def __init__(self, state):
        super().__init__("1. annotate")
        self.state = state
        self._watched: set[int] = set()
        self._summary_layer = None
        self._summary_timer = QTimer(self)
        self._summary_timer.setSingleShot(True)
        self._summary_timer.setInterval(300)
        self._summary_timer.timeout.connect(self._summary_due)
        self.mode_box = QComboBox()
        self.mode_box.addItems(L.MODES)
        self.mode_box.setToolTip(
            "slices: a slice you paint in is annotated, unpainted voxels there are background;"
            " regions: only painted voxels count (paint background with its own brush)"
        )
        self.new_button = QPushButton("New annotation")
        self.new_button.clicked.connect(self.new_annotation)
        self.save_button = QPushButton("Save labels...")
        self.save_button.clicked.connect(self._save_dialog)
        self.summary_label = QLabel("")
        self.summary_label.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow("features", state.classes_edit)
        form.addRow("annotated", self.mode_box)
        form.addRow(row(self.new_button, self.save_button))
        form.addRow(self.summary_label)

    def watch_labels_layers(self):
        """Recount a labels layer's annotation when it is painted (each layer connected once)."""
        for layer in self.state.viewer.layers:
            if isinstance(layer, Labels) and id(layer) not in self._watched:
                layer.events.paint.connect(lambda e, lay=layer: self._summary_soon(lay))
                layer.events.data.connect(lambda e, lay=layer: self._summary_soon(lay))
                self._watched.add(id(layer))

    def new_annotation(self):
        """Add an empty annotation layer for the chosen tomogram, with the feature names and colours."""
        state = self.state
        try:
            image = state.image_layer()
            names = state.class_names()
        except AnnotomoError as exc:
            state.error(str(exc))
            return None
        kwargs = L.labels_layer_kwargs(names, kind="annotation", image=image.name, mode=self.mode_box.currentText())
        layer = state.viewer.add_labels(
            np.zeros(image.data.shape, np.uint8),
            name=f"{image.name} annotation",
            **on_grid_of(image),
            **kwargs,
        )
        layer.mode = "paint"
        layer.selected_label = 1
        state.info(
            f"paint features 1..{len(names)} ({', '.join(names)}); label {L.background_brush(names)} paints background"
        )
        self._update_summary(layer)
        return layer

    def _summary_soon(self, layer):
        """Recount a layer's annotation shortly after painting stops (counting a big volume takes a moment)."""
        self._summary_layer = layer
        self._summary_timer.start()

    def _summary_due(self):
        if self._summary_layer is not None:
            self._update_summary(self._summary_layer)

    def _update_summary(self, layer):
        meta = layer.metadata.get(L.KEY, {})
        names = meta.get("class_names")
        if not names:
            return
        try:
            summary = L.summarise(L.training_labels(layer.data, meta), names)
        except ValueError as exc:
            self.summary_label.setText(f"{layer.name}: {exc}")
            return
        self.summary_label.setText(f"{layer.name}: {summary.text()}")
        self.state.annotation_changed.emit()

    def save_labels(self, layer, path):
        """Write a labels layer as the MRC file `annotomo train` reads (names, voxel size, origin)."""
        from ..writer import write_labels

        return write_labels(
            str(path), layer.data, dict(metadata=layer.metadata, scale=layer.scale, translate=layer.translate)
        )[0]

    def _save_dialog(self):
        state = self.state
        name = state.labels_box.currentText()
        if not name:
            state.error("no labels layer to save")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save labels", f"{name}.mrc", "MRC (*.mrc)")
        if path:
            try:
                state.info(f"wrote {self.save_labels(state.viewer.layers[name], path)}")
            except (AnnotomoError, ValueError, OSError) as exc:
                state.error(str(exc))
