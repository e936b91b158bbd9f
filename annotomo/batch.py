"""Segmenting a batch of tomograms: what each tomogram needs, and the work on it, whole or in z chunks.

One `SegmentJob` per tomogram says what to read and write (picklable, so Dask can ship it). The same
three functions do the work wherever it runs: `normalization_of` (a tomogram's global statistics, once),
`segment_chunk` (slices z0..z1 with the halo `Predictor.halo` gives, written in place) and `finish`
(small-component cleanup, header statistics, rename into place). `segment_whole` streams a whole
tomogram through `Predictor.segment` on one machine. On CPUs, chunks give the whole tomogram's labels
bit for bit (`Predictor.predict_block`'s contract); tomograms at another pixel size are resampled slice
by slice (`resample.ResampledVolume`, `resample.BackResampler`), in memory bounded by a few slices.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import AnnotomoError, InputError
from .normalize import warn_if_inverted
from .resample import BackResampler, ResampledVolume, needs_resampling
from .uncertainty import UncertaintyTap, uncertainty
from .volumes import PartialOutput, open_volume


@dataclass
class SegmentJob:
    """One tomogram of a batch: its input, geometry, the outputs to write, and how."""

    tomogram: Path
    shape: tuple
    voxel_size: tuple | None
    origin: tuple
    outputs: dict  # "labels" and feature names -> PartialOutput
    class_names: list
    probabilities: bool = False
    invert_contrast: bool = False
    pixel_size: float | None = None  # override of the header's
    model_pixel_size: float | None = None
    min_voxels: dict = field(default_factory=dict)
    label_widths: dict = field(default_factory=dict)  # class index -> nm the labels are redrawn at
    chunks: list = field(default_factory=list)  # [(z0, z1)]
    match_spectrum: bool = True  # filter slices into the model's training spectra (annotomo.spectrum)
    uncertainty: bool = False  # also write the "uncertainty" output (annotomo.uncertainty)

    @property
    def resampled(self) -> bool:
        """Whether inference runs at the model's pixel size and the result is brought back."""
        return needs_resampling(self.model_pixel_size, None if self.voxel_size is None else self.voxel_size[2])

    @property
    def nm_per_voxel(self) -> float:
        """The tomogram's pixel size in nm (label widths are stated in nm)."""
        return float(self.voxel_size[2]) / 10.0

    @property
    def voxels(self) -> int:
        """Voxels of the tomogram."""
        return int(np.prod(self.shape))

    def voxels_in(self, z0: int, z1: int) -> int:
        """Voxels of slices z0..z1-1."""
        return (z1 - z0) * int(np.prod(self.shape[1:]))

    def open(self):
        """The input volume (read-only)."""
        return open_volume(self.tomogram, min_slices=2, pixel_size=self.pixel_size)

    @property
    def needs_probabilities(self) -> bool:
        """Whether inference must give feature probabilities (written, or the uncertainty's source)."""
        return self.probabilities or self.uncertainty

    def feature_outputs(self) -> list:
        """The probability outputs, in feature order (empty without probabilities)."""
        return [self.outputs[name] for name in self.class_names] if self.probabilities else []

    def create_outputs(self):
        """Create every output's temporary file (on a cluster: once, by the client)."""
        for output in self.outputs.values():
            output.create()

    def finishing_started(self) -> bool:
        """Whether `finish` has renamed any output into place, so every chunk is written: on a cluster, a
        chunk task recomputed after its worker died finds this and has nothing to add.
        """
        return any(o.renamed_into_place() for o in self.outputs.values())

    def discard_outputs(self):
        """Remove the temporary files: nothing half-written remains."""
        for output in self.outputs.values():
            output.discard()


def plan_job(
    tomogram,
    outputs: dict,
    info,
    probabilities=False,
    invert_contrast=False,
    pixel_size=None,
    min_voxels=None,
    chunk_slices=None,
    match_spectrum=True,
    label_widths=None,
    uncertainty=False,
) -> SegmentJob:
    """A job for `tomogram` (its header is read to check it and learn its geometry).

    chunk_slices: split along z into chunks of about this many slices (aligned to OME-Zarr chunks), or
    None for one chunk.

    Raises:
        InputError: the tomogram cannot be read or is not a tomogram, or label widths are asked for
            and it has no pixel size.
    """
    with open_volume(tomogram, min_slices=2, pixel_size=pixel_size) as vol:
        shape, voxel_size, origin = vol.shape, vol.voxel_size, vol.origin
    if label_widths and voxel_size is None:
        raise InputError(tomogram, "no pixel size in the header, and label widths (nm) need one: give --pixel-size")
    partial = {
        name: PartialOutput(
            path,
            shape,
            np.uint8 if name == "labels" else np.float32,  # probabilities and uncertainty: float32
            voxel_size,
            origin,
            info.class_names if name == "labels" else None,
        )
        for name, path in outputs.items()
    }
    job = SegmentJob(
        Path(tomogram),
        shape,
        voxel_size,
        origin,
        partial,
        list(info.class_names),
        probabilities,
        invert_contrast,
        pixel_size,
        info.pixel_size,
        dict(min_voxels or {}),
        dict(label_widths or {}),
        match_spectrum=bool(match_spectrum),
        uncertainty=bool(uncertainty),
    )
    job.chunks = chunk_ranges(shape[0], chunk_slices, chunk_alignment(job))
    return job


def chunk_alignment(job) -> int:
    """Chunk boundaries fall on every output's OME-Zarr chunk boundaries (1 for MRC)."""
    from math import lcm

    from .omezarr import z_chunk

    sizes = [z_chunk(o.shape, o.dtype) for o in job.outputs.values() if o.is_zarr]
    return lcm(*sizes) if sizes else 1


def chunk_ranges(nz: int, chunk_slices: int | None, align: int = 1) -> list[tuple[int, int]]:
    """[(z0, z1)] covering 0..nz in chunks of about `chunk_slices` (a multiple of `align`); one without."""
    if not chunk_slices or chunk_slices >= nz:
        return [(0, nz)]
    size = max(align, -(-int(chunk_slices) // align) * align)
    return [(z0, min(z0 + size, nz)) for z0 in range(0, nz, size)]


def normalization_of(job: SegmentJob, info, warn=True):
    """The tomogram's normalisation for this model (a strided sample of it), with the contrast warning.

    With spectrum matching, the spectrum is measured on what the network reads: the tomogram at the
    model's pixel size.
    """
    with job.open() as vol:
        norm = info.normalization_for(vol.data, vol.path, job.invert_contrast, job.match_spectrum, vol.voxel_size)
    if warn:
        warn_if_inverted(norm, job.tomogram, job.invert_contrast)
    return norm


def warn_if_resampled(job: SegmentJob, stacklevel=3):
    """The one-line warning that a tomogram is resampled to the model's pixel size."""
    if job.resampled:
        px, model = job.voxel_size[2], job.model_pixel_size
        warnings.warn(
            f"{job.tomogram}: pixel size {px:g} A differs from the model's {model:g} A: resampling to "
            f"{model:g} A for inference and back to the input grid (use --pixel-size if the header is "
            "wrong)",
            stacklevel=stacklevel,
        )


def segment_whole(predictor, job: SegmentJob, norm, progress=False):
    """Stream the whole tomogram through the model into the outputs' temporary files (one machine)."""
    with job.open() as vol, _writables(job) as (labels, probs, uncertain):
        if uncertain is not None:  # the probabilities pass through a tap that writes the uncertainty
            probs = UncertaintyTap(uncertain, len(job.class_names), probs or None).sinks
        try:
            if job.resampled:
                source = ResampledVolume(vol.data, vol.voxel_size, predictor.info.pixel_size)
                back = BackResampler(source.shape, vol.shape, labels, probs or None)
                model_labels, model_probs = back.sinks(len(job.class_names))
                predictor.segment(source, norm, model_labels, model_probs, progress=_scaled(progress, job, source))
            else:
                predictor.segment(
                    vol.data, norm, labels, probs or None, progress=progress, description=f"segmenting {vol.path.name}"
                )
        except ValueError as exc:
            raise InputError(job.tomogram, str(exc)) from None


def segment_chunk(predictor, job: SegmentJob, z0: int, z1: int, norm) -> dict:
    """Segment slices z0..z1-1 (reading the halo around them) and write them into the outputs in place."""
    start = time.perf_counter()
    with job.open() as vol:
        if job.resampled:
            labels, probs = _resampled_chunk(predictor, job, vol, z0, z1, norm)
        else:
            before, after = min(predictor.halo[0], z0), min(predictor.halo[0], vol.shape[0] - z1)
            block = np.asarray(vol.data[z0 - before : z1 + after], dtype=np.float32)
            _check_finite(block, job.tomogram, z0 - before)
            result = predictor.predict_block(block, norm, (before, after), job.needs_probabilities)
            labels, probs = result if job.needs_probabilities else (result, None)
    job.outputs["labels"].write_slab(z0, labels)
    for output, p in zip(job.feature_outputs(), probs if probs is not None else [], strict=False):
        output.write_slab(z0, p)
    if job.uncertainty:
        job.outputs["uncertainty"].write_slab(z0, uncertainty(probs))
    return dict(z0=z0, z1=z1, voxels=job.voxels_in(z0, z1), seconds=time.perf_counter() - start)


def _resampled_chunk(predictor, job, vol, z0, z1, norm):
    """Labels and probabilities of tomogram slices z0..z1-1, inferred at the model's pixel size."""
    source = ResampledVolume(vol.data, vol.voxel_size, predictor.info.pixel_size)
    n = z1 - z0
    labels = np.empty((n,) + vol.shape[1:], np.uint8)
    probs = np.empty((len(job.class_names), n) + vol.shape[1:], np.float32) if job.needs_probabilities else None
    back = BackResampler(
        source.shape,
        vol.shape,
        _Offset(labels, z0),
        None if probs is None else [_Offset(p, z0) for p in probs],
        first=z0,
        stop=z1,
    )
    lo, hi = back.model_range()
    halo = predictor.halo[0]
    before, after = min(halo, lo), min(halo, source.shape[0] - hi)
    block = source[lo - before : hi + after]
    _check_finite(block, job.tomogram, None)
    _, model_probs = predictor.predict_block(block, norm, (before, after), probabilities=True)
    for j in range(hi - lo):
        back.add(lo + j, model_probs[:, j])
    return labels, probs


class _Offset:
    """An array seen from slice `first` on: writes to index z land at z - first."""

    def __init__(self, array, first):
        self.array, self.first = array, first

    def __setitem__(self, z, value):
        self.array[z - self.first] = value


def finish(job: SegmentJob, log=print) -> dict:
    """Redraw label widths and clean small components (if asked), complete and rename every output;
    returns {name: path}.

    Run again after a run of it was killed (a cluster recomputes a lost task), it completes what that
    one left: outputs already renamed into place stay as they are (a redraw cut short is measured again
    and finished, to within a voxel).
    """
    if (job.min_voxels or job.label_widths) and not job.outputs["labels"].renamed_into_place():
        from .postprocess import log_cleanup, redraw_label_widths, remove_small_components

        with job.outputs["labels"].writable() as labels:
            if job.label_widths:
                _log_widths(job, redraw_label_widths(labels, _widths_in_voxels(job)), log)
            if job.min_voxels:
                log_cleanup(remove_small_components(labels, job.min_voxels), job.class_names, log)
    return {name: str(o.path if o.renamed_into_place() else o.finalize()) for name, o in job.outputs.items()}


def _widths_in_voxels(job) -> dict:
    """The job's label widths (nm) in voxels of its tomogram."""
    return {cls: nm / job.nm_per_voxel for cls, nm in job.label_widths.items()}


def _log_widths(job, measured, log):
    for cls, widths in measured.items():
        name = job.class_names[cls - 1]
        if widths is None:
            log(f"{job.tomogram}: {name} labels left as they are: none, or too dense to measure a width")
        else:
            before, after = (w * job.nm_per_voxel for w in widths)
            log(
                f"{job.tomogram}: {name} labels redrawn {job.label_widths[cls]:g} nm wide "
                f"(measured {before:.1f} nm before, {after:.1f} nm after)"
            )


@contextlib.contextmanager
def _writables(job):
    """Every output's temporary file open for writing: (labels, [probabilities], uncertainty or None)."""
    with contextlib.ExitStack() as stack:
        outputs = [stack.enter_context(o.writable()) for o in [job.outputs["labels"], *job.feature_outputs()]]
        uncertain = stack.enter_context(job.outputs["uncertainty"].writable()) if job.uncertainty else None
        yield outputs[0], outputs[1:], uncertain


def _scaled(progress, job, source):
    """Report tomogram slices for a progress callback while model-grid slices are processed."""
    if not callable(progress):
        return False
    ratio = job.shape[0] / source.shape[0]
    return lambda n: progress(n * ratio)


def _check_finite(block, tomogram, first):
    if not np.all(np.isfinite(block)):
        bad = int(np.count_nonzero(~np.isfinite(block)))
        where = f" in slices from {first}" if first is not None else ""
        raise InputError(tomogram, f"{bad} NaN or infinite voxels{where}")


def run_here(predictor, jobs, progress, log, record):
    """Segment `jobs` one after the other in this process; returns ({tomogram: outputs}, {tomogram: error})."""
    done, failed = {}, {}
    bar = BatchBar(jobs) if progress and jobs else None
    for job in jobs:
        start = time.perf_counter()
        try:
            job.create_outputs()
            norm = normalization_of(job, predictor.info)
            segment_whole(predictor, job, norm, progress=bar.advance if bar else False)
            written = finish(job, log)
        except AnnotomoError as exc:
            job.discard_outputs()
            failed[job.tomogram] = exc
            record(job, error=str(exc), seconds=round(time.perf_counter() - start, 2))
            continue
        except BaseException:
            job.discard_outputs()
            raise
        record(job, written, seconds=round(time.perf_counter() - start, 2))
        done[job.tomogram] = written
        if bar:
            bar.tomogram_done()
        log(
            f"{job.tomogram} -> {written['labels']}"
            + (" (resampled)" if job.resampled else "")
            + (f" (+ {len(job.class_names)} probability maps)" if job.probabilities else "")
            + (" (+ uncertainty)" if job.uncertainty else "")
        )
    if bar:
        bar.close()
    return done, failed


class BatchBar:
    """One progress bar for a whole batch: voxels done, tomograms done, ETA (tqdm)."""

    def __init__(self, jobs, description="segmenting"):
        from tqdm.auto import tqdm

        self.planes = [int(np.prod(j.shape[1:])) for j in jobs]
        self.done = 0
        self.bar = tqdm(
            total=sum(int(j.voxels) for j in jobs),
            unit="vox",
            unit_scale=True,
            desc=description,
            leave=False,
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} voxels [{elapsed}<{remaining}] {postfix}",
        )
        self.bar.set_postfix_str(f"tomograms 0/{len(jobs)}")

    def advance(self, slices=1, voxels=None):
        """Count slices of the tomogram being segmented (or a number of voxels) as done."""
        amount = voxels if voxels is not None else slices * self.planes[min(self.done, len(self.planes) - 1)]
        # whole voxels, never past the total (scaled slice counts of resampled tomograms are fractional)
        self.bar.update(max(0, min(round(amount), self.bar.total - self.bar.n)))

    def tomogram_done(self):
        """Count a tomogram as done."""
        self.done += 1
        self.bar.set_postfix_str(f"tomograms {self.done}/{len(self.planes)}")

    def close(self):
        """Close the bar."""
        self.bar.close()


__all__ = [
    "AnnotomoError",
    "BatchBar",
    "SegmentJob",
    "chunk_ranges",
    "finish",
    "normalization_of",
    "plan_job",
    "run_here",
    "segment_chunk",
    "segment_whole",
]
