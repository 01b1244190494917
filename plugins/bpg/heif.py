"""Just enough HEIF (ISO/IEC 23008-12) to take an x265 encode apart and put one back together.

:func:`read_heif` pulls out of a single-image HEIF file what a decoder needs: the parameter-set
NAL units of the ``hvcC`` box, the ``nclx`` colour box, the ``ispe`` size and the coded NAL
units of the primary item (via ``iloc``). :func:`write_heif` builds the smallest HEIF file
libheif decodes from those parts: ``ftyp``, ``meta`` (``hdlr``, ``pitm``, ``iinf``/``infe``,
``iloc``, ``iprp`` with ``hvcC``, ``ispe``, ``colr``) and ``mdat``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from plugins.bpg import hevc_ps


@dataclass(frozen=True)
class Nclx:
    """An ``nclx`` colour box: H.273 code points and the full-range flag."""

    colour_primaries: int
    transfer_characteristics: int
    matrix_coefficients: int
    full_range: bool

    def payload(self) -> bytes:
        return b"nclx" + struct.pack(
            ">HHHB",
            self.colour_primaries,
            self.transfer_characteristics,
            self.matrix_coefficients,
            0x80 if self.full_range else 0,
        )


#: BT.601 matrix, full range, sRGB primaries and transfer: what bpgenc's default ``-c ycbcr``
#: uses for the matrix and range (BPG does not signal primaries or transfer).
BT601_FULL = Nclx(
    colour_primaries=1, transfer_characteristics=13, matrix_coefficients=6, full_range=True
)


@dataclass
class HeifParts:
    """What :func:`read_heif` found in a file."""

    parameter_sets: list[bytes] = field(default_factory=list)  # VPS, SPS, PPS NAL units
    hvcc: bytes = b""  # the hvcC box payload as written
    nclx: Nclx | None = None
    width: int = 0  # ispe
    height: int = 0
    nal_units: list[bytes] = field(default_factory=list)  # coded picture, no length prefixes
    boxes: list[str] = field(default_factory=list)  # every box type met, in order


def _walk(data: bytes, start: int, end: int):
    """Yield ``(type, payload_start, box_end)`` for the boxes in ``data[start:end]``."""
    pos = start
    while pos < end:
        if pos + 8 > end:
            raise ValueError("truncated box header")
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                raise ValueError("truncated large box header")
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"box {kind!r} of size {size} overruns its parent")
        yield kind.decode("latin-1"), pos + header, pos + size
        pos += size


def _uint(data: bytes, pos: int, size: int) -> int:
    return int.from_bytes(data[pos : pos + size], "big") if size else 0


def parse_hvcc(payload: bytes) -> list[bytes]:
    """The NAL units listed in an ``hvcC`` box payload, in order."""
    if len(payload) < 23:
        raise ValueError("hvcC box too short")
    count = payload[22]
    pos, nals = 23, []
    for _ in range(count):
        if pos + 3 > len(payload):
            raise ValueError("truncated hvcC array")
        n = struct.unpack_from(">H", payload, pos + 1)[0]
        pos += 3
        for _ in range(n):
            length = struct.unpack_from(">H", payload, pos)[0]
            nals.append(payload[pos + 2 : pos + 2 + length])
            pos += 2 + length
    if pos > len(payload):
        raise ValueError("truncated hvcC NAL unit")
    return nals


def _split_length_prefixed(data: bytes, size: int) -> list[bytes]:
    nals, pos = [], 0
    while pos < len(data):
        length = _uint(data, pos, size)
        pos += size
        if length == 0 or pos + length > len(data):
            raise ValueError("bad NAL unit length in item data")
        nals.append(data[pos : pos + length])
        pos += length
    return nals


def read_heif(data: bytes) -> HeifParts:
    """Take a single-image HEVC HEIF file apart (see the module docstring)."""
    parts = HeifParts()
    locations: dict[int, list[tuple[int, int]]] = {}
    primary = 1
    length_size = 4
    for kind, body, end in _walk(data, 0, len(data)):
        parts.boxes.append(kind)
        if kind != "meta":
            continue
        for kind2, body2, end2 in _walk(data, body + 4, end):
            parts.boxes.append(kind2)
            if kind2 == "pitm":
                primary = _uint(data, body2 + 4, 2 if data[body2] == 0 else 4)
            elif kind2 == "iloc":
                locations = _read_iloc(data, body2, end2)
            elif kind2 == "iprp":
                for kind3, body3, end3 in _walk(data, body2, end2):
                    if kind3 != "ipco":
                        continue
                    for kind4, body4, end4 in _walk(data, body3, end3):
                        parts.boxes.append(kind4)
                        payload = data[body4:end4]
                        if kind4 == "hvcC":
                            parts.hvcc = payload
                            parts.parameter_sets = parse_hvcc(payload)
                            length_size = (payload[21] & 3) + 1
                        elif kind4 == "ispe":
                            parts.width, parts.height = struct.unpack_from(">II", payload, 4)
                        elif kind4 == "colr" and payload[:4] == b"nclx":
                            p, t, m, r = struct.unpack_from(">HHHB", payload, 4)
                            parts.nclx = Nclx(p, t, m, bool(r & 0x80))
    if primary not in locations:
        raise ValueError("no iloc entry for the primary item")
    item = b"".join(data[offset : offset + length] for offset, length in locations[primary])
    parts.nal_units = _split_length_prefixed(item, length_size)
    return parts


def _read_iloc(data: bytes, body: int, end: int) -> dict[int, list[tuple[int, int]]]:
    version = data[body]
    pos = body + 4
    offset_size, length_size = data[pos] >> 4, data[pos] & 15
    base_size, index_size = data[pos + 1] >> 4, (data[pos + 1] & 15 if version in (1, 2) else 0)
    pos += 2
    id_size = 2 if version < 2 else 4
    count = _uint(data, pos, id_size)
    pos += id_size
    out: dict[int, list[tuple[int, int]]] = {}
    for _ in range(count):
        item = _uint(data, pos, id_size)
        pos += id_size
        if version in (1, 2):
            if data[pos + 1] & 15:
                raise ValueError("iloc construction methods other than file offsets")
            pos += 2
        pos += 2  # data_reference_index
        base = _uint(data, pos, base_size)
        pos += base_size
        extents = _uint(data, pos, 2)
        pos += 2
        out[item] = []
        for _ in range(extents):
            pos += index_size
            offset = _uint(data, pos, offset_size)
            pos += offset_size
            length = _uint(data, pos, length_size)
            pos += length_size
            out[item].append((base + offset, length))
    if pos > end:
        raise ValueError("truncated iloc box")
    return out


# ---------------------------------------------------------------------------------------------
# Writing


def _box(kind: str, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind.encode("latin-1")) + payload


def _full_box(kind: str, version: int, flags: int, payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags) + payload)


def build_hvcc(parameter_sets: Sequence[bytes]) -> bytes:
    """An ``hvcC`` payload for these parameter sets (one array per NAL unit type, in order of
    first appearance), laid out as libheif writes it. The profile, level, chroma format and bit
    depths come from the (first) SPS."""
    sps = [n for n in parameter_sets if hevc_ps.nal_type(n) == hevc_ps.SPS_NUT]
    if not sps:
        raise ValueError("no SPS among the parameter sets")
    fields = hevc_ps.parse_nal(sps[0])
    arrays: dict[int, list[bytes]] = {}
    for nal in parameter_sets:
        arrays.setdefault(hevc_ps.nal_type(nal), []).append(nal)
    segmentation = (
        fields.get("min_spatial_segmentation_idc", 0)
        if fields.get("bitstream_restriction_flag")
        else 0
    )
    record = struct.pack(
        ">BBI",
        1,
        (fields["general_profile_space"] << 6)
        | (fields["general_tier_flag"] << 5)
        | fields["general_profile_idc"],
        fields["general_profile_compatibility_flags"],
    )
    record += fields["general_constraint_indicator_flags"].to_bytes(6, "big")
    record += struct.pack(
        ">BHBBBBHBB",
        fields["general_level_idc"],
        0xF000 | segmentation,
        0xFC,  # parallelismType unknown
        0xFC | fields["chroma_format_idc"],
        0xF8 | fields["bit_depth_luma_minus8"],
        0xF8 | fields["bit_depth_chroma_minus8"],
        0,  # avgFrameRate
        ((fields["sps_max_sub_layers_minus1"] + 1) << 3)
        | (fields["sps_temporal_id_nesting_flag"] << 2)
        | 3,  # lengthSizeMinusOne: 4-byte NAL unit lengths
        len(arrays),
    )
    for kind, nals in arrays.items():
        record += struct.pack(">BH", 0x40 | kind, len(nals))
        record += b"".join(struct.pack(">H", len(n)) + n for n in nals)
    return record


def write_heif(
    hvcc: bytes, nal_units: list[bytes], width: int, height: int, nclx: Nclx | None
) -> bytes:
    """A single-image HEIF file: ``hvcC`` payload, coded NAL units, ``ispe`` size, colour."""
    ftyp = _box("ftyp", b"heic" + struct.pack(">I", 0) + b"mif1heic")
    hdlr = _full_box("hdlr", 0, 0, struct.pack(">I", 0) + b"pict" + bytes(12) + b"\0")
    pitm = _full_box("pitm", 0, 0, struct.pack(">H", 1))
    infe = _full_box("infe", 2, 0, struct.pack(">HH", 1, 0) + b"hvc1" + b"\0")
    iinf = _full_box("iinf", 0, 0, struct.pack(">H", 1) + infe)
    properties = [_box("hvcC", hvcc), _full_box("ispe", 0, 0, struct.pack(">II", width, height))]
    if nclx is not None:
        properties.append(_box("colr", nclx.payload()))
    ipco = _box("ipco", b"".join(properties))
    associations = bytes([0x81] + [i + 1 for i in range(1, len(properties))])
    ipma = _full_box("ipma", 0, 0, struct.pack(">IHB", 1, 1, len(properties)) + associations)
    iprp = _box("iprp", ipco + ipma)
    mdat_payload = b"".join(struct.pack(">I", len(n)) + n for n in nal_units)

    def meta_box(offset: int) -> bytes:
        # version 0, 4-byte offsets and lengths; one item, one extent
        entry = struct.pack(">HHHHII", 1, 1, 0, 1, offset, len(mdat_payload))
        iloc = _full_box("iloc", 0, 0, bytes([0x44, 0x00]) + entry)
        return _full_box("meta", 0, 0, hdlr + pitm + iloc + iinf + iprp)

    offset = len(ftyp) + len(meta_box(0)) + 8
    return ftyp + meta_box(offset) + _box("mdat", mdat_payload)
