"""Step 4: where to annotate next: the model's least certain slices (or boxes), a click away."""

from __future__ import annotations

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QFormLayout, QGroupBox, QLabel, QListWidget, QListWidgetItem, QPushButton, QSpinBox

from ...errors import AnnotomoError
from ...suggestions import suggest_places
from ...uncertainty import slice_means
from .. import layers as L
from ..jobs import row
from ..state import on_grid_of


class SuggestStep(QGroupBox):
    """Suggest: a list of places to annotate (click: go there, ready to paint) and a strip along z of the
    uncertainty per slice over the slices already annotated.
    """

    def __init__(self, state, annotate):
        super().__init__("4. where to annotate next")
        self.state = state
        self.annotate = annotate  # a click makes (or selects) the annotation layer to paint in
        self.places: list[dict] = []
        self.count_box = QSpinBox()
        self.count_box.setRange(1, 100)
        self.count_box.setValue(5)
        self.region_box = QSpinBox()
        self.region_box.setRange(0, 100_000)
        self.region_box.setSpecialValueText("whole slices")
        self.region_box.setSuffix(" px boxes")
        self.suggest_button = QPushButton("Suggest")
        self.suggest_button.setToolTip("segment first (with uncertainty); then the places that would help most")
        self.suggest_button.clicked.connect(lambda: self.suggest())
        self.list = QListWidget()
        self.list.setMaximumHeight(110)
        self.list.itemClicked.connect(lambda item: self.go_to(self.list.row(item)))
        self.strip = QLabel()
        self.strip.setFixedHeight(16)
        self.strip.setToolTip("along z: the model's uncertainty per slice (bright: unsure); green: annotated")
        form = QFormLayout(self)
        form.addRow(row(self.count_box, self.region_box, self.suggest_button))
        form.addRow(self.list)
        form.addRow("z", self.strip)
        state.segmented.connect(lambda name: self.draw_strip())
        state.annotation_changed.connect(self.draw_strip)

    def _image_and_segmentation(self):
        image = self.state.image_layer()
        found = self.state.segmentations.get(image.name)
        if found is None or found["uncertainty"] is None:
            raise AnnotomoError(f"segment {image.name} first, with 'uncertainty' ticked")
        return image, found

    def annotated(self, image) -> np.ndarray:
        """Which slices of `image` its annotation layers (or corrected prediction) annotate, bool per z."""
        layers = [
            (layer.data, layer.metadata.get(L.KEY, {}))
            for layer in self.state.viewer.layers
            if isinstance(layer, Labels)
            and layer.metadata.get(L.KEY, {}).get("image") == image.name
            and layer.metadata[L.KEY].get("kind") in ("annotation", "corrections", "prediction")
        ]
        return L.annotated_slices(layers, image.data.shape[0])

    def suggest(self):
        """Fill the list with the best places to annotate next; returns them."""
        try:
            image, found = self._image_and_segmentation()
            region = self.region_box.value() or None
            places = suggest_places(
                found["labels"],
                found["uncertainty"],
                found["names"],
                self.annotated(image),
                self.count_box.value(),
                region,
            )
        except AnnotomoError as exc:
            self.state.error(str(exc))
            return None
        self.places = places
        self.list.clear()
        for p in places:
            box = f" y {p['y0']}:{p['y1']} x {p['x0']}:{p['x1']}" if "y0" in p else ""
            text = f"z {p['z']}{box}  {p['score']:.3f}  {', '.join(p['features']) or '-'}"
            self.list.addItem(QListWidgetItem(text))
        self.draw_strip()
        if not places:
            self.state.info("no place left to suggest: every slice is annotated or next to one")
        return places

    def go_to(self, index: int):
        """Show suggestion `index`'s slice (and box), with the annotation layer selected for painting."""
        place = self.places[index]
        image = self.state.image_layer()
        self.state.go_to_slice(image, place["z"])
        layer = (
            next(
                (
                    lay
                    for lay in self.state.viewer.layers
                    if isinstance(lay, Labels)
                    and lay.metadata.get(L.KEY, {}).get("kind") == "annotation"
                    and lay.metadata[L.KEY].get("image") == image.name
                ),
                None,
            )
            or self.annotate.new_annotation()
        )
        if layer is None:
            return None
        if "y0" in place:
            self._outline(image, place)
            centre = [(place["y0"] + place["y1"]) / 2, (place["x0"] + place["x1"]) / 2]
            scene = getattr(self.state.viewer, "scene", None)  # napari >= 0.9; viewer.camera before
            camera = scene.camera if scene is not None else self.state.viewer.camera
            camera.center = tuple(
                float(image.translate[1 + i]) + c * float(image.scale[1 + i]) for i, c in enumerate(centre)
            )
        self.state.viewer.layers.selection.active = layer
        layer.visible = True
        layer.mode = "paint"
        return layer

    def _outline(self, image, place):
        """A rectangle around the suggested box, on its slice."""
        name = f"{image.name} suggested box"
        self.state.replace_layer(name)
        z, y0, x0, y1, x1 = (place[k] for k in ("z", "y0", "x0", "y1", "x1"))
        self.state.viewer.add_shapes(
            [np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]], float)],
            shape_type="rectangle",
            name=name,
            **on_grid_of(image),
            edge_color="yellow",
            face_color="transparent",
            edge_width=2,
        )

    def draw_strip(self):
        """Redraw the strip for the chosen tomogram (nothing before it is segmented)."""
        try:
            image, found = self._image_and_segmentation()
        except AnnotomoError:
            self.strip.clear()
            return
        width = max(self.strip.width(), 100)
        picture = L.strip_image(slice_means(found["uncertainty"]), self.annotated(image), width, 16)
        qimage = QImage(picture.data, width, 16, QImage.Format.Format_RGBA8888).copy()
        self.strip.setPixmap(QPixmap.fromImage(qimage).scaled(width, 16, Qt.AspectRatioMode.IgnoreAspectRatio))
