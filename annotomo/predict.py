"""Streaming a tomogram through a trained model: the inference engine.

One Predictor owns inference: it reads slabs of slices (with the neighbouring slices the model uses as
context), normalises them with the tomogram's global statistics, runs the network on batches of slices
(whole slices when they fit in a tile, else overlapping tiles blended with Gaussian weights so no seams
appear), and writes labels (and optionally per-feature probabilities) slab by slab. Memory is bounded by
the slab, not by the tomogram, so a memory-mapped tomogram larger than RAM works.

Slices are merged in 3D by averaging each slice's class logits with its neighbours' (binomial weights
1/4, 1/2, 1/4 over `z_smooth` = 1 slice on each side) before the argmax: the network decides each
slice alone (context slices or not), and its slice-to-slice jitter costs Dice on features that extend
across slices (measured on three simulated test cells, 2D: mean Dice 0.768 -> 0.782; smoothing probabilities instead
of logits, or over 2 slices, measured no better). Logits wait for their neighbours a few slices at a
time.

Any sub-volume can be processed independently: `predict_block` takes raw voxels plus a z halo of
`halo[0]` slices on each side and returns the labels of the inner part, identical to what `segment`
writes for those slices (x/y need no halo: each slice is processed whole, tiled internally). On CPUs
identical means bit for bit. On GPUs, cuDNN picks its convolution algorithms by batch shape and they
round differently, so a voxel whose two best classes nearly tie can flip: measured on an H200, 0 to 5
of 5.2 million voxels differed between four sub-volumes and the whole.
"""

from __future__ import annotations

import copy
import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from .errors import AnnotomoError
from .modelfile import ModelInfo, load_model
from .normalize import Normalization
from .tiling import blending_weights, padded_size, smallest_tile, tile_layout
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
        try:
            chosen = torch.device(device)
        except RuntimeError:
            raise AnnotomoError(f"--device {device}: not a device name (cpu, cuda, cuda:1 ...)") from None
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise AnnotomoError(f"--device {device}: no CUDA GPU is available to torch {torch.__version__}")
        if chosen.type not in ("cpu", "cuda"):
            raise AnnotomoError(f"--device {device}: only cpu and cuda devices are supported")
        return chosen
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


def mixed_precision(device: torch.device, precision: str):
    """A context running the network in `precision` (autocast to bf16/fp16; 'fp32': unchanged)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


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
    tiled; the overlap exceeds the U-Net's receptive-field radius, so tiled = whole-slice results);
    batch_pixels: pixels per network call (slices are batched up to this); precision: 'auto',
    'fp32', 'bf16' or 'fp16'; device: 'cpu', 'cuda', ... (default: CUDA when available);
    z_smooth: slices on each side merged into each slice's decision (binomial weights; 0: none);
    tta: test-time augmentation, averaging the 8 in-plane rotations/flips (8x the time; measured on
    simulated cells: mean Dice +0.017 without, +0.01 on top of z smoothing).
    """

    def __init__(self, model: torch.nn.Module, info: ModelInfo, device=None, precision="auto",
                 tile=2048, overlap=256, batch_pixels=None, fuse=True, channels_last=True, z_smooth=1,
                 tta=False):
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
        smallest = smallest_tile(self.overlap, self.stride)
        if self.tile < smallest:
            raise AnnotomoError(f"--tile {tile}: tiles overlap by {self.overlap} pixels, so they must be at least "
                                f"{smallest} pixels")
        self.batch_pixels = batch_pixels or (32 if self.device.type == "cuda" else 3) * 2**20
        self.max_network_batch = 0  # none yet; set when a batch did not fit in the GPU's memory (_logits_in_parts)
        self.context = info.context_slices // 2
        self.tta = bool(tta)
        if int(z_smooth) != z_smooth or z_smooth < 0:
            raise ValueError(f"z_smooth must be a whole number of slices >= 0, got {z_smooth}")
        self.z_radius = int(z_smooth)
        weights = np.array([math.comb(2 * self.z_radius, k) for k in range(2 * self.z_radius + 1)], float)
        self.z_weights = (weights / weights.sum()).astype(np.float32)  # binomial: 1 -> 1/4, 1/2, 1/4

    @classmethod
    def from_file(cls, path, **kwargs) -> "Predictor":
        model, info = load_model(path)
        return cls(model, info, **kwargs)

    @property
    def halo(self) -> tuple[int, int, int]:
        """Voxels of context needed on each side of a sub-volume (z, y, x): the network's context slices
        plus the reach of the z smoothing."""
        return (self.context + self.z_radius, 0, 0)

    # ---- the network on a batch of normalised slice stacks ----

    def _logits_in_parts(self, stacks: np.ndarray):
        """(offset, logits) of consecutive parts of a batch of stacks, of at most `max_network_batch` slices.

        A GPU with less memory than the default batch needs runs out of it, in the network or in what holds
        the batch's input and logits (on an H200 capped at 400 MB, splitting only the network's calls was not
        enough for a 24-slice batch of 864 x 864 slices). Then the part is retried in halves, down to one slice, and
        later parts and batches start at the size that fitted; only one slice that does not fit is an
        error (a smaller --tile helps then). Each part's logits are used before the next part is made.
        """
        i = 0
        while i < len(stacks):
            size = min(self.max_network_batch or len(stacks), len(stacks) - i)
            try:
                part = self.logits(stacks[i : i + size])
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.max_network_batch = size // 2
                continue
            yield i, part
            del part
            i += size

    def _network(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with mixed_precision(self.device, self.precision):
            return self.model(x).float()

    @torch.inference_mode()
    def logits(self, stacks: np.ndarray) -> torch.Tensor:
        """Logits (B, n_outputs, H, W) for normalised stacks (B, context_slices, H, W).

        Whole slices when they fit in a tile; otherwise the log of Gaussian-blended tile probabilities.
        With test-time augmentation, the log of the probabilities averaged over the 8 in-plane
        rotations and flips (the training augmentations), mapped back.
        """
        if not self.tta:
            return self._logits(stacks)
        mean = None
        for k in range(4):
            for flip in (False, True):
                view = np.rot90(stacks, k, axes=(2, 3))
                view = view[..., ::-1] if flip else view
                prob = torch.softmax(self._logits(view), dim=1)
                prob = prob.flip(-1) if flip else prob
                prob = torch.rot90(prob, -k, dims=(2, 3))
                mean = prob if mean is None else mean.add_(prob)
                del prob
        return mean.div_(8).clamp_(min=1e-12).log_()

    def _network_input(self, stacks: np.ndarray) -> torch.Tensor:
        """The stacks as a tensor on the device: on CPUs a view; to a GPU each distinct slice is sent once.

        Consecutive context stacks share all but one slice (see context_windows), so a batch of B stacks
        of C slices holds only B + C - 1 distinct slices: those go through pinned memory to the GPU, and
        the stacks are rebuilt there as a view, instead of copying and sending every slice C times.
        """
        if self.device.type == "cuda":
            slices = distinct_slices(stacks)
            if slices is None:
                return self._to_device(stacks)
            return self._to_device(slices).unfold(0, stacks.shape[1], 1).permute(0, 3, 1, 2)
        if min(stacks.strides) >= 0:
            # Context stacks are strided views of the slab (see context_windows); tiles copy only what they
            # read, so an unbinned slice's (slices x context) stack is never materialised on the CPU.
            return torch.from_numpy(stacks)
        return torch.from_numpy(np.ascontiguousarray(stacks))  # rotated/flipped views (TTA)

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        """A float32 copy of `array` on the GPU, made in one copy into (cached) pinned memory."""
        host = torch.empty(array.shape, dtype=torch.float32, pin_memory=True)
        host.numpy()[...] = array
        return host.to(self.device, non_blocking=True)

    def _logits(self, stacks: np.ndarray) -> torch.Tensor:
        b, c, h, w = stacks.shape
        x = self._network_input(stacks)
        hp, wp = padded_size(h, self.stride), padded_size(w, self.stride)
        if (hp, wp) != (h, w):
            mode = "reflect" if hp - h < h and wp - w < w else "replicate"
            x = F.pad(x, (0, wp - w, 0, hp - h), mode=mode)
        if hp <= self.tile and wp <= self.tile:
            return self._network(x)[:, :, :h, :w]
        (th, ys), (tw, xs) = (tile_layout(n, self.tile, self.overlap, self.stride) for n in (hp, wp))
        weight, inverse_total = self._blending(hp, wp, th, tw, ys, xs)
        # Channels-last, like the network's own output: the argmax over classes then reads contiguously.
        # Slices whose logits exceed 16 MB accumulate in float16 (the precision _SliceMerger keeps them in
        # anyway), tile by tile and band by band so that no full-slice float32 temporary is made: at
        # 3456 x 3456 that is 240 MB less per slice in flight.
        dtype = torch.float16 if _SliceMerger.keeps_half(self.info.n_outputs * hp * wp) else torch.float32
        acc = torch.zeros((b, hp, wp, self.info.n_outputs), device=self.device, dtype=dtype).permute(0, 3, 1, 2)
        for y0 in ys:
            for x0 in xs:
                # Blend probabilities, not logits: near a tile's edge logits can be large, and even a small
                # weight on a large logit would show as a seam.
                out = torch.softmax(self._network(x[:, :, y0 : y0 + th, x0 : x0 + tw]), dim=1).mul_(weight)
                acc[:, :, y0 : y0 + th, x0 : x0 + tw] += out.to(dtype)
                del out
        band = max(1, (1 << 22) // wp)
        for y0 in range(0, hp, band):  # in bands: at 3456 x 3456 every temporary of `acc` would cost 240 MB
            part = acc[:, :, y0 : y0 + band]
            # log-probabilities are logits too
            part.copy_(part.float().mul_(inverse_total[y0 : y0 + band]).clamp_(min=1e-12).log_())
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

        Indices beyond the block are clamped (the edge slice is repeated at the tomogram's faces). Always
        windows over consecutive slices (see context_windows): a view of `normalized`, or at the faces a
        view of a copy of the count + 2 context slices with the edge ones repeated.
        """
        wanted = np.arange(first - self.context, first + count + self.context)
        clamped = np.clip(wanted, 0, normalized.shape[0] - 1)
        slices = normalized[first - self.context : wanted[-1] + 1] if (clamped == wanted).all() else normalized[clamped]
        return context_windows(slices, 2 * self.context + 1)

    def _batch_slices(self, shape) -> int:
        return int(max(1, min(64, self.batch_pixels // (shape[1] * shape[2]))))

    def predict_block(self, block, normalization: Normalization, halo=None, probabilities=False):
        """Labels (and optionally probabilities) of the inner slices of a raw (z, y, x) block.

        `halo` (default self.halo[0]) slices at each z end of `block` are context only; pass 0 at the
        tomogram's own faces. Returns uint8 labels (z - 2 halo, y, x), and with probabilities=True also
        float32 probabilities (n_features, z - 2 halo, y, x). With the default halo the result equals
        what `segment` writes for those slices.
        """
        h = self.halo[0] if halo is None else halo
        normalized = normalization.apply(block)
        nz = normalized.shape[0]
        inner = nz - 2 * h
        if inner <= 0:
            raise ValueError(f"block of {nz} slices has no slices inside a halo of {h}")
        labels = np.empty((inner,) + normalized.shape[1:], dtype=np.uint8)
        probs = np.empty((self.info.n_outputs - 1, inner) + normalized.shape[1:], np.float32) if probabilities else None
        # Slices whose probabilities the inner slices' smoothing reads (clamped at the block's ends).
        lo, hi = max(h - self.z_radius, 0), min(nz - h + self.z_radius, nz)
        merger = _SliceMerger(self, lo, hi, probabilities)
        step = self._batch_slices(normalized.shape)
        for z in range(lo, hi, step):
            n = min(step, hi - z)
            for offset, logits in self._logits_in_parts(self._stacks(normalized, z, n)):
                for zz, lab, prob in merger.add(z + offset, logits):
                    if h <= zz < nz - h:
                        labels[zz - h] = lab
                        if probabilities:
                            probs[:, zz - h] = prob
                del logits
        return (labels, probs) if probabilities else labels

    def _decide(self, logits: torch.Tensor, probabilities: bool):
        """Labels (B, H, W) and optionally feature probabilities (features, B, H, W) of single slices."""
        # max().indices, not argmax(): several times faster over a short channel axis on CPU (torch 2.x).
        labels = logits.max(1).indices.to(torch.uint8).cpu().numpy()
        if not probabilities:
            return labels, None
        prob = torch.softmax(logits, dim=1, dtype=torch.float32)[:, 1:].transpose(0, 1).cpu().numpy()
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

        def load(first, stop):
            """Normalised slices first..stop-1, where positions beyond the faces repeat the edge slice."""
            wanted = np.clip(np.arange(first, stop), 0, nz - 1)
            lo, hi = int(wanted[0]), int(wanted[-1]) + 1
            raw = np.array(volume[lo:hi], dtype=np.float32)  # a private copy, normalised in place
            release_pages(volume, lo, hi)
            if not np.all(np.isfinite(raw)):
                bad = int(np.count_nonzero(~np.isfinite(raw)))
                raise ValueError(f"{bad} NaN or infinite voxels in slices {lo}..{hi - 1}")
            slab = normalization.apply(raw, overwrite=True)
            return slab if hi - lo == len(wanted) else slab[wanted - lo]

        # The slab for slices z0..z0+n-1 spans z0-h..z0+n+h-1. Consecutive slabs share 2h slices, so only
        # the new ones are read (in the background, while the network works) and the shared ones are moved
        # to the slab's front: a 5-slice model then holds 6 unbinned slices, not 2 slabs of 5.
        starts = list(range(0, nz, step))
        fresh = [(z0 - h, z0 + min(step, nz - z0) + h) if i == 0 else (z0 + h, z0 + min(step, nz - z0) + h)
                 for i, z0 in enumerate(starts)]
        merger = _SliceMerger(self, 0, nz, out_probabilities is not None)
        slab = None
        with ThreadPoolExecutor(max_workers=1) as pool, tqdm(total=nz, unit="slice", desc=description,
                                                              disable=not progress, leave=False) as bar:
            pending = pool.submit(load, *fresh[0])
            for i, z0 in enumerate(starts):
                new = pending.result()
                if i + 1 < len(starts):
                    pending = pool.submit(load, *fresh[i + 1])
                n = min(step, nz - z0)
                if slab is None:
                    slab = new
                else:
                    for j in range(2 * h):  # slice by slice: source and target never overlap
                        slab[j] = slab[len(slab) - 2 * h + j]
                    slab = slab[: 2 * h + n]
                    slab[2 * h :] = new
                del new
                for offset, logits in self._logits_in_parts(context_windows(slab, 2 * h + 1)):
                    for z, lab, prob in merger.add(z0 + offset, logits):
                        out_labels[z] = lab
                        release_pages(out_labels, z, z + 1, flush=True)
                        if out_probabilities is not None:
                            for k, out in enumerate(out_probabilities):
                                out[z] = prob[k]
                                release_pages(out, z, z + 1, flush=True)
                        bar.update(1)
                    del logits


def distinct_slices(stacks: np.ndarray) -> np.ndarray | None:
    """The (B + C - 1, y, x) slices that (B, C, y, x) context stacks are windows of, as a view; None when
    the stacks are not such windows (e.g. clamped copies at a tomogram's faces)."""
    b, c, h, w = stacks.shape
    if c == 1 or stacks.strides[0] != stacks.strides[1]:
        return None
    return np.lib.stride_tricks.as_strided(stacks, (b + c - 1, h, w),
                                           (stacks.strides[0],) + stacks.strides[2:], writeable=False)


def context_windows(slab: np.ndarray, width: int) -> np.ndarray:
    """The (len(slab) - width + 1, width, y, x) stacks of `width` consecutive slices, as a view (no copy)."""
    windows = np.lib.stride_tricks.sliding_window_view(slab, width, axis=0, writeable=True)
    return windows.transpose(0, 3, 1, 2)  # writeable only so that torch.from_numpy takes it; never written


class _SliceMerger:
    """Turns the network's output for consecutive slices lo..hi-1 into labels, merging slices along z.

    Without smoothing each slice is decided at once (argmax of its logits). With it, each slice's
    logits are kept until the slices within `z_radius` after it are known; then the weighted sum of its
    neighbours' logits (indices clamped to lo..hi-1, i.e. the edge slice repeated) is decided. Slices
    larger than 16 Mbytes of logits are kept as float16, so unbinned slices stay within the memory bound.
    `add` returns the slices it could finish: (z, uint8 labels, float32 probabilities or None).
    """

    HALF_PRECISION_BYTES = 16 << 20

    @classmethod
    def keeps_half(cls, values_per_slice: int) -> bool:
        """Whether a slice's logits (this many float32 values) are kept as float16."""
        return values_per_slice * 4 > cls.HALF_PRECISION_BYTES

    def __init__(self, predictor: Predictor, lo: int, hi: int, probabilities: bool):
        self.p, self.lo, self.hi, self.probabilities = predictor, lo, hi, probabilities
        self.r, self.weights = predictor.z_radius, predictor.z_weights.tolist()
        self.window: dict[int, torch.Tensor] = {}  # slice -> (classes, y, x) logits
        self.next = lo  # the next slice to finish

    def add(self, z0: int, logits: torch.Tensor) -> list:
        if self.r == 0:
            labels, prob = self.p._decide(logits, self.probabilities)
            return [(z0 + j, labels[j], None if prob is None else prob[:, j]) for j in range(len(labels))]
        if self.keeps_half(logits[0].numel()):  # (on the GPU, logits stay there)
            logits = logits.half()
        for j in range(len(logits)):
            self.window[z0 + j] = logits[j]
        known = z0 + len(logits)
        done = []
        while self.next < self.hi and (self.next + self.r < known or known >= self.hi):
            done.append((self.next, *self._finish(self.next)))
            for old in [z for z in self.window if z < self.next - self.r + 1]:
                del self.window[old]
            self.next += 1
        return done

    @torch.inference_mode()
    def _finish(self, z: int):
        neighbours = [self.window[min(max(z + k, self.lo), self.hi - 1)] for k in range(-self.r, self.r + 1)]
        classes, rows, cols = neighbours[0].shape
        labels = np.empty((rows, cols), np.uint8)
        prob = np.empty((classes - 1, rows, cols), np.float32) if self.probabilities else None
        band = max(1, (1 << 21) // cols)  # rows per pass: temporaries of ~8 MB per class
        for y in range(0, rows, band):
            part = [n[:, y : y + band] for n in neighbours]
            acc = part[0].float() * self.weights[0]  # a new tensor: the window's logits stay as they are
            for w, n in zip(self.weights[1:], part[1:]):
                acc.add_(n.float() if n.dtype != torch.float32 else n, alpha=w)
            labels[y : y + band] = acc.max(0).indices.to(torch.uint8).cpu().numpy()
            if prob is not None:
                prob[:, y : y + band] = torch.softmax(acc, dim=0)[1:].cpu().numpy()
        return labels, prob
