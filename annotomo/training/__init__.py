"""Training a model on annotated tomograms: the `train` function and its settings.

One module per concern: `config` (TrainConfig), `data` (annotated tomograms, patch sampling),
`augment`, `losses`, `validation`, `batches` (background batch making), `signals` (Ctrl-C),
`checkpoint` (model file, log, resumable state) and `loop` (train).
"""

from .checkpoint import checkpoint_path
from .config import TrainConfig, tomoseg_config
from .data import AnnotatedTomogram, load_annotated
from .loop import AUTO, TrainResult, choose_start, train

__all__ = [
    "AUTO",
    "AnnotatedTomogram",
    "TrainConfig",
    "TrainResult",
    "checkpoint_path",
    "choose_start",
    "load_annotated",
    "tomoseg_config",
    "train",
]
