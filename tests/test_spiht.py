"""The ``spiht`` and ``spiht-ac`` plugins: conformance, truncation to the bit, and the pieces.

Everything runs on small images (Kodak crops up to 192 x 176) so the file stays fast. The first
run compiles the numba functions (about 20 s here, cached on disk in ``plugins/spiht/__pycache__``
afterwards).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import KODAK, kodak_crop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import PrefixTooShort
from bench.metrics import psnr_rgb
from bench.registry import load_registry
from bench.testing import ConformanceSuite
from plugins.spiht import wavelet as wv
from plugins.spiht.codec import (
    COLOUR_GRAY,
    COLOUR_YCBCR,
    HEADER_BYTES,
    SpihtCodec,
    auto_levels,
)

pytestmark = pytest.mark.skipif(
    not (KODAK / "kodim01.png").exists(), reason="Kodak images not found"
)


class TestSpihtConformance(ConformanceSuite):
    codec = "spiht"


class TestSpihtAcConformance(ConformanceSuite):
    codec = "spiht-ac"


CODECS = {
    "spiht": SpihtCodec(max_bpp=4.0),
    "spiht-ac": SpihtCodec(max_bpp=4.0, arithmetic=True),
}


def random_image(draw_seed: int, height: int, width: int, kind: str) -> np.ndarray:
    """Noise, a smooth ramp plus noise, or a grey (R = G = B) smooth image."""
    rng = np.random.default_rng(draw_seed)
    if kind == "noise":
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 128 + 60 * np.sin(yy / 5.0)[..., None] * np.cos(xx / 7.0)[..., None]
    image = base + rng.normal(0, 12, (height, width, 3)) + rng.integers(-40, 40, 3)
    if kind == "grey":
        image = np.repeat(image[..., :1], 3, axis=2)
    return np.ascontiguousarray(np.clip(np.rint(image), 0, 255).astype(np.uint8))


def payload_bits(data: bytes, count: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(data, np.uint8))[:count]


# -- truncation ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    height=st.integers(1, 64),
    width=st.integers(1, 64),
    kind=st.sampled_from(["noise", "smooth", "grey"]),
    variant=st.sampled_from(sorted(CODECS)),
    cuts=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4),
)
def test_cut_stream_decodes_as_the_stream_stopped_at_the_same_decision(
    seed, height, width, kind, variant, cuts
):
    """Decoding ``stream[:k]`` gives exactly what decoding the whole stream gives when stopped
    after the same number of binary decisions: no garbage past the cut, for both variants."""
    codec = CODECS[variant]
    image = random_image(seed, height, width, kind)
    stream = codec.encode(image)
    _, total = codec.decode_with_count(stream)
    for cut in cuts:
        k = HEADER_BYTES + round(cut * (len(stream) - HEADER_BYTES))
        cut_image, n = codec.decode_with_count(stream[:k])
        stopped, m = codec.decode_with_count(stream, max_symbols=n)
        assert m == n <= total
        assert np.array_equal(cut_image, stopped)
        assert cut_image.shape == image.shape and cut_image.dtype == np.uint8
        if variant == "spiht":  # raw bits: every bit of the prefix is used
            assert n == min(8 * (k - HEADER_BYTES), total)


@pytest.mark.parametrize("crop", [(5, 101, 203, 37, 53), (23, 200, 300, 64, 96)])
def test_raw_stream_can_be_cut_at_any_bit(crop):
    """An encoder stopped after ``m`` bits writes exactly the first ``m`` bits of the longer
    stream (zero-padded to a byte), and both decode alike when stopped at bit ``m``."""
    codec = CODECS["spiht"]
    image = kodak_crop(f"kodim{crop[0]:02d}.png", *crop[1:])
    header, full, used, nsym, _ = codec.encode_payload(image, 8 * 2000)
    assert used == nsym == 8 * len(full)
    rng = np.random.default_rng(0)
    for m in [1, 7, 8, 9, *rng.integers(10, used, 12).tolist()]:
        head, part, used_m, _, _ = codec.encode_payload(image, m)
        assert head == header and used_m == m and len(part) == (m + 7) // 8
        assert np.array_equal(payload_bits(part, m), payload_bits(full, m))
        assert not np.any(payload_bits(part, 8 * len(part))[m:])  # padding is zero
        a, n_a = codec.decode_with_count(header + part, max_symbols=m)
        b, n_b = codec.decode_with_count(header + full, max_symbols=m)
        assert n_a == n_b == m and np.array_equal(a, b)


def test_ac_encoder_output_is_a_prefix_and_truncation_is_honest_and_cheap():
    """``spiht-ac``: a smaller byte budget gives a prefix of the same bytes; a prefix of ``b``
    payload bytes decodes at least every decision coded before the encoder's 4th-last byte
    shift (so an honest cut loses at most about 4 bytes)."""
    codec = CODECS["spiht-ac"]
    image = kodak_crop("kodim05.png", 101, 203, 64, 80)
    budget = 3000
    trace = np.zeros(budget + 64, np.int64)
    header, full, used, _, complete = codec.encode_payload(image, budget, trace)
    assert not complete and used >= budget and len(full) == budget
    for small in (1, 5, 64, 777, 2999):
        _, part, _, _, _ = codec.encode_payload(image, small)
        assert part == full[:small]
    stream = header + full
    for b in range(8, budget + 1, 37):
        _, n = codec.decode_with_count(stream[: HEADER_BYTES + b])
        assert n >= trace[b - 4]


# -- small pieces ---------------------------------------------------------------------------------


def test_header_prefix_rules_and_tiny_images():
    for variant, codec in CODECS.items():
        for shape in [(1, 1), (1, 9), (9, 1), (2, 3), (7, 7), (16, 17)]:
            image = random_image(sum(shape), *shape, "smooth")
            stream = codec.encode(image)
            for k in range(HEADER_BYTES):
                with pytest.raises(PrefixTooShort):
                    codec.decode(stream[:k])
            for k in range(HEADER_BYTES, len(stream) + 1):
                out = codec.decode(stream[:k])
                assert out.shape == image.shape and out.dtype == np.uint8, (variant, shape, k)
            assert psnr_rgb(image, codec.decode(stream)) > 28, (variant, shape)
        flat = codec.decode(codec.encode(random_image(1, 20, 30, "smooth"))[:HEADER_BYTES])
        assert np.all(flat == 128)


def test_grey_images_code_one_component():
    """R = G = B is detected and coded as one component: header says grey, the output is
    grey, and it is never worse than coding (almost) the same picture as colour; the binary
    variant gains at low rates, where the chroma's empty bit-planes cost the colour stream raw
    bits (the adaptive coder makes them almost free)."""
    grey = kodak_crop("kodim23.png", 200, 300, 64, 96)
    grey = np.ascontiguousarray(np.repeat(grey[..., 1:2], 3, axis=2))
    colour = grey.copy()
    colour[0, 0, 0] ^= 1  # one sample breaks R = G = B: three components
    for name, codec in CODECS.items():
        a, b = codec.encode(grey), codec.encode(colour)
        assert a[0] & 3 == COLOUR_GRAY and b[0] & 3 == COLOUR_YCBCR
        for bpp in (0.25, 0.5, 1.0, 2.0):
            k = int(bpp * 64 * 96 / 8)
            out = codec.decode(a[:k])
            assert np.array_equal(out[..., 0], out[..., 1])
            assert np.array_equal(out[..., 0], out[..., 2])
            gain = psnr_rgb(grey, out) - psnr_rgb(colour, codec.decode(b[:k]))
            assert gain > (0.5 if name == "spiht" and bpp <= 0.25 else -0.01), (name, bpp)


def test_quality_grows_with_rate_and_ac_beats_binary():
    image = kodak_crop("kodim15.png", 120, 260, 192, 176)
    streams = {name: codec.encode(image) for name, codec in CODECS.items()}
    psnr = {
        name: [
            psnr_rgb(image, CODECS[name].decode(stream[: int(bpp * 192 * 176 / 8)]))
            for bpp in (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
        ]
        for name, stream in streams.items()
    }
    for values in psnr.values():
        assert all(b > a for a, b in zip(values, values[1:], strict=False))
    assert all(ac > raw for raw, ac in zip(psnr["spiht"], psnr["spiht-ac"], strict=True))


def test_wavelet_is_the_cdf_97_pair_non_expansive_and_invertible():
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (1, 5), (6, 1), (2, 2), (3, 8), (37, 53), (64, 96)]:
        x = rng.normal(0, 40, shape)
        levels = auto_levels(*shape, 5)
        c = wv.forward(x, levels)
        assert c.shape == x.shape
        assert np.allclose(wv.inverse(c, levels), x, atol=1e-9)
    pywt = pytest.importorskip("pywt")
    signal = rng.normal(0, 1, 256)
    mine = signal.copy()
    wv._fwd_1d(mine, 256, np.empty(256))
    approx, detail = pywt.dwt(signal, "bior4.4", mode="periodization")
    inner = slice(8, 120)  # away from the (different) boundary extensions
    assert np.allclose(mine[:128][inner], approx[inner])
    assert np.allclose(mine[128:][inner], -detail[inner])
    low, high = wv.synthesis_norms_1d(5)
    assert all(abs(v - 1) < 0.05 for v in low + high)


def test_levels_and_registration():
    assert auto_levels(512, 768, 5) == 5 and auto_levels(768, 512, 5) == 5
    assert auto_levels(1, 1, 5) == 0 and auto_levels(6, 100, 5) == 0 and auto_levels(7, 100, 5) == 1
    assert auto_levels(37, 53, 5) == 3
    registry = load_registry(entry_points=False)
    for name in ("spiht", "spiht-ac"):
        assert registry.availability(name) is None
        codec = registry.spec(name).factory(max_bpp=1.0)
        info = codec.info()
        assert info.name == name and info.parameters["max_bpp"] == 1.0
    assert codec.info().parameters["arithmetic"] is True
