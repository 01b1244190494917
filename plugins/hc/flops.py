"""FLOPs of HC's and the mean-scale base's encoder and decoder, counted by torch.

:func:`count` runs each side's networks once on a ``(1, 3, 256, 256)`` input under
``torch.utils.flop_counter.FlopCounterMode``, which counts 2 FLOPs per multiply-accumulate of
convolutions and matrix products and nothing for element-wise work (GDN's square root and
division, activations, rounding) or entropy coding. Weights do not change the count, so the
networks are built untrained.

What each side runs (the codec's real work):

* mean-scale base (``MeanScaleHyperprior`` N=128, M=192): encoder ``g_a``, ``h_a`` and ``h_s``
  (the encoder needs the prior to code ``y``); decoder ``h_s`` and ``g_s``.
* HC (N=128, M=192, y3 16 and y2 4 channels): encoder the tapped analysis, ``h_a``, ``h_s``
  and both conditional priors (residual quantisation needs every ``mu_i``); decoder ``h_s``,
  both conditional priors and the synthesis with its LC convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The paper's Table 1 (Ge et al. 2021), on a 256x256 input, in the paper's own unit.
PAPER_TABLE1 = {
    "hc": {"encoder": 2.70e9, "decoder": 2.51e9},
    "balle2018-n128": {"encoder": 2.36e9, "decoder": 2.36e9},
}
SIDE = 256


@dataclass(frozen=True)
class Flops:
    """FLOPs of one model's parts on a ``SIDE x SIDE`` input (torch's count: 2 per MAC)."""

    model: str
    parts: dict[str, int]

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
        return self.encoder / SIDE**2

    @property
    def decoder_per_pixel(self) -> float:
        return self.decoder / SIDE**2


def _counted(fn) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def count(model: str) -> Flops:
    """:class:`Flops` of ``"hc"`` or ``"msh"``, by part (see module doc)."""
    import torch

    from plugins.learned.nets import GDN
    from plugins.learned.nets import Transforms as MshTransforms

    x = torch.rand(1, 3, SIDE, SIDE)
    if model == "msh":
        nets = MshTransforms(128, 192).eval()
        with torch.no_grad():
            y = nets.g_a(x)
            z = nets.h_a(y)
        parts = {
            "analysis": _counted(lambda: nets.g_a(x)),
            "hyper analysis": _counted(lambda: nets.h_a(y)),
            "hyper synthesis": _counted(lambda: nets.h_s(z)),
            "priors": 0,
            "synthesis": _counted(lambda: nets.g_s(y)),
        }
        return Flops("msh", parts)
    if model == "hc":
        from plugins.hc.nets import HCConfig, Transforms

        nets = Transforms(HCConfig(), GDN).eval()
        with torch.no_grad():
            y2, y3, y4 = nets.analysis(x)
            z = nets.h_a(y4)

        def priors() -> None:
            f3, _, _ = nets.prior3(y4)
            nets.prior2(f3, y3)

        parts = {
            "analysis": _counted(lambda: nets.analysis(x)),
            "hyper analysis": _counted(lambda: nets.h_a(y4)),
            "hyper synthesis": _counted(lambda: nets.h_s(z)),
            "priors": _counted(priors),
            "synthesis": _counted(lambda: nets.synthesis(y2, y3, y4)),
        }
        return Flops("hc", parts)
    raise ValueError(f"model must be 'hc' or 'msh', got {model!r}")
