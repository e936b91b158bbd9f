"""The panel's steps, one widget each: copick project, annotate, train, segment-correct-retrain, where next, pick."""

from .annotate import AnnotateStep
from .pick import PickStep
from .project import ProjectStep
from .segment import SegmentStep
from .suggest import SuggestStep
from .train import AUTO_START, NO_MODEL, TrainStep

__all__ = [
    "AUTO_START",
    "NO_MODEL",
    "AnnotateStep",
    "PickStep",
    "ProjectStep",
    "SegmentStep",
    "SuggestStep",
    "TrainStep",
]
