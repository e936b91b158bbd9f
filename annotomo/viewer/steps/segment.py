"""Step 3: segment the tomogram with the current model; correct the prediction; retrain on corrections."""

from __future__ import annotations

import time

import numpy as np
from napari.layers import Labels
from qtpy.QtWidgets import QCheckBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QLabel, QPushButton

from ...errors import AnnotomoError
from ...modelfile import read_model_info
from .. import layers as L
from ..jobs import Stopped, row
from ..state import on_grid_of, voxel_size


class SegmentStep(QGroupBox):
    """The model, Segment (with probability layers, contrast and spectrum options), Retrain on corrections."""

    def __init__(self, state, training):
        super().__init__("3. segment, correct, retrain")
        self.state = state
        self.training = training  # retraining is training, from the current model
        self.model_label = QLabel("model: none yet")
        self.model_label.setWordWrap(True)
        self.model_button = QPushButton("Model file...")
        self.model_button.clicked.connect(self._model_dialog)
        self.probabilities_box = QCheckBox("probability layers")
        self.invert_box = QCheckBox("dense matter bright")
        self.uncertainty_box = QCheckBox("uncertainty")
        self.uncertainty_box.setChecked(True)
        self.uncertainty_box.setToolTip(
            "also compute how unsure the model is of each voxel: a layer to toggle, and the suggestions of "
            "where to annotate next"
        )
        self.match_box = QCheckBox("match spectrum")
        self.match_box.setChecked(True)
        self.match_box.setToolTip(
            "filter the tomogram so that its noise and resolution look like the model's training data"
        )
        self.segment_button = QPushButton("Segment")
        self.segment_button.clicked.connect(lambda: self.start_segmenting())
        self.retrain_minutes = QDoubleSpinBox()
        self.retrain_minutes.setRange(0.05, 120)
        self.retrain_minutes.setValue(1.0)
        self.retrain_minutes.setSuffix(" min")
        self.retrain_button = QPushButton("Retrain on corrections")
        self.retrain_button.setToolTip(
            "fine-tune the model on the slices you corrected in the prediction layer "
            "(plus the earlier annotation), then segment again"
        )
        self.retrain_button.clicked.connect(self.start_retraining)
        form = QFormLayout(self)
        form.addRow(self.model_label, self.model_button)
        form.addRow(row(self.probabilities_box, self.uncertainty_box))
        form.addRow(row(self.invert_box, self.match_box))
        form.addRow(self.segment_button)
        form.addRow(self.retrain_minutes, self.retrain_button)
        state.jobs.buttons += [self.segment_button, self.retrain_button]
        state.model_changed.connect(self._show_model)

    def _show_model(self, model: str, class_names: list):
        self.model_label.setText(f"model: {model} ({', '.join(class_names)})")

    def start_segmenting(self, then=None):
        """Segment the chosen tomogram with the current model, in the background."""
        state = self.state
        try:
            image = state.image_layer()
            if not state.model_path:
                raise AnnotomoError("choose a model (train one, or Model file...)")
            model = state.model_path
            info = read_model_info(model)
        except AnnotomoError as exc:
            state.error(str(exc))
            return None
        from ...api import segment_array

        volume, voxels = image.data, voxel_size(image)
        probabilities, invert = self.probabilities_box.isChecked(), self.invert_box.isChecked()
        match, uncertain = self.match_box.isChecked(), self.uncertainty_box.isChecked()
        stop, signals, total = state.jobs.stop_event, state.jobs.signals, image.data.shape[0]
        started = time.perf_counter()
        done_slices = [0]
        state.jobs.name = "segmenting"

        def progress(n):
            if stop.is_set():
                raise Stopped()
            done_slices[0] += n
            signals.progress.emit(done_slices[0] / total, time.perf_counter() - started)

        def job():
            from ...predict import Predictor

            predictor = Predictor.from_file(model)
            if volume.shape[0] > 4 * predictor.halo[0] + 1:  # the slice in view first, while the rest is done
                state.preview_slice(image, predictor, info.class_names, invert, match)
            return segment_array(
                predictor,
                np.asarray(volume),
                voxels,
                probabilities,
                invert,
                match_spectrum=match,
                progress=progress,
                name=image.name,
                uncertainty=uncertain,
            )

        def done(result):
            labels, probs, unsure = result if uncertain else (*result, None)
            self.show_prediction(image, labels, probs, info.class_names, unsure)
            if then:
                then()

        return state.jobs.run(job, done, "segmenting")

    def show_prediction(self, image, labels, probs, class_names, uncertainty=None):
        """Add (or replace) the prediction layer, and probability and uncertainty layers when given."""
        viewer = self.state.viewer
        name = f"{image.name} prediction"
        self.state.replace_layer(name)
        kwargs = L.labels_layer_kwargs(class_names, kind="prediction", image=image.name, original=labels.copy())
        layer = viewer.add_labels(labels, name=name, **on_grid_of(image), **kwargs)
        if probs is not None:
            for feature, p in zip(class_names, probs, strict=True):
                pname = f"{image.name} {feature} probability"
                self.state.replace_layer(pname)
                viewer.add_image(
                    p,
                    name=pname,
                    **on_grid_of(image),
                    colormap="magma",
                    blending="additive",
                    contrast_limits=(0, 1),
                    visible=False,
                )
        if uncertainty is not None:
            uname = f"{image.name} uncertainty"
            self.state.replace_layer(uname)
            viewer.add_image(
                uncertainty,
                name=uname,
                **on_grid_of(image),
                colormap="inferno",
                blending="additive",
                contrast_limits=(0, 1),
                visible=False,
            )
        self.state.segmentations[image.name] = dict(labels=labels, uncertainty=uncertainty, names=list(class_names))
        self.state.labels_box.setCurrentText(layer.name)
        self.state.segmented.emit(image.name)
        return layer

    def start_retraining(self):
        """Fine-tune the current model on the corrected slices (plus earlier annotations), then segment."""
        state = self.state
        try:
            image = state.image_layer()
            if not state.model_path:
                raise AnnotomoError("segment with a model first, then correct its prediction")
            prediction = state.layer(f"{image.name} prediction")
            if prediction is None:
                raise AnnotomoError(f"no prediction layer for {image.name}: segment first")
            touched = L.corrected_slices(prediction.data, prediction.metadata.get(L.KEY))
            if not touched:
                raise AnnotomoError("no corrections: paint into the prediction layer first")
        except AnnotomoError as exc:
            state.error(str(exc))
            return None
        earlier = [
            layer
            for layer in state.viewer.layers
            if isinstance(layer, Labels)
            and layer.metadata.get(L.KEY, {}).get("kind") in ("annotation", "corrections")
            and layer.metadata[L.KEY].get("image") == image.name
        ]
        state.info(f"retraining on {len(touched)} corrected slice(s) and {len(earlier)} earlier annotation(s)")
        layers = self._merged_annotation(image, prediction, earlier)
        return self.training.start_training(
            [layers], init=state.model_path, minutes=self.retrain_minutes.value(), then=self.start_segmenting
        )

    def _merged_annotation(self, image, prediction, earlier):
        """One labels layer (hidden) holding the earlier annotations and the corrected slices."""
        meta = prediction.metadata[L.KEY]
        parts = [L.training_labels(layer.data, layer.metadata[L.KEY]) for layer in earlier]
        parts.append(L.training_labels(prediction.data, meta))
        merged = L.combine(parts)
        name = f"{image.name} retraining labels"
        self.state.replace_layer(name)
        kwargs = L.labels_layer_kwargs(meta["class_names"], kind="corrections", image=image.name)
        return self.state.viewer.add_labels(merged, name=name, **on_grid_of(image), visible=False, **kwargs)

    def _model_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self, "Model file", "", "annotomo models (*.annotomo)")
        if path:
            try:
                self.state.set_model(path)
            except AnnotomoError as exc:
                self.state.error(str(exc))
