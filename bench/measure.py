"""Measuring one codec on one image: encode once, cut, decode, score, time.

This module runs inside a worker process and knows nothing of files or progress bars: it turns
(codec, image, target bpps) into result rows (plain dicts, one per target bpp).

Every row carries ``stream_sha256``: the sha256 of exactly the bytes handed to the decoder at
that point (the prefix of a progressive stream, the chosen encoding of a rate ladder; ``None``
when nothing was decoded). Two runs with equal hashes decoded identical streams.

Timing rules (DEVELOPERS.md): the codec is warmed up on a crop before the first measurement
(:func:`warm_up`), every time is ``time.perf_counter`` around the call with
``codec.synchronize()`` before the clock stops, threads are fixed by the worker, and each
reported time is the median of its timed calls.

Timing policy (:data:`TIMING_POLICY`; ``repeats`` caps the timed calls of one time): the decode
that gives a point its metrics is itself timed (the codec is warm). A call that takes at least
:data:`LONG_CALL_S` (0.25 s) stands alone: timer and scheduling jitter are well under 1 % of it
and a repeat would double the cost of the slow codecs (a learned codec's synthesis: 0.5-1 s per
decode on 2 cores). A shorter call is repeated: the time is the median of two calls that agree
within :data:`AGREEMENT` (10 %) of the smaller, or else of the calls made until one agrees with
an earlier one or the cap is reached. Each unit's first decode and its encodes always follow
the repeat rule, whatever their length: the first full-size call of a unit may carry one-off
costs (buffers, oneDNN primitives for a new shape), and a second encode checks that encoding is
deterministic. A slow codec's point thus costs 1 decode (before this policy: 1 untimed + 3 timed
decodes, 4x the cost), a fast codec's 2 or 3; ``repeats`` 1 times every point with its single
scored decode. Rows record ``decode_calls`` (the timed calls behind ``decode_s``); unit
summaries record ``encode_calls`` and the policy.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from bench.codec import PrefixTooShort, ProgressiveCodec, RateLadderCodec
from bench.grid import budget_bytes
from bench.metrics import MS_SSIM_MIN_SIDE, ImageScorer

T = TypeVar("T")
#: Called with (reconstruction, bytes decoded) after the decode that gave a row its metrics;
#: returns extra row fields (e.g. :class:`bench.viewer.ReconstructionSaver`).
Keep = Callable[[np.ndarray, bytes], dict[str, Any]]


class ContractViolation(Exception):
    """A codec broke the contract of :mod:`bench.codec` (wrong output, error on a long prefix)."""


@dataclass
class UnitTimes:
    """Wall-clock accounting of one (codec, image) unit, in seconds."""

    codec_s: float = 0.0  # every call into the codec, timed or not
    metrics_s: float = 0.0
    encode_s: float = math.nan  # median encode time (progressive) or total ladder encode time
    encode_calls: int = 0  # timed encodes behind encode_s (progressive codecs)
    stream_bytes: int = 0
    save_s: float = 0.0  # time in ``keep`` (saving reconstructions for the viewer)
    notes: list[str] = field(default_factory=list)


def _timed(call: Callable[[], T], codec: Any, times: UnitTimes) -> tuple[T, float]:
    start = time.perf_counter()
    result = call()
    codec.synchronize()
    elapsed = time.perf_counter() - start
    times.codec_s += elapsed
    return result, elapsed


#: Two timed calls agree when they differ by at most this fraction of the smaller one.
AGREEMENT = 0.10
#: A timed call at least this long (seconds) is not repeated (see the module docstring).
LONG_CALL_S = 0.25
#: What a reported time means (stored with each unit's summary).
TIMING_POLICY = (
    "median of timed calls, the scored decode included; a call of at least "
    f"{LONG_CALL_S:g} s stands alone (except a unit's first decode and its encodes); shorter "
    f"calls are repeated until one agrees within {AGREEMENT:.0%} of an earlier call or "
    "--repeats calls are made"
)


def _agrees(sample: float, earlier: Sequence[float]) -> bool:
    return any(abs(sample - e) <= AGREEMENT * min(sample, e) for e in earlier)


def _median_time(
    call: Callable[[], Any],
    codec: Any,
    cap: int,
    times: UnitTimes,
    first: float | None = None,
    long_stands_alone: bool = False,
) -> tuple[float, int]:
    """(median time, number of timed calls) under :data:`TIMING_POLICY`.

    ``first``: a call of the same work already timed (it counts as the first call).
    ``long_stands_alone``: stop after a first call of at least :data:`LONG_CALL_S`.
    """
    samples = [] if first is None else [first]
    while len(samples) < max(1, cap):
        if samples and long_stands_alone and samples[0] >= LONG_CALL_S:
            break
        sample = _timed(call, codec, times)[1]
        agreed = _agrees(sample, samples)
        samples.append(sample)
        if agreed:
            break
    return statistics.median(samples), len(samples)


def warm_up(codec: ProgressiveCodec | RateLadderCodec, image: np.ndarray) -> None:
    """Run the codec once on a crop of at most 64x64 pixels (JIT, caches, lazy weights)."""
    crop = np.ascontiguousarray(image[:64, :64])
    try:
        if isinstance(codec, ProgressiveCodec):
            codec.decode(_check_stream(codec.encode(crop), "encode"))
        else:
            settings = list(codec.settings())
            codec.decode(
                _check_stream(codec.encode_at(crop, settings[len(settings) // 2]), "encode_at")
            )
    except Exception as exc:
        raise ContractViolation(
            f"warm-up on a {crop.shape[0]}x{crop.shape[1]} crop failed: {type(exc).__name__}: {exc}"
        ) from exc


def _check_stream(stream: Any, what: str) -> bytes:
    """``stream`` if it is ``bytes`` (the contract: bytes only, no list, array, bytearray or str,
    which ``bytes()`` would convert or refuse obscurely); else :class:`ContractViolation`."""
    if not isinstance(stream, bytes):
        raise ContractViolation(
            f"{what} returned {type(stream).__name__}, not bytes (the codec contract: bytes only)"
        )
    return stream


def _check_output(reconstruction: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    if not isinstance(reconstruction, np.ndarray):
        raise ContractViolation(f"{what} returned {type(reconstruction).__name__}, not ndarray")
    if reconstruction.shape != shape or reconstruction.dtype != np.uint8:
        raise ContractViolation(
            f"{what} returned {reconstruction.shape} {reconstruction.dtype}, expected {shape} uint8"
        )
    return reconstruction


def _scores(scorer: ImageScorer, reconstruction: np.ndarray, times: UnitTimes) -> dict[str, float]:
    start = time.perf_counter()
    scores = scorer.scores(reconstruction)
    times.metrics_s += time.perf_counter() - start
    return scores


def _scorer(image: np.ndarray, times: UnitTimes) -> ImageScorer:
    """The image's :class:`ImageScorer` (its one-off cost counts as metrics time)."""
    start = time.perf_counter()
    scorer = ImageScorer(image)
    times.metrics_s += time.perf_counter() - start
    return scorer


_UNDECODABLE = {"psnr_rgb": math.nan, "psnr_y": math.nan, "ms_ssim": math.nan}


def _row(image: np.ndarray, target: float, budget: int, data: bytes | None, **fields: Any) -> dict:
    """One result row; ``data`` is what the decoder was handed (``None``: nothing fitted)."""
    height, width = image.shape[:2]
    used = 0 if data is None else len(data)
    return {
        "target_bpp": target,
        "budget_bytes": budget,
        "bytes": used,
        "stream_sha256": None if data is None else hashlib.sha256(data).hexdigest(),
        "bpp": 8.0 * used / (height * width),
        "height": height,
        "width": width,
        **fields,
    }


def measure_progressive(
    codec: ProgressiveCodec,
    image: np.ndarray,
    targets: Sequence[float],
    repeats: int,
    times: UnitTimes,
    keep: Keep | None = None,
) -> Iterator[dict]:
    """Encode once, then yield one row per target bpp from the prefix cut at its budget.

    Prefixes are ``stream[:floor(bpp*H*W/8)]``; a stream shorter than the budget is handed over
    whole (the row's ``bytes`` says so). Identical prefixes are decoded once. ``keep`` gets each
    decodable reconstruction (see :data:`Keep`).
    """
    streams = []

    def encode() -> bytes:
        stream = _check_stream(codec.encode(image), "encode")
        streams.append(stream)
        return stream

    times.encode_s, times.encode_calls = _median_time(encode, codec, repeats, times)
    stream = streams[0]
    if any(s != stream for s in streams[1:]):
        times.notes.append("encode is not deterministic: repeated encodes differ")
    times.stream_bytes = len(stream)
    scorer = _scorer(image, times)
    cache: dict[int, dict] = {}
    for target in targets:
        budget = budget_bytes(target, *image.shape[:2])
        prefix = stream[:budget]
        if len(prefix) not in cache:
            cache[len(prefix)] = _decode_and_score(
                codec, scorer, prefix, repeats, times, keep, _settled(cache)
            )
        yield _row(
            image,
            target,
            budget,
            prefix,
            stream_bytes=len(stream),
            encode_s=times.encode_s,
            setting=None,
            **cache[len(prefix)],
        )


def _settled(decoded: dict[Any, dict]) -> bool:
    """Whether the unit has decoded something already (its first decode is behind it)."""
    return any(entry["decodable"] for entry in decoded.values())


def _decode_and_score(
    codec: ProgressiveCodec | RateLadderCodec,
    scorer: ImageScorer,
    data: bytes,
    repeats: int,
    times: UnitTimes,
    keep: Keep | None = None,
    settled: bool = False,
) -> dict:
    """Decode ``data`` (timed under :data:`TIMING_POLICY`; ``settled``: not the unit's first
    decode), score and keep the reconstruction."""
    image = scorer.original
    try:
        reconstruction, first = _timed(lambda: codec.decode(data), codec, times)
    except PrefixTooShort:
        return {
            "decodable": False,
            "decode_s": math.nan,
            "decode_calls": 0,
            "note": "prefix shorter than header",
            **_UNDECODABLE,
        }
    except Exception as exc:
        raise ContractViolation(
            f"decode raised {type(exc).__name__} on a {len(data)}-byte prefix: {exc}"
        ) from exc
    _check_output(reconstruction, image.shape, f"decode of {len(data)} bytes")
    decode_s, calls = _median_time(
        lambda: codec.decode(data), codec, repeats, times, first, long_stands_alone=settled
    )
    note = (
        ""
        if min(image.shape[:2]) >= MS_SSIM_MIN_SIDE
        else (f"MS-SSIM undefined below {MS_SSIM_MIN_SIDE} px")
    )
    scores = _scores(scorer, reconstruction, times)
    kept: dict[str, Any] = {}
    if keep is not None:
        start = time.perf_counter()
        kept = keep(reconstruction, data)
        times.save_s += time.perf_counter() - start
    return {
        "decodable": True,
        "decode_s": decode_s,
        "decode_calls": calls,
        "note": note,
        **scores,
        **kept,
    }


def measure_ladder(
    codec: RateLadderCodec,
    image: np.ndarray,
    targets: Sequence[float],
    repeats: int,
    times: UnitTimes,
    keep: Keep | None = None,
) -> Iterator[dict]:
    """Encode the rate ladder once, then yield one row per target bpp.

    Each budget gets the largest encoding that fits (``keep``: as in
    :func:`measure_progressive`). Settings are encoded from lowest to highest
    rate and the ladder stops after two encodings in a row exceed the largest budget. Encode time
    is one measurement per setting (the whole ladder is encoded, repeats would multiply it).
    """
    height, width = image.shape[:2]
    largest = max(budget_bytes(t, height, width) for t in targets)
    encodings: list[tuple[Any, bytes, float]] = []
    over = 0
    for setting in codec.settings():
        data, elapsed = _timed(
            lambda setting=setting: codec.encode_at(image, setting), codec, times
        )
        encodings.append((setting, _check_stream(data, "encode_at"), elapsed))
        over = over + 1 if len(data) > largest else 0
        if over == 2:
            break
    times.encode_s = sum(e[2] for e in encodings)
    times.stream_bytes = max(len(e[1]) for e in encodings)
    scorer = _scorer(image, times)
    cache: dict[int, dict] = {}
    for target in targets:
        budget = budget_bytes(target, height, width)
        fitting = [i for i, e in enumerate(encodings) if len(e[1]) <= budget]
        if not fitting:
            yield _row(
                image,
                target,
                budget,
                None,
                stream_bytes=0,
                encode_s=math.nan,
                setting=None,
                decodable=False,
                decode_s=math.nan,
                decode_calls=0,
                note="no ladder setting fits the budget",
                **_UNDECODABLE,
            )
            continue
        best = max(fitting, key=lambda i: len(encodings[i][1]))
        setting, data, encode_s = encodings[best]
        if best not in cache:
            cache[best] = _decode_and_score(
                codec, scorer, data, repeats, times, keep, _settled(cache)
            )
        yield _row(
            image,
            target,
            budget,
            data,
            stream_bytes=len(data),
            encode_s=encode_s,
            setting=setting,
            **cache[best],
        )
