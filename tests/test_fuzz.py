"""Hostile bytes for every built-in decoder: cuts, bit flips, garbage and crafted headers.

Each case decodes in a child forked from ``tests/fuzz_worker.py`` under 1 GiB more address space
and 2 s more CPU time (the child serves cases until one kills it); the outcome must be an
``(H, W, 3)`` ``uint8`` image (the original size for a plain cut),
:class:`~bench.PrefixTooShort` or :class:`~bench.CorruptStream`: never
another exception, a hang or a crash. The probe's findings (issue 13) are fixed cases that must
be refused as corrupt. The default run keeps a fixed number of examples (under 60 s on 2
cores); ``-m stress`` runs ten times as many (400 a codec), outside the default run and CI.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.codec import MAX_SIDE
from bench.registry import load_registry

WORKER = Path(__file__).with_name("fuzz_worker.py")
ALLOWED = {"PrefixTooShort", "CorruptStream"}
EXAMPLES = 40
SLOW_EXAMPLES = 400
LEARNED = ("plonq", "dzq", "deephq", "plonq-naive", "msh", "hc")


def _available() -> list[str]:
    registry = load_registry(entry_points=False)
    builtin = [n for n, s in registry.codecs.items() if s.plugin.startswith("plugins.")]
    return sorted(n for n in builtin if registry.availability(n) is None)


CODECS = _available()


class Worker:
    """The fuzz worker process: one stream per codec, one decode per request; ``options`` go
    to its command line (``--plugin FILE``, ``--cpu SECONDS``, ...)."""

    def __init__(self, codecs: list[str], *options: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), *codecs, *options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        ready = json.loads(self.process.stdout.readline())
        self.streams = {name: bytes.fromhex(h) for name, h in ready["streams"].items()}
        self.shape = tuple(ready["shape"])

    def decode(self, codec: str, data: bytes) -> dict:
        self.process.stdin.write(json.dumps({"codec": codec, "data": data.hex()}) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def worker():
    w = Worker(CODECS)
    yield w
    w.close()


# --- crafted headers: set one field of a codec's header to a value ----------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _skip_varint(data: bytes, pos: int) -> int:
    while data[pos] & 0x80:
        pos += 1
    return pos + 1


def craft_spiht(data: bytes, field: str, value: int) -> bytes:
    names = ("flags", "height", "width", "levels", "planes")
    fields = list(struct.unpack_from(">BHHBB", data))
    limit = 0xFFFF if field in ("height", "width") else 0xFF
    fields[names.index(field)] = min(value, limit)
    return struct.pack(">BHHBB", *fields) + data[7:]


def craft_learned(data: bytes, field: str, value: int) -> bytes:
    h_end = _skip_varint(data, 1)
    w_end = _skip_varint(data, h_end)
    height, width = data[1:h_end], data[h_end:w_end]
    if field == "height":
        height = _varint(value)
    elif field == "width":
        width = _varint(value)
    else:  # "size": both sides
        height = width = _varint(value)
    return data[:1] + height + width + data[w_end:]


def craft_hevc444(data: bytes, field: str, value: int) -> bytes:
    """Set a header field and recompute the parameter sets' CRC, as a careful forger would."""
    from plugins.bpg.hevc444 import HEADER, Compact, rebuild_parameter_sets

    names = ("magic", "version", "flags", "width", "height", "pad_w", "pad_h", "conf", "level")
    names += ("tools", "crc", "first")
    fields = list(HEADER.unpack_from(data))
    sizes = {"width": 0xFFFF, "height": 0xFFFF, "level": 0xFF, "tools": 0xFFFF, "pad_w": 0xFF}
    sizes["first"] = 0xFFFFFFFF
    if field == "size":
        fields[3] = fields[4] = min(value, 0xFFFF)
    else:
        fields[names.index(field)] = min(value, sizes[field])
    _, _, _, width, height, pad_w, pad_h, conf, level, tools, _, _ = fields
    try:
        sets = rebuild_parameter_sets(
            width, height, Compact(pad_w, pad_h, conf >> 4, conf & 15, level, tools)
        )
        fields[10] = zlib.crc32(b"".join(sets))
    except Exception:  # a field no parameter set can hold: keep the old CRC
        pass
    return HEADER.pack(*fields) + data[HEADER.size :]


def craft_jpeg2000(data: bytes, field: str, value: int) -> bytes:
    """SIZ (right after SOC): Xsiz at 8, Ysiz at 12, XTsiz at 24, YTsiz at 28 (one tile)."""
    out = bytearray(data)
    value = min(value, 0xFFFFFFFF)
    offsets = {"width": (8, 24), "height": (12, 28), "size": (8, 12, 24, 28)}[field]
    for offset in offsets:
        out[offset : offset + 4] = value.to_bytes(4, "big")
    return bytes(out)


CRAFT: dict[str, tuple[Callable[[bytes, str, int], bytes], tuple[str, ...]]] = {
    "spiht": (craft_spiht, ("flags", "height", "width", "levels", "planes")),
    "spiht-ac": (craft_spiht, ("flags", "height", "width", "levels", "planes")),
    "hevc444": (craft_hevc444, ("size", "width", "height", "level", "tools", "pad_w", "first")),
    "jpeg2000": (craft_jpeg2000, ("size", "width", "height")),
    **{name: (craft_learned, ("size", "height", "width")) for name in LEARNED},
}

#: Values a forger tries: boundaries of the fields and of the contract's limits.
VALUES = (0, 1, 2, 5, 12, 13, 31, 32, 255, 4000, MAX_SIDE, MAX_SIDE + 1, 65535, 65536, 2**32)

#: The probe's findings (issue 13): each must be refused as corrupt, fast.
PROBE_CASES = [
    ("spiht", "levels", 12),
    ("spiht", "levels", 13),
    ("spiht-ac", "levels", 12),
    ("spiht", "height", 65535),
    ("msh", "size", 4000),
    *((name, "size", 65536) for name in LEARNED),
    ("hevc444", "size", 16384),
    ("hevc444", "size", 4000),  # the CRC recomputed, the level left as x265 wrote it
    ("jpeg2000", "size", 65536),
]


# --- strategies -----------------------------------------------------------------------------


def cases(codec: str, stream: bytes) -> st.SearchStrategy[tuple[str, bytes]]:
    """``(kind, bytes)``: a cut, bit flips, a garbage splice, random bytes, a crafted header."""
    n = len(stream)

    def flip(bits: list[int]) -> tuple[str, bytes]:
        out = bytearray(stream)
        for bit in bits:
            out[bit // 8] ^= 1 << (bit % 8)
        return "flips", bytes(out)

    def splice(args: tuple[int, bytes]) -> tuple[str, bytes]:
        pos, junk = args
        return "garbage", stream[:pos] + junk + stream[pos + len(junk) :]

    craft, fields = CRAFT[codec]
    return st.one_of(
        st.integers(0, n).map(lambda k: ("cut", stream[:k])),
        st.lists(st.integers(0, 8 * n - 1), min_size=1, max_size=8).map(flip),
        st.lists(st.integers(0, 8 * min(n, 40) - 1), min_size=1, max_size=3).map(flip),
        st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=64)).map(splice),
        st.binary(max_size=256).map(lambda b: ("random", b)),
        st.tuples(st.sampled_from(fields), st.sampled_from(VALUES) | st.integers(0, 2**20)).map(
            lambda fv: ("crafted", craft(stream, *fv))
        ),
    )


def check_outcome(result: dict, kind: str, shape: tuple[int, ...]) -> None:
    outcome, detail = result["outcome"], result["detail"]
    if outcome == "image":
        assert detail[2:] == [3, "uint8"], result
        if kind == "cut":
            assert tuple(detail[:3]) == shape, result
    else:
        assert outcome in ALLOWED, f"{kind}: {result}"


def _fuzz(worker: Worker, codec: str, examples: int) -> None:
    stream = worker.streams[codec]

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=cases(codec, stream))
    def run(case: tuple[str, bytes]) -> None:
        kind, data = case
        check_outcome(worker.decode(codec, data), kind, worker.shape)

    run()


@pytest.mark.parametrize("codec", CODECS)
def test_hostile_bytes_give_an_image_or_a_clear_error(worker, codec):
    _fuzz(worker, codec, EXAMPLES)


@pytest.mark.stress
@pytest.mark.parametrize("codec", CODECS)
def test_hostile_bytes_many_examples(worker, codec):
    _fuzz(worker, codec, SLOW_EXAMPLES)


@pytest.mark.parametrize(("codec", "field", "value"), PROBE_CASES)
def test_probe_findings_are_refused_as_corrupt(worker, codec, field, value):
    if codec not in worker.streams:
        pytest.skip(f"{codec} is unavailable here")
    craft, _ = CRAFT[codec]
    result = worker.decode(codec, craft(worker.streams[codec], field, value))
    assert result["outcome"] == "CorruptStream", result
    assert result["seconds"] < 2.0, result


def test_every_cut_and_the_whole_stream_decode(worker):
    """Every codec: the whole stream decodes to the crop's size; a 1-byte prefix is refused."""
    for codec, stream in worker.streams.items():
        whole = worker.decode(codec, stream)
        assert whole["outcome"] == "image" and tuple(whole["detail"][:3]) == worker.shape
        assert worker.decode(codec, stream[:1])["outcome"] in ALLOWED


HOSTILE_PLUGIN = """
import time
from bench import CodecSpec, hookimpl
from bench.codec import CorruptStream
import importlib.util
spec = importlib.util.spec_from_file_location("bp", {bitplane!r})
bp = importlib.util.module_from_spec(spec); spec.loader.exec_module(bp)

class Hostile(bp.BitplaneCodec):
    \"\"\"Decodes bitplane streams; b"burn" uses 0.6 s of CPU, b"spin" never returns, b"hog"
    allocates 512 MiB.\"\"\"

    def decode(self, prefix):
        if prefix == b"burn":
            end = time.process_time() + 0.6
            while time.process_time() < end:
                pass
            raise CorruptStream("burnt")
        if prefix == b"spin":
            while True:
                pass
        if prefix == b"hog":
            return bytearray(512 << 20)
        return super().decode(prefix)

@hookimpl
def register_codecs(register):
    register(CodecSpec(name="hostile", factory=Hostile, summary="x"))
"""


def test_each_case_has_its_own_limits_and_a_killed_child_is_replaced(tmp_path):
    """The worker's child serves case after case: each gets the CPU budget afresh (two 0.6 s
    cases under a 1 s budget both finish), a case past its budget or memory limit is reported
    as such, and the next case decodes in a new child."""
    from conftest import BITPLANE

    plugin = tmp_path / "hostile.py"
    plugin.write_text(HOSTILE_PLUGIN.format(bitplane=BITPLANE))
    worker = Worker(["hostile"], "--plugin", str(plugin), "--cpu", "1", "--memory", str(256 << 20))
    try:
        stream = worker.streams["hostile"]
        assert worker.decode("hostile", stream)["outcome"] == "image"
        assert [worker.decode("hostile", b"burn")["outcome"] for _ in range(2)] == [
            "CorruptStream"
        ] * 2
        assert worker.decode("hostile", b"spin")["outcome"] == "signal SIGXCPU"
        assert worker.decode("hostile", stream)["outcome"] == "image"  # a new child
        assert worker.decode("hostile", b"hog")["outcome"] == "MemoryError"
        assert worker.decode("hostile", stream[:5])["outcome"] == "PrefixTooShort"
    finally:
        worker.close()
