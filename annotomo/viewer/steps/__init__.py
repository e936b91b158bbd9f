"""The panel's four steps, one widget each: annotate, train, segment-correct-retrain, pick."""

from .annotate import AnnotateStep
from .pick import PickStep
from .segment import SegmentStep
from .train import AUTO_START, NO_MODEL, TrainStep

__all__ = ["AUTO_START", "NO_MODEL", "AnnotateStep", "PickStep", "SegmentStep", "TrainStep"]
