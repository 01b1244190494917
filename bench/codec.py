"""The codec contract: what a plugin implements and what the harness promises in return.

Two kinds of codec exist.

:class:`ProgressiveCodec` makes **one embedded bitstream** per image. The harness calls
``encode(image)`` once, then hands ``decode`` prefixes of that stream, cut at exactly
``floor(bpp * H * W / 8)`` bytes for each target bpp. The contract:

* ``image`` is a ``numpy.ndarray`` of shape ``(H, W, 3)``, dtype ``uint8``, RGB, C-contiguous,
  any ``H >= 1`` and ``W >= 1`` (odd sizes and 1x1 included).
* ``encode`` returns ``bytes``: not a ``bytearray``, ``memoryview``, array, list or ``str``
  (the harness refuses them as a contract violation instead of converting them).
* ``encode`` is deterministic: the same image and parameters give the same bytes.
* ``decode(prefix)`` reconstructs from ``prefix`` alone. Everything the decoder needs (image size,
  side information, headers, model choice) must be inside the bytes; no state may travel from
  ``encode`` to ``decode`` through the codec object, files or globals. The harness checks this by
  decoding in a fresh process (see :mod:`bench.conformance`).
* If the prefix is too short to contain the header, ``decode`` raises :class:`PrefixTooShort`
  (and only then). The harness records such a point as undecodable. Every longer prefix decodes
  to an ``(H, W, 3)`` ``uint8`` array of the original size: never an exception, whatever the cut
  (mid-symbol, mid-chunk, mid-layer). Bytes past the end of the stream are never handed over.
* Images are at most :data:`MAX_SIDE` (16384) pixels a side and :data:`MAX_PIXELS` (2**26)
  pixels in all; :func:`check_image` refuses larger ones, so no stream states a larger size.
* Bytes that no encoder run could have written (a damaged or crafted stream, another codec's
  stream) make ``decode`` raise :class:`CorruptStream` (or :class:`PrefixTooShort` where they
  only look like a short prefix), never another exception, a hang or a crash. Decoders check
  every header field against what the encoder can write (the size against the limits above
  and, where the format implies it, against the stream's length; levels against the size;
  counts and lengths) *before* allocating anything the header sizes; a stream whose header is
  consistent decodes at the cost of an image of its stated size.
* Quality should not fall as the prefix grows (the conformance suite allows a small tolerance).

:class:`RateLadderCodec` is for non-progressive anchors such as BPG: ``encode_at(image, setting)``
makes one complete stream per quality setting in ``settings()``; for each byte budget the harness
takes the largest encoding that fits and decodes it whole. ``settings()`` must be ordered from
lowest to highest rate.

Both kinds describe themselves through :meth:`info` (parameters, model size, weights provenance,
device) so that every result row can be traced to what produced it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


class PrefixTooShort(ValueError):
    """Raised by ``decode`` when the prefix does not yet contain the stream header.

    This is the only exception a conforming decoder may raise for a prefix of its own stream.
    """


class CorruptStream(ValueError):
    """Raised by ``decode`` when the bytes are not (a prefix of) a stream this codec can write.

    The message says which field is wrong. A decoder raises it before allocating anything
    sized by a header it has not validated.
    """


#: Largest image side any codec must handle; decoders refuse headers stating more.
MAX_SIDE = 1 << 14
#: Largest number of pixels any codec must handle (8K UHD is 2**25).
MAX_PIXELS = 1 << 26


def check_stream_size(height: int, width: int) -> None:
    """Raise :class:`CorruptStream` unless a header's ``height x width`` is a size
    :func:`check_image` accepts (1 to :data:`MAX_SIDE` a side, at most :data:`MAX_PIXELS`)."""
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE) or height * width > MAX_PIXELS:
        raise CorruptStream(
            f"corrupt header: image size {height}x{width} (streams hold 1 to {MAX_SIDE} pixels "
            f"a side, at most {MAX_PIXELS} in all)"
        )


class CodecUnavailable(RuntimeError):
    """Raised by a codec factory when a dependency or external binary is missing.

    ``reason`` says what is missing; ``fix`` says how to install it.
    """

    def __init__(self, reason: str, fix: str = "") -> None:
        super().__init__(reason if not fix else f"{reason} (fix: {fix})")
        self.reason = reason
        self.fix = fix


@dataclass(frozen=True)
class WeightsInfo:
    """Where a learned codec's parameters came from.

    ``source`` is one of ``"zoo"`` (downloaded pretrained model), ``"bundled"`` (trained by this
    project and shipped with it), ``"user"`` (a checkpoint path given by the user).
    ``description`` must say honestly what the weights are, e.g. "bundled N=128 M=192 model
    trained 6k iterations by `bench train`; not the paper's model".
    """

    source: str
    path: str
    sha256: str
    description: str
    #: The base model's own non-progressive Kodak mean point as measured when the weights were
    #: exported (``{"bpp", "psnr_rgb", "num_images"}``); the report states its distance to the
    #: published mbt2018-mean curve. None when unknown.
    base_kodak: dict | None = None


@dataclass(frozen=True)
class CodecInfo:
    """Self-description of a codec instance, recorded with every result.

    ``num_parameters``: number of learned parameters (0 for analytic codecs).
    ``weights_bytes``: size in bytes of the weights file(s) the decoder needs (0 if none).
    ``device``: e.g. ``"cpu"`` or ``"cuda:0"``.
    ``parameters``: the codec's settings as JSON-serialisable values.
    ``external``: versions of external binaries/libraries the codec calls, e.g.
    ``{"openjpeg": "2.5.4"}``.
    ``parameter_groups``: optional split of ``num_parameters`` by part, e.g.
    ``{"base": 7029443, "steps": 1344}``; the report shows what a codec adds over ``"base"``.
    ``flops_per_pixel``: the cost of the networks a learned codec runs, ``{"encoder": e,
    "decoder": d}`` in FLOPs per image pixel as ``torch.utils.flop_counter`` counts them on a
    256x256 input (2 per multiply-accumulate of convolutions and matrix products; element-wise
    work and entropy coding not counted), divided by 256 x 256; empty when the codec does not
    know (analytic codecs). The report's codec table shows it.
    """

    name: str
    version: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    num_parameters: int = 0
    weights_bytes: int = 0
    weights: WeightsInfo | None = None
    device: str = "cpu"
    external: dict[str, str] = field(default_factory=dict)
    parameter_groups: dict[str, int] = field(default_factory=dict)
    flops_per_pixel: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _CodecBase(ABC):
    """What both codec kinds share: identity and self-description."""

    #: Registry name, e.g. ``"jpeg2000"``; lower case, no spaces.
    name: str = ""
    #: Version of the codec implementation; bump it when the bitstream or its quality changes.
    version: str = "0"
    #: One line for reports: what this is, and, for learned codecs, which weights it uses.
    description: str = ""

    @abstractmethod
    def info(self) -> CodecInfo:
        """Return the :class:`CodecInfo` of this instance."""

    def prepare(self, target_bpp: Sequence[float]) -> None:  # noqa: B027 - optional hook
        """Hint the bpp points the harness will cut at, before any ``encode``.

        Codecs whose encoder can aim at rates (JPEG 2000 quality layers) may use it; the default
        ignores it. The decoder must not depend on it: the hint reaches only the encoder side.
        """

    def synchronize(self) -> None:  # noqa: B027 - optional hook
        """Block until queued device work is done (e.g. ``torch.cuda.synchronize``).

        The harness calls it before stopping a timer. CPU codecs need not override it.
        """


class ProgressiveCodec(_CodecBase):
    """An embedded codec: one bitstream per image, decodable at any prefix (see module doc)."""

    kind = "progressive"

    #: Lower bound, in dB, on PSNR-RGB of ``decode(encode(x))`` (the whole stream) for natural
    #: 8-bit images of at least 16x16 pixels; ``None`` makes no claim. Checked by conformance.
    full_stream_psnr: float | None = None

    @abstractmethod
    def encode(self, image: np.ndarray) -> bytes:
        """Encode an ``(H, W, 3)`` ``uint8`` RGB image into one embedded bitstream."""

    @abstractmethod
    def decode(self, prefix: bytes) -> np.ndarray:
        """Decode any prefix of a stream from :meth:`encode` to an ``(H, W, 3)`` ``uint8`` image.

        Raises :class:`PrefixTooShort` when the prefix ends inside the header.
        """


class RateLadderCodec(_CodecBase):
    """A non-progressive anchor: one complete stream per quality setting (see module doc)."""

    kind = "rate-ladder"

    @abstractmethod
    def settings(self) -> Sequence[Any]:
        """Quality settings (JSON-serialisable), ordered from lowest to highest rate."""

    @abstractmethod
    def encode_at(self, image: np.ndarray, setting: Any) -> bytes:
        """Encode an ``(H, W, 3)`` ``uint8`` RGB image completely at ``setting``."""

    @abstractmethod
    def decode(self, data: bytes) -> np.ndarray:
        """Decode a complete stream from :meth:`encode_at` to an ``(H, W, 3)`` ``uint8`` image."""


Codec = ProgressiveCodec | RateLadderCodec


def check_image(image: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``image`` is an ``(H, W, 3)`` ``uint8`` array with H, W >= 1,
    sides of at most :data:`MAX_SIDE` and at most :data:`MAX_PIXELS` pixels."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must have at least one pixel, got {image.shape}")
    height, width = image.shape[:2]
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise ValueError(
            f"image of {height}x{width} is larger than codecs handle ({MAX_SIDE} a side, "
            f"{MAX_PIXELS} pixels)"
        )
