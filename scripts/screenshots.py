"""The README's and docs' napari screenshots, from a real viewer (headless under Xvfb).

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/screenshots.py

Writes docs/images/napari_annotating.png (a simulated tomogram with three painted slices and the panel)
and docs/images/napari_result.png (the built-in model's annotation of it, no labels used).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import napari

from annotomo import simulate
from annotomo.api import segment_array
from annotomo.viewer.panel import AnnotomoPanel, open_in_viewer
from annotomo.volumes import write_volume

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
MODEL = "cellular-v2"


def settle():
    """Let Qt lay out and paint the window (the docked panel too) before a screenshot."""
    from qtpy.QtWidgets import QApplication

    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)


def main():
    """Open the viewer, paint, segment, and save both screenshots."""
    sim = simulate(seed=1001)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cell_tomo.mrc"
        write_volume(path, sim.tomogram, (28.0,) * 3)
        viewer = napari.Viewer(show=True, title="annotomo")
        viewer.window._qt_window.resize(1800, 1050)
        (image,) = open_in_viewer(viewer, path)
        panel = AnnotomoPanel(viewer, model=MODEL)
        viewer.window.add_dock_widget(panel, name="annotomo", area="right")
        z = 32
        viewer.dims.set_point(0, z * 28.0)
        layer = panel.new_annotation()
        data = layer.data
        for s in (z - 12, z, z + 12):
            data[s] = sim.labels[s]
        layer.data = data
        layer.events.paint(value=[])
        panel.state.labels_box.setCurrentText(layer.name)
        OUT.mkdir(parents=True, exist_ok=True)
        settle()
        viewer.screenshot(str(OUT / "napari_annotating.png"), canvas_only=False)
        labels, _ = segment_array(MODEL, sim.tomogram, (28.0,) * 3, progress=False)
        layer.visible = False
        prediction = panel.show_prediction(image, labels, None, list(sim.class_names))
        prediction.opacity = 0.6
        settle()
        viewer.screenshot(str(OUT / "napari_result.png"), canvas_only=False)
        viewer.close()
    print(f"wrote {OUT / 'napari_annotating.png'} and {OUT / 'napari_result.png'}")


if __name__ == "__main__":
    main()
