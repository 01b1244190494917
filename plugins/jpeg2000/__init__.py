"""Built-in ``jpeg2000`` codec: JPEG 2000 quality layers (Pillow's OpenJPEG) as a progressive
anchor. See :mod:`plugins.jpeg2000.codec` for the design and :mod:`plugins.jpeg2000.codestream`
for the codestream parser."""

from __future__ import annotations

from bench import CodecSpec, hookimpl
from plugins.jpeg2000.codec import Jpeg2000Codec, check_available

__all__ = ["Jpeg2000Codec", "register_codecs"]


@hookimpl
def register_codecs(register):
    register(
        CodecSpec(
            name="jpeg2000",
            factory=Jpeg2000Codec,
            summary=(
                "JPEG 2000 (Pillow/OpenJPEG), one quality layer per target bpp, 9/7, LRCP; "
                "truncated streams decode at the last complete layer"
            ),
            check=check_available,
        )
    )
