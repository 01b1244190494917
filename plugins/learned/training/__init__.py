"""Training code of the learned codecs (never imported by inference code).

Shared by every trainer: :mod:`.run` (the resumable loop: checkpoint, RNG state, legs, stop,
JSONL log), :mod:`.data` (training images, crops, Kodak for evaluation), :mod:`.files`,
:mod:`.stop`, :mod:`.precision` (training modes), :mod:`.schedule`, :mod:`.threads`,
:mod:`.relay` (the relay directory) and :mod:`.evaluation` (real-coding evaluation of a
MeanScaleHyperprior). The trainers: :mod:`.msh` (the base model, ``bench train msh``),
:mod:`plugins.deephq.train` and :mod:`plugins.hc.train`, each supplying its model, loss and
options; the two R-D trainers (msh, hc) also share :mod:`.msh_config`'s config and resume
rules and :mod:`.rd_step` (the optimisers and one training iteration).
"""
