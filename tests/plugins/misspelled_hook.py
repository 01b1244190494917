"""A plugin whose hook name is misspelled (``register_codec``): it must fail to load, naming the
hook, and not load silently with zero codecs."""

from bench import CodecSpec, hookimpl


@hookimpl
def register_codec(register):
    register(CodecSpec(name="never-registered", factory=object, summary="misspelled hook"))
