"""Built-in codec plugins. Each sub-package registers its codecs through `bench.hookspecs`."""
