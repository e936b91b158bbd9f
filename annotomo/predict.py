"""Streaming a tomogram through a trained model: the inference engine.

One Predictor owns inference: it reads slabs of slices (with the neighbouring slices the model uses as
context), normalises them with the tomogram's global statistics, runs the network on batches of slices
(whole slices when they fit in a tile, else overlapping tiles blended by `tiling.TileBlender`), merges
slices along z (`zmerge.SliceMerger`) and writes labels (and optionally per-feature probabilities) slab
by slab. Memory is bounded by the slab, not by the tomogram, so a memory-mapped tomogram larger than RAM
works.

Any sub-volume can be processed independently: `predict_block` takes raw voxels plus a z halo of
`halo[0]` slices on each side and returns the labels of the inner part, identical to what `segment`
writes for those slices (x/y need no halo: each slice is processed whole, tiled internally). On CPUs
identical means bit for bit. On GPUs, cuDNN picks its convolution algorithms by batch shape and they
round differently, so a voxel whose two best classes nearly tie can flip (a few per million; see
benchmarks/RESULTS.md, "GPU"). This is the contract the cluster path and the napari plugin build on.
"""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from .device import choose_device, choose_precision, fuse_conv_bn, mixed_precision
from .errors import AnnotomoError
from .modelfile import ModelInfo, load_model
from .normalize import Normalization
from .tiling import TileBlender, padded_size, smallest_tile
from .volumes import release_pages
from .zmerge import SliceMerger, binomial_weights


class Predictor:
    """Applies a trained model to tomograms or sub-volumes of them.

    Args:
        model: the network (any `annotomo.models` architecture), in eval mode or not (a copy is used).
        info: the model file's metadata (classes, context slices, normalisation, pixel size).
        device: 'cpu', 'cuda', 'cuda:1' ... (default: CUDA when available).
        precision: 'auto' (bf16 on GPUs and fast-bf16 CPUs, else fp32), 'fp32', 'bf16' or 'fp16'.
        tile: in-plane tile size in pixels; larger slices are tiled with overlap.
        overlap: minimum tile overlap in pixels; it exceeds the U-Net's receptive-field radius, so tiled
            results equal whole-slice ones up to float rounding.
        batch_pixels: pixels per network call (slices are batched up to this).
        fuse: fold BatchNorm into the convolutions (faster; same results up to rounding).
        channels_last: run the network in channels-last memory layout (faster on CPUs).
        z_smooth: slices on each side merged into each slice's decision (binomial weights; 0: none).
        tta: test-time augmentation, averaging the 8 in-plane rotations/flips (8x the time).

    Raises:
        AnnotomoError: an unusable device, or a tile too small for its overlap.

    Example:
        >>> predictor = Predictor.from_file("model.annotomo")  # doctest: +SKIP
        >>> labels = predictor.predict_block(block, predictor.info.normalization_for(volume))  # doctest: +SKIP
    """

    def __init__(
        self,
        model: torch.nn.Module,
        info: ModelInfo,
        device=None,
        precision="auto",
        tile=2048,
        overlap=256,
        batch_pixels=None,
        fuse=True,
        channels_last=True,
        z_smooth=1,
        tta=False,
    ):
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
            raise AnnotomoError(
                f"--tile {tile}: tiles overlap by {self.overlap} pixels, so they must be at least {smallest} pixels"
            )
        self.batch_pixels = batch_pixels or (32 if self.device.type == "cuda" else 3) * 2**20
        self.max_network_batch = 0  # none yet; set when a batch did not fit in the GPU's memory (_logits_in_parts)
        self.context = info.context_slices // 2
        self.tta = bool(tta)
        self.z_weights = binomial_weights(z_smooth)
        self.z_radius = len(self.z_weights) // 2
        self._blenders: dict[tuple[int, int], TileBlender] = {}

    @classmethod
    def from_file(cls, path, **kwargs) -> Predictor:
        """A Predictor for the model file at `path` (keyword arguments as for the constructor).

        Raises:
            InputError: the file is missing, damaged or not an annotomo model.
        """
        model, info = load_model(path)
        return cls(model, info, **kwargs)

    @property
    def halo(self) -> tuple[int, int, int]:
        """Voxels of context needed on each side of a sub-volume (z, y, x): the network's context slices
        plus the reach of the z smoothing.
        """
        return (self.context + self.z_radius, 0, 0)

    # ---- the network on a batch of normalised slice stacks ----

    def _logits_in_parts(self, stacks: np.ndarray):
        """(offset, logits) of consecutive parts of a batch of stacks, of at most `max_network_batch` slices.

        A GPU with less memory than the default batch needs runs out of it, in the network or in what holds
        the batch's input and logits (splitting only the network's calls was not enough: see
        benchmarks/RESULTS.md, "GPU"). Then the part is retried in halves, down to one slice, and later
        parts and batches start at the size that fitted; only one slice that does not fit is an error (a
        smaller --tile helps then). Each part's logits are used before the next part is made.
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
        if self.channels_last and not (self.device.type == "cpu" and getattr(self.model, "fold", 1) > 1):
            x = x.contiguous(memory_format=torch.channels_last)  # (a folding U-Net on a CPU folds into it)
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
        batch, _, height, width = stacks.shape
        x = self._network_input(stacks)
        padded_height, padded_width = padded_size(height, self.stride), padded_size(width, self.stride)
        if (padded_height, padded_width) != (height, width):
            small = padded_height - height < height and padded_width - width < width
            x = F.pad(x, (0, padded_width - width, 0, padded_height - height), mode="reflect" if small else "replicate")
        if padded_height <= self.tile and padded_width <= self.tile:
            return self._network(x)[:, :, :height, :width]
        blender = self._blender(padded_height, padded_width)
        # Slices whose logits exceed 16 MB accumulate in float16 (the precision SliceMerger keeps them in
        # anyway), tile by tile and band by band so that no full-slice float32 temporary is made: at
        # 3456 x 3456 that is 240 MB less per slice in flight.
        n_outputs = self.info.n_outputs
        half = SliceMerger.keeps_half(n_outputs * padded_height * padded_width)
        blender.start(batch, n_outputs, torch.float16 if half else torch.float32)
        for rows, cols in blender.windows():
            blender.add((rows, cols), torch.softmax(self._network(x[:, :, rows, cols]), dim=1))
        return blender.result()[:, :, :height, :width]  # log-probabilities are logits too

    def _blender(self, height: int, width: int) -> TileBlender:
        """The tile blender for slices of this padded size; the same for every slice, so cached."""
        if (height, width) not in self._blenders:
            self._blenders[height, width] = TileBlender(
                height, width, self.tile, self.overlap, self.stride, self.device
            )
        return self._blenders[height, width]

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

    def _merger(self, lo: int, hi: int, probabilities: bool) -> SliceMerger:
        return SliceMerger(self.z_weights, lo, hi, probabilities)

    def predict_block(self, block, normalization: Normalization, halo=None, probabilities=False):
        """Labels (and optionally probabilities) of the inner slices of a raw (z, y, x) block.

        Args:
            block: raw voxels (any array-like), the slices wanted plus `halo` slices of context at each end.
            normalization: the tomogram's global normalisation (`info.normalization_for(volume)`), the
                same for every block of one tomogram.
            halo: slices at each z end that are context only (default `self.halo[0]`), or a pair (before,
                after); pass 0 for an end that is the tomogram's own face, where the edge slice is
                repeated instead.
            probabilities: also return the feature probabilities.

        Returns:
            uint8 labels (z - before - after, y, x); with probabilities=True a pair (labels, float32
            probabilities (n_features, z - before - after, y, x)). With the default halo (or 0 at a face)
            the labels equal what `segment` writes for those slices.

        Raises:
            ValueError: the block has no slices inside its halo.
        """
        halo = self.halo[0] if halo is None else halo
        before, after = (halo, halo) if np.ndim(halo) == 0 else (int(halo[0]), int(halo[1]))
        normalized = normalization.apply(block)
        nz = normalized.shape[0]
        inner = nz - before - after
        if inner <= 0:
            raise ValueError(f"block of {nz} slices has no slices inside a halo of {before} + {after}")
        labels = np.empty((inner,) + normalized.shape[1:], dtype=np.uint8)
        probs = np.empty((self.info.n_outputs - 1, inner) + normalized.shape[1:], np.float32) if probabilities else None
        # Slices whose probabilities the inner slices' smoothing reads (clamped at the block's ends).
        lo, hi = max(before - self.z_radius, 0), min(nz - after + self.z_radius, nz)
        merger = self._merger(lo, hi, probabilities)
        step = self._batch_slices(normalized.shape)
        for z in range(lo, hi, step):
            n = min(step, hi - z)
            for offset, logits in self._logits_in_parts(self._stacks(normalized, z, n)):
                for zz, lab, prob in merger.add(z + offset, logits):
                    if before <= zz < nz - after:
                        labels[zz - before] = lab
                        if probabilities:
                            probs[:, zz - before] = prob
                del logits
        return (labels, probs) if probabilities else labels

    def segment(
        self,
        volume,
        normalization: Normalization,
        out_labels,
        out_probabilities=None,
        progress=True,
        description="segmenting",
    ):
        """Segment a whole (z, y, x) array-like (e.g. a memory map), writing into `out_labels`.

        Args:
            volume: raw voxels, read slab by slab (a memory map is never read whole).
            normalization: the tomogram's normalisation (`info.normalization_for(volume)`).
            out_labels: a writable (z, y, x) uint8 array (e.g. `volumes.volume_writer`'s memory map).
            out_probabilities: optional sequence of n_features writable (z, y, x) float32 arrays.
            progress: show a progress bar (tqdm), or a callable taking the number of slices just done.
            description: the progress bar's label.

        Raises:
            ValueError: the volume holds NaN or infinite voxels.

        Reading and normalising the next slab overlaps with the network's work on the current one.
        """
        nz = volume.shape[0]
        step = self._batch_slices(volume.shape)
        context = self.context

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

        # The slab for slices z0..z0+n-1 spans z0-context..z0+n+context-1. Consecutive slabs share
        # 2 context slices, so only the new ones are read (in the background, while the network works) and
        # the shared ones are moved to the slab's front: a 5-slice model then holds 6 unbinned slices, not
        # 2 slabs of 5.
        starts = list(range(0, nz, step))
        fresh = [
            (z0 - context, z0 + min(step, nz - z0) + context)
            if i == 0
            else (z0 + context, z0 + min(step, nz - z0) + context)
            for i, z0 in enumerate(starts)
        ]
        merger = self._merger(0, nz, out_probabilities is not None)
        report = progress if callable(progress) else None
        slab = None
        with (
            ThreadPoolExecutor(max_workers=1) as pool,
            tqdm(
                total=nz, unit="slice", desc=description, disable=report is not None or not progress, leave=False
            ) as bar,
        ):
            pending = pool.submit(load, *fresh[0])
            for i, z0 in enumerate(starts):
                new = pending.result()
                if i + 1 < len(starts):
                    pending = pool.submit(load, *fresh[i + 1])
                n = min(step, nz - z0)
                if slab is None:
                    slab = new
                else:
                    shared = 2 * context
                    for j in range(shared):  # slice by slice: source and target never overlap
                        slab[j] = slab[len(slab) - shared + j]
                    slab = slab[: shared + n]
                    slab[shared:] = new
                del new
                for offset, logits in self._logits_in_parts(context_windows(slab, 2 * context + 1)):
                    for z, lab, prob in merger.add(z0 + offset, logits):
                        out_labels[z] = lab
                        release_pages(out_labels, z, z + 1, flush=True)
                        if out_probabilities is not None:
                            for k, out in enumerate(out_probabilities):
                                out[z] = prob[k]
                                release_pages(out, z, z + 1, flush=True)
                        bar.update(1)
                        if report is not None:
                            report(1)
                    del logits


def distinct_slices(stacks: np.ndarray) -> np.ndarray | None:
    """The (B + C - 1, y, x) slices that (B, C, y, x) context stacks are windows of, as a view; None when
    the stacks are not such windows (e.g. clamped copies at a tomogram's faces).
    """
    batch, context, height, width = stacks.shape
    if context == 1 or stacks.strides[0] != stacks.strides[1]:
        return None
    return np.lib.stride_tricks.as_strided(
        stacks, (batch + context - 1, height, width), (stacks.strides[0],) + stacks.strides[2:], writeable=False
    )


def context_windows(slab: np.ndarray, width: int) -> np.ndarray:
    """The (len(slab) - width + 1, width, y, x) stacks of `width` consecutive slices, as a view (no copy)."""
    windows = np.lib.stride_tricks.sliding_window_view(slab, width, axis=0, writeable=True)
    return windows.transpose(0, 3, 1, 2)  # writeable only so that torch.from_numpy takes it; never written
