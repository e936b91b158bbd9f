"""Step 0 (optional): open a run of a copick project, and save an annotation back into it.

A thin layer over `annotomo.copick_projects` (which reads and writes through the copick library): the run's
tomogram becomes the image layer, its segmentations labels layers, its picks points layers, each at the
voxel spacing in Angstrom; "Save to project" stores the selected labels layer's annotation as a copick
multilabel segmentation (255, not annotated, kept) that `annotomo train --copick --from-segmentation` reads.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QLineEdit,
    QPushButton,
)

from ...errors import AnnotomoError
from .. import layers as L
from ..jobs import row

ANGSTROM = ("angstrom",) * 3


class ProjectStep(QGroupBox):
    """Config, run, voxel spacing and tomogram type; Open run; name, user, session; Save to project."""

    def __init__(self, state):
        super().__init__("0. copick project (optional)")
        self.state = state
        self.config_edit = QLineEdit()
        self.config_edit.setPlaceholderText("copick config (JSON)")
        self.config_edit.editingFinished.connect(self._offer_runs)
        browse = QPushButton("Browse...")
        browse.clicked.connect(self._browse)
        self.run_box = QComboBox()
        self.spacing_box = QDoubleSpinBox()
        self.spacing_box.setRange(0.1, 1000.0)
        self.spacing_box.setDecimals(3)
        self.spacing_box.setValue(10.0)
        self.type_edit = QLineEdit("wbp")
        self.open_button = QPushButton("Open run")
        self.open_button.clicked.connect(self._open_clicked)
        self.name_edit = QLineEdit("annotation")
        self.user_edit = QLineEdit("annotomo")
        self.session_edit = QLineEdit("1")
        self.overwrite_box = QCheckBox("replace")
        self.save_button = QPushButton("Save to project")
        self.save_button.clicked.connect(self._save_clicked)
        form = QFormLayout(self)
        form.addRow(row(self.config_edit, browse))
        form.addRow("run", self.run_box)
        form.addRow("voxel spacing (A)", self.spacing_box)
        form.addRow("tomogram type", self.type_edit)
        form.addRow(self.open_button)
        form.addRow("save as", row(self.name_edit, self.user_edit, self.session_edit))
        form.addRow(row(self.save_button, self.overwrite_box))

    def _browse(self):
        path, _ = QFileDialog.getOpenFileName(self, "copick config", "", "copick config (*.json)")
        if path:
            self.config_edit.setText(path)
            self._offer_runs()

    def _offer_runs(self):
        from ...copick_projects import open_project

        config = self.config_edit.text().strip()
        if not config:
            return
        try:
            root = open_project(config)
        except AnnotomoError as exc:
            self.state.error(str(exc))
            return
        self.run_box.clear()
        self.run_box.addItems([r.name for r in root.runs])

    def _open_clicked(self):
        self.open_run(
            self.config_edit.text().strip(),
            self.run_box.currentText(),
            self.spacing_box.value(),
            self.type_edit.text().strip(),
        )

    def open_run(self, config, run, voxel_spacing, tomo_type):
        """Add the run's tomogram, segmentations and picks as layers; returns the image layer (None on error)."""
        from ...copick_projects import read_run

        state = self.state
        try:
            contents = read_run(config, run, voxel_spacing, tomo_type)
        except AnnotomoError as exc:
            state.error(str(exc))
            return None
        grid = dict(scale=(contents.voxel_spacing,) * 3, units=ANGSTROM)
        source = dict(config=str(config), run=run, voxel_spacing=contents.voxel_spacing)
        image = state.viewer.add_image(
            contents.tomogram, name=f"{run} {tomo_type}", metadata={L.KEY: {"copick": source}}, **grid
        )
        for name, labels, names in contents.segmentations:
            kwargs = L.labels_layer_kwargs(names, kind="annotation", image=image.name)
            kwargs["metadata"][L.KEY]["copick"] = source
            state.viewer.add_labels(labels, name=name, **grid, **kwargs)
        for name, centres in contents.picks:
            state.viewer.add_points(
                centres * contents.voxel_spacing, name=name, size=20 * contents.voxel_spacing / 10, units=ANGSTROM
            )
        state.image_box.setCurrentText(image.name)
        state.info(
            f"opened {run}: {len(contents.segmentations)} segmentation(s), {len(contents.picks)} pick set(s) "
            f"at {contents.voxel_spacing:g} A"
        )
        return image

    def _save_clicked(self):
        name = self.state.labels_box.currentText()
        if not name:
            self.state.error("no labels layer to save")
            return
        self.save_to_project(
            self.state.viewer.layers[name],
            self.name_edit.text().strip(),
            self.user_edit.text().strip(),
            self.session_edit.text().strip(),
            self.overwrite_box.isChecked(),
        )

    def save_to_project(self, layer, name, user_id, session_id, overwrite=False):
        """Store a labels layer's annotation as a copick segmentation of the run it (or its image) came from."""
        from ...copick_projects import save_annotation

        state = self.state
        meta = layer.metadata.get(L.KEY, {})
        source = meta.get("copick")
        if source is None and meta.get("image") in state.viewer.layers:
            source = state.viewer.layers[meta["image"]].metadata.get(L.KEY, {}).get("copick")
        if source is None:
            state.error(f"{layer.name}: not from a copick run (open one with Open run)")
            return None
        try:
            uri = save_annotation(
                source["config"],
                source["run"],
                source["voxel_spacing"],
                L.training_labels(layer.data, meta),
                meta.get("class_names") or [],
                name,
                user_id,
                session_id,
                overwrite,
            )
        except (AnnotomoError, ValueError) as exc:
            state.error(str(exc))
            return None
        state.info(f"saved {layer.name} into {source['run']} as segmentation {uri}")
        return uri
