"""annotomo: annotate cellular cryo-electron tomograms with a U-Net.

Conventions (see annotomo.conventions): arrays are (z, y, x); labels 0 = background, 1..N = features in
the order named, 255 = not annotated; pixel sizes in Angstrom; raw tomograms show dense matter dark.

Python API:
    annotomo.simulate(...)            -> SyntheticTomogram (arrays)
    annotomo.synthesize(prefix, ...)  -> writes PREFIX_tomo.mrc, PREFIX_labels.mrc, ...
    annotomo.train(tomograms, labels, class_names, out, TrainConfig(...))
    annotomo.segment(model, tomograms, outdir, probabilities=False)
    annotomo.evaluate(prediction_path, truth_path)
    annotomo.suggest(model, tomogram, labels=None, n=5)   -> where to annotate next
    annotomo.segment_copick(model, config, voxel_spacing, tomo_type)   -> into a copick project
    annotomo.copick_training_pairs(config, folder, voxel_spacing, tomo_type, from_segmentation=...)
    annotomo.Predictor.from_file(model_path).predict_block(block, normalization)
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("annotomo")  # the one version source is pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# The API is imported on first use (PEP 562), so that `import annotomo.batch` or `annotomo --help` does
# not import torch and every stage above the one asked for.
_API = {
    "AnnotomoError": "errors",
    "InputError": "errors",
    "Predictor": "predict",
    "TrainConfig": "training",
    "evaluate": "api",
    "load_model": "modelfile",
    "read_model_info": "modelfile",
    "robust_normalization": "normalize",
    "segment": "api",
    "segment_copick": "api",
    "copick_training_pairs": "api",
    "segmentation_scores": "metrics",
    "simulate": "synth",
    "suggest": "suggestions",
    "synthesize": "api",
    "train": "training",
}


def __getattr__(name):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'annotomo' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))


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
    "segment_copick",
    "copick_training_pairs",
    "segmentation_scores",
    "simulate",
    "suggest",
    "synthesize",
    "train",
]
