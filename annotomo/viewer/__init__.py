"""The napari plugin: read tomograms and labels, annotate, train, segment, correct, retrain, pick.

`reader` and `writer` are the npe2 reader and writer (napari.yaml), `panel` the dock widget, `layers`
the plain-data rules of what a labels layer means for training, `launch` the `annotomo view` command.
Everything calls annotomo's Python API; nothing here reads, normalises, trains or infers on its own.
"""
