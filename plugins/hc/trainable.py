"""HC as a trainable CompressAI ``CompressionModel`` (imports compressai; training and export).

:class:`HCModel` wraps :class:`plugins.hc.nets.Transforms` (built with CompressAI's ``GDN``) with
the entropy bottleneck of the hyper-latent ``z`` and one ``GaussianConditional`` shared by the
three latents (it has no learned parameters; one scale table serves all). Its state dict is the
weights file's content: ``nets.*`` for the transforms (what :mod:`plugins.hc.runtime` loads),
``entropy_bottleneck.*`` and ``gaussian_conditional.*`` with their integer tables after
``update()``.

Training uses CompressAI's additive uniform noise for every latent: ``y_i + u`` with the
likelihood of ``N(mu_i, sigma_i)`` convolved with the unit box, the noisy ``y_4`` feeding the
conditional prior of ``y_3`` and the noisy ``y_3`` that of ``y_2``, and the noisy latents
feeding the synthesis (as CompressAI's ``MeanScaleHyperprior.forward``). At inference the
latents are residual-quantised, ``round(y_i - mu_i) + mu_i``, deepest first.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from plugins.hc.nets import HCConfig, Transforms
from plugins.learned.compat import import_compressai

#: The latents by name, deepest first (the order of the stream).
LATENTS = ("y4", "y3", "y2")


def _compressai():
    return import_compressai()


class HCModel(_compressai().models.CompressionModel):
    """HC (see :mod:`plugins.hc`): ``nets``, ``entropy_bottleneck``, ``gaussian_conditional``."""

    def __init__(self, cfg: HCConfig | None = None) -> None:
        compressai = _compressai()
        super().__init__()
        self.cfg = cfg or HCConfig()
        self.N, self.M = self.cfg.N, self.cfg.M
        self.nets = Transforms(self.cfg, compressai.layers.GDN)
        self.entropy_bottleneck = compressai.entropy_models.EntropyBottleneck(self.cfg.N)
        self.gaussian_conditional = compressai.entropy_models.GaussianConditional(None)

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        """CompressAI's training forward: ``x_hat`` and the likelihoods of every latent."""
        from plugins.learned.training.precision import TrainMode

        return self.rd_parts(x, TrainMode())

    def rd_parts(self, x: torch.Tensor, mode) -> dict[str, Any]:
        """Noisy forward pass in a :class:`~plugins.learned.training.precision.TrainMode`:
        autocast around the convolutional parts only (in ``mixed`` not around the analysis and
        ``h_a``), entropy models in float32.

        Returns ``{"x_hat": (B, 3, H, W) float32, "likelihoods": {"y4", "y3", "y2", "z"}}``.
        """
        nets, gc = self.nets, self.gaussian_conditional
        with mode.autocast("g_a"):
            y2, y3, y4 = nets.analysis(x)
            z = nets.h_a(y4.float())
        with mode.fp32_region():
            z_hat, z_lik = self.entropy_bottleneck(z.float())
        with mode.autocast():
            scales4, means4 = nets.h_s(z_hat).chunk(2, 1)
        with mode.fp32_region():
            y4_hat, y4_lik = gc(y4.float(), scales4.float(), means=means4.float())
        with mode.autocast():
            f3, scales3, means3 = nets.prior3(y4_hat)
        with mode.fp32_region():
            y3_hat, y3_lik = gc(y3.float(), scales3.float(), means=means3.float())
        with mode.autocast():
            scales2, means2 = nets.prior2(f3, y3_hat)
        with mode.fp32_region():
            y2_hat, y2_lik = gc(y2.float(), scales2.float(), means=means2.float())
        with mode.autocast():
            x_hat = nets.synthesis(y2_hat, y3_hat, y4_hat)
        return {
            "x_hat": x_hat.float(),
            "likelihoods": {"y4": y4_lik, "y3": y3_lik, "y2": y2_lik, "z": z_lik},
        }


def rd_terms(model: HCModel, x: torch.Tensor, lmbda: float, mode) -> dict[str, torch.Tensor]:
    """CompressAI's R-D loss ``lmbda * 255**2 * MSE + bpp`` of HC on a prepared batch ``x``
    (``(B, 3, H, W)`` in [0, 1]); float32 scalars ``loss``, ``mse``, ``bpp`` and the rate of
    each latent ``bpp_y4``, ``bpp_y3``, ``bpp_y2``, ``bpp_z`` (bits per pixel)."""
    parts = model.rd_parts(x, mode)
    with mode.fp32_region():
        num_pixels = x.shape[0] * x.shape[2] * x.shape[3]
        rates = {
            f"bpp_{name}": torch.log(lik).sum() / (-math.log(2) * num_pixels)
            for name, lik in parts["likelihoods"].items()
        }
        bpp = sum(rates.values())
        mse = torch.mean((parts["x_hat"] - x) ** 2)
        loss = lmbda * 255.0**2 * mse + bpp
    return {"loss": loss, "mse": mse, "bpp": bpp, **rates}
