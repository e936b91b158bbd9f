"""The conventions every module of annotomo follows, stated once.

- Axis order: arrays are indexed (z, y, x); z is the beam direction (the direction of the missing
  wedge's elongation), y is the tilt axis, and 2D slices are xy planes.
- Labels: 0 = background, 1..N = the user's features in the order they were named,
  255 = not annotated (ignored by training and by evaluation).
- Units: pixel (voxel) size in Angstrom; physical sizes inside the simulator in nanometres.
- Contrast: raw tomograms show dense matter dark (negative values relative to the mean).
"""

AXES = ("z", "y", "x")
BACKGROUND = 0
NOT_ANNOTATED = 255
MAX_CLASSES = 254  # features 1..254; 255 is reserved for "not annotated"

#: The simulator's feature names, in label order (label k = SYNTH_CLASSES[k - 1]).
SYNTH_CLASSES = ("microtubule", "ribosome", "membrane", "double_membrane")

MODEL_SUFFIX = ".annotomo"
