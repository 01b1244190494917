"""The decoders' synthesis in channels_last (:mod:`plugins.learned.inference`) against the
default contiguous layout, on the bundled base model and Kodak crops of odd sizes: the same
reconstruction within 1e-4 dB PSNR, float32, and the training modules left as they were."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import kodak_crop

from plugins.learned.testing import SKIP_REASON, dependencies_missing, test_weights_spec

WEIGHTS = test_weights_spec()
pytestmark = pytest.mark.skipif(dependencies_missing() or WEIGHTS is None, reason=SKIP_REASON)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize(
    "crop", [("kodim05.png", 100, 200, 37, 53), ("kodim19.png", 0, 0, 131, 67)]
)
def test_channels_last_synthesis_matches_the_contiguous_one(crop):
    import torch

    from plugins.learned.model_io import BaseModel

    base = BaseModel.get(WEIGHTS)
    image = kodak_crop(*crop)
    height, width = image.shape[:2]
    analysis = base.analyse(image)
    mu = analysis.hyper.means
    for y_hat in (mu, mu + np.rint(analysis.y - mu)):
        with torch.no_grad():
            t = torch.from_numpy(np.ascontiguousarray(y_hat, dtype=np.float32))[None]
            ref = base.nets.g_s(t)[0, :, :height, :width].clamp(0, 1).mul(255.0).round()
        ref = ref.to(torch.uint8).permute(1, 2, 0).numpy()
        got = base.synthesise(y_hat, height, width)
        assert got.shape == ref.shape == image.shape and got.dtype == np.uint8
        assert abs(psnr(image, got) - psnr(image, ref)) <= 1e-4
    # decoding runs a float32 channels_last copy; the modules training uses are untouched
    weight = next(base.g_s_decode.parameters())
    assert weight.dtype == torch.float32 and not weight.requires_grad
    assert weight.is_contiguous(memory_format=torch.channels_last)
    original = next(base.nets.g_s.parameters())
    assert original.is_contiguous() and not original.is_contiguous(
        memory_format=torch.channels_last
    )
    assert torch.equal(original, weight)
