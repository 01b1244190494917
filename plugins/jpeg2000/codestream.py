"""Parse and rewrite raw JPEG 2000 codestreams (ITU-T T.800 | ISO/IEC 15444-1), bytes only.

This module knows just enough of the codestream syntax of T.800 Annex A to find quality-layer
boundaries in a prefix of a single-tile, LRCP-ordered stream whose tile-parts carry PLT markers,
to rebuild a valid codestream that holds only the first ``k`` layers (:func:`rebuild`), and to
give every layer its own tile-part (:func:`split_layers`). Section numbers refer to Annex A of
T.800 (the 2002 edition and later keep this numbering):

* A.4.1 SOC, A.4.2 SOT, A.4.3 SOD, A.4.4 EOC (delimiting markers and marker segments),
* A.5.1 SIZ (image and tile size),
* A.6.1 COD, A.6.2 COC, A.6.4 QCD, A.6.5 QCC, A.6.6 POC (functional marker segments),
* A.7.1 TLM, A.7.2 PLM, A.7.3 PLT, A.7.4 PPM, A.7.5 PPT (pointer marker segments),
* A.8.1 SOP, A.8.2 EPH (in-bit-stream markers), A.9.2 COM (comment).

Every marker is two bytes ``0xFF xx``; every marker *segment* is the marker followed by a 16-bit
big-endian length ``Lxxx`` that counts itself and the parameters but not the marker (A.1).
A tile's packets may be spread over several tile-parts, in order (A.4.2, B.11); in LRCP order
all packets of layer ``l`` come before those of layer ``l + 1`` (B.12).

Nothing here decodes entropy-coded data: packet boundaries come only from the PLT packet lengths.
Everything is pure ``bytes -> dataclasses``; errors are ``ValueError`` (a malformed or unsupported
stream) or :class:`bench.PrefixTooShort` (a prefix that ends before the first tile-part header,
i.e. the end of its SOD marker, is complete).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.codec import CorruptStream, PrefixTooShort

# Marker codes (T.800 A.1, list of markers and marker segments).
SOC = 0xFF4F
SIZ = 0xFF51
COD = 0xFF52
COC = 0xFF53
TLM = 0xFF55
PLM = 0xFF57
PLT = 0xFF58
QCD = 0xFF5C
QCC = 0xFF5D
RGN = 0xFF5E
POC = 0xFF5F
PPM = 0xFF60
PPT = 0xFF61
CRG = 0xFF63
COM = 0xFF64
SOT = 0xFF90
SOP = 0xFF91
EPH = 0xFF92
SOD = 0xFF93
EOC = 0xFFD9

#: Progression orders, T.800 A.6.1 (SGcod, first byte).
PROGRESSION_NAMES = ("LRCP", "RLCP", "RPCL", "PCRL", "CPRL")

#: Largest PLT payload one marker segment can carry: Lplt is 16 bits and counts itself and Zplt.
_MAX_PLT_PAYLOAD = 0xFFFF - 3


@dataclass(frozen=True)
class Segment:
    """One marker segment (or bare marker) as found in the stream.

    ``offset`` is the position of the marker's first byte from the start of the codestream;
    ``length`` is the ``Lxxx`` field (A.1): bytes after the marker, length field included. For
    a bare marker (SOC, SOD, EOC) ``length`` is 0. ``end`` is the first byte after the segment.
    """

    marker: int
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + 2 + self.length

    @property
    def name(self) -> str:
        return _MARKER_NAMES.get(self.marker, f"0x{self.marker:04X}")


_MARKER_NAMES = {
    value: key
    for key, value in globals().items()
    if key.isupper() and len(key) == 3 and isinstance(value, int) and value >= 0xFF00
}


@dataclass(frozen=True)
class Component:
    """Per-component fields of SIZ (A.5.1): ``Ssiz``, ``XRsiz``, ``YRsiz``."""

    precision: int  # bit depth, 1..38 (Ssiz & 0x7F) + 1
    signed: bool  # Ssiz bit 7
    dx: int  # XRsiz, horizontal sub-sampling
    dy: int  # YRsiz, vertical sub-sampling


@dataclass(frozen=True)
class Siz:
    """Image and tile size, T.800 A.5.1.

    Layout after ``Lsiz``: ``Rsiz`` (16 bits), ``Xsiz``, ``Ysiz``, ``XOsiz``, ``YOsiz``,
    ``XTsiz``, ``YTsiz``, ``XTOsiz``, ``YTOsiz`` (32 bits each), ``Csiz`` (16 bits), then
    ``Csiz`` times ``Ssiz``, ``XRsiz``, ``YRsiz`` (8 bits each).
    """

    rsiz: int
    xsiz: int
    ysiz: int
    xosiz: int
    yosiz: int
    xtsiz: int
    ytsiz: int
    xtosiz: int
    ytosiz: int
    components: tuple[Component, ...]

    @property
    def width(self) -> int:
        """Width of the image area on the reference grid (``Xsiz - XOsiz``)."""
        return self.xsiz - self.xosiz

    @property
    def height(self) -> int:
        """Height of the image area on the reference grid (``Ysiz - YOsiz``)."""
        return self.ysiz - self.yosiz

    @property
    def num_tiles(self) -> int:
        """Number of tiles, T.800 B.3: ``ceil((Xsiz - XTOsiz) / XTsiz)`` times the same down."""
        across = _ceil_div(self.xsiz - self.xtosiz, self.xtsiz)
        down = _ceil_div(self.ysiz - self.ytosiz, self.ytsiz)
        return across * down


@dataclass(frozen=True)
class Cod:
    """Coding style default, T.800 A.6.1.

    Layout after ``Lcod``: ``Scod`` (8 bits: bit 0 precincts defined, bit 1 SOP markers may be
    used, bit 2 EPH markers used), ``SGcod`` = progression order (8 bits, 0 = LRCP),
    number of layers (16 bits), multiple component transform (8 bits); ``SPcod`` = number of
    decomposition levels (8 bits), code-block width and height exponents minus 2 (8 bits each),
    code-block style (8 bits), wavelet transform (8 bits: 0 = 9/7 irreversible, 1 = 5/3
    reversible), then, if ``Scod`` bit 0 is set, one byte per resolution level with ``PPx`` in
    the low and ``PPy`` in the high nibble. Without it, ``PPx = PPy = 15``.
    """

    offset: int  # position of the COD marker in the codestream
    scod: int
    progression: int
    layers: int
    mct: int
    levels: int
    codeblock_width: int  # in samples, 2 ** (xcb + 2)
    codeblock_height: int
    codeblock_style: int
    transform: int
    precincts: tuple[tuple[int, int], ...]  # (PPx, PPy) for resolutions 0..levels

    #: Offset of the 16-bit layer count from the COD marker: marker (2), Lcod (2), Scod, order.
    LAYERS_FIELD = 6

    @property
    def precincts_defined(self) -> bool:
        return bool(self.scod & 0x01)

    @property
    def sop(self) -> bool:
        return bool(self.scod & 0x02)

    @property
    def eph(self) -> bool:
        return bool(self.scod & 0x04)

    @property
    def progression_name(self) -> str:
        if self.progression < len(PROGRESSION_NAMES):
            return PROGRESSION_NAMES[self.progression]
        return f"unknown({self.progression})"


@dataclass(frozen=True)
class Sot:
    """Start of tile-part, T.800 A.4.2.

    Layout after ``Lsot`` (always 10): ``Isot`` tile index (16 bits), ``Psot`` tile-part length
    (32 bits, from the first byte of SOT to the end of the tile-part data; 0 means "until EOC"),
    ``TPsot`` tile-part index (8 bits), ``TNsot`` number of tile-parts (8 bits, 0 = not given).
    """

    offset: int
    tile_index: int
    psot: int
    tile_part_index: int
    num_tile_parts: int


@dataclass(frozen=True)
class Plt:
    """Packet lengths of one tile-part, T.800 A.7.3.

    Layout after ``Lplt``: ``Zplt`` (8 bits, index of this PLT segment among the tile-part's PLT
    segments), then ``Iplt``: each packet length (packet header plus body, SOP/EPH markers
    included) as a big-endian sequence of 7-bit groups, bit 7 set on every byte but the last.
    """

    offset: int
    index: int
    payload: bytes


@dataclass(frozen=True)
class TilePart:
    """One tile-part: its header segments (SOT through SOD, T.800 A.4.2 and A.4.3), the packet
    lengths of its PLT segments (concatenated in ``Zplt`` order) and where its data starts."""

    sot: Sot
    segments: tuple[Segment, ...]
    plt: tuple[Plt, ...]
    data_offset: int
    packet_lengths: tuple[int, ...]

    @property
    def data_end(self) -> int:
        """First byte after the tile-part's packet data (equals ``SOT offset + Psot``)."""
        return self.data_offset + sum(self.packet_lengths)


@dataclass(frozen=True)
class Header:
    """The headers of a single-tile codestream, as far as a prefix holds them.

    ``main`` are the marker segments of the main header (SOC up to the first SOT);
    ``tile_parts`` every tile-part whose header (SOT through SOD) lies entirely within the bytes
    parsed, at least the first. ``complete`` is true when all tile-parts of the tile are listed
    (their count reached ``TNsot``, or EOC follows the last), so that the packet count could be
    checked against ``layers x packets_per_layer``.
    """

    siz: Siz
    cod: Cod
    main: tuple[Segment, ...]
    tile_parts: tuple[TilePart, ...]
    complete: bool

    @property
    def main_end(self) -> int:
        """Offset of the first SOT marker: the end of the main header."""
        return self.tile_parts[0].sot.offset

    @property
    def header_end(self) -> int:
        """First byte of packet data: the shortest prefix that :func:`parse_header` accepts."""
        return self.tile_parts[0].data_offset

    @property
    def packets_per_layer(self) -> int:
        return packets_per_layer(self.siz, self.cod)

    def packets(self) -> list[tuple[int, int]]:
        """``(offset, length)`` of every packet listed so far, in stream (LRCP) order."""
        out = []
        for part in self.tile_parts:
            position = part.data_offset
            for length in part.packet_lengths:
                out.append((position, length))
                position += length
        return out

    def layer_ends(self) -> list[int]:
        """For each layer whose packets are all listed, the offset (from SOC) of the first byte
        after its last packet. LRCP puts a layer's packets after those of the layers before."""
        per_layer = self.packets_per_layer
        packets = self.packets()
        ends = []
        for layer in range(min(self.cod.layers, len(packets) // per_layer)):
            offset, length = packets[(layer + 1) * per_layer - 1]
            ends.append(offset + length)
        return ends

    def complete_layers(self, prefix_length: int) -> int:
        """Number of quality layers whose packets all lie within the first ``prefix_length``."""
        return sum(1 for end in self.layer_ends() if end <= prefix_length)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _u16(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 2], "big")


def _need(data: bytes, end: int, what: str) -> None:
    if len(data) < end:
        raise PrefixTooShort(f"prefix of {len(data)} bytes ends inside the {what}")


def read_segment(data: bytes, pos: int, where: str) -> Segment:
    """Read the marker segment starting at ``pos`` (marker, then ``Lxxx``, A.1)."""
    _need(data, pos + 2, where)
    marker = _u16(data, pos)
    if marker >> 8 != 0xFF or marker < 0xFF30:
        raise CorruptStream(
            f"not a JPEG 2000 marker at offset {pos} in the {where}: 0x{marker:04X}"
        )
    if marker in (SOC, SOD, EOC) or 0xFF30 <= marker <= 0xFF3F:
        return Segment(marker, pos, 0)
    _need(data, pos + 4, where)
    length = _u16(data, pos + 2)
    if length < 2:
        raise CorruptStream(f"marker 0x{marker:04X} at offset {pos} has invalid length {length}")
    segment = Segment(marker, pos, length)
    _need(data, segment.end, where)
    return segment


def parse_siz(data: bytes, segment: Segment) -> Siz:
    """Decode a SIZ segment (A.5.1)."""
    body = data[segment.offset + 4 : segment.end]
    if len(body) < 38:
        raise CorruptStream(f"SIZ segment too short ({segment.length} bytes)")
    rsiz, *sizes = struct.unpack(">H8I", body[:34])
    count = _u16(body, 34)
    if count < 1 or len(body) != 36 + 3 * count:
        raise CorruptStream(f"SIZ length {segment.length} does not match Csiz={count}")
    components = []
    for c in range(count):
        ssiz, dx, dy = body[36 + 3 * c : 39 + 3 * c]
        if dx == 0 or dy == 0:
            raise CorruptStream(f"SIZ component {c} has zero sub-sampling")
        components.append(Component((ssiz & 0x7F) + 1, bool(ssiz & 0x80), dx, dy))
    siz = Siz(rsiz, *sizes, components=tuple(components))
    if not (siz.xsiz > siz.xosiz and siz.ysiz > siz.yosiz):
        raise CorruptStream(f"SIZ describes an empty image ({siz.xsiz}x{siz.ysiz})")
    if siz.xtsiz == 0 or siz.ytsiz == 0 or siz.xtosiz > siz.xosiz or siz.ytosiz > siz.yosiz:
        raise CorruptStream("SIZ has an invalid tile grid")
    if siz.xtosiz + siz.xtsiz <= siz.xosiz or siz.ytosiz + siz.ytsiz <= siz.yosiz:
        raise CorruptStream("SIZ: the first tile does not meet the image area")
    return siz


def parse_cod(data: bytes, segment: Segment) -> Cod:
    """Decode a COD segment (A.6.1)."""
    body = data[segment.offset + 4 : segment.end]
    if len(body) < 10:
        raise CorruptStream(f"COD segment too short ({segment.length} bytes)")
    scod, progression = body[0], body[1]
    layers = _u16(body, 2)
    mct, levels, xcb, ycb, style, transform = body[4:10]
    if layers == 0:
        raise CorruptStream("COD declares zero quality layers")
    if levels > 32:
        raise CorruptStream(f"COD declares {levels} decomposition levels (at most 32)")
    if scod & 0x01:
        if len(body) != 10 + levels + 1:
            raise CorruptStream("COD precinct sizes do not match the number of resolutions")
        precincts = tuple((b & 0x0F, b >> 4) for b in body[10:])
    else:
        if len(body) != 10:
            raise CorruptStream(f"COD length {segment.length} is wrong without precinct sizes")
        precincts = ((15, 15),) * (levels + 1)
    return Cod(
        offset=segment.offset,
        scod=scod,
        progression=progression,
        layers=layers,
        mct=mct,
        levels=levels,
        codeblock_width=1 << ((xcb & 0x0F) + 2),
        codeblock_height=1 << ((ycb & 0x0F) + 2),
        codeblock_style=style,
        transform=transform,
        precincts=precincts,
    )


def parse_sot(data: bytes, segment: Segment) -> Sot:
    """Decode a SOT segment (A.4.2)."""
    if segment.length != 10:
        raise CorruptStream(f"SOT segment has length {segment.length}, expected 10")
    isot, psot, tpsot, tnsot = struct.unpack(">HIBB", data[segment.offset + 4 : segment.end])
    return Sot(segment.offset, isot, psot, tpsot, tnsot)


def decode_packet_lengths(payload: bytes) -> list[int]:
    """Decode ``Iplt`` bytes (A.7.3): big-endian 7-bit groups, bit 7 = "more"."""
    lengths = []
    value = 0
    pending = False
    for byte in payload:
        value = (value << 7) | (byte & 0x7F)
        pending = bool(byte & 0x80)
        if not pending:
            lengths.append(value)
            value = 0
    if pending:
        raise CorruptStream("PLT packet length is cut off at the end of the last PLT segment")
    return lengths


def encode_packet_lengths(lengths: Iterable[int]) -> list[bytes]:
    """Encode packet lengths as ``Iplt`` bytes (A.7.3), one ``bytes`` per packet."""
    out = []
    for length in lengths:
        if length < 0:
            raise CorruptStream(f"negative packet length {length}")
        groups = [length & 0x7F]
        length >>= 7
        while length:
            groups.append(0x80 | (length & 0x7F))
            length >>= 7
        out.append(bytes(reversed(groups)))
    return out


def build_plt_segments(lengths: Sequence[int]) -> bytes:
    """PLT marker segments (A.7.3) for ``lengths``; a packet length never spans two segments."""
    segments = []
    chunk = bytearray()
    for encoded in encode_packet_lengths(lengths):
        if len(chunk) + len(encoded) > _MAX_PLT_PAYLOAD:
            segments.append(chunk)
            chunk = bytearray()
        chunk += encoded
    if chunk or not segments:
        segments.append(chunk)
    if len(segments) > 256:
        raise CorruptStream("too many packets for 256 PLT segments")
    return b"".join(
        struct.pack(">HHB", PLT, 3 + len(payload), index) + bytes(payload)
        for index, payload in enumerate(segments)
    )


def num_precincts(siz: Siz, cod: Cod, component: int, resolution: int) -> int:
    """Precincts of one resolution of one component in the (single) tile, T.800 B.6.

    Tile-component bounds ``tcx0 = ceil(tx0 / XRsiz)`` (B.3), resolution bounds
    ``trx0 = ceil(tcx0 / 2**(NL - r))`` (B.5) and the precinct count (B.6)
    ``numprecincts = ceil(trx1 / 2**PPx) - floor(trx0 / 2**PPx)`` (0 if empty), likewise
    vertically. The precinct partition of resolution ``r`` is expressed on that resolution's grid.
    """
    comp = siz.components[component]
    tx0 = max(siz.xtosiz, siz.xosiz)
    ty0 = max(siz.ytosiz, siz.yosiz)
    tx1 = min(siz.xtosiz + siz.xtsiz, siz.xsiz)
    ty1 = min(siz.ytosiz + siz.ytsiz, siz.ysiz)
    tcx0, tcx1 = _ceil_div(tx0, comp.dx), _ceil_div(tx1, comp.dx)
    tcy0, tcy1 = _ceil_div(ty0, comp.dy), _ceil_div(ty1, comp.dy)
    scale = 1 << (cod.levels - resolution)
    trx0, trx1 = _ceil_div(tcx0, scale), _ceil_div(tcx1, scale)
    try0, try1 = _ceil_div(tcy0, scale), _ceil_div(tcy1, scale)
    if trx1 <= trx0 or try1 <= try0:
        return 0
    ppx, ppy = cod.precincts[resolution]
    across = _ceil_div(trx1, 1 << ppx) - (trx0 >> ppx)
    down = _ceil_div(try1, 1 << ppy) - (try0 >> ppy)
    return across * down


def packets_per_layer(siz: Siz, cod: Cod) -> int:
    """Packets in one quality layer of the tile: one per precinct of every resolution and
    component (B.9). Empty precincts still send a (one-byte) packet; empty resolutions none."""
    return sum(
        num_precincts(siz, cod, c, r)
        for c in range(len(siz.components))
        for r in range(cod.levels + 1)
    )


def _parse_tile_part(data: bytes, pos: int, index: int) -> TilePart:
    """Parse the tile-part header starting with the SOT at ``pos`` (A.4.2) through SOD."""
    segment = read_segment(data, pos, "tile-part header")
    if segment.marker != SOT:
        raise CorruptStream(f"expected SOT at offset {pos}, found {segment.name}")
    sot = parse_sot(data, segment)
    if sot.tile_index != 0 or sot.tile_part_index != index:
        raise CorruptStream(
            f"unsupported tile-part order at offset {pos}: Isot={sot.tile_index}, "
            f"TPsot={sot.tile_part_index}, expected tile 0 part {index}"
        )
    segments = [segment]
    plts: list[Plt] = []
    pos = segment.end
    while True:
        segment = read_segment(data, pos, "tile-part header")
        segments.append(segment)
        if segment.marker == SOD:
            break
        if segment.marker in (COD, COC, POC, PPT):
            raise CorruptStream(f"unsupported {segment.name} marker in a tile-part header")
        if segment.marker in (SOC, SIZ, SOT, EOC):
            raise CorruptStream(f"unexpected {segment.name} in a tile-part header at offset {pos}")
        if index > 0 and segment.marker not in (PLT, COM):
            raise CorruptStream(f"{segment.name} is not allowed in a non-first tile-part header")
        if segment.marker == PLT:
            if segment.length < 3:
                raise CorruptStream("PLT segment without Zplt")
            plts.append(
                Plt(
                    segment.offset, data[segment.offset + 4], data[segment.offset + 5 : segment.end]
                )
            )
        pos = segment.end
    if not plts:
        raise CorruptStream(
            f"tile-part {index} has no PLT marker: packet lengths unknown (encode with plt=True)"
        )
    plts.sort(key=lambda p: p.index)
    if [p.index for p in plts] != list(range(len(plts))):
        raise CorruptStream("PLT segments are not numbered 0, 1, 2, ... (Zplt)")
    lengths = tuple(decode_packet_lengths(b"".join(p.payload for p in plts)))
    part = TilePart(sot, tuple(segments), tuple(plts), segment.end, lengths)
    if sot.psot and sot.offset + sot.psot != part.data_end:
        raise CorruptStream(
            f"tile-part {index}: PLT packet lengths ({sum(lengths)} bytes) disagree with "
            f"Psot={sot.psot}"
        )
    return part


def parse_header(data: bytes) -> Header:
    """Parse the main header and every tile-part header that ``data`` (a prefix or a whole
    codestream) holds completely.

    Raises :class:`bench.PrefixTooShort` when ``data`` ends before the first SOD is complete,
    and ``ValueError`` when the bytes are not a codestream this module supports: one tile (in
    one or more tile-parts, each with PLT markers), LRCP progression, no COC/POC/PPM/PPT/PLM,
    packet lengths consistent with ``Psot`` and, once all tile-parts are seen, exactly
    ``layers x packets_per_layer`` packets.
    """
    data = bytes(data)
    _need(data, 2, "SOC marker")
    if _u16(data, 0) != SOC:
        raise CorruptStream("not a raw JPEG 2000 codestream: it does not start with SOC (FF4F)")
    # A.3 (codestream construction): SIZ immediately follows SOC.
    first = read_segment(data, 2, "main header")
    if first.marker != SIZ:
        raise CorruptStream(f"expected SIZ after SOC, found {first.name}")
    siz = parse_siz(data, first)
    main = [Segment(SOC, 0, 0), first]
    cod = None
    pos = first.end
    while True:
        segment = read_segment(data, pos, "main header")
        if segment.marker == SOT:
            break
        if segment.marker in (SOD, EOC, SOC, SIZ):
            raise CorruptStream(f"unexpected {segment.name} in the main header at offset {pos}")
        if segment.marker in (COC, POC, PPM, PLM):
            raise CorruptStream(f"unsupported {segment.name} marker in the main header")
        if segment.marker == COD:
            if cod is not None:
                raise CorruptStream("two COD segments in the main header")
            cod = parse_cod(data, segment)
        main.append(segment)
        pos = segment.end
    if cod is None:
        raise CorruptStream("the main header has no COD segment")
    if siz.num_tiles != 1:
        raise CorruptStream(f"unsupported: {siz.num_tiles} tiles (only single-tile streams)")
    if cod.progression != 0:
        raise CorruptStream(f"unsupported progression order {cod.progression_name} (need LRCP)")
    per_layer = packets_per_layer(siz, cod)
    expected = cod.layers * per_layer

    parts = [_parse_tile_part(data, pos, 0)]  # PrefixTooShort propagates: no packet yet
    declared = parts[0].sot.num_tile_parts
    complete = False
    while True:
        part = parts[-1]
        if part.sot.num_tile_parts != declared:
            raise CorruptStream("tile-parts disagree on the number of tile-parts (TNsot)")
        if part.sot.psot == 0 or len(parts) == declared:
            complete = True  # Psot = 0 marks the last tile-part (A.4.2)
            break
        pos = part.data_end
        if len(data) < pos + 2:
            break
        if _u16(data, pos) == EOC:
            complete = True
            break
        if len(parts) >= 255:
            raise CorruptStream("more than 255 tile-parts")
        try:
            parts.append(_parse_tile_part(data, pos, len(parts)))
        except PrefixTooShort:
            break
    listed = sum(len(p.packet_lengths) for p in parts)
    if listed > expected or (complete and listed != expected):
        raise CorruptStream(
            f"PLT lists {listed} packets, expected {expected} "
            f"({cod.layers} layers x {per_layer} packets)"
        )
    return Header(siz=siz, cod=cod, main=tuple(main), tile_parts=tuple(parts), complete=complete)


def _sot(psot: int, part: int, parts: int) -> bytes:
    return struct.pack(">HHHIBB", SOT, 10, 0, psot, part, parts)


def _main_header(data: bytes, header: Header, layers: int) -> bytes:
    """The main header of ``data`` with COD's layer count set to ``layers``, TLM dropped."""
    main = bytearray()
    for segment in header.main:
        if segment.marker == TLM:  # tile-part lengths would no longer hold (A.7.1)
            continue
        start = len(main)
        main += data[segment.offset : segment.end]
        if segment.marker == COD:
            field = start + Cod.LAYERS_FIELD
            main[field : field + 2] = layers.to_bytes(2, "big")
    return bytes(main)


def _first_part_extras(data: bytes, header: Header) -> bytes:
    """Segments of the first tile-part header other than SOT, PLT and SOD (copied as they are)."""
    return b"".join(
        data[s.offset : s.end]
        for s in header.tile_parts[0].segments
        if s.marker not in (SOT, PLT, SOD)
    )


def rebuild(data: bytes, header: Header, layers: int) -> bytes:
    """A complete codestream that holds exactly the first ``layers`` quality layers of ``data``.

    The main header is copied with COD's layer count (A.6.1) set to ``layers``; TLM segments
    (A.7.1) are dropped. One tile-part follows, whatever the layout of ``data``: SOT (A.4.2)
    with the new ``Psot``, ``TPsot = 0`` and ``TNsot = 1``; the first tile-part header's other
    segments; PLT segments (A.7.3) listing just the kept packets; SOD (A.4.3); the whole packets
    of the first ``layers`` layers (LRCP order puts them first), gathered from the tile-parts;
    EOC (A.4.4).
    """
    if not 1 <= layers <= header.cod.layers:
        raise CorruptStream(f"cannot keep {layers} of {header.cod.layers} layers")
    count = layers * header.packets_per_layer
    packets = header.packets()[:count]
    if len(packets) < count or packets[-1][0] + packets[-1][1] > len(data):
        raise CorruptStream(f"{len(data)} bytes do not contain {layers} complete layers")
    lengths = [length for _, length in packets]
    tile_header = _first_part_extras(data, header) + build_plt_segments(lengths)
    body = b"".join(data[offset : offset + length] for offset, length in packets)
    psot = 12 + len(tile_header) + 2 + len(body)
    return (
        _main_header(data, header, layers)
        + _sot(psot, 0, 1)
        + tile_header
        + struct.pack(">H", SOD)
        + body
        + struct.pack(">H", EOC)
    )


def split_layers(data: bytes) -> bytes:
    """Rewrite a complete codestream so that every quality layer is its own tile-part.

    Tile-part ``j`` (``TPsot = j``, ``TNsot`` = number of layers, A.4.2) carries a PLT segment
    with the lengths of layer ``j``'s packets and then those packets, so the header bytes a
    decoder needs before layer ``j`` grow with ``j`` instead of all packet lengths standing in
    front of the first packet. The first tile-part keeps the other segments of the original
    first tile-part header. At most 255 layers (``TPsot`` has 8 bits).
    """
    header = parse_header(data)
    if not header.complete:
        raise CorruptStream("split_layers needs a complete codestream")
    layers = header.cod.layers
    if layers > 255:
        raise CorruptStream(f"{layers} layers do not fit into 255 tile-parts")
    per_layer = header.packets_per_layer
    packets = header.packets()
    out = bytearray(_main_header(data, header, layers))
    for layer in range(layers):
        chunk = packets[layer * per_layer : (layer + 1) * per_layer]
        extras = _first_part_extras(data, header) if layer == 0 else b""
        tile_header = extras + build_plt_segments([length for _, length in chunk])
        body = b"".join(data[offset : offset + length] for offset, length in chunk)
        psot = 12 + len(tile_header) + 2 + len(body)
        out += _sot(psot, layer, layers) + tile_header + struct.pack(">H", SOD) + body
    out += struct.pack(">H", EOC)
    return bytes(out)
