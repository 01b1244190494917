"""bench.metrics against its oracles on real reconstructions, and the timing policy.

MS-SSIM: pytorch-msssim's own code run on float64 tensors (within 1e-6; measured 3e-15), and as
the harness used to run it, on float32 tensors, within 5e-6: float32 rounding alone moves
pytorch-msssim's value by up to 2.4e-6 from its float64 value (measured on JPEG 2000's 480 Kodak
reconstructions, benchmarks/metrics_speed.py; 1.6e-6 on kodim20 at 0.1 bpp: the variance
``E[x^2] - mu^2`` of bright flat areas cancels in float32). PSNR-RGB and PSNR-Y:
bit-identical to the float64 numpy formulas.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MISBEHAVING, kodak_crop
from pytorch_msssim import ms_ssim

from bench.grid import budget_bytes
from bench.measure import LONG_CALL_S, UnitTimes, measure_progressive, warm_up
from bench.metrics import ImageScorer, ms_ssim_rgb
from bench.registry import load_registry

sys.path.insert(0, str(Path(MISBEHAVING).parent))
from misbehaving import SlowCodec  # noqa: E402

#: (source, top, left, height, width): the smallest valid size, odd sides, mixed parities, and
#: a whole Kodak image.
SIZES = [
    ("kodim05.png", 0, 0, 161, 161),
    ("kodim23.png", 37, 11, 203, 177),
    ("kodim01.png", 100, 50, 170, 257),
    ("kodim20.png", 0, 0, 512, 768),
]
BPP = (0.1, 0.4, 1.2)
#: (codec, size, target bpps): both codecs' reconstructions at every rate on each crop; the
#: whole image once, jpeg2000 at 0.4 bpp. The kernels have no size-dependent path: the whole
#: image is there for its long rows and all five scales on a real photo, which one
#: reconstruction exercises, and its float64 oracle costs as much as all the crops' together.
CASES = [(codec, size, BPP) for size in SIZES[:-1] for codec in ("jpeg2000", "spiht")]
CASES.append(("jpeg2000", SIZES[-1], (0.4,)))


def _oracle(original: np.ndarray, reconstruction: np.ndarray, dtype: torch.dtype) -> float:
    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).to(dtype)[None]

    with torch.no_grad():
        return float(ms_ssim(tensor(original), tensor(reconstruction), data_range=255.0))


def _psnr_float64(original: np.ndarray, reconstruction: np.ndarray, luma: bool) -> float:
    """The formulas as first written: float64 arrays, ``np.mean`` of the squared differences."""
    a, b = original.astype(np.float64), reconstruction.astype(np.float64)
    if luma:
        a = 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]
        b = 0.299 * b[..., 0] + 0.587 * b[..., 1] + 0.114 * b[..., 2]
    diff = a - b
    return 10.0 * math.log10(255.0**2 / float(np.mean(diff * diff)))


@pytest.fixture(scope="module")
def registry():
    return load_registry([], entry_points=True)


@pytest.mark.parametrize(
    ("codec_name", "size", "bpps"), CASES, ids=[f"{c}-{s[3]}x{s[4]}" for c, s, _ in CASES]
)
def test_metrics_equal_their_oracles_on_reconstructions(registry, codec_name, size, bpps):
    image = kodak_crop(*size)
    codec = registry.spec(codec_name).factory()
    codec.prepare(bpps)
    stream = codec.encode(image)
    scorer = ImageScorer(image)
    for bpp in bpps:
        reconstruction = codec.decode(stream[: budget_bytes(bpp, *image.shape[:2])])
        scores = scorer.scores(reconstruction)
        exact = _oracle(image, reconstruction, torch.float64)
        assert abs(scores["ms_ssim"] - exact) <= 1e-6, (bpp, scores["ms_ssim"], exact)
        single = _oracle(image, reconstruction, torch.float32)
        assert abs(scores["ms_ssim"] - single) <= 5e-6, (bpp, scores["ms_ssim"], single)
        assert ms_ssim_rgb(image, reconstruction) == scores["ms_ssim"]
        assert scores["psnr_rgb"] == _psnr_float64(image, reconstruction, luma=False)
        assert scores["psnr_y"] == _psnr_float64(image, reconstruction, luma=True)


def test_a_scorer_reused_across_reconstructions_gives_each_its_own_value(registry):
    """The scorer's buffers are reused: scoring others in between changes no value."""
    image = kodak_crop("kodim23.png", 37, 11, 203, 177)
    codec = registry.spec("jpeg2000").factory()
    codec.prepare(BPP)
    stream = codec.encode(image)
    reconstructions = [codec.decode(stream[: budget_bytes(bpp, *image.shape[:2])]) for bpp in BPP]
    scorer = ImageScorer(image)
    first = [scorer.scores(r) for r in reconstructions]
    assert len({s["ms_ssim"] for s in first}) == len(BPP)
    assert [scorer.scores(r) for r in reversed(reconstructions)] == first[::-1]
    assert [ImageScorer(image).scores(r) for r in reconstructions] == first


def test_negative_contrast_structure_is_clipped_as_in_the_oracle():
    """An inverted image correlates negatively at every scale: the ReLU makes MS-SSIM 0."""
    image = kodak_crop("kodim05.png", 10, 20, 175, 190)
    inverted = 255 - image
    assert _oracle(image, inverted, torch.float32) == 0.0
    assert ms_ssim_rgb(image, inverted) == 0.0
    assert ms_ssim_rgb(image, image) == pytest.approx(1.0, abs=1e-6)


def test_images_below_the_minimum_side_have_no_ms_ssim_but_have_psnr():
    image = kodak_crop("kodim05.png", 0, 0, 160, 300)
    noisy = np.clip(image.astype(int) + 3, 0, 255).astype(np.uint8)
    scores = ImageScorer(image).scores(noisy)
    assert math.isnan(scores["ms_ssim"])
    assert scores["psnr_rgb"] == _psnr_float64(image, noisy, luma=False)


@pytest.mark.parametrize("repeats", [1, 3])
def test_every_point_records_its_timed_decode_calls(registry, repeats):
    """The scored decode is timed; a second call follows unless ``repeats`` is 1; never more
    than ``repeats``."""
    image = kodak_crop("kodim01.png", 0, 0, 64, 96)
    codec = registry.spec("jpeg2000").factory()
    codec.prepare(BPP)
    warm_up(codec, image)
    times = UnitTimes()
    rows = list(measure_progressive(codec, image, BPP, repeats, times))
    decoded = [row for row in rows if row["decodable"]]
    assert len(decoded) >= 2
    calls = [row["decode_calls"] for row in decoded]
    assert all(min(2, repeats) <= c <= repeats for c in calls), calls
    assert all(row["decode_s"] > 0 for row in decoded)
    assert all(row["decode_calls"] == 0 for row in rows if not row["decodable"])
    assert min(2, repeats) <= times.encode_calls <= repeats


def test_a_long_decode_is_timed_once_after_the_units_first():
    """Decodes of at least LONG_CALL_S: the unit's first is repeated (2 or 3 calls), the others
    stand alone (1 call: the scored decode)."""
    image = kodak_crop("kodim01.png", 0, 0, 32, 48)
    codec = SlowCodec(delay=LONG_CALL_S + 0.05)
    times = UnitTimes()
    rows = list(measure_progressive(codec, image, (4.0, 8.0, 16.0), 3, times))
    assert all(row["decodable"] for row in rows)
    assert rows[0]["decode_calls"] in (2, 3)
    assert [row["decode_calls"] for row in rows[1:]] == [1, 1]
    assert all(row["decode_s"] >= LONG_CALL_S for row in rows)
