"""The `annotomo` command: a thin layer that parses arguments and calls the Python API.

Errors a user can fix are printed as one line (`annotomo: error: FILE: problem`) with exit code 2 and no
traceback (`--debug` shows it); Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from . import __version__
from .errors import AnnotomoError

EXIT_USAGE, EXIT_INTERRUPTED, EXIT_INTERNAL = 2, 130, 1


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _fraction(text):
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _non_negative_float(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be zero or positive, got {text}")
    return value


def _non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or a positive integer, got {text}")
    return value


def _positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _class_list(text: str) -> list[str]:
    """Class names from a comma-separated option value."""
    return [c.strip() for c in text.split(",")]


def _add_synth(sub):
    p = sub.add_parser(
        "synth",
        help="simulate a labelled cellular tomogram",
        description="Write PREFIX_tomo.mrc (float32), PREFIX_labels.mrc (uint8: 0 background, "
        "1 microtubule, 2 ribosome, 3 membrane, 4 double_membrane, with --label-actin 5 actin; the names are "
        "stored in the file), "
        "PREFIX_ribosomes.star/.csv (true particle centres) and PREFIX_conditions.json. Every imaging and "
        "specimen option defaults to annotomo's reference condition, or with --randomise to a draw from "
        "the ranges real tomograms span.",
    )
    p.add_argument("prefix")
    p.add_argument("--seed", type=int, default=0, help="the cell, its noise and (with --randomise) its conditions")
    p.add_argument("--shape", type=_positive_int, nargs=3, metavar=("Z", "Y", "X"), default=(64, 256, 256))
    p.add_argument("--pixel-size", type=_positive_float, default=28.0, help="Angstrom per voxel (default 28)")
    p.add_argument(
        "--randomise",
        "--randomize",
        action="store_true",
        help="draw every condition not given from realistic ranges (domain randomisation)",
    )
    imaging = p.add_argument_group("imaging")
    imaging.add_argument("--snr", type=_positive_float, help="signal/noise variance ratio (default 0.5)")
    imaging.add_argument("--defocus", type=float, help="micrometres underfocus (default 3)")
    imaging.add_argument("--tilt-range", type=_positive_float, help="+- degrees (default 60)")
    imaging.add_argument("--tilt-step", type=_positive_float, help="degrees (default 3)")
    imaging.add_argument(
        "--tilt-scheme",
        choices=["dose-symmetric", "bidirectional", "unidirectional"],
        help="acquisition order (matters with --dose; default dose-symmetric)",
    )
    imaging.add_argument("--dose", type=float, help="total electrons per square Angstrom (default 0: no damage)")
    imaging.add_argument(
        "--dose-weighting",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="weight each tilt by its radiation damage in the reconstruction",
    )
    imaging.add_argument(
        "--reconstruction",
        choices=["wbp", "sirt", "denoised"],
        help="WBP (default), SIRT-like low-pass, or denoised (cryoCARE-like)",
    )
    imaging.add_argument("--sirt-iterations", type=_positive_int, help="(default 20)")
    imaging.add_argument(
        "--invert-contrast", action=argparse.BooleanOptionalAction, default=None, help="dense matter bright"
    )
    imaging.add_argument(
        "--ctf-correction",
        choices=["none", "phase-flip", "deconvolved"],
        help="the CTF as raw data have it (default none), phase-flipped, or deconvolved (Wiener)",
    )
    imaging.add_argument(
        "--noise-colour",
        type=float,
        help="tilt the noise's power spectrum by k**COLOUR, -3..3 (negative: blotchy; default 0)",
    )
    specimen = p.add_argument_group("specimen and labels")
    specimen.add_argument("--thickness", type=_positive_float, help="lamella thickness, nm (default 84%% of the depth)")
    specimen.add_argument(
        "--membrane-profile",
        choices=["two-leaflet", "broad", "asymmetric"],
        help="how bilayers look (default two-leaflet)",
    )
    specimen.add_argument(
        "--membrane-label-width",
        type=_positive_float,
        help="nm labelled across each bilayer (default 4.5, the bilayer; annotators draw 6-10)",
    )
    specimen.add_argument(
        "--protofilaments",
        type=_non_negative_int,
        help="microtubule wall texture (13 in cells; default 0: smooth walls)",
    )
    specimen.add_argument(
        "--bilayer-spacing", type=_positive_float, help="nm between a bilayer's headgroup layers (default 3.8)"
    )
    specimen.add_argument(
        "--tubulin-subunits",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="microtubule walls as rows of separate tubulin monomers",
    )
    specimen.add_argument(
        "--microtubule-radius",
        type=_positive_float,
        help="nm from a microtubule's axis to the middle of its wall (default 10)",
    )
    specimen.add_argument(
        "--microtubule-wall", type=_positive_float, help="nm, a microtubule wall's thickness (default 5)"
    )
    specimen.add_argument("--crowding", type=_positive_float, help="ribosomes and proteins per volume (default 1)")
    specimen.add_argument(
        "--label-actin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="label the 7 nm actin-like filaments as a fifth feature, actin (default: unlabelled distractors)",
    )
    specimen.add_argument(
        "--actin-density",
        type=_non_negative_float,
        help="actin-like filament bundles per area (default 1)",
    )
    p.add_argument("--preview", action="store_true", help="also write PREFIX_preview.png")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_synth)


SYNTH_CONDITIONS = (
    "snr",
    "defocus",
    "tilt_range",
    "tilt_step",
    "tilt_scheme",
    "dose",
    "dose_weighting",
    "reconstruction",
    "sirt_iterations",
    "invert_contrast",
    "thickness",
    "membrane_profile",
    "membrane_label_width",
    "protofilaments",
    "crowding",
    "label_actin",
    "actin_density",
    "ctf_correction",
    "noise_colour",
    "bilayer_spacing",
    "tubulin_subunits",
    "microtubule_radius",
    "microtubule_wall",
)


def cmd_synth(args):
    from .api import synthesize

    if min(args.shape) < 8:
        raise AnnotomoError(f"--shape {' '.join(map(str, args.shape))}: every size must be at least 8 voxels")
    conditions = {name: getattr(args, name) for name in SYNTH_CONDITIONS}
    try:
        result, paths = synthesize(
            args.prefix,
            preview=args.preview,
            overwrite=args.overwrite,
            seed=args.seed,
            shape=tuple(args.shape),
            pixel_size=args.pixel_size,
            randomise=args.randomise,
            **conditions,
        )
    except ValueError as exc:
        raise AnnotomoError(f"synth: {exc}") from None
    print(f"{'index':>5}  {'class':<16}{'voxel fraction':>15}")
    for index, name, fraction in result.class_table():
        print(f"{index:>5}  {name:<16}{fraction:>15.4f}")
    print("conditions: " + ", ".join(f"{k} {_short_value(v)}" for k, v in vars(result.conditions).items()))
    for path in paths.values():
        print(f"wrote {path}")


def _short_value(value):
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _add_train(sub):
    p = sub.add_parser(
        "train",
        help="train a model on annotated tomograms",
        description="Labels: 0 = background, k = k-th name of --classes, 255 = not annotated "
        "(ignored). Writes the best model to --out, plus OUT.log.json and "
        "OUT.training.png.",
    )
    p.add_argument("--tomogram", action="append", default=[], help="training tomogram (repeatable)")
    p.add_argument("--labels", action="append", default=[], help="its labels (one per --tomogram)")
    p.add_argument(
        "--classes",
        help="comma-separated feature names, label 1 first (default: the names stored in "
        "the labels file, or those of the --init model)",
    )
    p.add_argument("--out", required=True, help="model file to write (e.g. model.annotomo)")
    p.add_argument(
        "--init",
        metavar="MODEL",
        help="start from this model file or built-in model (fine-tuning): keeps its architecture, "
        "context slices, contrast and pixel size (default: a built-in model that knows some or all of the "
        "--classes, when the settings and pixel size suit it)",
    )
    p.add_argument(
        "--from-scratch",
        action="store_true",
        help="train a new network even where a built-in model knows the features",
    )
    p.add_argument("--val-tomogram", action="append", default=[], help="validation tomogram (repeatable)")
    p.add_argument("--val-labels", action="append", default=[], help="its labels")
    p.add_argument("--minutes", type=_positive_float, default=5.0, help="training time budget (default 5)")
    p.add_argument("--iterations", type=_positive_int, help="train exactly this many iterations instead")
    p.add_argument(
        "--max-iterations",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="stop after N iterations if the minutes last longer (default: when fine-tuning a model that "
        "knows every feature, 2000 per 64 x 256 x 256 annotated voxels, at least 2000; 0: the full minutes)",
    )
    p.add_argument("--arch", default=None, help="unet (default), unet-original or tomoseg-cnn")
    p.add_argument(
        "--context-slices",
        type=_positive_int,
        default=None,
        help="slices fed to the network (odd; default 5 = the slice and 2 on each side; 1 = 2D)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--patch", type=_positive_int, default=None, help="training patch size in pixels")
    p.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=None,
        help="peak learning rate (default 6e-3 for a new network, 1e-3 when starting from a model)",
    )
    p.add_argument(
        "--warp-fraction",
        type=_fraction,
        default=None,
        help="fraction of training patches rotated by a random angle and rescaled (default 0.5)",
    )
    p.add_argument(
        "--z-flip-fraction",
        type=_fraction,
        default=None,
        help="fraction of training patches whose context slices are reversed in z (default 0.5)",
    )
    p.add_argument(
        "--noise-fraction",
        type=_fraction,
        default=None,
        help="fraction of training patches given extra noise (default: 0.3 when every training tomogram "
        "holds little noise at fine scales, as denoised ones do, so that the model also segments raw ones; "
        "else 0)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--invert-contrast", action="store_true", help="for tomograms where dense matter is bright")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: a GPU when present)")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="mixed precision of the network (auto: bf16 on GPUs and on CPUs with AMX/AVX512-BF16)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted training run")
    p.add_argument(
        "--gpus",
        type=_positive_int,
        metavar="N",
        help="train on N GPUs with DistributedDataParallel (one process each, NCCL); or start annotomo "
        "train under torchrun",
    )
    p.add_argument(
        "--processes",
        type=_positive_int,
        metavar="N",
        help="train in N processes with DistributedDataParallel: one per GPU where there are GPUs, else "
        "CPU processes sharing the cores (gloo)",
    )
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_copick_options(p)
    source = p.add_argument_group("copick training labels (with --copick, one of)")
    source.add_argument(
        "--from-segmentation",
        metavar="NAME[:USER[:SESSION]]",
        help="a segmentation of each run: its objects are the features",
    )
    source.add_argument(
        "--from-picks",
        type=_class_list,
        default=[],
        metavar="OBJECT,...",
        help="picks of these objects: a sphere of the object's radius per pick, a background shell around it, "
        "the rest not annotated",
    )
    p.set_defaults(func=cmd_train)


def cmd_train(args):
    _check_copick_args(args, args.tomogram, "--tomogram/--labels")
    if not args.copick:
        return _train(args)
    import tempfile

    from .api import copick_training_pairs

    if args.classes:
        raise AnnotomoError("--classes: with --copick the features are the project's objects")
    with tempfile.TemporaryDirectory(prefix="annotomo-copick-") as folder:
        args.tomogram, args.labels, names = copick_training_pairs(
            args.copick,
            folder,
            args.voxel_spacing,
            args.tomo_type,
            runs=args.runs,
            from_segmentation=args.from_segmentation,
            from_picks=args.from_picks,
            log=(lambda *a: None) if args.quiet else print,
        )
        args.classes = ",".join(names)
        return _train(args)


def _train(args):
    from .training import AUTO, TrainConfig, tomoseg_config, train

    if len(args.labels) != len(args.tomogram):
        raise AnnotomoError("give one --labels per --tomogram")
    if len(args.val_tomogram) != len(args.val_labels):
        raise AnnotomoError("give one --val-labels per --val-tomogram")
    if args.init:
        fixed = [f"--{n.replace('_', '-')}" for n in ("arch", "context_slices") if getattr(args, n) is not None]
        fixed += ["--invert-contrast"] if args.invert_contrast else []
        if fixed:
            raise AnnotomoError(
                f"--init {args.init}: fine-tuning keeps the model's architecture, context slices and "
                f"contrast; drop {', '.join(fixed)}"
            )
    if args.init and args.from_scratch:
        raise AnnotomoError(f"--init {args.init} and --from-scratch contradict each other; give one")
    classes = _training_classes(args)
    args.init = args.init or (None if args.from_scratch else AUTO)
    config = TrainConfig(
        arch=args.arch or "unet",
        minutes=args.minutes,
        iterations=args.iterations,
        max_iterations=args.max_iterations,
        seed=args.seed,
        invert_contrast=args.invert_contrast,
        device=args.device,
        precision=args.precision,
    )
    if config.arch == "tomoseg-cnn":
        config = tomoseg_config(config)
    for name in (
        "context_slices",
        "batch_size",
        "patch",
        "learning_rate",
        "warp_fraction",
        "z_flip_fraction",
        "noise_fraction",
    ):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    if config.context_slices % 2 == 0:
        raise AnnotomoError(
            f"--context-slices must be odd (the slice plus equal context each side), got {config.context_slices}"
        )
    processes = args.gpus or args.processes
    if processes and processes > 1:
        return _train_in_processes(args, classes, config, processes)
    result = train(
        args.tomogram,
        args.labels,
        classes,
        args.out,
        config,
        validation=list(zip(args.val_tomogram, args.val_labels, strict=True)),
        progress=not args.quiet,
        resume=args.resume,
        overwrite=args.overwrite,
        init=args.init,
    )
    if result.interrupted:
        return EXIT_INTERRUPTED
    best = result.best
    print(
        f"trained {result.iterations} iterations in {result.seconds:.0f} s; best epoch {best['epoch']} "
        f"mean Dice {best['mean_dice']:.3f}"
    )
    print(f"wrote {args.out} (+ .log.json, .training.png)")


def _train_in_processes(args, classes, config, processes):
    """DistributedDataParallel training in `processes` processes (one per GPU, or CPU processes)."""
    import torch

    from .training import checkpoint_path, distributed
    from .training.checkpoint import check_training_outputs

    if args.gpus and not torch.cuda.is_available():
        raise AnnotomoError(
            f"--gpus {args.gpus}: no CUDA GPU is available to torch {torch.__version__} "
            "(--processes N trains in N CPU processes)"
        )
    inputs = args.tomogram + args.labels + args.val_tomogram + args.val_labels
    check_training_outputs(args.out, inputs, overwrite=args.overwrite, resume=args.resume)  # before any process
    use_gpus = bool(args.gpus) or (torch.cuda.is_available() and config.device != "cpu")
    start = time.perf_counter()
    distributed.launch(processes, _train_process, args, classes, config, use_gpus=use_gpus)
    log = json.loads(Path(args.out + ".log.json").read_text())
    best = max(log["history"], key=lambda h: h["mean_dice"])
    print(
        f"trained {log['history'][-1]['iteration']} iterations per process in {processes} processes in "
        f"{time.perf_counter() - start:.0f} s; best epoch {best['epoch']} mean Dice {best['mean_dice']:.3f}"
    )
    if checkpoint_path(args.out).exists():
        return EXIT_INTERRUPTED
    print(f"wrote {args.out} (+ .log.json, .training.png)")


def _train_process(args, classes, config):
    """One process of a distributed training run (torch.multiprocessing starts it)."""
    import os

    from .training import train

    main = os.environ.get("RANK", "0") == "0"
    train(
        args.tomogram,
        args.labels,
        classes,
        args.out,
        config,
        validation=list(zip(args.val_tomogram, args.val_labels, strict=True)),
        progress=main and not args.quiet,
        resume=args.resume,
        overwrite=True,
        init=args.init,
        log=print if main else (lambda *a: None),
    )


def _training_classes(args) -> list[str]:
    """--classes, else the feature names stored in the first labels file, else those of the --init model."""
    if args.classes:
        return _class_list(args.classes)
    from .volumes import read_class_names

    stored = read_class_names(args.labels[0])
    if stored:
        return stored
    if args.init:
        from .modelfile import read_model_info

        return list(read_model_info(args.init).class_names)
    raise AnnotomoError(
        f"{args.labels[0]}: no feature names stored in the labels file; give --classes (comma-separated, label 1 first)"
    )


def _add_segment(sub):
    p = sub.add_parser(
        "segment",
        help="annotate tomograms with a trained model",
        description="Writes OUTDIR/<stem>_labels.mrc (uint8 class index) and with "
        "--probabilities OUTDIR/<stem>_<class>.mrc (float32) per feature; with "
        "--format zarr, <stem>_labels.ome.zarr etc. (OME-Zarr). With --copick CONFIG instead of "
        "tomograms: each run's tomogram of a project, the result written into it as a copick segmentation.",
    )
    p.add_argument("model")
    p.add_argument("tomograms", nargs="*")
    p.add_argument("-o", "--outdir", help="output folder (with --copick: only for probability/uncertainty maps)")
    p.add_argument("--probabilities", action="store_true", help="also write one probability map per feature")
    p.add_argument(
        "--uncertainty",
        action="store_true",
        help="also write <stem>_uncertainty.mrc (float32, 0..1: how unsure the model is of each voxel) and "
        "each slice's mean in the manifest; annotomo suggest lists where to annotate next",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: a GPU when present)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument(
        "--tile",
        type=_positive_int,
        default=2048,
        help="in-plane tile size; larger slices are tiled with overlap (default 2048)",
    )
    p.add_argument("--pixel-size", type=_positive_float, default=None, help="override the header's pixel size")
    p.add_argument(
        "--z-smooth",
        type=_non_negative_int,
        default=1,
        metavar="SLICES",
        help="merge slices: average each slice's class scores with this many neighbouring slices on "
        "each side (binomial weights) before choosing labels (default 1; 0: each slice alone)",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average the 8 in-plane rotations/flips (8x slower, a little more accurate)",
    )
    p.add_argument(
        "--format",
        dest="output_format",
        choices=["mrc", "zarr"],
        default="mrc",
        help="output format: MRC (default) or OME-Zarr",
    )
    p.add_argument(
        "--min-size",
        type=_min_size,
        default=None,
        metavar="VOXELS|CLASS=VOXELS,...",
        help="set connected components smaller than this to background in the labels, for every "
        "feature (e.g. 50) or per feature (e.g. ribosome=200,membrane=500)",
    )
    p.add_argument(
        "--label-width",
        type=_label_widths,
        default=None,
        metavar="CLASS=NM,...",
        help="redraw these features' labels this wide, in nm (e.g. membrane=9): the model draws labels as "
        "wide as its training labels were, and annotators' conventions differ (a membrane as its 4-5 nm "
        "bilayer, or 8-10 nm wide)",
    )
    _add_contrast_options(p)
    cluster = p.add_argument_group('many tomograms, or large ones (Dask; pip install "annotomo[dask]")')
    cluster.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="a local Dask cluster of N worker processes (cores are shared among them)",
    )
    cluster.add_argument("--dask", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://scheduler:8786")
    cluster.add_argument(
        "--chunk-slices",
        type=_positive_int,
        metavar="SLICES",
        help="on Dask, split tomograms along z into chunks of this many slices (default: tomograms "
        "over 256 Mvoxels in chunks of about 256 Mvoxels)",
    )
    _add_copick_options(p)
    project = p.add_argument_group("copick output")
    project.add_argument("--name", help="the copick segmentation's name (default annotomo)")
    project.add_argument("--user-id", help="its user id (default annotomo)")
    project.add_argument("--session-id", help="its session id (default 0)")
    project.add_argument(
        "--pick",
        type=_class_list,
        default=[],
        metavar="FEATURE,...",
        help="also write these features' particles as copick picks of the same-named objects (Angstrom)",
    )
    p.add_argument("--classes", help="expected class names (comma-separated): refuse a model with other classes")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_segment)


def _add_copick_options(p):
    """--copick, --runs, --voxel-spacing, --tomo-type: which tomograms of a copick project."""
    group = p.add_argument_group('a copick project (the CryoET Data Portal\'s layout; pip install ".[copick]")')
    group.add_argument("--copick", metavar="CONFIG", help="the project's copick config (JSON)")
    group.add_argument("--runs", default="all", help="comma-separated run names, or all (default)")
    group.add_argument("--voxel-spacing", type=_positive_float, help="which voxel spacing, Angstrom (e.g. 10)")
    group.add_argument("--tomo-type", help="which tomogram type (e.g. wbp, denoised)")


def _check_copick_args(args, inputs: list, what: str):
    """One source of tomograms: files or a copick project with its voxel spacing and tomogram type."""
    if args.copick:
        if inputs:
            raise AnnotomoError(f"give {what} or --copick CONFIG, not both")
        missing = [o for o, v in (("--voxel-spacing", args.voxel_spacing), ("--tomo-type", args.tomo_type)) if not v]
        if missing:
            raise AnnotomoError(f"--copick needs {' and '.join(missing)}")
    elif not inputs:
        raise AnnotomoError(f"give {what}, or --copick CONFIG")


def _min_size(text):
    """'50' -> 50; 'ribosome=200,membrane=500' -> {'ribosome': 200, 'membrane': 500}."""
    try:
        if "=" not in text:
            value = int(text)
            if value < 0:
                raise ValueError
            return value
        sizes = {}
        for part in text.split(","):
            name, value = part.split("=")
            sizes[name.strip()] = int(value)
            if sizes[name.strip()] < 0 or not name.strip():
                raise ValueError
        return sizes
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected VOXELS or CLASS=VOXELS,... (non-negative integers), got {text!r}"
        ) from None


def _label_widths(text):
    """'membrane=9,double_membrane=6.5' -> {'membrane': 9.0, 'double_membrane': 6.5}."""
    widths = {}
    try:
        for part in text.split(","):
            name, value = part.split("=")
            widths[name.strip()] = float(value)
            if not name.strip() or not 0 < widths[name.strip()] < float("inf"):
                raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CLASS=NM,... (positive nm), got {text!r}") from None
    return widths


def cmd_segment(args):
    from .api import segment
    from .modelfile import read_model_info

    if args.classes:
        expected = _class_list(args.classes)
        actual = read_model_info(args.model).class_names
        if expected != actual:
            raise AnnotomoError(f"{args.model}: model classes are {','.join(actual)}, not {','.join(expected)}")
    start = time.perf_counter()
    _check_copick_args(args, args.tomograms, "tomograms")
    if args.copick:
        from .api import segment_copick

        unsupported = [
            o
            for o, v in (
                ("--min-size", args.min_size),
                ("--label-width", args.label_width),
                ("--pixel-size", args.pixel_size),
                ("--format", args.output_format != "mrc"),
            )
            if v
        ]
        if unsupported:
            raise AnnotomoError(f"{', '.join(unsupported)}: not available with --copick yet")
        segment_copick(
            args.model,
            args.copick,
            args.voxel_spacing,
            args.tomo_type,
            runs=args.runs,
            name=args.name,
            user_id=args.user_id,
            session_id=args.session_id,
            pick=args.pick,
            outdir=args.outdir,
            probabilities=args.probabilities,
            uncertainty=args.uncertainty,
            overwrite=args.overwrite,
            progress=not args.quiet,
            invert_contrast=args.invert_contrast,
            match_spectrum=args.match_spectrum,
            device=args.device,
            precision=args.precision,
            tile=args.tile,
            z_smooth=args.z_smooth,
            tta=args.tta,
            workers=args.workers,
            dask=args.dask,
        )
        print(f"done in {time.perf_counter() - start:.1f} s")
        return
    if not args.outdir:
        raise AnnotomoError("segment needs an output folder: -o OUTDIR")
    segment(
        args.model,
        args.tomograms,
        args.outdir,
        probabilities=args.probabilities,
        overwrite=args.overwrite,
        progress=not args.quiet,
        pixel_size=args.pixel_size,
        device=args.device,
        precision=args.precision,
        tile=args.tile,
        z_smooth=args.z_smooth,
        tta=args.tta,
        output_format=args.output_format,
        min_size=args.min_size,
        label_width=args.label_width,
        invert_contrast=args.invert_contrast,
        match_spectrum=args.match_spectrum,
        workers=args.workers,
        dask=args.dask,
        chunk_slices=args.chunk_slices,
        uncertainty=args.uncertainty,
    )
    print(f"done in {time.perf_counter() - start:.1f} s")


def _add_contrast_options(p):
    """--invert-contrast and --match-spectrum, as segment and suggest read tomograms."""
    p.add_argument(
        "--invert-contrast",
        action="store_true",
        help="the tomograms' dense matter is bright, unlike the model's training data (nothing is rewritten)",
    )
    p.add_argument(
        "--match-spectrum",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="filter each tomogram so that its power spectrum (noise, resolution) matches the model's "
        "training data, which makes data unlike it (other SNR, SIRT-like, denoised) look like it "
        "(default: on, for models that carry their training spectrum)",
    )


def _add_suggest(sub):
    p = sub.add_parser(
        "suggest",
        help="where to annotate next: the slices (or boxes) where the model is least sure",
        description="Segment TOMOGRAM with MODEL and list the N slices (with --region PX, PX x PX boxes) "
        "where the model is least sure (mean uncertainty, 0..1), best first: not annotated in LABELS, not "
        "next to each other or to annotated slices, and together showing every feature the model finds.",
    )
    p.add_argument("model")
    p.add_argument("tomogram")
    p.add_argument("--labels", help="the annotation so far (255 = not annotated): its slices are skipped")
    p.add_argument("-n", type=int, default=5, help="how many places (default 5)")
    p.add_argument("--region", type=int, metavar="PX", help="suggest PX x PX boxes instead of whole slices")
    p.add_argument(
        "--gap", type=_non_negative_int, default=3, help="slices between suggestions and annotation (default 3)"
    )
    p.add_argument("--json", action="store_true", help="print exactly a JSON list of the suggestions")
    p.add_argument("--pixel-size", type=_positive_float, default=None, help="override the header's pixel size")
    _add_contrast_options(p)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: a GPU when present)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_suggest)


def cmd_suggest(args):
    from .suggestions import suggest

    places = suggest(
        args.model,
        args.tomogram,
        labels=args.labels,
        n=args.n,
        region=args.region,
        gap=args.gap,
        pixel_size=args.pixel_size,
        invert_contrast=args.invert_contrast,
        match_spectrum=args.match_spectrum,
        progress=not (args.quiet or args.json),
        device=args.device,
    )
    if args.json:
        print(json.dumps(places))
        return
    box = args.region is not None
    print(f"{'rank':>4}  {'z':>5}  {'y0:y1, x0:x1' if box else ''}{'  ' if box else ''}{'score':>6}  features")
    for rank, p in enumerate(places, 1):
        where = f"{p['y0']}:{p['y1']}, {p['x0']}:{p['x1']}  " if box else ""
        print(f"{rank:>4}  {p['z']:>5}  {where}{p['score']:>6.3f}  {', '.join(p['features']) or '-'}")


def _add_evaluate(sub):
    p = sub.add_parser(
        "evaluate",
        help="score a label volume against the truth (Dice, IoU, ...), or picks",
        description="PREDICTION and TRUTH are label volumes (MRC): per-class Dice, IoU, precision, "
        "recall. Or both are particle lists, STAR (rlnCoordinateX/Y/Z) or CSV (annotomo "
        "pick / synth): precision, recall and F1 of picks within --radius voxels of a "
        "true centre.",
    )
    p.add_argument("prediction")
    p.add_argument("truth")
    p.add_argument("--classes", help="comma-separated class names (default: class_1, class_2, ...)")
    p.add_argument("--radius", type=_positive_float, default=6.0, help="pick matching radius in voxels (default 6)")
    p.add_argument("--json", help="also write the scores to this JSON file")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args):
    from .api import evaluate
    from .metrics import format_scores

    if all(str(p).lower().endswith((".csv", ".star")) for p in (args.prediction, args.truth)):
        return _evaluate_picks(args)
    classes = _class_list(args.classes) if args.classes else None
    scores = evaluate(args.prediction, args.truth, classes, args.json)
    print(format_scores(scores))


def _evaluate_picks(args):
    from .atomic import atomic_path
    from .postprocess import read_centres, score_picks

    centres = [read_centres(path) for path in (args.prediction, args.truth)]
    scores = score_picks(centres[0], centres[1], args.radius)
    print(
        f"picks {scores['picked']}, true {scores['true']}, matched {scores['true_positives']} within "
        f"{args.radius:g} voxels: precision {scores['precision']:.3f}, recall {scores['recall']:.3f}, "
        f"F1 {scores['f1']:.3f}"
    )
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(scores, indent=1))


def _add_pick(sub):
    p = sub.add_parser(
        "pick",
        help="find particles of one class in a segmentation; write STAR and CSV",
        description="Connected components of the class, touching particles split at distance-"
        "transform peaks, filtered by size. Writes PREFIX.star (RELION) and PREFIX.csv "
        "with centres in voxels and Angstrom.",
    )
    p.add_argument("segmentation", help="label volume written by annotomo segment")
    p.add_argument("--class", dest="class_", required=True, help="class name or label value, e.g. ribosome or 2")
    p.add_argument("--classes", help="class names, label 1 first (needed for a name unless --model is given)")
    p.add_argument("--model", help="model file whose class names to use")
    p.add_argument(
        "-o",
        "--out",
        help="output prefix: writes PREFIX.star and PREFIX.csv (with --format, PREFIX and that format's extension)",
    )
    p.add_argument(
        "--format",
        dest="pick_format",
        choices=["relion5", "relion3", "warp", "dynamo", "imod", "copick", "csv"],
        help="one file in this format (default: RELION 3-style STAR and CSV): relion5 centred Angstrom with "
        "rlnTomoName, relion3 voxels, warp, dynamo .tbl, imod .mod, csv (see annotomo.pickfiles); copick: "
        "picks in a copick project (--copick CONFIG --run RUN), in Angstrom",
    )
    project = p.add_argument_group("--format copick")
    project.add_argument("--copick", metavar="CONFIG", help="the project's copick config (JSON)")
    project.add_argument("--run", help="the run the segmentation belongs to")
    project.add_argument("--object", help="the project's object to store them as (default: the --class name)")
    project.add_argument("--user-id", default="annotomo", help="(default annotomo)")
    project.add_argument("--session-id", default="0", help="(default 0)")
    p.add_argument(
        "--tomo-name",
        help="the tomogram's name in relion5 (rlnTomoName) and warp files (default: the segmentation's file "
        "name without _labels and extension)",
    )
    p.add_argument("--min-voxels", type=_positive_int, default=20, help="drop smaller particles (default 20)")
    p.add_argument("--max-voxels", type=_positive_int, default=None, help="drop larger particles")
    p.add_argument(
        "--min-distance",
        type=_positive_float,
        default=4.0,
        help="minimum distance between particle centres in voxels (default 4)",
    )
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_pick)


def cmd_pick(args):
    from .modelfile import read_model_info
    from .postprocess import pick_particles, write_picks
    from .volumes import check_output_path, read_class_names, read_labels

    if args.class_.isdigit():
        index = int(args.class_)
    else:
        names = (
            _class_list(args.classes)
            if args.classes
            else read_model_info(args.model).class_names
            if args.model
            else read_class_names(args.segmentation)
        )
        if names is None:
            raise AnnotomoError(
                f"--class {args.class_}: {args.segmentation} stores no feature names; give --classes "
                "or --model to resolve a class name (or give the label value)"
            )
        if args.class_ not in names:
            raise AnnotomoError(f"--class {args.class_} is not one of {','.join(names)}")
        index = names.index(args.class_) + 1
    if args.pick_format == "copick":
        return _pick_into_copick(args, index)
    if not args.out:
        raise AnnotomoError("pick needs an output prefix: -o PREFIX (or --format copick)")
    if args.pick_format:
        from .pickfiles import PICK_FORMATS, write_picks_as

        paths = [Path(args.out + PICK_FORMATS[args.pick_format])]
    else:
        paths = [Path(args.out + ".star"), Path(args.out + ".csv")]
    for path in paths:
        check_output_path(path, inputs=[args.segmentation], overwrite=args.overwrite)
    with read_labels(args.segmentation) as seg:
        picks = pick_particles(seg.data, index, args.min_voxels, args.max_voxels, args.min_distance, seg.pixel_size)
        shape = seg.shape
    if args.pick_format:
        stem = Path(args.segmentation).name.split(".")[0]
        name = args.tomo_name or stem.removesuffix("_labels")
        write_picks_as(picks, paths[0], args.pick_format, shape, name)
    else:
        write_picks(picks, *paths)
    print(f"{len(picks.centres)} particles of class {args.class_} -> {', '.join(map(str, paths))}")


def _pick_into_copick(args, index):
    """The particles as picks of a copick project's run, in Angstrom (`pick --format copick`)."""
    from . import copick_projects as cp
    from .postprocess import pick_particles
    from .volumes import read_labels

    if not (args.copick and args.run):
        raise AnnotomoError("--format copick needs --copick CONFIG and --run RUN")
    obj = args.object or args.class_
    for what, value in (("object", obj), ("user id", args.user_id), ("session id", args.session_id)):
        cp.check_name(what, value)
    root = cp.open_project(args.copick)
    (run,) = cp.select_runs(root, [args.run], args.copick)
    if obj not in {o.name for o in root.pickable_objects}:
        raise AnnotomoError(f"--object {obj}: the copick project has no such object; give --object NAME")
    with read_labels(args.segmentation) as seg:
        if not seg.pixel_size:
            raise AnnotomoError(f"{args.segmentation}: no pixel size; copick picks are in Angstrom")
        picks = pick_particles(seg.data, index, args.min_voxels, args.max_voxels, args.min_distance, seg.pixel_size)
    cp.write_picks(run, obj, picks.centres, seg.pixel_size, args.user_id, args.session_id, args.overwrite)
    print(
        f"{len(picks.centres)} particles of class {args.class_} -> {args.run}: {obj} {args.user_id}:{args.session_id}"
    )


def _add_demo(sub):
    p = sub.add_parser("demo", help="simulate, train, segment and score: the whole pipeline in minutes")
    p.add_argument("--outdir", default="demo_output")
    p.add_argument("--minutes", type=_positive_float, default=3.0, help="training time (default 3)")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args):
    from .demo import run_demo

    run_demo(Path(args.outdir), minutes=args.minutes, seed=args.seed)


def _add_view(sub):
    p = sub.add_parser(
        "view",
        help="open tomograms in napari with the annotomo panel (annotate, train, segment)",
        description="napari with the tomogram at its voxel size, the labels if given, and the annotomo "
        'panel docked. Needs the napari extra: pip install "annotomo[napari]".',
    )
    p.add_argument("tomogram", nargs="?", help="any format annotomo reads")
    p.add_argument("labels", nargs="?", help="a label volume for the tomogram (e.g. annotomo segment's output)")
    p.add_argument("--model", help="model file or built-in name to segment with and start training from")
    p.set_defaults(func=cmd_view)


def cmd_view(args):
    from .viewer.launch import view

    if args.tomogram:
        from .volumes import open_volume

        open_volume(args.tomogram).close()  # a one-line error for a bad file before napari starts
        if args.labels:
            open_volume(args.labels).close()
    view(args.tomogram, args.labels, args.model)


def _add_models(sub):
    p = sub.add_parser(
        "models",
        help="list the built-in models (usable wherever a model file is)",
        description="The models shipped inside annotomo: name, features, pixel size and what they "
        "were trained on. A name works wherever a model path does (segment, train --init, "
        "view --model, the Python API).",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list of objects instead of a table")
    p.set_defaults(func=cmd_models)


def builtin_model_rows() -> list[dict]:
    """One row per built-in model: name, classes, pixel_size, whether `train` starts from it for its
    features (default_start), training data, file and size.
    """
    from .modelfile import builtin_models, builtin_models_for, read_model_info

    rows, starts = [], {}  # starts: each feature list's default start, looked up once
    for name, path in builtin_models().items():
        info = read_model_info(path)
        prov = info.provenance or {}
        features = tuple(info.class_names)
        if features not in starts:
            starts[features] = builtin_models_for(features)[:1]
        rows.append(
            dict(
                name=name,
                classes=list(info.class_names),
                pixel_size=info.pixel_size,
                default_start=starts[features] == [name],
                context_slices=info.context_slices,
                arch=info.arch,
                training_data=prov.get("training_data") or f"{len(prov.get('training_tomograms', []))} tomograms",
                iterations=prov.get("iterations"),
                file=str(path),
                megabytes=round(path.stat().st_size / 1e6, 2),
            )
        )
    return rows


def cmd_models(args):
    rows = builtin_model_rows()
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    if not rows:
        print("no built-in models in this installation")
        return
    for row in rows:
        print(
            f"{row['name']}: {', '.join(row['classes'])}; {row['pixel_size']:g} A/pixel; "
            f"{row['context_slices']} context slices; {row['megabytes']:.1f} MB"
            + ("; train starts from it for these features" if row["default_start"] else "")
        )
        print(f"    trained on {row['training_data']}")


def _add_info(sub):
    p = sub.add_parser("info", help="describe a tomogram, label or model file")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_info)


def cmd_info(args):
    import numpy as np

    from .modelfile import read_model_info
    from .normalize import sample_voxels
    from .omezarr import is_zarr_path
    from .volumes import open_volume

    for f in args.files:
        if _is_model_file(f):
            info = read_model_info(f)
            shown = {"file": str(f), **info.__dict__}
            if info.training_spectra:  # numbers for the code, not for reading: say what they are
                n = len(info.training_spectra)
                shown["training_spectra"] = f"{n} training tomogram{'s' * (n != 1)} (see annotomo.spectrum)"
            print(json.dumps(shown, indent=1, default=str))
            continue
        with open_volume(f) as vol:
            sample = sample_voxels(vol.data)
            vs = "unknown" if vol.voxel_size is None else " x ".join(f"{v:g}" for v in vol.voxel_size) + " A (z, y, x)"
            kind = (
                f"MRC mode {vol.mode}"
                if vol.mode is not None
                else "OME-Zarr"
                if is_zarr_path(f)
                else Path(f).suffix.lstrip(".").upper()
            )
            print(
                f"{f}: {' x '.join(map(str, vol.shape))} voxels (z, y, x), {kind}, "
                f"{vol.data.dtype}, voxel size {vs}, values {float(np.min(sample)):g} .. {float(np.max(sample)):g} "
                f"(sampled), mean {float(np.mean(sample)):g}"
            )


def _is_model_file(path) -> bool:
    """Safetensors files start with an 8-byte header length followed by a JSON object; or a built-in name."""
    from .modelfile import resolve_model

    path = resolve_model(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="annotomo",
        description="Annotate cryo-electron tomograms with a U-Net. "
        "Axis order (z, y, x); labels 0 = background, 1..N = features, 255 = not "
        "annotated; pixel size in Angstrom.",
    )
    parser.add_argument("--version", action="version", version=f"annotomo {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_demo,
        _add_synth,
        _add_train,
        _add_segment,
        _add_suggest,
        _add_evaluate,
        _add_pick,
        _add_view,
        _add_models,
        _add_info,
    ):
        add(sub)
    return parser


def _one_line_warnings(message, category, filename, lineno, file=None, line=None):
    print(f"annotomo: warning: {message}", file=sys.stderr)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.debug:
        warnings.showwarning = _one_line_warnings
    try:
        code = args.func(args)
    except AnnotomoError as exc:
        if args.debug:
            raise
        print(f"annotomo: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("annotomo: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print("annotomo: error: out of memory (try a smaller --tile, or close other programs)", file=sys.stderr)
        return EXIT_INTERNAL
    except OSError as exc:
        if args.debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"annotomo: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - last resort: one line, and how to see more
        if args.debug:
            raise
        torch = sys.modules.get("torch")  # imported by then if torch raised it (not at start: --help stays fast)
        if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
            print(
                "annotomo: error: the GPU ran out of memory (segment: even for one slice, try a smaller --tile, "
                "e.g. 512; train: try a smaller --batch-size or --patch; or use --device cpu)",
                file=sys.stderr,
            )
            return EXIT_INTERNAL
        print(
            f"annotomo: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    return code or 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main", "build_parser"]
