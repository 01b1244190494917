"""How the decoders run the synthesis transform ``g_s`` on the CPU: in channels_last.

With its weights and input in channels_last, torch runs ``g_s``'s transposed convolutions
through oneDNN (NHWC): 1.75x faster than the default contiguous (NCHW) layout over the 24 Kodak
images on one thread (Intel Xeon, 2 shared cores), float32 throughout, and the reconstructions
were pixel-identical on all 24 at three latents each (``benchmarks/synthesis_speed.py``; the
contract is 1e-4 dB PSNR). TorchScript (``torch.jit.freeze``, ``optimize_for_inference``)
measured no faster than channels_last and took tens of seconds to prepare.

Only ``g_s`` goes through here: the stream never depends on it. ``h_s`` (whose output indexes
the entropy tables) and ``g_a`` keep their own numerics; the training code keeps the original
modules (this works on a copy).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn


def prepare_for_inference(module: nn.Module) -> nn.Module:
    """A copy of ``module`` for decoding: eval mode, no gradients, parameters in channels_last
    (float32, values unchanged)."""
    prepared = copy.deepcopy(module).eval()
    prepared.requires_grad_(False)
    return prepared.to(memory_format=torch.channels_last)


def inference_input(latent: np.ndarray) -> torch.Tensor:
    """``(C, h, w)`` array -> ``(1, C, h, w)`` float32 tensor in channels_last, for a module from
    :func:`prepare_for_inference`."""
    tensor = torch.from_numpy(np.ascontiguousarray(latent, dtype=np.float32))[None]
    return tensor.contiguous(memory_format=torch.channels_last)
