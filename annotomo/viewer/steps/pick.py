"""Step 5: particles of one feature from the prediction (or a labels layer), as points; save them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QComboBox, QFileDialog, QFormLayout, QGroupBox, QPushButton, QSpinBox

from ...errors import AnnotomoError
from .. import layers as L
from ..jobs import row
from ..state import on_grid_of, voxel_size


class PickStep(QGroupBox):
    """The feature, the smallest particle, Pick and Save picks."""

    def __init__(self, state):
        super().__init__("5. pick particles")
        self.state = state
        self.picks = None
        self.pick_class = QComboBox()
        self.pick_min = QSpinBox()
        self.pick_min.setRange(1, 10_000_000)
        self.pick_min.setValue(20)
        self.pick_button = QPushButton("Pick")
        self.pick_button.clicked.connect(self.start_picking)
        self.save_picks_button = QPushButton("Save picks...")
        self.save_picks_button.clicked.connect(self._save_picks_dialog)
        form = QFormLayout(self)
        form.addRow("feature", self.pick_class)
        form.addRow("min voxels", self.pick_min)
        form.addRow(row(self.pick_button, self.save_picks_button))
        state.jobs.buttons.append(self.pick_button)
        state.model_changed.connect(self._offer_features)

    def _offer_features(self, model: str, class_names: list):
        self.pick_class.clear()
        self.pick_class.addItems(class_names)

    def start_picking(self):
        """Particles of the chosen feature in the prediction (or labels) layer, as a points layer."""
        state = self.state
        try:
            image = state.image_layer()
            source = next(
                (
                    state.viewer.layers[n]
                    for n in (f"{image.name} prediction", state.labels_box.currentText())
                    if n in state.viewer.layers
                ),
                None,
            )
            if source is None:
                raise AnnotomoError("segment first: picking needs a labels layer")
            names = source.metadata.get(L.KEY, {}).get("class_names") or state.class_names()
            feature = self.pick_class.currentText() or names[0]
            index = names.index(feature) + 1
        except (AnnotomoError, ValueError) as exc:
            state.error(str(exc))
            return None
        from ...postprocess import pick_particles

        data, minimum = np.asarray(source.data), self.pick_min.value()
        voxel = voxel_size(image)
        state.jobs.name = "picking"

        def job():
            return pick_particles(data, index, minimum, pixel_size=voxel[2] if voxel else None)

        def done(picks):
            name = f"{image.name} {feature} picks"
            state.replace_layer(name)
            state.viewer.add_points(
                picks.centres,
                name=name,
                **on_grid_of(image),
                size=6,
                features={"voxels": picks.sizes},
                face_color="yellow",
                border_color="black",
            )
            self.picks = picks
            state.info(f"{len(picks.centres)} {feature} particles")

        return state.jobs.run(job, done, "picking")

    def save_picks(self, path):
        """Write the last picks as STAR and CSV (path without or with either suffix)."""
        from ...postprocess import write_picks

        if self.picks is None:
            raise AnnotomoError("pick first")
        stem = str(Path(path).with_suffix(""))
        write_picks(self.picks, stem + ".star", stem + ".csv")
        return stem + ".star", stem + ".csv"

    def _save_picks_dialog(self):
        path, _ = QFileDialog.getSaveFileName(self, "Save picks", "picks.star", "STAR (*.star)")
        if path:
            try:
                self.state.info("wrote " + ", ".join(self.save_picks(path)))
            except (AnnotomoError, OSError) as exc:
                self.state.error(str(exc))
