"""Training precision modes and the rate-distortion forward pass that honours them.

A mode is a device (``cpu`` or ``cuda``), a precision (``fp32``, ``bf16`` or ``mixed``) and a
memory format (``channels_last`` or not). In ``bf16`` only the four convolutional transforms
(``g_a``, ``h_a``, ``h_s``, ``g_s``) run under ``torch.autocast(dtype=bfloat16)``; their outputs
are cast back to float32 before the entropy bottleneck, the Gaussian conditional (likelihoods) and
the loss, which stay in float32 (bf16's 8-bit mantissa would quantise likelihoods and the MSE too
coarsely). ``mixed`` is ``bf16`` with the analysis transform ``g_a`` in float32: late in training
(a base near 38 dB) the encoder's weight gradients computed in bf16 point elsewhere than the
float32 ones (median cosine 0.77 over 5 batches; 0.98 in ``mixed``; 0.999 for a 1e-3 jitter
of ``y`` in float32: ``benchmarks/precision_gradients.py``), while those of the hyperprior
transforms stay at 0.998. Parameters and optimiser state are always
float32.
"""

from __future__ import annotations

import contextlib
import math
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plugins.learned.training.msh_config import TrainConfig

PRECISIONS = ("fp32", "bf16", "mixed")
#: The transform that ``mixed`` keeps in float32 (see the module docstring).
ANALYSIS = "g_a"
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class TrainMode:
    """How training steps are computed; never changes the model being trained."""

    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )

    @property
    def label(self) -> str:
        """``cpu-bf16-cl``-style name used in logs, sidecars and benchmark tables."""
        return f"{self.device}-{self.precision}" + ("-cl" if self.channels_last else "")

    @classmethod
    def parse(cls, label: str) -> TrainMode:
        """Inverse of :attr:`label` (``cpu-fp32``, ``cpu-bf16-cl``, ``cuda-bf16``...)."""
        parts = label.split("-")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "cl"):
            raise ValueError(f"training mode {label!r} is not DEVICE-PRECISION[-cl]")
        return cls(device=parts[0], precision=parts[1], channels_last=len(parts) == 3)

    def autocast(self, transform: str = ""):
        """Context for the transform named ``transform`` (``g_a``, ``h_a``, ``h_s``, ``g_s``):
        bf16 autocast, or nothing in fp32 and for :data:`ANALYSIS` in ``mixed``."""
        import torch

        if self.precision == "bf16" or (self.precision == "mixed" and transform != ANALYSIS):
            return torch.autocast(device_type=self.device, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def fp32_region(self):
        """Context that switches autocast off (entropy models and loss)."""
        import torch

        return torch.autocast(device_type=self.device, enabled=False)

    def prepare_model(self, model):
        """Move ``model`` to the device and memory format, in place; returns it."""
        import torch

        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        if self.device == "cuda":
            # float32 means float32 (PyTorch's convolutions default to TF32's 10-bit
            # mantissa on GPUs): what ``mixed`` keeps out of bf16 keeps its precision
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.benchmark = True  # fixed crop shapes: pick the fastest kernels
        return model.to(self.device).to(memory_format=fmt)

    def prepare_batch(self, x):
        """``(B, 3, H, W)`` float32 batch on the device, in the mode's memory format."""
        import torch

        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on CPU); call before reading a timer."""
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()


#: How the decoder ``g_s`` sees the latent ``y`` in training. ``noise``: CompressAI's proxy,
#: ``y + u`` with ``u`` uniform in [-1/2, 1/2), the same sample the likelihoods are taken at.
#: ``ste`` ("mixed quantization", Minnen & Singh 2020): ``g_s`` gets the latent rounded around
#: the prior mean as it is coded, ``mu + round(y - mu)``, with a straight-through gradient,
#: while the rate term keeps the noisy likelihoods.
QUANTIZATIONS = ("noise", "ste")


def rd_forward(
    model, x, lmbda: float, mode: TrainMode, quantization: str = "noise"
) -> dict[str, Any]:
    """CompressAI's R-D loss ``lmbda * 255**2 * MSE + bpp`` for a ``MeanScaleHyperprior``.

    ``x``: ``(B, 3, H, W)`` in [0, 1], already prepared by ``mode``. Same operations in the same
    order as ``MeanScaleHyperprior.forward``, with autocast only around the transforms;
    ``quantization`` (:data:`QUANTIZATIONS`) is the decoder's view of ``y``. Returns float32
    scalars ``loss``, ``mse`` and ``bpp`` (rate from the likelihoods, bits per pixel).
    """
    import torch

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}")

    with mode.autocast("g_a"):
        y = model.g_a(x)
    y = y.float()
    with mode.autocast("h_a"):
        z = model.h_a(y)
    with mode.fp32_region():
        z_hat, z_likelihoods = model.entropy_bottleneck(z.float())
    with mode.autocast("h_s"):
        gaussian_params = model.h_s(z_hat)
    with mode.fp32_region():
        scales_hat, means_hat = gaussian_params.float().chunk(2, 1)
        y_hat, y_likelihoods = model.gaussian_conditional(y, scales_hat, means=means_hat)
        if quantization == "ste":
            residual = y - means_hat
            y_hat = means_hat + residual + (torch.round(residual) - residual).detach()
    with mode.autocast("g_s"):
        x_hat = model.g_s(y_hat)
    with mode.fp32_region():
        x_hat = x_hat.float()
        num_pixels = x.shape[0] * x.shape[2] * x.shape[3]
        log_likelihood = torch.log(y_likelihoods).sum() + torch.log(z_likelihoods).sum()
        bpp = log_likelihood / (-math.log(2) * num_pixels)
        mse = torch.mean((x_hat - x) ** 2)
        loss = lmbda * 255.0**2 * mse + bpp
    return {"loss": loss, "mse": mse, "bpp": bpp}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), with its bf16 matrix features when present."""
    name = platform.processor() or platform.machine()
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    features = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return name + (f" ({', '.join(features)})" if features else "")


def device_name(mode: TrainMode) -> str:
    """The device a mode computes on, in words (GPU name or CPU model)."""
    if mode.device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    return cpu_model()


#: The precision verdicts ``--precision auto`` reads: ``{"records": [...]}``, oldest first, each
#: with ``mode`` (a :attr:`TrainMode.label`) and ``verdict`` (``pass``, ``fail`` or ``withdrawn``)
#: and the evidence. ``benchmarks/train_speed.py --ab --record`` appends its A/B's verdict.
AB_RECORD = Path(__file__).with_name("precision_ab.json")


def read_verdicts(record: Path = AB_RECORD) -> dict[str, str]:
    """Each mode's latest verdict in ``record`` (a later record overrides an earlier one);
    empty when the file does not exist."""
    import json

    if not record.is_file():
        return {}
    return {r["mode"]: r["verdict"] for r in json.loads(record.read_text())["records"]}


def validated_modes(device: str, record: Path = AB_RECORD) -> list[TrainMode]:
    """Modes ``auto`` may choose from on ``device``. On CPU: fp32 with and without
    channels_last, then every reduced-precision mode whose latest verdict in ``record`` is
    ``pass`` (today ``mixed`` channels_last; bf16's early pass was withdrawn). Which is fastest
    depends on the CPU: bf16 arithmetic is native with AVX512-BF16 or AMX and emulated, about
    5x slower than fp32, on AVX2 alone. On a GPU ``mixed`` channels_last alone (its bf16 costs
    little, its float32 analysis keeps the encoder's gradient: see the module docstring)."""
    if device == "cuda":
        return [TrainMode("cuda", "mixed", True)]
    modes = [TrainMode("cpu", "fp32", False), TrainMode("cpu", "fp32", True)]
    passed = [label for label, verdict in read_verdicts(record).items() if verdict == "pass"]
    return modes + [TrainMode.parse(label) for label in passed]


def choose_mode(
    cfg: TrainConfig,
    time_modes: Callable[[list[TrainMode]], dict[TrainMode, float]] | None = None,
    log: Callable[[str], Any] = print,
) -> TrainMode:
    """A training run's mode: as ``cfg`` sets ``device``, ``precision`` and
    ``channels_last``, or for ``precision="auto"`` one of :func:`validated_modes`: the fastest
    by ``time_modes`` (seconds per step of each mode, measured by the trainer; the timings go
    to ``log``), else the last (the latest validated reduced precision, otherwise fp32
    channels_last)."""
    if cfg.precision != "auto":
        return TrainMode(cfg.device, cfg.precision, cfg.channels_last)
    candidates = validated_modes(cfg.device)
    if time_modes is None or len(candidates) == 1:
        return candidates[-1]
    timings = time_modes(candidates)
    chosen = min(timings, key=timings.get)
    log(
        "precision auto: "
        + ", ".join(f"{m.label} {t:.2f} s/step" for m, t in timings.items())
        + f" -> {chosen.label}"
    )
    return chosen


def time_step(model, x, lmbda: float, mode: TrainMode, repeats: int = 3) -> float:
    """Median seconds of one forward + backward pass (after one warm-up) in ``mode``.

    ``model`` is converted to the mode's device and memory format in place; gradients are
    cleared afterwards and no optimiser step is taken, so the weights do not change. The torch
    RNG (training noise) is forked, so timing leaves a run's random stream untouched.
    """
    import statistics
    import time

    import torch

    mode.prepare_model(model)
    x = mode.prepare_batch(x)
    times = []
    with torch.random.fork_rng(devices=[]):
        for i in range(repeats + 1):
            mode.synchronize()
            t0 = time.perf_counter()
            rd_forward(model, x, lmbda, mode)["loss"].backward()
            mode.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
            model.zero_grad(set_to_none=True)
    return statistics.median(times)
