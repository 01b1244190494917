"""Nested dead-zone quantisation levels (PLONQ's, Lu et al. 2021), the level scheme that PLONQ
refines the mean-scale base's latent with and HC refines each of its latents with.

A level scheme tells :func:`plugins.learned.coding.latent.build_tables` how the fine integers
``n = round(y - mu)`` (the base model's own grid) are grouped at each level; the decoder learns
an element's bin level by level, every bin the union of the next level's bins.

:class:`PlonqLevels` with ``L`` levels uses steps ``s_l = 2**(L - l)`` (``L = 4``: 8, 4, 2, 1)
and sends at level ``l`` the index

    q_l(n) = sign(n) * floor(|n| / s_l)

the dead-zone quantizer of step ``s_l``: non-zero bins ``{k s_l, ..., k s_l + s_l - 1}``
(mirrored for negative ``k``), a centre bin ``{-(s_l - 1), ..., s_l - 1}`` of ``2 s_l - 1`` fine
bins. A non-zero bin splits into two finer bins, the centre bin into three (the finer centre bin
and the two innermost non-zero bins). The last level is the fine grid itself. Why this form and
not a mid-tread grid is argued in :mod:`plugins.plonq.codec`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Most levels a stream may state (PLONQ's and HC's headers are checked against it).
MAX_LEVELS = 12


@dataclass(frozen=True)
class PlonqLevels:
    """The nested dead-zone levels: step ``2**(num_levels - level)`` at ``level``
    (``1..num_levels``; the last is the fine grid, step 1)."""

    num_levels: int = 4

    @property
    def key(self) -> tuple:
        """Content key of the scheme (the coder-table caches are keyed by it)."""
        return ("plonq", self.num_levels)

    def step(self, level: int) -> int:
        return 1 << (self.num_levels - level)

    def labels(self, level: int, fine: np.ndarray, scale_index: np.ndarray) -> np.ndarray:
        """int64 bin of each fine integer at ``level`` (``scale_index`` is not used: the same
        grid for every prior scale)."""
        s = self.step(level)
        fine = np.asarray(fine, np.int64)
        return np.sign(fine) * (np.abs(fine) // s)
