"""Pieces of the learned codecs' training loop that do not depend on the model being trained:
precision modes, the learning-rate schedule, the relay directory and the thread policy."""
