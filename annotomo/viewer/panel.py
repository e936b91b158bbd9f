"""The annotomo dock widget: annotate, train, segment, correct and retrain, pick; all in one panel.

Every long job (training, segmenting, retraining, picking) runs in a napari thread worker, so the viewer
stays responsive; Stop asks the job to end at its next safe point (training keeps the best model so far).
Errors become messages in the viewer. The work itself is annotomo's Python API: `train`, `segment_array`,
`pick_particles`, `write_volume`; this module only moves layers in and out of it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..conventions import SYNTH_CLASSES
from ..errors import AnnotomoError
from ..modelfile import builtin_models, read_model_info
from . import layers as L

NO_MODEL = "(train from scratch)"
AUTO_START = "(a built-in model that knows some of the features, else scratch)"


class Stopped(Exception):
    """Raised inside a job when the user pressed Stop."""


class _Relay(QObject):
    """Signals a worker thread emits; Qt delivers them on the GUI thread."""

    progress = Signal(float, float)  # fraction done, seconds so far
    epoch = Signal(dict)
    message = Signal(str)  # what training says (where it starts from, its recipe's choices)


def _preload_training(done: threading.Event):
    """Import what the first training needs (torch's optimiser machinery, matplotlib for the curves) while
    the user paints: an import holds Python's interpreter lock for up to half a second at a time, which
    would stall the viewer when the first training starts.
    """
    try:
        import torch

        from .. import train  # noqa: F401
        from ..preview import save_training_curves  # noqa: F401

        torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # imports torch._dynamo
    finally:
        done.set()


class AnnotomoPanel(QWidget):
    """The annotomo panel for a napari viewer (npe2 widget contribution: napari passes the viewer)."""

    def __init__(self, napari_viewer, model: str | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.model_path: str | None = model  # the model to segment with and fine-tune from
        self.worker = None
        self._stop = threading.Event()
        self._history: list[dict] = []
        self._relay = _Relay()
        self._watched: set[int] = set()
        self._summary_layer = None
        self._summary_timer = QTimer(self)
        self._summary_timer.setSingleShot(True)
        self._summary_timer.setInterval(300)
        self._summary_timer.timeout.connect(self._summary_due)
        self._job = ""
        self.preloaded = threading.Event()
        self._relay.progress.connect(self._show_progress)
        self._relay.epoch.connect(self._show_epoch)
        self._relay.message.connect(lambda text: show_info(f"training: {text}"))
        self._build()  # imports matplotlib (the curve): before the preload, never beside it
        threading.Thread(target=_preload_training, args=(self.preloaded,), daemon=True).start()
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()
        if model:
            self._set_model(model)

    # ---- layout ----

    def _build(self):
        outer = QVBoxLayout(self)
        self.image_box = QComboBox()
        top = QFormLayout()
        top.addRow("tomogram", self.image_box)
        outer.addLayout(top)

        annotate = QGroupBox("1. annotate")
        form = QFormLayout(annotate)
        self.classes_edit = QLineEdit(",".join(SYNTH_CLASSES))
        self.classes_edit.setToolTip("feature names, label 1 first (comma-separated)")
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
        form.addRow("features", self.classes_edit)
        form.addRow("annotated", self.mode_box)
        form.addRow(self._row(self.new_button, self.save_button))
        form.addRow(self.summary_label)
        outer.addWidget(annotate)

        training = QGroupBox("2. train")
        form = QFormLayout(training)
        self.labels_box = QComboBox()
        self.minutes_box = QDoubleSpinBox()
        self.minutes_box.setRange(0.05, 600)
        self.minutes_box.setValue(2.0)
        self.minutes_box.setSuffix(" min")
        self.iterations_box = QSpinBox()
        self.iterations_box.setRange(0, 10_000_000)
        self.iterations_box.setSpecialValueText("(by time)")
        self.init_box = QComboBox()
        self.init_box.setEditable(True)
        self.out_edit = QLineEdit(str(Path.cwd() / "annotomo-model.annotomo"))
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.start_training)
        self.all_box = QCheckBox("every annotation layer (several tomograms)")
        form.addRow("labels", self.labels_box)
        form.addRow(self.all_box)
        form.addRow("minutes", self.minutes_box)
        form.addRow("or iterations", self.iterations_box)
        form.addRow("start from", self.init_box)
        form.addRow("model file", self.out_edit)
        form.addRow(self.train_button)
        self.curve = _Curve()
        form.addRow(self.curve)
        outer.addWidget(training)

        seg = QGroupBox("3. segment, correct, retrain")
        form = QFormLayout(seg)
        self.model_label = QLabel("model: none yet")
        self.model_label.setWordWrap(True)
        self.model_button = QPushButton("Model file...")
        self.model_button.clicked.connect(self._model_dialog)
        self.probabilities_box = QCheckBox("probability layers")
        self.invert_box = QCheckBox("dense matter bright")
        self.match_box = QCheckBox("match spectrum")
        self.match_box.setChecked(True)
        self.match_box.setToolTip(
            "filter the tomogram so that its noise and resolution look like the model's training data"
        )
        self.segment_button = QPushButton("Segment")
        self.segment_button.clicked.connect(self.start_segmenting)
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
        form.addRow(self.model_label, self.model_button)
        form.addRow(self._row(self.probabilities_box, self.invert_box, self.match_box))
        form.addRow(self.segment_button)
        form.addRow(self.retrain_minutes, self.retrain_button)
        outer.addWidget(seg)

        pick = QGroupBox("4. pick particles")
        form = QFormLayout(pick)
        self.pick_class = QComboBox()
        self.pick_min = QSpinBox()
        self.pick_min.setRange(1, 10_000_000)
        self.pick_min.setValue(20)
        self.pick_button = QPushButton("Pick")
        self.pick_button.clicked.connect(self.start_picking)
        self.save_picks_button = QPushButton("Save picks...")
        self.save_picks_button.clicked.connect(self._save_picks_dialog)
        form.addRow("feature", self.pick_class)
        form.addRow("min voxels", self.pick_min)
        form.addRow(self._row(self.pick_button, self.save_picks_button))
        outer.addWidget(pick)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        outer.addWidget(self.progress)
        outer.addWidget(self._row(self.status, self.stop_button))
        outer.addStretch()
        self._refresh_init_choices()

    @staticmethod
    def _row(*widgets):
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        for w in widgets:
            layout.addWidget(w)
        return row

    # ---- layers ----

    def _refresh_layers(self, event=None):
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
        for layer in self.viewer.layers:
            if isinstance(layer, Labels) and id(layer) not in self._watched:
                layer.events.paint.connect(lambda e, lay=layer: self._summary_soon(lay))
                layer.events.data.connect(lambda e, lay=layer: self._summary_soon(lay))
                self._watched.add(id(layer))

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

    def new_annotation(self):
        """Add an empty annotation layer for the chosen tomogram, with the feature names and colours."""
        try:
            image = self.image_layer()
            names = self.class_names()
        except AnnotomoError as exc:
            show_error(str(exc))
            return None
        kwargs = L.labels_layer_kwargs(names, kind="annotation", image=image.name, mode=self.mode_box.currentText())
        layer = self.viewer.add_labels(
            np.zeros(image.data.shape, np.uint8),
            name=f"{image.name} annotation",
            scale=image.scale,
            translate=image.translate,
            **kwargs,
        )
        layer.mode = "paint"
        layer.selected_label = 1
        show_info(
            f"paint features 1..{len(names)} ({', '.join(names)}); label {L.background_brush(names)} paints background"
        )
        self._update_summary(layer)
        return layer

    def training_pairs(self, labels_layers=None):
        """[(image layer, training labels (uint8, 255 = not annotated), class names)] for training."""
        if labels_layers is None and self.all_box.isChecked():
            labels_layers = [
                layer
                for layer in self.viewer.layers
                if isinstance(layer, Labels)
                and layer.metadata.get(L.KEY, {}).get("kind") in ("annotation", "corrections")
            ]
        if labels_layers is None and self.labels_box.currentText() not in self.viewer.layers:
            raise AnnotomoError("choose a labels layer to train on (New annotation makes one)")
        layers = labels_layers or [self.viewer.layers[self.labels_box.currentText()]]
        pairs = []
        for layer in layers:
            meta = layer.metadata.get(L.KEY, {})
            image_name = meta.get("image") or self.image_box.currentText()
            if image_name not in self.viewer.layers:
                raise AnnotomoError(f"{layer.name}: its tomogram layer {image_name!r} is not open")
            image = self.viewer.layers[image_name]
            if image.data.shape != layer.data.shape:
                raise AnnotomoError(
                    f"{layer.name}: shape {layer.data.shape} differs from {image.name}'s {image.data.shape}"
                )
            names = meta.get("class_names") or self.class_names()
            try:
                labels = L.training_labels(layer.data, meta)
            except ValueError as exc:
                raise AnnotomoError(f"{layer.name}: {exc}") from None
            pairs.append((image, labels, names))
        return pairs

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

    # ---- jobs ----

    def _run(self, job, on_done, what: str):
        """Run `job()` in a worker thread; call `on_done(result)` on the GUI thread; errors as messages.

        The job's exceptions are caught in the worker and handed back as values: a message in the viewer,
        never an exception in Qt's event loop.
        """
        if self.worker is not None:
            show_warning("annotomo is busy; press Stop first")
            return None
        self._stop.clear()
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
                show_info(f"{what}: stopped")
            else:
                show_error(f"{what} failed: {value}")

        self.worker.returned.connect(finished)
        self.worker.start()
        return self.worker

    def _set_busy(self, busy: bool, what: str):
        for button in (self.train_button, self.segment_button, self.retrain_button, self.pick_button):
            button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)
        if busy:
            self.progress.setValue(0)
        self.status.setText(what)

    def stop(self):
        """Ask the running job to stop (training keeps its best model so far)."""
        self._stop.set()
        self.status.setText(self.status.text() + " - stopping")

    def _show_progress(self, fraction: float, seconds: float):
        self.progress.setValue(int(1000 * min(max(fraction, 0.0), 1.0)))
        if fraction > 0.01:
            eta = seconds * (1 - fraction) / fraction
            self.status.setText(f"{self._job}: {100 * fraction:.0f}%, {seconds:.0f} s, about {eta:.0f} s left")

    def _show_epoch(self, entry: dict):
        self._history.append(entry)
        self.curve.plot(self._history)

    # ---- train ----

    def start_training(self, labels_layers=None, init=None, minutes=None, then=None):
        """Train on the chosen labels layer(s) and their tomograms, in the background."""
        try:
            pairs = self.training_pairs(labels_layers)
            names = pairs[0][2]
            if any(p[2] != names for p in pairs):
                raise AnnotomoError("the labels layers name different features")
            init = init if init is not None else self._init_choice()
            out = _free_path(Path(self.out_edit.text()).expanduser())  # never over an earlier model
            self.out_edit.setText(str(out))
            config = self._config(minutes, pairs[0][0])
        except AnnotomoError as exc:
            show_error(str(exc))
            return None
        from .. import train
        from ..volumes import Volume

        tomograms = [
            Volume(
                data=np.asarray(img.data), voxel_size=_voxel_size(img), origin=tuple(img.translate), path=Path(img.name)
            )
            for img, _, _ in pairs
        ]
        labels = [lab for _, lab, _ in pairs]
        self._history = []
        self.curve.plot([])
        self._job = "training"
        relay, stop = self._relay, self._stop

        def job():
            return train(
                tomograms,
                labels,
                names,
                out,
                config,
                progress=relay.progress.emit,
                stop=stop,
                on_epoch=relay.epoch.emit,
                overwrite=True,
                init=init,
                log=relay.message.emit,
            )

        def done(result):
            best = result.best
            self._set_model(str(result.model_path))
            show_info(
                f"trained {result.iterations} iterations{' (stopped)' if result.interrupted else ''}; best "
                f"mean Dice {best['mean_dice']:.3f} on the annotated slices; model {result.model_path}"
            )
            if then:
                then()

        return self._run(job, done, "training")

    def _config(self, minutes, image):
        from .. import TrainConfig

        iterations = self.iterations_box.value() or None
        return TrainConfig(
            minutes=minutes if minutes is not None else self.minutes_box.value(),
            iterations=None if minutes is not None else iterations,
            epoch_iterations=min(100, iterations) if iterations else 100,
            pixel_size=_voxel_size(image)[2] if _voxel_size(image) else None,
        )

    def _init_choice(self):
        text = self.init_box.currentText().strip()
        if not text or text == AUTO_START:
            from ..training import AUTO

            return AUTO
        return None if text == NO_MODEL else text

    def _refresh_init_choices(self):
        current = self.init_box.currentText()
        self.init_box.clear()
        choices = [AUTO_START, NO_MODEL] + ([self.model_path] if self.model_path else []) + list(builtin_models())
        self.init_box.addItems(list(dict.fromkeys(choices)))
        if current:
            self.init_box.setCurrentText(current)

    # ---- segment ----

    def _set_model(self, model: str):
        info = read_model_info(model)
        self.model_path = model
        self.model_label.setText(f"model: {model} ({', '.join(info.class_names)})")
        self.classes_edit.setText(",".join(info.class_names))
        self._refresh_init_choices()
        self.pick_class.clear()
        self.pick_class.addItems(info.class_names)

    def start_segmenting(self, then=None):
        """Segment the chosen tomogram with the current model, in the background."""
        try:
            image = self.image_layer()
            if not self.model_path:
                raise AnnotomoError("choose a model (train one, or Model file...)")
            model = self.model_path
            info = read_model_info(model)
        except AnnotomoError as exc:
            show_error(str(exc))
            return None
        from ..api import segment_array

        volume, voxel_size = image.data, _voxel_size(image)
        probabilities, invert = self.probabilities_box.isChecked(), self.invert_box.isChecked()
        match = self.match_box.isChecked()
        stop, relay, total = self._stop, self._relay, image.data.shape[0]
        started = time.perf_counter()
        done_slices = [0]
        self._job = "segmenting"

        def progress(n):
            if stop.is_set():
                raise Stopped()
            done_slices[0] += n
            relay.progress.emit(done_slices[0] / total, time.perf_counter() - started)

        def job():
            return segment_array(
                model,
                np.asarray(volume),
                voxel_size,
                probabilities,
                invert,
                match_spectrum=match,
                progress=progress,
                name=image.name,
            )

        def done(result):
            labels, probs = result
            self.show_prediction(image, labels, probs, info.class_names)
            if then:
                then()

        return self._run(job, done, "segmenting")

    def show_prediction(self, image, labels, probs, class_names):
        """Add (or replace) the prediction layer, and probability layers when given."""
        name = f"{image.name} prediction"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        kwargs = L.labels_layer_kwargs(class_names, kind="prediction", image=image.name, original=labels.copy())
        layer = self.viewer.add_labels(labels, name=name, scale=image.scale, translate=image.translate, **kwargs)
        if probs is not None:
            for feature, p in zip(class_names, probs, strict=True):
                pname = f"{image.name} {feature} probability"
                if pname in self.viewer.layers:
                    self.viewer.layers.remove(pname)
                self.viewer.add_image(
                    p,
                    name=pname,
                    scale=image.scale,
                    translate=image.translate,
                    colormap="magma",
                    blending="additive",
                    contrast_limits=(0, 1),
                    visible=False,
                )
        self.labels_box.setCurrentText(layer.name)
        return layer

    # ---- correct and retrain ----

    def start_retraining(self):
        """Fine-tune the current model on the corrected slices (plus earlier annotations), then segment."""
        try:
            image = self.image_layer()
            if not self.model_path:
                raise AnnotomoError("segment with a model first, then correct its prediction")
            prediction = (
                self.viewer.layers[f"{image.name} prediction"]
                if f"{image.name} prediction" in self.viewer.layers
                else None
            )
            if prediction is None:
                raise AnnotomoError(f"no prediction layer for {image.name}: segment first")
            touched = L.corrected_slices(prediction.data, prediction.metadata.get(L.KEY))
            if not touched:
                raise AnnotomoError("no corrections: paint into the prediction layer first")
        except AnnotomoError as exc:
            show_error(str(exc))
            return None
        earlier = [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Labels)
            and layer.metadata.get(L.KEY, {}).get("kind") in ("annotation", "corrections")
            and layer.metadata[L.KEY].get("image") == image.name
        ]
        show_info(f"retraining on {len(touched)} corrected slice(s) and {len(earlier)} earlier annotation(s)")
        layers = self._merged_annotation(image, prediction, earlier)
        return self.start_training(
            [layers], init=self.model_path, minutes=self.retrain_minutes.value(), then=self.start_segmenting
        )

    def _merged_annotation(self, image, prediction, earlier):
        """One labels layer (hidden) holding the earlier annotations and the corrected slices."""
        meta = prediction.metadata[L.KEY]
        parts = [L.training_labels(layer.data, layer.metadata[L.KEY]) for layer in earlier]
        parts.append(L.training_labels(prediction.data, meta))
        merged = L.combine(parts)
        name = f"{image.name} retraining labels"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        kwargs = L.labels_layer_kwargs(meta["class_names"], kind="corrections", image=image.name)
        return self.viewer.add_labels(
            merged, name=name, scale=image.scale, translate=image.translate, visible=False, **kwargs
        )

    # ---- pick ----

    def start_picking(self):
        """Particles of the chosen feature in the prediction (or labels) layer, as a points layer."""
        try:
            image = self.image_layer()
            source = next(
                (
                    self.viewer.layers[n]
                    for n in (f"{image.name} prediction", self.labels_box.currentText())
                    if n in self.viewer.layers
                ),
                None,
            )
            if source is None:
                raise AnnotomoError("segment first: picking needs a labels layer")
            names = source.metadata.get(L.KEY, {}).get("class_names") or self.class_names()
            feature = self.pick_class.currentText() or names[0]
            index = names.index(feature) + 1
        except (AnnotomoError, ValueError) as exc:
            show_error(str(exc))
            return None
        from ..postprocess import pick_particles

        data, minimum = np.asarray(source.data), self.pick_min.value()
        voxel = _voxel_size(image)
        self._job = "picking"

        def job():
            return pick_particles(data, index, minimum, pixel_size=voxel[2] if voxel else None)

        def done(picks):
            name = f"{image.name} {feature} picks"
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            self.viewer.add_points(
                picks.centres,
                name=name,
                scale=image.scale,
                translate=image.translate,
                size=6,
                features={"voxels": picks.sizes},
                face_color="yellow",
                border_color="black",
            )
            self._picks = picks
            show_info(f"{len(picks.centres)} {feature} particles")

        return self._run(job, done, "picking")

    def save_picks(self, path):
        """Write the last picks as STAR and CSV (path without or with either suffix)."""
        from ..postprocess import write_picks

        if getattr(self, "_picks", None) is None:
            raise AnnotomoError("pick first")
        stem = str(Path(path).with_suffix(""))
        write_picks(self._picks, stem + ".star", stem + ".csv")
        return stem + ".star", stem + ".csv"

    # ---- files ----

    def save_labels(self, layer, path):
        """Write a labels layer as the MRC file `annotomo train` reads (names, voxel size, origin)."""
        from .writer import write_labels

        return write_labels(
            str(path), layer.data, dict(metadata=layer.metadata, scale=layer.scale, translate=layer.translate)
        )[0]

    def _save_dialog(self):
        name = self.labels_box.currentText()
        if not name:
            show_error("no labels layer to save")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save labels", f"{name}.mrc", "MRC (*.mrc)")
        if path:
            try:
                show_info(f"wrote {self.save_labels(self.viewer.layers[name], path)}")
            except (AnnotomoError, ValueError, OSError) as exc:
                show_error(str(exc))

    def _model_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self, "Model file", "", "annotomo models (*.annotomo)")
        if path:
            try:
                self._set_model(path)
            except AnnotomoError as exc:
                show_error(str(exc))

    def _save_picks_dialog(self):
        path, _ = QFileDialog.getSaveFileName(self, "Save picks", "picks.star", "STAR (*.star)")
        if path:
            try:
                show_info("wrote " + ", ".join(self.save_picks(path)))
            except (AnnotomoError, OSError) as exc:
                show_error(str(exc))


def _free_path(path: Path) -> Path:
    """`path`, or NAME-2.annotomo, NAME-3.annotomo ... when it exists (the panel keeps every model it trains)."""
    stem, suffix, k = path.name.removesuffix(path.suffix), path.suffix, 2
    while path.exists():
        path = path.with_name(f"{stem}-{k}{suffix}")
        k += 1
    return path


def _voxel_size(layer):
    """(z, y, x) Angstrom from a layer's scale, or None when the layer has napari's default scale of 1."""
    scale = tuple(float(s) for s in layer.scale[-3:])
    return None if all(s == 1.0 for s in scale) else scale


class _Curve(QLabel):
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


def open_in_viewer(viewer, tomogram, labels=None):
    """Open a tomogram (and labels) in `viewer` through annotomo's reader; returns the layers."""
    from .reader import read_layer

    opened = []
    for path in [tomogram] + ([labels] if labels else []):
        data, kwargs, kind = read_layer(path)
        add = viewer.add_labels if kind == "labels" else viewer.add_image
        opened.append(add(data, **kwargs))
    return opened


__all__ = ["AnnotomoPanel", "Stopped", "open_in_viewer"]
