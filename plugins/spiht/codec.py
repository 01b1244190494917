"""The SPIHT codec (``spiht``, ``spiht-ac``): pipeline, stream layout, colour, deviations.

Pipeline
    1. Colour: an image with R = G = B everywhere is coded as one component (``Y = R - 128``);
       any other as Y, Cb, Cr by the JPEG 2000 irreversible colour transform (ICT) of the samples
       level-shifted by -128 (:mod:`plugins.spiht.colour`).
    2. Transform: ``L`` levels of the CDF 9/7 wavelet, symmetric extension, non-expansive
       (:mod:`plugins.spiht.wavelet`). ``L = min(levels, ...)`` keeps the LL band at least 4
       samples a side: 5 on Kodak (512 x 768), 3 on 37 x 53, 0 on images under 7 pixels a side.
    3. Quantisation: every coefficient is rounded (half away from zero) to a multiple of
       1/16 (``QUANT``) and held as an ``int32``. All SPIHT decisions are made on these integers,
       so the decoder reproduces the encoder's decisions exactly from the bytes; floating point
       only enters the transforms, never a decision.
    4. The SPIHT passes (:mod:`plugins.spiht.passes`) from the top bit-plane down to plane 0,
       into raw bits (``spiht``) or through the adaptive binary range coder
       (:mod:`plugins.spiht.entropy`, ``spiht-ac``).
    5. The decoder mirrors the passes on whatever prefix it gets, reconstructs each significant
       coefficient in the middle of its known interval (``1.5 * 2**n`` when found significant at
       plane ``n``, then halving, as in the paper), and inverts 3, 2 and 1.

Stream
    A 7-byte header, inside the stream and counted in every budget: byte 0 = ``0xA0`` |
    ``0x08`` (arithmetic coded) | ``0x04`` (weighted, see below) | colour mode (0 grey, 1 YCbCr);
    height and width (uint16, big-endian); levels; top bit-plane + 1 (0: all coefficients zero).
    Then the payload: the decisions exactly in the order the algorithm makes them. The encoder
    stops at ``floor(max_bpp * H * W / 8)`` bytes in all (``max_bpp`` = 2.5 by default, so the
    harness's 0.1 .. 2.0 bpp cuts all lie inside the stream; at least header + 256 bytes, so tiny
    images get a useful stream) or earlier once plane 0 is coded. A prefix shorter than the
    header raises :class:`~bench.PrefixTooShort`; every longer prefix decodes to an image of the
    original size. ``spiht`` uses every bit of a prefix; ``spiht-ac`` every decision the prefix
    determines (about 3 bytes of a cut are not yet usable; see :mod:`plugins.spiht.entropy`).
    The decoder checks the header before allocating: tag and colour mode, the size against
    :data:`bench.codec.MAX_SIDE`, levels against what :func:`auto_levels` gives that size (at
    most :data:`MAX_LEVELS`), the top bit-plane against the ``int32`` coefficients (at most 31
    planes); anything else raises :class:`~bench.CorruptStream`.

Colour: one set of lists over the three components
    Y, Cb and Cr each have their own spatial orientation trees, but there is one LIP, one LIS and
    one LSP over all of them (initial entries component by component: Y's LL band, then Cb's,
    then Cr's) and one threshold sequence. A bit-plane pass therefore visits every component, and
    bits go to whichever component holds the larger coefficients, with no rate allocation or side
    information; the stream keeps the paper's single bit order and is embedded to the bit. Per
    component passes interleaved by plane would also stay embedded, but spend each plane's bits
    on Y first, then Cb, then Cr whatever their magnitudes. The ICT was chosen because it is what
    the JPEG 2000 anchor uses (like against like), it decorrelates RGB well on natural images,
    and its inverse is close to energy preserving for RGB errors: a unit error in Y, Cb or Cr
    costs 3, 3.26 or 2.48 units of RGB squared error, so equal thresholds are nearly
    MSE-optimal for PSNR-RGB. (``weighted=True`` scales the components by the square roots of
    those weights, relative to Y, and every band by the norm of its synthesis basis function;
    measured on Kodak: within +-0.02 dB, so it is off by default, as in the paper.)

Deviations from the paper, all deliberate
    * Image sizes: the paper's trees assume dyadic sizes. Here the non-expansive transform's
      bands are placed in a zero-padded dyadic layout (sides rounded up to a multiple of
      ``2 ** (L + 1)``); padding positions are known to both sides and never cost a bit (never
      tested, never put in the LIP, sets holding only padding never created). Kodak needs no
      padding: there the trees are exactly the paper's.
    * Coefficients are quantised to multiples of 1/16 before coding (integer determinism); the
      paper codes real-valued coefficients. Only bit-planes below 1/16 are lost, which a
      2.5 bpp stream never reaches on natural images.
    * The encoder stops at ``max_bpp`` (default 2.5 bpp), so encoding is bounded.
    * Colour: the paper codes grey images only; the colour extension is described above.
    * ``spiht-ac`` uses our own binary adaptive range coder with our own contexts (listed in
      :mod:`plugins.spiht.passes`) on every decision, sign and refinement bits included, rather
      than the paper's adaptive arithmetic coding of grouped significance symbols; its decoder
      stops where the bytes stop determining the decisions (honest truncation).
    * "Move ``(i, j)`` to the end of the LIS as type B" is implemented literally: the entry is
      examined as type B when the scan reaches the end of the list in the same pass.
    * Decoder options that do not change the stream: ``recon`` (0.5 = the paper's midpoint) sets
      where in the known interval a coefficient is reconstructed; ``weighted`` (off) as above.
    * Levels: at most ``levels`` (default 5, as for the JPEG 2000 anchor), fewer on small images.

Note for developers: numba's disk cache does not see edits to a module whose functions another
module's compiled code calls (e.g. :mod:`plugins.spiht.entropy` from
:mod:`plugins.spiht.passes`); delete ``plugins/spiht/__pycache__`` after editing them.
"""

from __future__ import annotations

import struct
from functools import lru_cache

import numpy as np

from bench.codec import (
    CodecInfo,
    CorruptStream,
    PrefixTooShort,
    ProgressiveCodec,
    check_image,
    check_stream_size,
)
from plugins.spiht import colour, passes
from plugins.spiht import wavelet as wv

PLUGIN_VERSION = "1"

#: Header: tag|flags, height, width, levels, top bit-plane + 1 (0: every coefficient is zero).
HEADER = struct.Struct(">BHHBB")
HEADER_BYTES = HEADER.size
TAG = 0xA0
FLAG_AC = 0x08
FLAG_WEIGHTED = 0x04
COLOUR_GRAY = 0
COLOUR_YCBCR = 1

#: Quantiser: coefficients (after weighting) are rounded to multiples of 1/QUANT.
QUANT = 16.0
#: Smallest payload (bytes) an encoder writes, whatever ``max_bpp`` (tiny images).
MIN_PAYLOAD = 256
#: Most wavelet levels the codec takes (``levels`` parameter) and a stream may state.
MAX_LEVELS = 12
#: Most bit-planes: coefficients are ``int32``.
MAX_PLANES = 31

#: RGB squared-error weight of a unit error in Y, Cb, Cr (column norms of the inverse ICT),
#: relative to Y; coefficients are multiplied by their square roots.
COMPONENT_WEIGHTS = np.sqrt(np.sum(colour.ICT_INV**2, axis=0) / np.sum(colour.ICT_INV[:, 0] ** 2))


def auto_levels(height: int, width: int, max_levels: int) -> int:
    """Wavelet levels: at most ``max_levels``, while the LL band keeps at least 4 samples a side
    (so 0 below 7 pixels on a side)."""
    side = min(height, width)
    levels = 0
    while levels < max_levels and -(-side // (1 << (levels + 1))) >= 4:
        levels += 1
    return levels


def padded_size(height: int, width: int, levels: int) -> tuple[int, int]:
    """Size of the padded dyadic layout: sides rounded up to a multiple of ``2 ** (levels+1)``."""
    if levels == 0:
        return height, width
    m = 1 << (levels + 1)
    return -(-height // m) * m, -(-width // m) * m


class Geometry:
    """Everything derived from ``(height, width, levels, components, weighted)``: a pure function
    of the header, shared by encoder and decoder."""

    def __init__(self, height: int, width: int, levels: int, ncomp: int, weighted: bool):
        self.height, self.width, self.levels, self.ncomp = height, width, levels, ncomp
        self.hp, self.wp = hp, wp = padded_size(height, width, levels)
        valid = np.zeros((hp, wp), np.uint8)
        index = np.zeros((height, width), np.int32)  # actual layout -> padded local index
        inv_index = np.full(hp * wp, -1, np.int32)  # padded local index -> actual layout
        wscale = np.zeros((height, width), np.float64)
        weights = wv.band_weights(levels)
        nbands = 1 + 3 * levels
        band_weight = np.ones(nbands)
        rows, cols = np.mgrid[0:height, 0:width]
        for level, kind, top, left, nrows, ncols in wv.band_rects(height, width, levels):
            weight = weights[(level, kind)] if weighted else 1.0
            band = 0 if kind == "LL" else 1 + 3 * (level - 1) + ("HL", "LH", "HH").index(kind)
            band_weight[band] = weight
            if nrows == 0 or ncols == 0:
                continue
            ptop = (hp >> level) if kind in ("LH", "HH") else 0
            pleft = (wp >> level) if kind in ("HL", "HH") else 0
            sl = (slice(top, top + nrows), slice(left, left + ncols))
            valid[ptop : ptop + nrows, pleft : pleft + ncols] = 1
            index[sl] = (rows[sl] - top + ptop) * wp + (cols[sl] - left + pleft)
            wscale[sl] = weight * QUANT
        self.valid = valid.reshape(-1)
        self.index = index.reshape(-1)
        inv_index[self.index] = np.arange(height * width)
        self.inv_index = inv_index
        self.wscale = wscale.reshape(-1)
        self.tree = passes.build_tree(hp, wp, levels, self.valid)
        self.bands = passes.build_bands(hp, wp, levels)
        cw = COMPONENT_WEIGHTS if (weighted and ncomp == 3) else np.ones(ncomp)
        self.component_weights = np.ascontiguousarray(cw, dtype=np.float64)
        #: divisor of a quantised coefficient of component c in band b
        self.scale = np.ascontiguousarray(np.outer(cw, band_weight) * QUANT)


@lru_cache(maxsize=8)
def geometry(height: int, width: int, levels: int, ncomp: int, weighted: bool) -> Geometry:
    return Geometry(height, width, levels, ncomp, weighted)


class SpihtCodec(ProgressiveCodec):
    """SPIHT on the CDF 9/7 wavelet; ``arithmetic=True`` gives ``spiht-ac``."""

    version = PLUGIN_VERSION
    full_stream_psnr = 25.0

    def __init__(
        self,
        max_bpp: float = 2.5,
        levels: int = 5,
        arithmetic: bool = False,
        weighted: bool = False,
        recon: float = 0.5,
    ) -> None:
        if not max_bpp > 0:
            raise ValueError(f"max_bpp must be positive, got {max_bpp}")
        if not 0 <= int(levels) <= MAX_LEVELS:
            raise ValueError(f"levels must be in 0..{MAX_LEVELS}, got {levels}")
        self.max_bpp = float(max_bpp)
        self.levels = int(levels)
        self.arithmetic = bool(arithmetic)
        self.weighted = bool(weighted)
        self.recon = float(recon)
        self.name = "spiht-ac" if self.arithmetic else "spiht"
        self.description = "SPIHT (Said & Pearlman 1996), CDF 9/7, " + (
            "adaptive binary arithmetic coding" if self.arithmetic else "binary, uncoded"
        )

    def info(self) -> CodecInfo:
        import numba

        return CodecInfo(
            name=self.name,
            version=self.version,
            description=self.description,
            parameters={
                "max_bpp": self.max_bpp,
                "levels": self.levels,
                "arithmetic": self.arithmetic,
                "weighted": self.weighted,
                "wavelet": "CDF 9/7 (lifting, symmetric extension, non-expansive)",
                "colour": "JPEG 2000 ICT (YCbCr), one set of lists; grey images: 1 component",
                "recon": self.recon,
                "quant_step": 1.0 / QUANT,
            },
            external={"numba": numba.__version__},
        )

    # -- encoder -------------------------------------------------------------------------------

    def budget_bytes(self, height: int, width: int) -> int:
        """Stream length the encoder stops at (header included)."""
        from bench.grid import budget_bytes

        return max(budget_bytes(self.max_bpp, height, width), HEADER_BYTES + MIN_PAYLOAD)

    def prepare_coefficients(self, image: np.ndarray) -> tuple[bytes, np.ndarray, Geometry, int]:
        """Header, quantised coefficients (flat int32, padded layout), geometry, top bit-plane."""
        check_image(image)
        height, width = image.shape[:2]
        grey = colour.is_grey(image)
        mode = COLOUR_GRAY if grey else COLOUR_YCBCR
        comps = colour.forward(image, grey)
        levels = auto_levels(height, width, self.levels)
        geo = geometry(height, width, levels, comps.shape[0], self.weighted)
        planes = np.empty((comps.shape[0], height * width), np.float64)
        for c in range(comps.shape[0]):
            planes[c] = wv.forward(comps[c], levels).reshape(-1)
        coef = passes.quantize(
            planes, geo.index, geo.wscale, geo.component_weights, geo.hp * geo.wp
        )
        top = int(np.max(np.abs(coef))) if coef.size else 0
        nmax = top.bit_length() - 1  # -1 when every coefficient is zero
        flags = TAG | (FLAG_AC if self.arithmetic else 0) | mode
        flags |= FLAG_WEIGHTED if self.weighted else 0
        header = HEADER.pack(flags, height, width, levels, nmax + 1)
        return header, coef, geo, nmax

    def encode_payload(
        self, image: np.ndarray, limit: int, trace: np.ndarray | None = None
    ) -> tuple[bytes, bytes, int, int, bool]:
        """Header and payload cut at ``limit`` bits (raw) or bytes (AC).

        Returns ``(header, payload, used, decisions, complete)`` where ``used`` is the number of
        payload bits (raw) or bytes (AC) and ``complete`` says every bit-plane was coded.
        """
        header, coef, geo, nmax = self.prepare_coefficients(image)
        mode = passes.MODE_AC if self.arithmetic else passes.MODE_RAW
        size = (limit + 7) // 8 if mode == passes.MODE_RAW else limit + 64
        out = np.zeros(max(size, 1), np.uint8)
        if trace is None:
            trace = np.zeros(0, np.int64)
        used, nsym, complete = passes.encode_passes(
            coef, geo.ncomp, geo.hp, geo.wp, geo.levels, nmax, mode, limit, out,
            geo.valid, geo.tree, geo.bands, trace,
        )  # fmt: skip
        nbytes = (used + 7) // 8 if mode == passes.MODE_RAW else min(used, limit)
        return header, out[:nbytes].tobytes(), int(used), int(nsym), bool(complete)

    def encode(self, image: np.ndarray) -> bytes:
        height, width = image.shape[:2]
        payload_bytes = self.budget_bytes(height, width) - HEADER_BYTES
        limit = 8 * payload_bytes if not self.arithmetic else payload_bytes
        header, payload, *_ = self.encode_payload(image, limit)
        return header + payload

    # -- decoder -------------------------------------------------------------------------------

    def decode(self, prefix: bytes) -> np.ndarray:
        return self.decode_with_count(prefix)[0]

    def decode_with_count(
        self, prefix: bytes, max_symbols: int | None = None
    ) -> tuple[np.ndarray, int]:
        """Decode ``prefix``; also return how many binary decisions were decoded.

        ``max_symbols`` stops after that many decisions (the "same stream stopped at the same
        bit" of the truncation property).
        """
        if len(prefix) < HEADER_BYTES:
            raise PrefixTooShort(f"{len(prefix)} bytes; the SPIHT header has {HEADER_BYTES}")
        flags, height, width, levels, nmax1 = HEADER.unpack_from(prefix)
        mode = flags & 0x03
        if flags & 0xF0 != TAG or mode not in (COLOUR_GRAY, COLOUR_YCBCR):
            raise CorruptStream(f"not a SPIHT stream (first byte {flags:#04x})")
        check_stream_size(height, width)
        if levels > auto_levels(height, width, MAX_LEVELS):
            raise CorruptStream(f"corrupt SPIHT header: {levels} levels for {height}x{width}")
        if nmax1 > MAX_PLANES:
            raise CorruptStream(f"corrupt SPIHT header: {nmax1} bit-planes")
        ncomp = 1 if mode == COLOUR_GRAY else 3
        pass_mode = passes.MODE_AC if flags & FLAG_AC else passes.MODE_RAW
        geo = geometry(height, width, levels, ncomp, bool(flags & FLAG_WEIGHTED))
        data = np.frombuffer(prefix, np.uint8)
        limit = np.iinfo(np.int64).max if max_symbols is None else int(max_symbols)
        coeffs, nsym = passes.decode_passes(
            data, HEADER_BYTES, len(data), ncomp, geo.hp, geo.wp, levels, nmax1 - 1,
            pass_mode, limit, geo.valid, geo.tree, geo.bands, geo.inv_index, geo.scale,
            self.recon, height * width,
        )  # fmt: skip
        comps = np.empty((ncomp, height, width), np.float64)
        for c in range(ncomp):
            comps[c] = wv.inverse(coeffs[c].reshape(height, width), levels)
        return colour.inverse(comps), int(nsym)
