"""Bit-level pieces of the learned codecs, free of models and torch.

* :mod:`~plugins.learned.coding.bits`: LEB128 varints, zig-zag, the prefix :class:`Reader`;
* :mod:`~plugins.learned.coding.header`: the stream header every learned codec starts with;
* :mod:`~plugins.learned.coding.table`: integers coded with CompressAI-style CDF tables;
* :mod:`~plugins.learned.coding.latent`: the chunked nested-interval coder of the main latent.

Nothing here imports the model (:mod:`plugins.learned.model_io`) or training code.
"""
