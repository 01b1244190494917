"""A plugin whose register_codecs hook raises: the others must still load."""

from bench import hookimpl


@hookimpl
def register_codecs(register):
    raise RuntimeError("broken hook")
