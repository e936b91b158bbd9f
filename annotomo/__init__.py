"""annotomo: annotate cellular cryo-electron tomograms with a U-Net.

Conventions (see annotomo.conventions): arrays are (z, y, x); labels 0 = background, 1..N = features in
the order named, 255 = not annotated; pixel sizes in Angstrom; raw tomograms show dense matter dark.

Python API:
    annotomo.simulate(...)            -> SyntheticTomogram (arrays)
    annotomo.synthesize(prefix, ...)  -> writes PREFIX_tomo.mrc, PREFIX_labels.mrc, ...
    annotomo.train(tomograms, labels, class_names, out, TrainConfig(...))
    annotomo.segment(model, tomograms, outdir, probabilities=False)
    annotomo.evaluate(prediction_path, truth_path)
    annotomo.Predictor.from_file(model_path).predict_block(block, normalization)
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("annotomo")  # the one version source is pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

from .api import evaluate, segment, synthesize  # noqa: E402
from .errors import AnnotomoError, InputError  # noqa: E402
from .metrics import segmentation_scores  # noqa: E402
from .modelfile import load_model, read_model_info  # noqa: E402
from .normalize import robust_normalization  # noqa: E402
from .predict import Predictor  # noqa: E402
from .synth import simulate  # noqa: E402
from .training import TrainConfig, train  # noqa: E402

__all__ = [
    "AnnotomoError",
    "InputError",
    "Predictor",
    "TrainConfig",
    "evaluate",
    "load_model",
    "read_model_info",
    "robust_normalization",
    "segment",
    "segmentation_scores",
    "simulate",
    "synthesize",
    "train",
]
