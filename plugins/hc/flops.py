"""FLOPs of HC's encoder and decoder (and, for comparison, the mean-scale base's), counted by
torch on a 256x256 input with the learned library's counter (:mod:`plugins.learned.flops`:
2 FLOPs per multiply-accumulate, element-wise work not counted, networks built on the ``meta``
device).

What each side of HC runs (the codec's real work): encoder the tapped analysis, ``h_a``,
``h_s`` and both conditional priors (residual quantisation needs every ``mu_i``); decoder
``h_s``, both conditional priors and the synthesis with its LC convolutions. The base's sides
are in :func:`plugins.learned.flops.base_model_flops`.
"""

from __future__ import annotations

import functools

from plugins.hc.nets import HCConfig
from plugins.learned.flops import SIDE, Flops, base_model_flops, count_flops, remembered

#: The paper's Table 1 (Ge et al. 2021), on a 256x256 input, in the paper's own unit.
PAPER_TABLE1 = {
    "hc": {"encoder": 2.70e9, "decoder": 2.51e9},
    "balle2018-n128": {"encoder": 2.36e9, "decoder": 2.36e9},
}


@functools.lru_cache(maxsize=8)
def hc_flops(cfg: HCConfig, side: int = SIDE, device: str = "meta") -> Flops:
    """:class:`~plugins.learned.flops.Flops` of HC with channel counts ``cfg`` (see module doc;
    cached per process and, on the meta device, on disk by
    :func:`~plugins.learned.flops.remembered`); ``device="cpu"`` runs the networks for real
    (same count)."""
    if device == "meta":
        shape = {**cfg.to_dict(), "side": side}
        return remembered("hc", shape, lambda: _count_hc(cfg, side, device))
    return _count_hc(cfg, side, device)


def _count_hc(cfg: HCConfig, side: int, device: str) -> Flops:
    import torch

    from plugins.hc.nets import Transforms
    from plugins.learned.nets import GDN

    with torch.device(device), torch.no_grad():
        nets = Transforms(cfg, GDN).eval()
        x = torch.rand(1, 3, side, side)
        y2, y3, y4 = nets.analysis(x)
        z = nets.h_a(y4)

        def priors() -> None:
            f3, _, _ = nets.prior3(y4)
            nets.prior2(f3, y3)

        parts = {
            "analysis": count_flops(lambda: nets.analysis(x)),
            "hyper analysis": count_flops(lambda: nets.h_a(y4)),
            "hyper synthesis": count_flops(lambda: nets.h_s(z)),
            "priors": count_flops(priors),
            "synthesis": count_flops(lambda: nets.synthesis(y2, y3, y4)),
        }
    return Flops("hc", parts, side)


def count(model: str) -> Flops:
    """:class:`~plugins.learned.flops.Flops` of ``"hc"`` (default :class:`HCConfig`) or
    ``"msh"`` (the base, N=128 M=192), by part."""
    if model == "msh":
        return base_model_flops(128, 192)
    if model == "hc":
        return hc_flops(HCConfig())
    raise ValueError(f"model must be 'hc' or 'msh', got {model!r}")
