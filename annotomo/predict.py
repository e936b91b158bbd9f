"""Streaming a tomogram through a trained model: the inference engine.

One Predictor owns inference: it reads slabs of slices (with the neighbouring slices the model uses as
context), normalises them with the tomogram's global statistics, runs the network on batches of slices
(whole slices when they fit in a tile, else overlapping tiles blended with Gaussian weights so no seams
appear), and writes labels (and optionally per-feature probabilities) slab by slab. Memory is bounded by
the slab, not by the tomogram, so a memory-mapped tomogram larger than RAM works.

Any sub-volume can be processed independently: `predict_block` takes raw voxels plus a z halo of
`halo[0]` slices on each side and returns the labels of the inner part, identical to what `segment`
writes for those slices (x/y need no halo: each slice is processed whole, tiled internally).
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from .modelfile import ModelInfo, load_model
from .normalize import Normalization
from .tiling import blending_weights, padded_size, tile_layout
from .volumes import release_pages


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX or AVX-512 BF16 instructions (bf16 is slower than fp32 without them)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def choose_device(device: str | None = None) -> torch.device:
    """The requested device, else CUDA when available, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def choose_precision(device: torch.device, precision: str = "auto") -> str:
    """'fp32', 'bf16' or 'fp16'; 'auto' picks bf16 on GPUs and fast-bf16 CPUs, fp32 otherwise."""
    if precision != "auto":
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def fuse_conv_bn(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of an eval-mode model with each Conv2d+BatchNorm2d pair folded into one convolution."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.Sequential):
            children = list(module.children())
            for i in range(len(children) - 1):
                conv, bn = children[i], children[i + 1]
                if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                    module[i] = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
                    module[i + 1] = torch.nn.Identity()
    return model


class Predictor:
    """Applies a trained model to tomograms or sub-volumes of them.

    tile/overlap: in-plane tile size and minimum overlap in pixels (slices larger than a tile are
    tiled; the overlap exceeds the U-Net's receptive-field radius, so tiled = whole-slice results); batch_pixels: pixels per network call (slices are batched up to this); precision: 'auto',
    'fp32', 'bf16' or 'fp16'; device: 'cpu', 'cuda', ... (default: CUDA when available).
    """

    def __init__(self, model: torch.nn.Module, info: ModelInfo, device=None, precision="auto",
                 tile=2048, overlap=256, batch_pixels=None, fuse=True, channels_last=True):
        self.info = info
        self.device = choose_device(device)
        self.precision = choose_precision(self.device, precision)
        model = fuse_conv_bn(model) if fuse else copy.deepcopy(model).eval()
        self.channels_last = channels_last
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.to(self.device)
        self.stride = int(getattr(model, "stride", 1))
        self.tile = padded_size(max(tile, self.stride), self.stride)
        self.overlap = max(overlap, self.stride)  # tiles aligned to the stride must still overlap
        self.batch_pixels = batch_pixels or (32 if self.device.type == "cuda" else 3) * 2**20
        self.context = info.context_slices // 2

    @classmethod
    def from_file(cls, path, **kwargs) -> "Predictor":
        model, info = load_model(path)
        return cls(model, info, **kwargs)

    @property
    def halo(self) -> tuple[int, int, int]:
        """Voxels of context needed on each side of a sub-volume (z, y, x)."""
        return (self.context, 0, 0)

    # ---- the network on a batch of normalised slice stacks ----

    def _autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            return self.model(x).float()

    @torch.inference_mode()
    def logits(self, stacks: np.ndarray) -> torch.Tensor:
        """Logits (B, n_outputs, H, W) for normalised stacks (B, context_slices, H, W).

        Whole slices when they fit in a tile; otherwise the log of Gaussian-blended tile probabilities.
        """
        b, c, h, w = stacks.shape
        x = torch.from_numpy(np.ascontiguousarray(stacks))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        hp, wp = padded_size(h, self.stride), padded_size(w, self.stride)
        if (hp, wp) != (h, w):
            mode = "reflect" if hp - h < h and wp - w < w else "replicate"
            x = F.pad(x, (0, wp - w, 0, hp - h), mode=mode)
        if hp <= self.tile and wp <= self.tile:
            return self._run(x)[:, :, :h, :w]
        (th, ys), (tw, xs) = (tile_layout(n, self.tile, self.overlap, self.stride) for n in (hp, wp))
        weight, inverse_total = self._blending(hp, wp, th, tw, ys, xs)
        # Channels-last, like the network's own output: the argmax over classes then reads contiguously.
        acc = torch.zeros((b, hp, wp, self.info.n_outputs), device=self.device).permute(0, 3, 1, 2)
        for y0 in ys:
            for x0 in xs:
                # Blend probabilities, not logits: near a tile's edge logits can be large, and even a small
                # weight on a large logit would show as a seam.
                out = torch.softmax(self._run(x[:, :, y0 : y0 + th, x0 : x0 + tw]), dim=1)
                acc[:, :, y0 : y0 + th, x0 : x0 + tw] += out.mul_(weight)
                del out
        # In place: at 3456 x 3456 every temporary of `acc` would cost another 240 MB per slice.
        acc.mul_(inverse_total).clamp_(min=1e-12).log_()  # log-probabilities are logits too
        return acc[:, :, :h, :w]

    def _blending(self, hp, wp, th, tw, ys, xs):
        """Tile weights and 1 / (sum of weights) per pixel; the same for every slice, so cached."""
        key = (hp, wp, th, tw)
        if getattr(self, "_blending_cache", (None,))[0] != key:
            weight = torch.from_numpy(blending_weights((th, tw))).to(self.device)
            total = torch.zeros((hp, wp), device=self.device)
            for y0 in ys:
                for x0 in xs:
                    total[y0 : y0 + th, x0 : x0 + tw] += weight
            self._blending_cache = (key, weight, total.reciprocal_())
        return self._blending_cache[1:]

    # ---- blocks and whole volumes ----

    def _stacks(self, normalized: np.ndarray, first: int, count: int) -> np.ndarray:
        """Stacks of context slices for output slices first..first+count-1 of `normalized`.

        Indices beyond the block are clamped (the edge slice is repeated at the tomogram's faces).
        """
        return self._stacks_clamped(normalized, first, count, 0, normalized.shape[0])

    def _batch_slices(self, shape) -> int:
        return int(max(1, min(64, self.batch_pixels // (shape[1] * shape[2]))))

    def predict_block(self, block, normalization: Normalization, halo=None, probabilities=False):
        """Labels (and optionally probabilities) of the inner slices of a raw (z, y, x) block.

        `halo` (default self.halo[0]) slices at each z end of `block` are context only; pass 0 at the
        tomogram's own faces. Returns uint8 labels (z - 2 halo, y, x), and with probabilities=True also
        float32 probabilities (n_features, z - 2 halo, y, x).
        """
        h = self.context if halo is None else halo
        normalized = normalization.apply(block)
        inner = normalized.shape[0] - 2 * h
        if inner <= 0:
            raise ValueError(f"block of {normalized.shape[0]} slices has no slices inside a halo of {h}")
        labels = np.empty((inner,) + normalized.shape[1:], dtype=np.uint8)
        probs = np.empty((self.info.n_outputs - 1, inner) + normalized.shape[1:], np.float32) if probabilities else None
        step = self._batch_slices(normalized.shape)
        for z in range(0, inner, step):
            n = min(step, inner - z)
            lab, prob = self._decide(self.logits(self._stacks(normalized, h + z, n)), probabilities)
            labels[z : z + n] = lab
            if probabilities:
                probs[:, z : z + n] = prob
        return (labels, probs) if probabilities else labels

    def _decide(self, logits: torch.Tensor, probabilities: bool):
        # max().indices, not argmax(): several times faster over a short channel axis on CPU (torch 2.x).
        labels = logits.max(1).indices.to(torch.uint8).cpu().numpy()
        if not probabilities:
            return labels, None
        prob = torch.softmax(logits, dim=1)[:, 1:].transpose(0, 1).cpu().numpy()
        return labels, prob

    def segment(self, volume, normalization: Normalization, out_labels, out_probabilities=None,
                progress=True, description="segmenting"):
        """Segment a whole (z, y, x) array-like (e.g. a memory map), writing into `out_labels`.

        out_probabilities: optional sequence of n_features writable (z, y, x) arrays. Reading and
        normalising the next slab overlaps with the network's work on the current one.
        """
        nz = volume.shape[0]
        step = self._batch_slices(volume.shape)
        h = self.context

        def load(z0):
            lo, hi = max(z0 - h, 0), min(z0 + step + h, nz)
            raw = np.array(volume[lo:hi])
            release_pages(volume, lo, hi)
            if not np.all(np.isfinite(raw)):
                bad = int(np.count_nonzero(~np.isfinite(raw)))
                raise ValueError(f"{bad} NaN or infinite voxels in slices {lo}..{hi - 1}")
            return z0, lo, normalization.apply(raw)

        starts = list(range(0, nz, step))
        with ThreadPoolExecutor(max_workers=1) as pool, tqdm(total=nz, unit="slice", desc=description,
                                                              disable=not progress, leave=False) as bar:
            pending = pool.submit(load, starts[0])
            for i in range(len(starts)):
                z0, lo, normalized = pending.result()
                if i + 1 < len(starts):
                    pending = pool.submit(load, starts[i + 1])
                n = min(step, nz - z0)
                lab, prob = self._decide(self.logits(self._stacks_clamped(normalized, z0 - lo, n, lo, nz)),
                                         out_probabilities is not None)
                out_labels[z0 : z0 + n] = lab
                release_pages(out_labels, z0, z0 + n, flush=True)
                if out_probabilities is not None:
                    for k, out in enumerate(out_probabilities):
                        out[z0 : z0 + n] = prob[k]
                        release_pages(out, z0, z0 + n, flush=True)
                bar.update(n)

    def _stacks_clamped(self, normalized, first, count, lo, nz):
        """Context stacks from a slab that starts at tomogram slice `lo`, clamping at the tomogram faces."""
        offsets = np.arange(-self.context, self.context + 1)
        absolute = np.clip(lo + first + np.arange(count)[:, None] + offsets[None, :], 0, nz - 1)
        return normalized[absolute - lo]

