"""The layers of the HC model, defined once for training and for inference.

:func:`build_transforms` returns an ``nn.Module`` holding every convolutional part of HC (see
:mod:`plugins.hc` for the architecture and the choices the paper leaves open). The GDN class is
a parameter: training passes CompressAI's ``GDN`` (with its reparametrisation and initial
values), inference passes :class:`plugins.learned.nets.GDN`, the plain-torch copy with the same
state-dict keys that reads its constants from the weights file and needs no ``compressai``
import. Both therefore load the same state dict.

Shapes for an input of ``(B, 3, H, W)``, ``H`` and ``W`` multiples of 64:

* ``y2``: ``(B, C2, H/4, W/4)``, ``y3``: ``(B, C3, H/8, W/8)``, ``y4``: ``(B, M, H/16, W/16)``,
  ``z``: ``(B, N, H/64, W/64)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from plugins.learned.nets import conv, deconv, hyper_analysis, hyper_synthesis


@dataclass(frozen=True)
class HCConfig:
    """Channel counts of HC: ``N`` (transforms), ``M`` (the deepest latent ``y4``), ``C3`` and
    ``C2`` (the shallower latents; the paper's 16 and 4), ``P`` (the conditional networks'
    hidden channels, our choice)."""

    N: int = 128
    M: int = 192
    C3: int = 16
    C2: int = 4
    P: int = 64

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class Transforms(nn.Module):
    """Analysis with taps, hyper analysis/synthesis, conditional priors, synthesis with LC."""

    def __init__(self, cfg: HCConfig, gdn: type[nn.Module]) -> None:
        super().__init__()
        N, M, C3, C2, P = cfg.N, cfg.M, cfg.C3, cfg.C2, cfg.P
        self.cfg = cfg
        # analysis: three GDN stages, then the deepest latent; taps after stages 2 and 3
        self.g_a1 = nn.Sequential(conv(3, N), gdn(N), conv(N, N), gdn(N))  # H/4
        self.g_a2 = nn.Sequential(conv(N, N), gdn(N))  # H/8
        self.g_a3 = conv(N, M)  # H/16: y4
        self.tap2 = conv(N, C2, kernel_size=3, stride=1)  # y2
        self.tap3 = conv(N, C3, kernel_size=3, stride=1)  # y3
        # Balle 2018 hyperprior (mean and scale) of y4, as MeanScaleHyperprior
        self.h_a = hyper_analysis(N, M)
        self.h_s = hyper_synthesis(N, M)
        # conditional priors: y3 | y4 and y2 | (y3, y4)
        self.c3_features = nn.Sequential(deconv(M, P), nn.LeakyReLU(inplace=True))  # H/8
        self.c3_params = conv(P, 2 * C3, kernel_size=3, stride=1)
        self.c2_features = nn.Sequential(deconv(P + C3, P), nn.LeakyReLU(inplace=True))  # H/4
        self.c2_params = conv(P, 2 * C2, kernel_size=3, stride=1)
        # synthesis with latent combination (LC): each shallower latent is added into the
        # synthesis features of its resolution through a 3x3 convolution
        self.g_s1 = nn.Sequential(deconv(M, N), gdn(N, inverse=True))  # H/8
        self.lc3 = conv(C3, N, kernel_size=3, stride=1)
        self.g_s2 = nn.Sequential(deconv(N, N), gdn(N, inverse=True))  # H/4
        self.lc2 = conv(C2, N, kernel_size=3, stride=1)
        self.g_s3 = nn.Sequential(deconv(N, N), gdn(N, inverse=True), deconv(N, 3))  # H

    # -- the pieces, in the order a coder runs them ------------------------------------------

    def analysis(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(y2, y3, y4)`` of ``x``."""
        a2 = self.g_a1(x)
        a3 = self.g_a2(a2)
        return self.tap2(a2), self.tap3(a3), self.g_a3(a3)

    def prior3(self, y4_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(features, scales, means)`` of ``y3`` given ``y4_hat``."""
        f3 = self.c3_features(y4_hat)
        scales, means = self.c3_params(f3).chunk(2, 1)
        return f3, scales, means

    def prior2(self, f3: torch.Tensor, y3_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scales, means)`` of ``y2`` given ``prior3``'s features and ``y3_hat``."""
        f2 = self.c2_features(torch.cat([f3, y3_hat], dim=1))
        scales, means = self.c2_params(f2).chunk(2, 1)
        return scales, means

    def synthesis(
        self, y2_hat: torch.Tensor, y3_hat: torch.Tensor, y4_hat: torch.Tensor
    ) -> torch.Tensor:
        """``x_hat`` (unclamped) from the three latents."""
        s = self.g_s1(y4_hat) + self.lc3(y3_hat)
        s = self.g_s2(s) + self.lc2(y2_hat)
        return self.g_s3(s)
