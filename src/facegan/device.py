"""Where and in what precision to run: one place for the choices every command shares."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from facegan.errors import FaceganError

PRECISIONS = ("auto", "fp32", "bf16")
RESIDENT_MODES = ("auto", "on", "off")


def pick_device(name: str = "auto") -> torch.device:
    """"auto" → CUDA, then Apple MPS, then CPU; an explicit device must exist (one-line error if not)."""
    mps = getattr(torch.backends, "mps", None)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FaceganError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FaceganError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
    if device.type == "mps" and not (mps is not None and mps.is_available()):
        raise FaceganError(f"--device {name}: Apple MPS is not available here; use --device cpu")
    return device


def pick_precision(name: str, device: torch.device) -> str:
    """bf16 autocast where the hardware runs it natively, else fp32.

    On CPUs without AVX512-BF16/AMX, bf16 convolutions are emulated: 12× slower than fp32 on the
    development CPU (docs/benchmarks.md), so "auto" only picks bf16 when oneDNN reports native
    support.
    """
    if name not in PRECISIONS:
        raise FaceganError(f"--precision must be one of {', '.join(PRECISIONS)}, not {name!r}")
    if name != "auto":
        return name
    return "bf16" if native_bf16(device) else "fp32"


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 math runs in hardware here: a CUDA GPU that has it, or a CPU with AVX512-BF16/AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def sampling_precision(name: str, device: torch.device) -> str:
    """fp32 (the default: a manifest's (seed, index) regenerates bit-exactly) or opt-in bf16.

    bf16 faces are close to, not equal to, fp32 ones, and differ between machines; it is only
    accepted where the hardware runs it, since emulated bf16 is many times slower than fp32.
    """
    if name not in ("fp32", "bf16"):
        raise FaceganError(f"--precision must be fp32 or bf16 for generation, not {name!r}")
    if name == "bf16" and not native_bf16(device):
        raise FaceganError(f"--precision bf16 needs native bf16 (a CUDA GPU, or a CPU with AVX512-BF16/AMX); "
                           f"{device.type} here would emulate it, far slower than the fp32 default")
    return name


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast for ``precision == "bf16"``, else nothing (fp32)."""
    return torch.autocast(device.type, torch.bfloat16) if precision == "bf16" else nullcontext()


def configure(device: torch.device, tf32: bool = True) -> None:
    """Backend switches for fixed-shape training: TF32 tensor cores and cuDNN autotuning on CUDA.

    TF32 keeps fp32 range with a 10-bit mantissa in matmuls/convs, which GAN training tolerates
    (the losses are compared against plain fp32 in the tests); on CPU there is nothing to switch.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True


def check_resident(mode: str) -> None:
    if mode not in RESIDENT_MODES:
        raise FaceganError(f"--resident must be one of {', '.join(RESIDENT_MODES)}, not {mode!r}")


def resident_images(images: np.ndarray, device: torch.device, mode: str = "auto") -> np.ndarray | torch.Tensor:
    """The prepared uint8 array, copied onto ``device`` when that pays, else unchanged.

    On CUDA a resident copy turns each batch into one on-device gather instead of a host read and
    a PCIe transfer; "auto" does it when the data takes under a quarter of free GPU memory. On
    CPU, "on" loads the memory map into RAM (same batches, see the tests) and "auto" keeps the
    map, whose hot pages the OS caches anyway without growing the process.
    """
    check_resident(mode)
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return images
    if mode == "auto" and images.nbytes > torch.cuda.mem_get_info(device)[0] // 4:
        return images
    return torch.from_numpy(np.array(images)).to(device)  # np.array copies: the map is read-only
