"""Step 2: train on the chosen annotation layer(s) and their tomograms, with a live curve."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from napari.layers import Labels
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLineEdit,
    QPushButton,
    QSpinBox,
)

from ...errors import AnnotomoError
from ...modelfile import builtin_models
from .. import layers as L
from ..curve import TrainingCurve
from ..state import on_grid_of, voxel_size

NO_MODEL = "(train from scratch)"
AUTO_START = "(a built-in model that knows some of the features, else scratch)"


def _preload_training(done: threading.Event):
    """Import what the first training needs (torch's optimiser machinery, matplotlib for the curves) while
    the user paints: an import holds Python's interpreter lock for up to half a second at a time, which
    would stall the viewer when the first training starts.
    """
    try:
        import torch

        from ... import train  # noqa: F401
        from ...preview import save_training_curves  # noqa: F401

        torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # imports torch._dynamo
    finally:
        done.set()


class TrainStep(QGroupBox):
    """Labels, length, start and model file; Train; the live curve."""

    def __init__(self, state):
        super().__init__("2. train")
        self.state = state
        self.history: list[dict] = []
        self.all_box = QCheckBox("every annotation layer (several tomograms)")
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
        self.preview_box = QCheckBox("live preview of the slice in view")
        self.preview_box.setChecked(True)
        self.preview_box.setToolTip(
            "while training, segment the slice in view with the current weights every few seconds "
            "(a 'preview' layer; at most a tenth of the training time)"
        )
        self.preview_seconds = 5.0  # the least time between two previews
        self.preview_time = 0.0  # seconds the last training spent in previews
        self.previews = 0  # previews shown in the last training
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(lambda: self.start_training())
        form = QFormLayout(self)
        form.addRow("labels", state.labels_box)
        form.addRow(self.all_box)
        form.addRow("minutes", self.minutes_box)
        form.addRow("or iterations", self.iterations_box)
        form.addRow("start from", self.init_box)
        form.addRow("model file", self.out_edit)
        form.addRow(self.preview_box)
        form.addRow(self.train_button)
        self.curve = TrainingCurve()  # imports matplotlib: before the preload, never beside it
        form.addRow(self.curve)
        self.preloaded = threading.Event()
        threading.Thread(target=_preload_training, args=(self.preloaded,), daemon=True).start()
        state.jobs.buttons.append(self.train_button)
        state.jobs.signals.epoch.connect(self._show_epoch)
        state.jobs.signals.preview.connect(self._show_preview)
        state.jobs.signals.message.connect(lambda text: state.info(f"training: {text}"))
        state.model_changed.connect(lambda *_: self.refresh_init_choices())
        self.refresh_init_choices()

    def training_pairs(self, labels_layers=None):
        """[(image layer, training labels (uint8, 255 = not annotated), class names)] for training."""
        state, viewer = self.state, self.state.viewer
        if labels_layers is None and self.all_box.isChecked():
            labels_layers = [
                layer
                for layer in viewer.layers
                if isinstance(layer, Labels)
                and layer.metadata.get(L.KEY, {}).get("kind") in ("annotation", "corrections")
            ]
        if labels_layers is None and state.labels_box.currentText() not in viewer.layers:
            raise AnnotomoError("choose a labels layer to train on (New annotation makes one)")
        layers = labels_layers or [viewer.layers[state.labels_box.currentText()]]
        pairs = []
        for layer in layers:
            meta = layer.metadata.get(L.KEY, {})
            image_name = meta.get("image") or state.image_box.currentText()
            if image_name not in viewer.layers:
                raise AnnotomoError(f"{layer.name}: its tomogram layer {image_name!r} is not open")
            image = viewer.layers[image_name]
            if image.data.shape != layer.data.shape:
                raise AnnotomoError(
                    f"{layer.name}: shape {layer.data.shape} differs from {image.name}'s {image.data.shape}"
                )
            names = meta.get("class_names") or state.class_names()
            try:
                labels = L.training_labels(layer.data, meta)
            except ValueError as exc:
                raise AnnotomoError(f"{layer.name}: {exc}") from None
            pairs.append((image, labels, names))
        return pairs

    def start_training(self, labels_layers=None, init=None, minutes=None, then=None):
        """Train on the chosen labels layer(s) and their tomograms, in the background."""
        state = self.state
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
            state.error(str(exc))
            return None
        from ... import train
        from ...volumes import Volume

        tomograms = [
            Volume(
                data=np.asarray(img.data), voxel_size=voxel_size(img), origin=tuple(img.translate), path=Path(img.name)
            )
            for img, _, _ in pairs
        ]
        labels = [lab for _, lab, _ in pairs]
        self.history = []
        self.curve.plot([])
        state.jobs.name = "training"
        signals, stop = state.jobs.signals, state.jobs.stop_event
        preview = self._previewer(pairs[0][0], names) if self.preview_box.isChecked() else None

        def job():
            return train(
                tomograms,
                labels,
                names,
                out,
                config,
                progress=signals.progress.emit,
                stop=stop,
                on_epoch=signals.epoch.emit,
                overwrite=True,
                init=init,
                log=signals.message.emit,
                preview=preview,
                preview_seconds=self.preview_seconds,
            )

        def done(result):
            best = result.best
            state.set_model(str(result.model_path))
            state.info(
                f"trained {result.iterations} iterations{' (stopped)' if result.interrupted else ''}; best "
                f"mean Dice {best['mean_dice']:.3f} on the annotated slices; model {result.model_path}"
            )
            if then:
                then()

        return state.jobs.run(job, done, "training")

    def _previewer(self, image, names):
        """The training thread's preview: the slice in view of `image`, segmented by the current weights."""
        self.preview_time, self.previews = 0.0, 0

        def preview(predictor):
            started = time.perf_counter()
            self.state.preview_slice(image, predictor, names)
            self.preview_time += time.perf_counter() - started

        return preview

    def _show_preview(self, image_name: str, z: int, labels, names: list):
        """Put the previewed slice into the '<image> preview' layer (made on the first preview)."""
        state = self.state
        image = state.layer(image_name)
        if image is None:
            return
        name = f"{image_name} preview"
        layer = state.layer(name)
        if layer is None or layer.data.shape != image.data.shape:
            state.replace_layer(name)
            kwargs = L.labels_layer_kwargs(names, kind="preview", image=image_name)
            layer = state.viewer.add_labels(
                np.zeros(image.data.shape, np.uint8), name=name, **on_grid_of(image), **kwargs
            )
        layer.data[z] = labels
        layer.refresh()
        self.previews += 1

    def _show_epoch(self, entry: dict):
        self.history.append(entry)
        self.curve.plot(self.history)

    def _config(self, minutes, image):
        from ... import TrainConfig

        iterations = self.iterations_box.value() or None
        return TrainConfig(
            minutes=minutes if minutes is not None else self.minutes_box.value(),
            iterations=None if minutes is not None else iterations,
            epoch_iterations=min(100, iterations) if iterations else 100,
            pixel_size=voxel_size(image)[2] if voxel_size(image) else None,
        )

    def _init_choice(self):
        text = self.init_box.currentText().strip()
        if not text or text == AUTO_START:
            from ...training import AUTO

            return AUTO
        return None if text == NO_MODEL else text

    def refresh_init_choices(self):
        """Offer the automatic start, scratch, the current model and the built-in models."""
        current = self.init_box.currentText()
        self.init_box.clear()
        model = self.state.model_path
        choices = [AUTO_START, NO_MODEL] + ([model] if model else []) + list(builtin_models())
        self.init_box.addItems(list(dict.fromkeys(choices)))
        if current:
            self.init_box.setCurrentText(current)


def _free_path(path: Path) -> Path:
    """`path`, or NAME-2.annotomo, NAME-3.annotomo ... when it exists (the panel keeps every model it trains)."""
    stem, suffix, k = path.name.removesuffix(path.suffix), path.suffix, 2
    while path.exists():
        path = path.with_name(f"{stem}-{k}{suffix}")
        k += 1
    return path
