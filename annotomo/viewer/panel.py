"""The annotomo dock widget: a copick run, annotate, train, segment-correct-retrain, where next, pick.

The steps (`steps/`) share a small state (`state.PanelState`: the viewer, the chosen tomogram and labels
layer, the feature names, the current model, and the one job runner of `jobs`). The work itself is
annotomo's Python API: `train`, `segment_array`, `pick_particles`, `write_volume`; the panel only moves
layers in and out of it.
"""

from __future__ import annotations

from qtpy.QtWidgets import QFormLayout, QVBoxLayout, QWidget

from .state import PanelState
from .steps import AUTO_START, NO_MODEL, AnnotateStep, PickStep, ProjectStep, SegmentStep, SuggestStep, TrainStep


class AnnotomoPanel(QWidget):
    """The annotomo panel for a napari viewer (npe2 widget contribution: napari passes the viewer)."""

    def __init__(self, napari_viewer, model: str | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.state = PanelState(napari_viewer, parent=self)
        self.project = ProjectStep(self.state)
        self.annotate = AnnotateStep(self.state)
        self.training = TrainStep(self.state)
        self.segmenting = SegmentStep(self.state, self.training)
        self.suggesting = SuggestStep(self.state, self.annotate)
        self.picking = PickStep(self.state)
        outer = QVBoxLayout(self)
        top = QFormLayout()
        top.addRow("tomogram", self.state.image_box)
        outer.addWidget(self.project)
        outer.addLayout(top)
        for step in (self.annotate, self.training, self.segmenting, self.suggesting, self.picking, self.state.jobs):
            outer.addWidget(step)
        outer.addStretch()
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._layers_changed)
        self._layers_changed()
        if model:
            self.state.set_model(model)

    def _layers_changed(self, event=None):
        self.state.refresh_layer_choices()
        self.annotate.watch_labels_layers()

    # what scripts, tests and the launcher use: each step's entry point, and the shared state

    @property
    def model_path(self) -> str | None:
        """The model to segment with and fine-tune from."""
        return self.state.model_path

    @model_path.setter
    def model_path(self, model):
        self.state.model_path = model

    @property
    def worker(self):
        """The running job's worker, or None."""
        return self.state.jobs.worker

    def set_model(self, model: str):
        """Segment with and fine-tune from `model` (a file or built-in name)."""
        self.state.set_model(model)

    def stop(self):
        """Ask the running job to stop (training keeps its best model so far)."""
        self.state.jobs.stop()

    def open_copick_run(self, config, run, voxel_spacing, tomo_type):
        """Open a copick run's tomogram, segmentations and picks as layers (step 0)."""
        return self.project.open_run(config, run, voxel_spacing, tomo_type)

    def save_to_copick(self, layer, name, user_id, session_id, overwrite=False):
        """Save a labels layer into the copick run it came from, as a segmentation (step 0)."""
        return self.project.save_to_project(layer, name, user_id, session_id, overwrite)

    def new_annotation(self):
        """Add an empty annotation layer for the chosen tomogram (step 1)."""
        return self.annotate.new_annotation()

    def save_labels(self, layer, path):
        """Write a labels layer as the MRC file `annotomo train` reads (step 1)."""
        return self.annotate.save_labels(layer, path)

    def training_pairs(self, labels_layers=None):
        """The (image layer, training labels, class names) that Train would use (step 2)."""
        return self.training.training_pairs(labels_layers)

    def start_training(self, labels_layers=None, init=None, minutes=None, then=None):
        """Train in the background (step 2)."""
        return self.training.start_training(labels_layers, init, minutes, then)

    def start_segmenting(self, then=None):
        """Segment the chosen tomogram in the background (step 3)."""
        return self.segmenting.start_segmenting(then)

    def show_prediction(self, image, labels, probs, class_names, uncertainty=None):
        """Add (or replace) the prediction layer, probability and uncertainty layers (step 3)."""
        return self.segmenting.show_prediction(image, labels, probs, class_names, uncertainty)

    def start_retraining(self):
        """Fine-tune on the corrected slices, then segment again (step 3)."""
        return self.segmenting.start_retraining()

    def suggest(self):
        """List the places where annotating would help most (step 4); returns them."""
        return self.suggesting.suggest()

    def start_picking(self):
        """Pick particles of the chosen feature (step 5)."""
        return self.picking.start_picking()

    def save_picks(self, path):
        """Write the last picks as STAR and CSV (step 5)."""
        return self.picking.save_picks(path)


def open_in_viewer(viewer, tomogram, labels=None):
    """Open a tomogram (and labels) in `viewer` through annotomo's reader; returns the layers."""
    from .reader import read_layer

    opened = []
    for path in [tomogram] + ([labels] if labels else []):
        data, kwargs, kind = read_layer(path)
        add = viewer.add_labels if kind == "labels" else viewer.add_image
        opened.append(add(data, **kwargs))
    return opened


__all__ = ["AUTO_START", "NO_MODEL", "AnnotomoPanel", "open_in_viewer"]
