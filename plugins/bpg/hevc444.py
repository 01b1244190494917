"""``hevc444``: HEVC intra 4:4:4 through pillow-heif's x265, a stand-in for BPG where bpgenc is
missing. It is a substitute, not BPG: see "How it differs from bpgenc" below.

Encoder settings (as close to ``bpgenc -e x265 -q QP -f 444`` as libheif's x265 plugin allows)
    bpgenc's x265 front end (libbpg ``x265_glue.c``) uses the preset of compression level ``-m``
    (default 8: ``veryslow``) with tune ``ssim``, constant QP (``X265_RC_CQP``, ``rc.qp = QP``),
    one intra picture, no info SEI. Here: ``preset`` (default ``veryslow``), ``tune=ssim``,
    ``x265:qp=QP`` (which switches x265 to constant QP; x265 then turns adaptive quantisation
    off), ``chroma=444``, and three overrides of what libheif forces after the preset:
    ``x265:psy-rd=0`` and ``x265:psy-rdoq=0`` (tune ssim's values; libheif sets 1.0, and with
    4:4:4 x265 then adds 6 to the chroma QP, about +12 % BD-rate), and ``tu-intra-depth`` set
    to the preset's own value (3 for veryslow; libheif forces 2). libheif's other settings
    (``rskip=0``, ``limit-modes=0``, ``rect``/``amp``, which only matter for inter coding) stay.
    Colour: BT.601 matrix, full range (nclx 1/13/6/full), as bpgenc's default ``-c ycbcr``
    without ``-limitedrange``; libheif converts RGB to YCbCr 4:4:4 8 bit.

Stream and rate accounting
    The bytes handed to the decoder are our own container, never the HEIF file::

        24-byte header | first NAL unit | (u32 length | NAL unit)*   (more only if flagged)

    The NAL units are the coded picture exactly as x265 wrote it into the HEIF ``mdat`` (one
    slice NAL unit with its 2-byte NAL header; the HEIF's 4-byte length prefix is not kept).
    Header (big-endian): magic ``b"H444"`` (4), format version (1), flags (1), width (2),
    height (2), libheif's padding right and bottom (1 + 1; libheif codes images padded to an
    even size of at least 64, the decoder crops it off), conformance window right/bottom offsets
    (4 + 4 bits), ``general_level_idc`` (1), coding-tool word (2: min and max CU size, max TU
    size, intra/inter TU depth, SAO, sign hiding, transform skip, WPP), CRC-32 of the VPS, SPS
    and PPS (4), length of the first NAL unit (4).

    The parameter sets are not sent. Like bpgdec, which rebuilds VPS and SPS from a few fields
    of BPG's compact header, :meth:`Hevc444Codec.decode` rebuilds them: it takes the parameter
    sets that this configuration of x265 writes (:data:`TEMPLATE_PARAMETER_SETS`, captured from
    one encode) and sets the fields that vary (picture size, conformance window, level, the
    coding-tool word) from the header (:mod:`plugins.bpg.hevc_ps` writes them bit for bit).
    :meth:`encode_at` rebuilds them the same way and checks byte equality with what x265 wrote
    (and the decoder checks the CRC). Should they ever differ (another x265 build), the stream
    carries them explicitly instead (flag bit 0: a count byte, then each NAL unit with a u16
    length), so the rate counts every byte the decoder uses either way; on Kodak with x265 4.3
    the compact form always applies.

    Why 24 bytes: that is BPG's own overhead over the HEVC slice data. Measured in
    /work/shared/ENVIRONMENT.md as ``len(.bpg) - len(slice NAL unit)`` = 24 on all 24 Kodak
    images, and it matches libbpg's writer (``bpgenc.c``, ``build_modified_hevc`` and the image
    header code), which we read to check it: 11-byte image header (4 magic, 2 format bytes,
    ``ue7`` width and height of 2 bytes each below 16384, ``ue7`` picture data length 0 = 1
    byte), 4 bytes of compact SPS (``ue7`` length + 3 bytes of fields), the PPS NAL unit
    without start code (6 bytes with x265; ours is 6 bytes too) and a 3-byte start code before
    the slice NAL unit. So bpp here = 8 x (24 + slice NAL bytes) / (H x W), exactly how a
    ``.bpg`` file of the same slice would count. The HEIF container would add 381 bytes.

How it differs from bpgenc (why it is a substitute)
    x265 4.3 instead of the x265 bundled with libbpg 0.9.8 (at equal QP about 6-9 % more bits
    for +0.4 dB, ENVIRONMENT.md); libheif's RGB/YCbCr conversion on both sides instead of
    libbpg's; libheif pads images to an even size of at least 64 x 64 before coding (bpgenc pads
    to the 8-pixel CU grid), which costs bits on tiny images only; level, VUI (timing, colour
    description) and PPS details follow x265 4.3.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from bench.codec import (
    CodecInfo,
    CodecUnavailable,
    CorruptStream,
    RateLadderCodec,
    check_image,
    check_stream_size,
)
from plugins.bpg import hevc_ps
from plugins.bpg.heif import BT601_FULL, build_hvcc, read_heif, write_heif

PLUGIN_VERSION = "1.0"
MAGIC = b"H444"
FORMAT_VERSION = 1
HEADER = struct.Struct(">4sBBHHBBBBHII")
HEADER_BYTES = HEADER.size  # 24, the size of BPG's overhead (module docstring)
FLAG_EXPLICIT = 0x01  # parameter sets follow the header
FLAG_MORE_NALS = 0x02  # NAL units after the first, each with a u32 length

QP_RANGE = (0, 51)
PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
#: x265's own ``tuQTMaxIntraDepth`` per preset (libheif would force 2 otherwise).
TU_INTRA_DEPTH = {"slower": 3, "veryslow": 3, "placebo": 4}
TUNE = "ssim"
NCLX = BT601_FULL

#: VPS, SPS, PPS that x265 4.3 (libheif 1.23.6, pillow-heif 1.8.1) writes for a 768x512 image
#: with this codec's settings (preset veryslow). The decoder starts from these and sets the
#: fields that the header carries.
TEMPLATE_PARAMETER_SETS = (
    "40010c01ffff0408000003009e3800000300005aba0240",
    "4201010408000003009e3800000300005a9000c040100b2dd49236d737010d06040000030064000003000420",
    "4401c1718312",
)

#: (field, shift, bits) of the 16-bit coding-tool word; "sps"/"pps" says where the field lives.
TOOL_FIELDS = (
    ("sps", "log2_min_luma_coding_block_size_minus3", 14, 2),
    ("sps", "log2_diff_max_min_luma_coding_block_size", 12, 2),
    ("sps", "log2_diff_max_min_luma_transform_block_size", 10, 2),
    ("sps", "max_transform_hierarchy_depth_intra", 7, 3),
    ("sps", "max_transform_hierarchy_depth_inter", 4, 3),
    ("sps", "sample_adaptive_offset_enabled_flag", 3, 1),
    ("pps", "sign_data_hiding_enabled_flag", 2, 1),
    ("pps", "transform_skip_enabled_flag", 1, 1),
    ("pps", "entropy_coding_sync_enabled_flag", 0, 1),
)


def check_available() -> None:
    """Raise :class:`~bench.CodecUnavailable` unless pillow-heif can encode and decode HEVC."""
    try:
        import pillow_heif
    except ImportError as exc:
        raise CodecUnavailable(
            "pillow-heif is not installed", "pip install pillow-heif (its wheels bundle x265)"
        ) from exc
    info = pillow_heif.libheif_info()
    if not info.get("HEIF") or "x265" not in str(info.get("encoders", {})):
        raise CodecUnavailable(
            "pillow-heif has no HEVC (x265) encoder",
            "pip install --force-reinstall pillow-heif (PyPI wheels bundle x265)",
        )
    if not info.get("decoders"):
        raise CodecUnavailable(
            "pillow-heif has no HEVC decoder", "pip install --force-reinstall pillow-heif"
        )


def external_versions() -> dict[str, str]:
    """Versions of pillow-heif, libheif and its x265 encoder and HEVC decoder."""
    import pillow_heif

    info = pillow_heif.libheif_info()
    decoders = info.get("decoders", {})
    return {
        "pillow-heif": str(pillow_heif.__version__),
        "libheif": str(pillow_heif.libheif_version()),
        "x265": str(info.get("encoders", {}).get("x265", info.get("HEIF", ""))),
        "hevc_decoder": "; ".join(str(v) for v in decoders.values()),
    }


# ---------------------------------------------------------------------------------------------
# Parameter sets from the header


@dataclass(frozen=True)
class Compact:
    """The header fields from which the decoder rebuilds VPS, SPS and PPS."""

    pad_w: int
    pad_h: int
    conf_right: int
    conf_bottom: int
    level: int
    tools: int


@lru_cache(maxsize=1)
def _template() -> tuple[dict, dict, dict]:
    return tuple(hevc_ps.parse_nal(bytes.fromhex(h)) for h in TEMPLATE_PARAMETER_SETS)


def rebuild_parameter_sets(width: int, height: int, compact: Compact) -> list[bytes]:
    """VPS, SPS and PPS for an image of ``width x height`` described by ``compact``."""
    vps, sps, pps = (dict(d) for d in _template())
    vps["general_level_idc"] = sps["general_level_idc"] = compact.level
    sps["pic_width_in_luma_samples"] = width + compact.pad_w + compact.conf_right
    sps["pic_height_in_luma_samples"] = height + compact.pad_h + compact.conf_bottom
    window = (0, compact.conf_right, 0, compact.conf_bottom)
    sps["conformance_window_flag"] = int(any(window))
    for side, value in zip(("left", "right", "top", "bottom"), window, strict=True):
        sps[f"conf_win_{side}_offset"] = value
    for where, name, shift, bits in TOOL_FIELDS:
        (sps if where == "sps" else pps)[name] = (compact.tools >> shift) & ((1 << bits) - 1)
    return [hevc_ps.write_nal(d) for d in (vps, sps, pps)]


def compact_form(
    parameter_sets: Sequence[bytes], width: int, height: int, coded: tuple[int, int]
) -> Compact | None:
    """The header fields that rebuild ``parameter_sets`` exactly, or ``None`` if none do.

    ``coded`` is the picture size after the conformance window (the HEIF ``ispe``).
    """
    try:
        if [hevc_ps.nal_type(n) for n in parameter_sets] != [
            hevc_ps.VPS_NUT,
            hevc_ps.SPS_NUT,
            hevc_ps.PPS_NUT,
        ]:
            return None
        sps = hevc_ps.parse_nal(parameter_sets[1])
        pps = hevc_ps.parse_nal(parameter_sets[2])
        left = sps.get("conf_win_left_offset", 0) if sps["conformance_window_flag"] else 0
        top = sps.get("conf_win_top_offset", 0) if sps["conformance_window_flag"] else 0
        right = sps.get("conf_win_right_offset", 0) if sps["conformance_window_flag"] else 0
        bottom = sps.get("conf_win_bottom_offset", 0) if sps["conformance_window_flag"] else 0
        tools = 0
        for where, name, shift, bits in TOOL_FIELDS:
            value = (sps if where == "sps" else pps)[name]
            if not 0 <= value < (1 << bits):
                return None
            tools |= value << shift
        compact = Compact(
            pad_w=sps["pic_width_in_luma_samples"] - right - width,
            pad_h=sps["pic_height_in_luma_samples"] - bottom - height,
            conf_right=right,
            conf_bottom=bottom,
            level=sps["general_level_idc"],
            tools=tools,
        )
    except (hevc_ps.Unsupported, ValueError, KeyError):
        return None
    if (
        left
        or top
        or not (0 <= compact.pad_w < 256 and 0 <= compact.pad_h < 256)
        or not (0 <= right < 16 and 0 <= bottom < 16)
        or (width + compact.pad_w, height + compact.pad_h) != coded
    ):
        return None
    try:
        rebuilt = rebuild_parameter_sets(width, height, compact)
    except (hevc_ps.Unsupported, ValueError, KeyError):
        return None
    return compact if rebuilt == list(parameter_sets) else None


# ---------------------------------------------------------------------------------------------
# The container


def pack_stream(
    width: int,
    height: int,
    parameter_sets: Sequence[bytes],
    nal_units: Sequence[bytes],
    coded: tuple[int, int],
) -> bytes:
    """Our container (module docstring) for one coded picture."""
    if not (1 <= width < 1 << 16 and 1 <= height < 1 << 16):
        raise ValueError(f"image size {width}x{height} does not fit the 16-bit header fields")
    if not nal_units:
        raise ValueError("no coded NAL units")
    compact = compact_form(parameter_sets, width, height, coded)
    flags = FLAG_MORE_NALS if len(nal_units) > 1 else 0
    extra = b""
    if compact is None:
        flags |= FLAG_EXPLICIT
        pad_w, pad_h = coded[0] - width, coded[1] - height
        if not (0 <= pad_w < 256 and 0 <= pad_h < 256):
            raise ValueError(f"coded size {coded} is not a small padding of {width}x{height}")
        compact = Compact(pad_w, pad_h, 0, 0, 0, 0)
        extra = bytes([len(parameter_sets)]) + b"".join(
            struct.pack(">H", len(n)) + n for n in parameter_sets
        )
    header = HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        flags,
        width,
        height,
        compact.pad_w,
        compact.pad_h,
        (compact.conf_right << 4) | compact.conf_bottom,
        compact.level,
        compact.tools,
        zlib.crc32(b"".join(parameter_sets)),
        len(nal_units[0]),
    )
    rest = b"".join(struct.pack(">I", len(n)) + n for n in nal_units[1:])
    return header + extra + nal_units[0] + rest


@dataclass(frozen=True)
class Unpacked:
    """A parsed stream: true size, coded (padded) size, parameter sets and NAL units."""

    width: int
    height: int
    coded: tuple[int, int]
    parameter_sets: list[bytes]
    nal_units: list[bytes]
    explicit: bool


def unpack_stream(data: bytes) -> Unpacked:
    """Parse a stream from :func:`pack_stream`; :class:`~bench.CorruptStream` if it is not one
    (checked before any decoding: magic, size limits, parameter sets against the CRC, lengths)."""
    data = bytes(data)
    if len(data) < HEADER_BYTES:
        raise CorruptStream(f"stream of {len(data)} bytes is shorter than the header")
    (magic, version, flags, width, height, pad_w, pad_h, conf, level, tools, crc, first) = (
        HEADER.unpack_from(data)
    )
    if magic != MAGIC or version != FORMAT_VERSION:
        raise CorruptStream("not an hevc444 stream (bad magic or format version)")
    check_stream_size(height, width)
    if not flags & FLAG_EXPLICIT:
        check_level(level, width + pad_w + (conf >> 4), height + pad_h + (conf & 15))
    pos = HEADER_BYTES
    explicit = bool(flags & FLAG_EXPLICIT)
    if explicit:
        if pos >= len(data):
            raise CorruptStream("stream ends before its parameter sets")
        count = data[pos]
        pos += 1
        parameter_sets = []
        for _ in range(count):
            if pos + 2 > len(data):
                raise CorruptStream("stream ends inside its parameter sets")
            (length,) = struct.unpack_from(">H", data, pos)
            parameter_sets.append(data[pos + 2 : pos + 2 + length])
            pos += 2 + length
    else:
        compact = Compact(pad_w, pad_h, conf >> 4, conf & 15, level, tools)
        try:
            parameter_sets = rebuild_parameter_sets(width, height, compact)
        except (hevc_ps.Unsupported, ValueError, KeyError) as exc:
            raise CorruptStream(f"corrupt header: no parameter sets for it ({exc})") from None
    if zlib.crc32(b"".join(parameter_sets)) != crc:
        raise CorruptStream("parameter sets do not match the header's CRC-32")
    nal_units = [data[pos : pos + first]]
    pos += first
    if flags & FLAG_MORE_NALS:
        while pos < len(data):
            if pos + 4 > len(data):
                raise CorruptStream("stream ends inside a NAL unit length")
            (length,) = struct.unpack_from(">I", data, pos)
            nal_units.append(data[pos + 4 : pos + 4 + length])
            pos += 4 + length
    if pos != len(data) or any(len(n) < 2 for n in nal_units):
        raise CorruptStream("stream length does not match its NAL unit lengths")
    coded = (width + pad_w, height + pad_h)
    return Unpacked(width, height, coded, parameter_sets, nal_units, explicit)


# ---------------------------------------------------------------------------------------------
# The codec


#: HEVC's MaxLumaPs per ``general_level_idc`` (H.265 table A.8): the largest picture (luma
#: samples) a stream of that level may code; each side is at most ``sqrt(8 * MaxLumaPs)``.
MAX_LUMA_PS = {
    30: 36864, 60: 122880, 63: 245760, 90: 552960, 93: 983040, 120: 2228224, 123: 2228224,
    150: 8912896, 153: 8912896, 156: 8912896, 180: 35651584, 183: 35651584, 186: 35651584,
}  # fmt: skip


def check_level(level: int, width: int, height: int) -> None:
    """:class:`~bench.CorruptStream` if a coded ``width x height`` picture exceeds what
    ``general_level_idc`` allows (x265 writes a level that fits; other values, e.g. 255 for
    level 8.5, set no limit)."""
    limit = MAX_LUMA_PS.get(level)
    if limit is None:
        return
    if width * height > limit or max(width, height) ** 2 > 8 * limit:
        raise CorruptStream(
            f"corrupt header: a {width}x{height} picture exceeds HEVC level {level / 30:g}"
        )


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}")
    return value


class Hevc444Codec(RateLadderCodec):
    """HEVC intra 4:4:4 via pillow-heif's x265 over a QP ladder; see the module docstring."""

    name = "hevc444"
    version = PLUGIN_VERSION
    description = (
        "SUBSTITUTE for BPG 4:4:4 (for where bpgenc is missing), non-progressive anchor: "
        "HEVC intra via pillow-heif/libheif x265 4.3, constant QP, 4:4:4, BT.601 full range, "
        "tune ssim, psy-rd off; rate = HEVC slice + 24-byte header (BPG's overhead), not the "
        "HEIF file. Differs from bpgenc: newer x265, libheif colour conversion, images padded "
        "to >= 64 px"
    )

    def __init__(
        self,
        qp_min: int = QP_RANGE[0],
        qp_max: int = QP_RANGE[1],
        preset: str = "veryslow",
        cache: bool = False,
    ) -> None:
        check_available()
        self.qp_min = _check_int("qp_min", qp_min, *QP_RANGE)
        self.qp_max = _check_int("qp_max", qp_max, *QP_RANGE)
        if self.qp_min > self.qp_max:
            raise ValueError(f"qp_min {qp_min} is above qp_max {qp_max}")
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        if not isinstance(cache, bool):
            raise ValueError(f"cache must be True or False, got {cache!r}")
        self.preset = preset
        self.use_cache = cache
        self.external = external_versions()
        self._cache = None
        if cache:
            from plugins.bpg.ladder_cache import LadderCache

            self._cache = LadderCache(self.name, self.identity())

    def encoder_parameters(self) -> dict[str, str]:
        """libheif encoder parameters for one QP, without the QP itself."""
        return {
            "preset": self.preset,
            "tune": TUNE,
            "tu-intra-depth": str(TU_INTRA_DEPTH.get(self.preset, 1)),
            "x265:psy-rd": "0",
            "x265:psy-rdoq": "0",
        }

    def identity(self) -> dict[str, Any]:
        """Everything that shapes the bytes (the ladder cache key, with image and QP)."""
        return {
            "version": self.version,
            "format": FORMAT_VERSION,
            "encoder": self.encoder_parameters(),
            "chroma": "444",
            "nclx": NCLX.payload().hex(),
            "external": self.external,
        }

    def settings(self) -> list[int]:
        """QPs from ``qp_max`` (lowest rate) down to ``qp_min`` (highest rate)."""
        return list(range(self.qp_max, self.qp_min - 1, -1))

    def info(self) -> CodecInfo:
        return CodecInfo(
            name=self.name,
            version=self.version,
            description=self.description,
            parameters={
                "qp_min": self.qp_min,
                "qp_max": self.qp_max,
                "preset": self.preset,
                "libheif_encoder_parameters": self.encoder_parameters(),
                "rate_control": "constant QP (x265:qp)",
                "chroma": "444",
                "colour": "YCbCr BT.601 full range (nclx 1/13/6/full)",
                "rate": f"{HEADER_BYTES}-byte header + HEVC slice NAL unit(s); no HEIF container",
                "cache": self.use_cache,
                "cache_timing": (
                    "a cache hit's encode_s is the lookup time; the x265 time measured when the "
                    "entry was made is stored in the entry"
                    if self.use_cache
                    else "every encode runs x265"
                ),
            },
            external=self.external,
        )

    def encode_at(self, image: np.ndarray, setting: Any) -> bytes:
        check_image(image)
        qp = _check_int("QP", setting, self.qp_min, self.qp_max)
        image = np.ascontiguousarray(image)
        if self._cache is None:
            return self._encode(image, qp)
        data, _, _ = self._cache.fetch(image, qp, lambda: self._encode(image, qp))
        return data

    def encode_heif(self, image: np.ndarray, qp: int) -> bytes:
        """The HEIF file libheif writes for ``image`` at ``qp`` (what the stream is cut from)."""
        import pillow_heif

        height, width = image.shape[:2]
        buffer = io.BytesIO()
        heif = pillow_heif.from_bytes(mode="RGB", size=(width, height), data=image.tobytes())
        heif.save(
            buffer,
            format="HEIF",
            chroma="444",
            enc_params={**self.encoder_parameters(), "x265:qp": str(qp)},
            color_primaries=NCLX.colour_primaries,
            transfer_characteristics=NCLX.transfer_characteristics,
            matrix_coefficients=NCLX.matrix_coefficients,
            full_range_flag=int(NCLX.full_range),
        )
        return buffer.getvalue()

    def _encode(self, image: np.ndarray, qp: int) -> bytes:
        height, width = image.shape[:2]
        parts = read_heif(self.encode_heif(image, qp))
        if parts.nclx != NCLX:
            raise RuntimeError(f"libheif wrote colour {parts.nclx}, expected {NCLX}")
        return pack_stream(
            width, height, parts.parameter_sets, parts.nal_units, (parts.width, parts.height)
        )

    def decode(self, data: bytes) -> np.ndarray:
        import pillow_heif

        stream = unpack_stream(data)
        try:
            hvcc = build_hvcc(stream.parameter_sets)
            heif = write_heif(hvcc, stream.nal_units, *stream.coded, NCLX)
            decoded = pillow_heif.open_heif(io.BytesIO(heif), convert_hdr_to_8bit=True)
            array = np.asarray(decoded)
        except (ValueError, RuntimeError, KeyError, OSError) as exc:
            raise CorruptStream(f"libheif cannot decode the stream: {exc}") from None
        if array.shape != (stream.coded[1], stream.coded[0], 3) or array.dtype != np.uint8:
            raise CorruptStream(f"libheif decoded {array.shape} {array.dtype}, expected RGB")
        return np.ascontiguousarray(array[: stream.height, : stream.width])
