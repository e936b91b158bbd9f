"""`annotomo view TOMO [LABELS] [--model MODEL]`: napari with the tomogram, its labels and the panel."""

from __future__ import annotations

from ..errors import AnnotomoError


def view(tomogram=None, labels=None, model=None, run=True):
    """Open napari with `tomogram` (and `labels`) at their voxel size and the annotomo panel docked.

    Returns the viewer (with run=False it is not shown, for tests and scripts); the panel is
    `viewer.window.dock_widgets["annotomo"]`.

    Raises:
        AnnotomoError: napari is not installed, or a file cannot be read.
    """
    try:
        import napari
    except ImportError:
        raise AnnotomoError('annotomo view needs napari: pip install "annotomo[napari]"') from None
    from .panel import AnnotomoPanel, open_in_viewer

    if model is not None:
        from ..modelfile import read_model_info

        read_model_info(model)  # a clear error before any window opens
    viewer = napari.Viewer(show=run, title="annotomo")
    if tomogram is not None:
        open_in_viewer(viewer, tomogram, labels)
    panel = AnnotomoPanel(viewer, model=model)
    viewer.window.add_dock_widget(panel, name="annotomo", area="right")
    if run:
        napari.run()
    return viewer
