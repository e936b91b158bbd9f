"""Where and in which precision the network runs: device choice, mixed precision, BatchNorm folding.

Shared by training and inference, so neither depends on the other for it.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

import torch

from .errors import AnnotomoError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX or AVX-512 BF16 instructions (bf16 is slower than fp32 without them)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def choose_device(device: str | None = None) -> torch.device:
    """The requested device, else CUDA when available, else the CPU.

    Raises:
        AnnotomoError: `device` is not a device name, or names a GPU that torch cannot see.
    """
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
        if precision not in PRECISIONS:
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
