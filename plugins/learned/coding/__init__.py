"""Bit-level pieces of the learned codecs, free of models and torch.

* :mod:`~plugins.learned.coding.bits`: LEB128 varints, zig-zag, the prefix :class:`Reader`;
* :mod:`~plugins.learned.coding.header`: the stream header every learned codec starts with;
* :mod:`~plugins.learned.coding.table`: integers coded with CompressAI-style CDF tables;
* :mod:`~plugins.learned.coding.chunks`: the chunks every prefix decodes whole or not at all
  (range-coder streams, boundaries from expected costs, length fields, escapes);
* :mod:`~plugins.learned.coding.intervals`: reconstruction inside an interval;
* :mod:`~plugins.learned.coding.latent`: the nested-interval coder of the main latent (level
  tables, refinement order, encode/decode of the chunks).

Nothing here imports the model (:mod:`plugins.learned.model_io`) or training code.
"""
