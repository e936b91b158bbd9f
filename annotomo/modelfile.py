"""The model file: one self-describing, data-only file (safetensors tensors + JSON metadata).

Loading never unpickles anything, so a model file received from a colleague cannot run code. The JSON
(stored in the safetensors header under the key "annotomo") holds the format version, architecture name
and arguments, class names, number of context slices, normalisation settings, training pixel size and
provenance; the tensors are the network's weights.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_path
from .conventions import MODEL_SUFFIX
from .errors import InputError
from .models import build_model

FORMAT_VERSION = 1
_KEY = "annotomo"
BUILTIN_FOLDER = Path(__file__).resolve().parent / "builtin"


@dataclass
class ModelInfo:
    """Everything needed to rebuild and apply a trained network, besides its weights."""

    arch: str
    arch_params: dict
    class_names: list
    context_slices: int
    pixel_size: float | None  # Angstrom, the training tomograms' pixel size
    invert_contrast: bool = False
    preprocessing: str = "robust"  # "robust" (percentile normalisation) or "tomoseg" (EMAN2's band-pass)
    provenance: dict = field(default_factory=dict)
    # Each training tomogram's radial in-plane power spectrum after normalisation (`spectrum.BINS` values
    # from 0 to Nyquist), whose range segmenting can bring new tomograms into; None in older files.
    training_spectra: list | None = None
    format_version: int = FORMAT_VERSION

    def normalization_for(self, volume, path="tomogram", invert_contrast=False, match_spectrum=False, voxel_size=None):
        """The intensity normalisation this model expects, measured on `volume`.

        invert_contrast: `volume`'s contrast is the opposite of the model's training data (e.g. dense
        matter bright for a model trained on raw, dense-dark tomograms).
        match_spectrum: also filter `volume`'s slices so that their power spectrum matches the training
            data's range (see `annotomo.spectrum`); ignored for models without training spectra.
        voxel_size: `volume`'s (z, y, x) Angstrom: when it differs from the model's pixel size, the
            spectrum is measured on what the network reads, `volume` resampled to the model's pixel size.
        """
        from dataclasses import replace

        from .normalize import robust_normalization
        from .resample import ResampledVolume, needs_resampling
        from .spectrum import matching_gain, volume_power

        invert = self.invert_contrast != bool(invert_contrast)
        norm = robust_normalization(volume, path, invert, self.preprocessing == "tomoseg")
        if match_spectrum and self.can_match_spectrum:
            if voxel_size is not None and needs_resampling(self.pixel_size, voxel_size[2]):
                volume = ResampledVolume(volume, voxel_size, self.pixel_size)
            gain = matching_gain(volume_power(volume, norm), self.training_spectra)
            if any(g != 1.0 for g in gain):  # else the tomogram is like the training data: nothing to filter
                norm = replace(norm, spectrum_gain=gain)
        return norm

    @property
    def can_match_spectrum(self) -> bool:
        """True when the file carries its training data's spectra (annotomo-normalised models only)."""
        from .spectrum import BINS

        spectra = self.training_spectra
        return self.preprocessing == "robust" and bool(spectra) and all(len(s) == BINS for s in spectra)

    @property
    def n_outputs(self) -> int:
        """The network's output channels: background plus one per feature."""
        return len(self.class_names) + 1

    def build(self) -> torch.nn.Module:
        """A freshly initialised network of this architecture (weights not loaded)."""
        model, _ = build_model(self.arch, self.context_slices, self.n_outputs, **self.arch_params)
        return model

    def to_json(self) -> str:
        """The metadata as the JSON stored in the model file."""
        return json.dumps(self.__dict__, default=_jsonable)


def _jsonable(obj):
    if isinstance(obj, tuple):
        return list(obj)
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def save_model(path, model: torch.nn.Module, info: ModelInfo, extra_tensors: dict | None = None):
    """Write weights and metadata to `path` atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for k, v in (extra_tensors or {}).items():
        tensors[k] = v.detach().cpu().contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_KEY: info.to_json()})


def builtin_models() -> dict[str, Path]:
    """The models shipped inside the package: {name: file}."""
    return {p.name[: -len(MODEL_SUFFIX)]: p for p in sorted(BUILTIN_FOLDER.glob(f"*{MODEL_SUFFIX}"))}


def _version_key(name: str) -> list:
    """Sort key that orders names by their numbers as numbers (cellular-v10 after cellular-v9)."""
    return [(int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", name)]


def builtin_models_for(class_names) -> list[str]:
    """The built-in models to fine-tune for these features, best first: those whose features are exactly
    these, in this order; those that know them among others; those all of whose features are among these
    (the others new to it); then those that share some of them, most first. One that shares none is not a
    candidate (benchmarks/RESULTS.md#beyond). Within each group the newest version comes first
    (cellular-v2 before cellular-v1): a model is shipped as a new version only when it scores higher.
    """
    names = list(class_names)
    models = builtin_models()
    known = {name: read_model_info(models[name]).class_names for name in sorted(models, key=_version_key, reverse=True)}
    exact = [name for name, features in known.items() if features == names]
    among = [name for name, features in known.items() if features != names and set(names) <= set(features)]
    beyond = [name for name, features in known.items() if set(features) < set(names)]
    shared = {name: len(set(names) & set(features)) for name, features in known.items()}
    some = sorted((n for n in known if shared[n] and n not in exact + among + beyond), key=lambda n: -shared[n])
    return exact + among + beyond + some


def resolve_model(spec) -> Path:
    """The file of a model given as a path or as the name of a built-in model (a path wins)."""
    path = Path(spec)
    if path.exists():
        return path
    return builtin_models().get(str(spec), path)


def model_label(spec) -> str:
    """How messages and provenance name a model: the built-in name, or the path as given."""
    path = Path(spec)
    return str(spec) if not path.exists() and str(spec) in builtin_models() else str(path)


def read_model_info(path) -> ModelInfo:
    """Read and validate the metadata of a model file, or of a built-in model by name (no tensors loaded).

    Raises:
        InputError: the file is missing, damaged, not an annotomo model, or of a newer format.
    """
    path = resolve_model(path)
    if not path.exists():
        names = ", ".join(builtin_models()) or "none"
        raise InputError(path, f"model file not found (nor a built-in model: {names}; see `annotomo models`)")
    if path.is_dir():
        raise InputError(path, "is a directory, expected an annotomo model file")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(path, f"not an annotomo model file, or a damaged one ({_short(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - safetensors raises Rust-side errors of several kinds
        raise InputError(path, f"not an annotomo model file, or a damaged one ({_short(exc)})") from None
    if _KEY not in meta:
        raise InputError(path, "safetensors file without annotomo metadata; not an annotomo model")
    try:
        raw = json.loads(meta[_KEY])
        version = int(raw.get("format_version", 0))
    except (ValueError, TypeError, AttributeError):
        raise InputError(path, "model metadata is damaged (invalid JSON)") from None
    if version > FORMAT_VERSION:
        raise InputError(
            path,
            f"model file format version {version} is newer than this annotomo supports "
            f"({FORMAT_VERSION}); upgrade annotomo",
        )
    try:
        return ModelInfo(**raw)
    except TypeError as exc:
        raise InputError(path, f"model metadata is incomplete or damaged ({exc})") from None


def load_model(path, extra_prefix: str = "_") -> tuple[torch.nn.Module, ModelInfo]:
    """Rebuild the network described by `path` (a file or a built-in name); load its weights (CPU, eval mode).

    Raises:
        InputError: the file is missing, damaged or does not match its architecture.
    """
    info = read_model_info(path)
    path = resolve_model(path)
    try:
        model = info.build()
    except (ValueError, TypeError) as exc:
        raise InputError(path, f"model metadata describes an unknown network ({exc})") from None
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise InputError(path, f"model weights are damaged or truncated ({_short(exc)})") from None
    weights = {k: v for k, v in tensors.items() if not k.startswith(extra_prefix)}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise InputError(path, f"model weights do not match its architecture ({_short(exc)})") from None
    model.eval()
    return model, info


def _short(exc, limit=160):
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
