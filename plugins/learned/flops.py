"""FLOPs of a learned codec's encoder and decoder, counted by torch on a 256x256 input.

:func:`count_flops` runs a function under ``torch.utils.flop_counter.FlopCounterMode``, which
counts 2 FLOPs per multiply-accumulate of convolutions and matrix products and nothing for
element-wise work (GDN's square root and division, activations, rounding) or entropy coding.
The count depends on the layers' shapes only, so the networks are built untrained on torch's
``meta`` device by default: no arithmetic runs and a whole model is counted in about 0.06 s of
CPU (the same networks on the CPU take seconds and give the same count, which
``tests/test_flops.py`` checks). The first count in a process costs about 1 s more: torch's
dispatch mode imports ``torch._dynamo`` on first use (``benchmarks/flops.py --cost``), so
:func:`remembered` keeps each meta-device count in a small JSON file per architecture and torch
version under the user cache (``$BENCH_FLOPS_CACHE``, else ``~/.cache/bench/flops``): only the
first worker on a machine pays that second. A missing, unreadable or unwritable cache only
means counting again.

:func:`base_model_flops` counts the mean-scale base (``MeanScaleHyperprior``) that msh, PLONQ,
DZQ and DeepHQ run: encoder ``g_a``, ``h_a`` and ``h_s`` (the encoder needs the prior to code
``y``), decoder ``h_s`` and ``g_s``. DeepHQ's steps and masks are element-wise and count 0.
Each result is cached per process, so a codec's ``info()`` pays for it once.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: Side of the square input the FLOPs are counted on (the HC paper's Table 1 uses 256x256).
SIDE = 256
#: The parts of a model :class:`Flops` expects, encoder and decoder made of them.
PARTS = ("analysis", "hyper analysis", "hyper synthesis", "priors", "synthesis")


@dataclass(frozen=True)
class Flops:
    """FLOPs (torch's count: 2 per MAC) of one model's :data:`PARTS` on a ``side x side``
    input. The encoder runs the analysis, the hyper path and the priors; the decoder the hyper
    synthesis, the priors and the synthesis."""

    model: str
    parts: dict[str, int]
    side: int = SIDE

    @property
    def encoder(self) -> int:
        p = self.parts
        return p["analysis"] + p["hyper analysis"] + p["hyper synthesis"] + p["priors"]

    @property
    def decoder(self) -> int:
        p = self.parts
        return p["hyper synthesis"] + p["priors"] + p["synthesis"]

    @property
    def encoder_per_pixel(self) -> float:
        return self.encoder / self.side**2

    @property
    def decoder_per_pixel(self) -> float:
        return self.decoder / self.side**2

    def per_pixel(self) -> dict[str, float]:
        """``{"encoder": FLOPs/pixel, "decoder": FLOPs/pixel}`` as
        :attr:`bench.codec.CodecInfo.flops_per_pixel` holds them."""
        return {"encoder": self.encoder_per_pixel, "decoder": self.decoder_per_pixel}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs torch counts while ``fn()`` runs (no autograd)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def flops_cache_dir() -> Path:
    """``$BENCH_FLOPS_CACHE`` if set, else ``flops/`` in the user cache directory."""
    from platformdirs import user_cache_dir

    env = os.environ.get("BENCH_FLOPS_CACHE")
    return Path(env) if env else Path(user_cache_dir("bench")) / "flops"


def remembered(model: str, shape: dict[str, int], count: Callable[[], Flops]) -> Flops:
    """``count()``, kept on disk per ``model``, architecture ``shape`` (channel counts, side)
    and torch version, since the count depends on nothing else. A stored file that does not
    hold :data:`PARTS` is counted again and replaced (written atomically)."""
    import torch

    key = "-".join([model, *(f"{k}={v}" for k, v in sorted(shape.items())), torch.__version__])
    path = flops_cache_dir() / f"{key.replace('/', '_')}.json"
    try:
        parts = json.loads(path.read_text())
        if set(parts) == set(PARTS) and all(isinstance(v, int) for v in parts.values()):
            return Flops(model, {p: parts[p] for p in PARTS}, shape["side"])
    except (OSError, ValueError):
        pass
    flops = count()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as tmp:
            json.dump(flops.parts, tmp)
        os.replace(tmp.name, path)
    except OSError:
        pass
    return flops


@functools.lru_cache(maxsize=8)
def base_model_flops(N: int = 128, M: int = 192, side: int = SIDE, device: str = "meta") -> Flops:
    """:class:`Flops` of the mean-scale base ``MeanScaleHyperprior(N, M)`` (see module doc);
    ``device="cpu"`` runs the networks for real (same count, seconds instead of milliseconds)
    and is never taken from the disk cache."""
    if device == "meta":
        shape = {"N": N, "M": M, "side": side}
        return remembered("msh", shape, lambda: _count_base(N, M, side, device))
    return _count_base(N, M, side, device)


def _count_base(N: int, M: int, side: int, device: str) -> Flops:
    import torch

    from plugins.learned.nets import Transforms

    with torch.device(device), torch.no_grad():
        nets = Transforms(N, M).eval()
        x = torch.rand(1, 3, side, side)
        y = nets.g_a(x)
        z = nets.h_a(y)
        parts = {
            "analysis": count_flops(lambda: nets.g_a(x)),
            "hyper analysis": count_flops(lambda: nets.h_a(y)),
            "hyper synthesis": count_flops(lambda: nets.h_s(z)),
            "priors": 0,
            "synthesis": count_flops(lambda: nets.g_s(y)),
        }
    return Flops("msh", parts, side)
