"""The four transforms of CompressAI's ``MeanScaleHyperprior``, built from its state dict in
plain torch, so that encoding and decoding need neither ``compressai`` nor its import time.

Importing compressai 1.2.8 takes about 5 s here (its ``datasets`` package pulls in
torch_geometric and torch._dynamo, its entropy models scipy.stats); torch alone about 1.5 s.
Every decode in a fresh process (the conformance suite's check, the harness's workers) paid it.
The layers below are the same operations in the same order as CompressAI's (``conv``/
``deconv`` of ``compressai.models.utils``, ``GDN`` of ``compressai.layers.gdn`` with its
``NonNegativeParametrizer`` and ``LowerBound``), with the same state-dict keys, so the outputs
are bit-identical to CompressAI's modules (checked by ``tests/test_weights.py``). The
reparametrisation buffers (``pedestal``, ``bound``) are read from the state dict, not
recomputed, because the float16 export rounds them.

The entropy models are not rebuilt as modules: their integer tables are read from the state
dict (:class:`Tables`) and used by :mod:`plugins.learned.coding.table` and
:mod:`plugins.learned.coding.latent`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class _Bound(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("bound", torch.zeros(1))


class _NonNegative(nn.Module):
    """``max(x, bound) ** 2 - pedestal`` (CompressAI's ``NonNegativeParametrizer``)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pedestal", torch.zeros(1))
        self.lower_bound = _Bound()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.max(x, self.lower_bound.bound)
        return out**2 - self.pedestal


class GDN(nn.Module):
    """Generalized divisive normalization (inverse: multiply by the norm), as CompressAI's."""

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.zeros(channels))
        self.gamma = nn.Parameter(torch.zeros(channels, channels))
        self.beta_reparam = _NonNegative()
        self.gamma_reparam = _NonNegative()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.size(1)
        beta = self.beta_reparam(self.beta)
        gamma = self.gamma_reparam(self.gamma).reshape(channels, channels, 1, 1)
        norm = F.conv2d(x**2, gamma, beta)
        norm = torch.sqrt(norm) if self.inverse else torch.rsqrt(norm)
        return x * norm


def conv(cin: int, cout: int, kernel_size: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=kernel_size // 2)


def deconv(cin: int, cout: int, kernel_size: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(
        cin, cout, kernel_size, stride=stride, output_padding=stride - 1, padding=kernel_size // 2
    )


def hyper_analysis(N: int, M: int) -> nn.Sequential:
    """``h_a`` of MeanScaleHyperprior: ``(B, M, h, w)`` latent to ``(B, N, h/4, w/4)``
    hyper-latent. State-dict keys ``0.*``, ``2.*``, ``4.*`` (the convolutions)."""
    return nn.Sequential(
        conv(M, N, stride=1, kernel_size=3),
        nn.LeakyReLU(inplace=True),
        conv(N, N),
        nn.LeakyReLU(inplace=True),
        conv(N, N),
    )


def hyper_synthesis(N: int, M: int) -> nn.Sequential:
    """``h_s`` of MeanScaleHyperprior: ``(B, N, h/4, w/4)`` hyper-latent to ``(B, 2M, h, w)``,
    the scales then the means of the latent's Gaussians. State-dict keys ``0.*``, ``2.*``,
    ``4.*``."""
    return nn.Sequential(
        deconv(N, M),
        nn.LeakyReLU(inplace=True),
        deconv(M, M * 3 // 2),
        nn.LeakyReLU(inplace=True),
        conv(M * 3 // 2, M * 2, stride=1, kernel_size=3),
    )


class Transforms(nn.Module):
    """``g_a``, ``h_a``, ``h_s``, ``g_s`` of MeanScaleHyperprior(N, M)."""

    def __init__(self, N: int, M: int) -> None:
        super().__init__()
        self.N, self.M = N, M
        self.g_a = nn.Sequential(
            conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M)
        )
        self.g_s = nn.Sequential(
            deconv(M, N),
            GDN(N, inverse=True),
            deconv(N, N),
            GDN(N, inverse=True),
            deconv(N, N),
            GDN(N, inverse=True),
            deconv(N, 3),
        )
        self.h_a = hyper_analysis(N, M)
        self.h_s = hyper_synthesis(N, M)


@dataclass
class Tables:
    """Integer tables of the two entropy models, as CompressAI's ``update()`` built them."""

    z_cdf: np.ndarray  # (N, L) int64
    z_cdf_length: np.ndarray  # (N,)
    z_offset: np.ndarray  # (N,)
    z_medians: np.ndarray  # (N,) float32
    y_cdf: np.ndarray  # (S, L)
    y_cdf_length: np.ndarray  # (S,)
    y_offset: np.ndarray  # (S,)
    scale_table: np.ndarray  # (S,) float64 (exact copies of the float32 table)
    scale_bound: float


def _np_int(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.int64)


def build(state: dict[str, torch.Tensor]) -> tuple[Transforms, Tables]:
    """Transforms (eval mode, float32) and tables from a MeanScaleHyperprior state dict."""
    N = int(state["g_a.0.weight"].shape[0])
    M = int(state["g_a.6.weight"].shape[0])
    nets = Transforms(N, M)
    own = nets.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"state dict lacks {len(missing)} transform entries, e.g. {missing[:3]}")
    nets.load_state_dict({k: state[k].float() for k in own})
    nets.eval()
    for p in nets.parameters():
        p.requires_grad_(False)
    needed = [
        "entropy_bottleneck._quantized_cdf",
        "entropy_bottleneck._cdf_length",
        "entropy_bottleneck._offset",
        "entropy_bottleneck.quantiles",
        "gaussian_conditional._quantized_cdf",
        "gaussian_conditional._cdf_length",
        "gaussian_conditional._offset",
        "gaussian_conditional.scale_table",
    ]
    absent = [k for k in needed if k not in state or state[k].numel() == 0]
    if absent:
        raise ValueError(f"state dict has no entropy-coder tables ({absent[0]}): run update()")
    bound = state.get("gaussian_conditional.lower_bound_scale.bound")
    scale_table = state["gaussian_conditional.scale_table"].float().double().numpy().copy()
    tables = Tables(
        z_cdf=_np_int(state["entropy_bottleneck._quantized_cdf"]),
        z_cdf_length=_np_int(state["entropy_bottleneck._cdf_length"]),
        z_offset=_np_int(state["entropy_bottleneck._offset"]),
        z_medians=state["entropy_bottleneck.quantiles"][:, 0, 1].float().numpy().copy(),
        y_cdf=_np_int(state["gaussian_conditional._quantized_cdf"]),
        y_cdf_length=_np_int(state["gaussian_conditional._cdf_length"]),
        y_offset=_np_int(state["gaussian_conditional._offset"]),
        scale_table=scale_table,
        scale_bound=float(bound.float().item()) if bound is not None else float(scale_table[0]),
    )
    return nets, tables
