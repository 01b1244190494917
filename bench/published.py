"""Published reference R-D curves and a learned base model's distance to them.

The one curve kept here is CompressAI's pretrained ``mbt2018-mean`` (MSE-optimised, qualities
1-8) on the 24 Kodak images, as published in CompressAI's
``results/image/kodak/compressai-mbt2018-mean_mse_cpu.json`` (mean bpp, mean PSNR-RGB in dB).
It is the model the project's base (``MeanScaleHyperprior``) is an instance of, so the gap at the
same rate says how far the bundled weights are from a credibly trained one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedCurve:
    """A published mean R-D curve: ``bpp`` increasing, ``psnr_rgb`` in dB, one per quality."""

    name: str
    source: str
    bpp: tuple[float, ...]
    psnr_rgb: tuple[float, ...]

    def psnr_at(self, bpp: float) -> tuple[float, bool]:
        """PSNR-RGB of the curve at ``bpp`` (> 0), linear in log(bpp) between published points.

        Outside the published range the end segment is extended; the second value says whether
        that happened (an extrapolated figure must be labelled as such).
        """
        if not bpp > 0:
            raise ValueError(f"bpp must be positive, got {bpp}")
        logs = [math.log(b) for b in self.bpp]
        x = math.log(bpp)
        i = 1
        while i < len(logs) - 1 and x > logs[i]:
            i += 1
        t = (x - logs[i - 1]) / (logs[i] - logs[i - 1])
        value = self.psnr_rgb[i - 1] + t * (self.psnr_rgb[i] - self.psnr_rgb[i - 1])
        return value, not (logs[0] <= x <= logs[-1])

    def gap_db(self, bpp: float, psnr_rgb: float) -> Gap:
        """How far ``(bpp, psnr_rgb)`` lies below the curve at the same rate (positive: below)."""
        reference, extrapolated = self.psnr_at(bpp)
        return Gap(
            curve=self.name,
            bpp=bpp,
            psnr_rgb=psnr_rgb,
            reference_psnr_rgb=reference,
            gap_db=reference - psnr_rgb,
            extrapolated=extrapolated,
        )


@dataclass(frozen=True)
class Gap:
    """A point's distance below a published curve at its own bpp, in dB."""

    curve: str
    bpp: float
    psnr_rgb: float
    reference_psnr_rgb: float
    gap_db: float
    extrapolated: bool

    def describe(self) -> str:
        """One line, e.g. ``10.21 dB below mbt2018-mean (40.04 dB at 1.480 bpp)``."""
        where = "below" if self.gap_db >= 0 else "above"
        extra = ", extrapolated past its last point" if self.extrapolated else ""
        return (
            f"{abs(self.gap_db):.2f} dB {where} {self.curve} "
            f"({self.reference_psnr_rgb:.2f} dB at {self.bpp:.3f} bpp{extra})"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "curve": self.curve,
            "bpp": self.bpp,
            "psnr_rgb": self.psnr_rgb,
            "reference_psnr_rgb": self.reference_psnr_rgb,
            "gap_db": self.gap_db,
            "extrapolated": self.extrapolated,
        }


MBT2018_MEAN_KODAK = PublishedCurve(
    name="mbt2018-mean",
    source="CompressAI results/image/kodak/compressai-mbt2018-mean_mse_cpu.json (q1-q8)",
    bpp=(0.1239, 0.1980, 0.3072, 0.4606, 0.6617, 0.9144, 1.2342, 1.6191),
    psnr_rgb=(27.70, 29.36, 31.13, 32.95, 34.97, 36.91, 38.84, 40.63),
)
