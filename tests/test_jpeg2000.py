"""The ``jpeg2000`` plugin: real Pillow/OpenJPEG encodes of Kodak crops, truncated and decoded."""

from __future__ import annotations

import io
import itertools
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import PrefixTooShort
from bench.grid import budget_bytes
from bench.metrics import psnr_rgb
from bench.registry import load_registry
from bench.testing import ConformanceSuite
from plugins.jpeg2000 import codestream as cs
from plugins.jpeg2000.codec import (
    DEFAULT_LAYER_BPP,
    Jpeg2000Codec,
    decode_j2k,
    effective_levels,
    encode_j2k,
    fit_rates,
)

KODAK = Path(__file__).resolve().parents[1] / "datasets" / "kodak"
pytestmark = pytest.mark.skipif(
    not (KODAK / "kodim01.png").exists(), reason="Kodak images not found"
)


def kodak_crop(index: int, top: int, left: int, height: int, width: int) -> np.ndarray:
    from PIL import Image

    with Image.open(KODAK / f"kodim{index:02d}.png") as im:
        array = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(array[top : top + height, left : left + width])


@pytest.fixture(scope="module")
def codec() -> Jpeg2000Codec:
    return Jpeg2000Codec()


@pytest.fixture(scope="module")
def crops() -> dict[str, np.ndarray]:
    return {
        "64x96": kodak_crop(1, 200, 300, 64, 96),
        "37x53": kodak_crop(23, 100, 400, 37, 53),
        "1x1": kodak_crop(5, 10, 10, 1, 1),
        "192x256": kodak_crop(23, 150, 250, 192, 256),
    }


@pytest.fixture(scope="module")
def streams(codec: Jpeg2000Codec, crops: dict[str, np.ndarray]) -> dict[str, bytes]:
    return {name: codec.encode(image) for name, image in crops.items()}


def grey_like(image: np.ndarray) -> np.ndarray:
    return np.full(image.shape, 128, dtype=np.uint8)


def decode_at_last_layer(codec: Jpeg2000Codec, stream: bytes, cut: int) -> np.ndarray:
    """Reference: decode the stream cut at the last layer boundary at or before ``cut``."""
    ends = [e for e in cs.parse_header(stream).layer_ends() if e <= cut]
    header = cs.parse_header(stream)
    if not ends:
        return np.full((header.siz.height, header.siz.width, 3), 128, dtype=np.uint8)
    return codec.decode(stream[: max(ends)])


# --- encoder parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "levels"),
    [(1, 1, 0), (1, 7, 0), (2, 2, 1), (3, 5, 1), (4, 4, 2), (7, 9, 2), (16, 16, 4), (37, 53, 5),
     (64, 96, 5), (512, 768, 5)],
)  # fmt: skip
def test_level_rule(height: int, width: int, levels: int) -> None:
    assert effective_levels(height, width, 5) == levels


def test_registered_and_described() -> None:
    registry = load_registry(entry_points=False)
    assert "jpeg2000" in registry.codecs
    assert registry.availability("jpeg2000") is None
    spec = registry.spec("jpeg2000")
    assert spec.kind == "progressive"
    codec = spec.factory(levels=4)
    info = codec.info()
    assert info.name == "jpeg2000"
    assert info.parameters["levels"] == 4
    assert info.parameters["layer_bpp"] == list(DEFAULT_LAYER_BPP)
    assert info.external["openjpeg"].count(".") >= 1


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Jpeg2000Codec(levels=-1)
    with pytest.raises(ValueError):
        Jpeg2000Codec(layer_bpp=[0.5, -1.0])
    with pytest.raises(ValueError):
        Jpeg2000Codec(layer_bpp=[])


# --- codestream structure ----------------------------------------------------------------------


def test_codestream_structure(codec, crops, streams) -> None:
    image, stream = crops["64x96"], streams["64x96"]
    header = cs.parse_header(stream)
    layers = len(DEFAULT_LAYER_BPP) + 1
    assert stream[:4] == b"\xff\x4f\xff\x51" and stream[-2:] == b"\xff\xd9"
    assert (header.siz.height, header.siz.width) == image.shape[:2]
    assert len(header.siz.components) == 3
    assert header.cod.progression_name == "LRCP"
    assert header.cod.layers == layers
    assert header.cod.levels == 5
    assert header.cod.transform == 0  # 9/7 irreversible
    assert header.cod.mct == 1
    assert not header.cod.precincts_defined
    assert header.complete
    assert header.packets_per_layer == (5 + 1) * 3
    # One tile-part per layer, chained by Psot, each holding one layer's packets.
    assert len(header.tile_parts) == layers
    position = header.main_end
    for index, part in enumerate(header.tile_parts):
        assert part.sot.offset == position
        assert stream[position : position + 2] == b"\xff\x90"
        assert (part.sot.tile_part_index, part.sot.num_tile_parts) == (index, layers)
        assert stream[part.data_offset - 2 : part.data_offset] == b"\xff\x93"
        assert len(part.packet_lengths) == header.packets_per_layer
        position = part.sot.offset + part.sot.psot
        assert position == part.data_end
    assert position == len(stream) - 2
    assert len(header.packets()) == layers * header.packets_per_layer
    assert header.layer_ends()[-1] == len(stream) - 2


def test_split_layers_keeps_packets(crops) -> None:
    image = crops["37x53"]
    original = encode_j2k(image, [100.0, 300.0, None], 5)
    split = cs.split_layers(original)
    a, b = cs.parse_header(original), cs.parse_header(split)
    assert len(a.tile_parts) == 1 and len(b.tile_parts) == 3
    assert [length for _, length in a.packets()] == [length for _, length in b.packets()]
    assert b"".join(original[o : o + n] for o, n in a.packets()) == b"".join(
        split[o : o + n] for o, n in b.packets()
    )
    from PIL import Image

    def pillow(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))

    np.testing.assert_array_equal(pillow(original), pillow(split))


def test_rebuild_is_valid_codestream(codec, streams) -> None:
    stream = streams["64x96"]
    header = cs.parse_header(stream)
    for layers in (1, 7, header.cod.layers):
        rebuilt = cs.rebuild(stream, header, layers)
        again = cs.parse_header(rebuilt)
        assert again.complete and again.cod.layers == layers
        assert len(again.tile_parts) == 1
        assert len(again.packets()) == layers * header.packets_per_layer
        assert again.tile_parts[0].data_end == len(rebuilt) - 2
    full = codec.decode(stream)
    np.testing.assert_array_equal(full, codec.decode(cs.rebuild(stream, header, header.cod.layers)))


@given(st.lists(st.integers(0, 2**24), max_size=40))
@settings(max_examples=50, deadline=None)
def test_packet_length_coding_round_trip(lengths: list[int]) -> None:
    encoded = b"".join(cs.encode_packet_lengths(lengths))
    assert cs.decode_packet_lengths(encoded) == lengths
    segments = cs.build_plt_segments(lengths)
    assert segments[:2] == b"\xff\x58"


def test_plt_segments_split_when_long() -> None:
    lengths = [2**20] * 30000  # 3 bytes each: 90000 bytes, more than one segment holds
    data = cs.build_plt_segments(lengths)
    pos, payload, indices = 0, b"", []
    while pos < len(data):
        marker, length, index = struct.unpack(">HHB", data[pos : pos + 5])
        assert marker == cs.PLT and length <= 0xFFFF
        payload += data[pos + 5 : pos + 2 + length]
        indices.append(index)
        pos += 2 + length
    assert indices == [0, 1] and cs.decode_packet_lengths(payload) == lengths


# --- budgets and quality -----------------------------------------------------------------------


def test_layer_ends_within_budgets(codec, crops, streams) -> None:
    image, stream = crops["192x256"], streams["192x256"]
    height, width = image.shape[:2]
    ends = cs.parse_header(stream).layer_ends()
    budgets = [budget_bytes(b, height, width) for b in DEFAULT_LAYER_BPP]
    for bpp, end, budget in zip(DEFAULT_LAYER_BPP, ends[: len(budgets)], budgets, strict=True):
        assert end <= budget, f"layer for {bpp} bpp ends at {end} > budget {budget}"
    # ... and uses most of it (OpenJPEG's sizes move in steps of ~100 bytes on Kodak).
    assert sum(ends[: len(budgets)]) >= 0.97 * sum(budgets)
    # The harness's cut at each budget then holds exactly that many layers.
    header = cs.parse_header(stream)
    assert [header.complete_layers(b) for b in budgets] == list(range(1, len(budgets) + 1))


def test_psnr_non_decreasing_over_layers(codec, crops, streams) -> None:
    image, stream = crops["192x256"], streams["192x256"]
    values = [
        psnr_rgb(image, codec.decode(stream[:end])) for end in cs.parse_header(stream).layer_ends()
    ]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(values)), values
    assert values[-1] >= codec.full_stream_psnr
    assert values[-1] - values[0] > 15


def test_full_stream_quality(codec, crops, streams) -> None:
    for name in ("64x96", "37x53"):
        assert psnr_rgb(crops[name], codec.decode(streams[name])) >= codec.full_stream_psnr


def test_prepare_replaces_grid(crops) -> None:
    codec = Jpeg2000Codec()
    codec.prepare([1.0, 0.5, 2.0, 1.0])
    assert codec.layer_bpp == (0.5, 1.0, 2.0)
    stream = codec.encode(crops["64x96"])
    assert cs.parse_header(stream).cod.layers == 4


def test_deterministic(codec, crops, streams) -> None:
    assert codec.encode(crops["37x53"]) == streams["37x53"]


# --- truncation --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["64x96", "37x53", "1x1"])
def test_short_prefixes_raise_prefix_too_short(codec, streams, name) -> None:
    stream = streams[name]
    header_end = cs.parse_header(stream).header_end
    for cut in range(header_end):
        with pytest.raises(PrefixTooShort):
            codec.decode(stream[:cut])


@pytest.mark.parametrize("name", ["64x96", "37x53", "1x1"])
def test_header_only_prefix_is_grey(codec, crops, streams, name) -> None:
    stream = streams[name]
    out = codec.decode(stream[: cs.parse_header(stream).header_end])
    np.testing.assert_array_equal(out, grey_like(crops[name]))


@pytest.mark.parametrize("name", ["1x1", "37x53"])
def test_tiny_images_round_trip(codec, crops, streams, name) -> None:
    image, stream = crops[name], streams[name]
    out = codec.decode(stream)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert psnr_rgb(image, out) > 40
    # Every harness cut either lacks the header or decodes.
    height, width = image.shape[:2]
    for bpp in DEFAULT_LAYER_BPP:
        prefix = stream[: budget_bytes(bpp, height, width)]
        try:
            assert codec.decode(prefix).shape == image.shape
        except PrefixTooShort:
            assert len(prefix) < cs.parse_header(stream).header_end


@given(data=st.data())
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_random_cuts_decode_at_last_complete_layer(codec, crops, streams, data) -> None:
    name = data.draw(st.sampled_from(["64x96", "37x53"]))
    stream, image = streams[name], crops[name]
    header = cs.parse_header(stream)
    near_boundary = st.builds(
        lambda end, delta: min(max(end + delta, header.header_end), len(stream)),
        st.sampled_from(header.layer_ends()),
        st.integers(-3, 3),
    )
    cut = data.draw(st.one_of(st.integers(header.header_end, len(stream)), near_boundary))
    out = codec.decode(stream[:cut])
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, decode_at_last_layer(codec, stream, cut))


# --- foreign and corrupt input -----------------------------------------------------------------


@given(st.binary(max_size=400))
@settings(max_examples=100, deadline=None)
def test_garbage_raises_value_error(garbage: bytes) -> None:
    codec = Jpeg2000Codec()
    for data in (garbage, b"\xff\x4f" + garbage, b"\xff\x4f\xff\x51" + garbage):
        try:
            out = codec.decode(data)
        except ValueError:  # PrefixTooShort is a ValueError too
            continue
        assert out.dtype == np.uint8 and out.ndim == 3  # pragma: no cover - vanishingly rare


def test_not_a_codestream(codec) -> None:
    with pytest.raises(ValueError, match="SOC"):
        codec.decode(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(PrefixTooShort):
        codec.decode(b"")
    with pytest.raises(PrefixTooShort):
        codec.decode(b"\xff")


def test_corrupt_headers_raise_clear_errors(codec, streams) -> None:
    stream = bytearray(streams["64x96"])
    header = cs.parse_header(bytes(stream))
    cod = header.cod.offset
    # Progression order RPCL instead of LRCP.
    bad = bytearray(stream)
    bad[cod + 5] = 2
    with pytest.raises(ValueError, match="LRCP"):
        codec.decode(bytes(bad))
    # Layer count that disagrees with the PLT packet count.
    bad = bytearray(stream)
    bad[cod + 6 : cod + 8] = (3).to_bytes(2, "big")
    with pytest.raises(ValueError, match="packets"):
        codec.decode(bytes(bad))
    # A packet length that disagrees with Psot.
    first = header.tile_parts[0]
    bad = bytearray(stream)
    bad[first.plt[0].offset + 5] ^= 0x01
    with pytest.raises(ValueError):
        codec.decode(bytes(bad))
    # A marker segment length running past the SOT.
    bad = bytearray(stream)
    bad[cod + 2 : cod + 4] = (1).to_bytes(2, "big")
    with pytest.raises(ValueError, match="length"):
        codec.decode(bytes(bad))


def test_corrupt_packet_data_does_not_crash(codec, streams) -> None:
    stream = streams["64x96"]
    header = cs.parse_header(stream)
    rng = np.random.default_rng(7)
    for _ in range(5):
        bad = bytearray(stream)
        start = header.header_end
        positions = rng.integers(start, len(stream) - 2, size=20)
        bad[positions[0] : positions[0] + 1] = b"\x00"
        for p in positions:
            bad[p] = int(rng.integers(0, 256))
        try:
            out = codec.decode(bytes(bad))
        except ValueError:
            continue
        assert out.shape == (64, 96, 3) and out.dtype == np.uint8


def test_unsupported_streams(codec, crops) -> None:
    from PIL import Image

    image = Image.fromarray(crops["37x53"])
    for options, message in (
        ({"progression": "RPCL", "plt": True}, "LRCP"),
        ({"progression": "LRCP"}, "PLT"),
        ({"progression": "LRCP", "plt": True, "tile_size": (16, 16)}, "tiles"),
    ):
        buf = io.BytesIO()
        image.save(buf, format="JPEG2000", no_jp2=True, **options)
        with pytest.raises(ValueError, match=message):
            codec.decode(buf.getvalue())


class TestJpeg2000Conformance(ConformanceSuite):
    """The conformance suite a codec author would run, on the JPEG 2000 anchor."""

    codec = "jpeg2000"


@pytest.fixture(scope="module")
def kodim23_stream(codec) -> tuple[np.ndarray, bytes]:
    image = kodak_crop(23, 0, 0, 512, 768)
    return image, codec.encode(image)


@pytest.mark.parametrize("bpp", [0.1, 1.0, 2.0])
def test_cut_layers_are_within_half_a_db_of_a_single_layer_encode(codec, kodim23_stream, bpp):
    """Honest layers and cut, on a whole Kodak image: a prefix at the budget vs. one layer fitted
    to the same budget. (On small crops the 20 layers' tile-part headers cost far more.)"""
    image, stream = kodim23_stream
    height, width = image.shape[:2]
    budget = budget_bytes(bpp, height, width)
    layered = psnr_rgb(image, codec.decode(stream[:budget]))
    single = fit_rates(
        lambda targets: encode_j2k(image, targets, 5, plt=False), lambda s: [len(s)], [budget]
    )
    assert len(single) <= budget
    assert psnr_rgb(image, decode_j2k(single, height, width)) - layered < 0.5
