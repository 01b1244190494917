"""The step sizes of a DeepHQ weights file, per layer and channel (the paper's Fig. 9 view),
and its channel gains (the slope order's weights) or, without them, its mask thresholds as
prior scales.

``python -m plugins.deephq.figures WEIGHTS.safetensors OUT.png``
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from plugins.deephq import params as dp


def plot_steps(weights: str | Path, out: str | Path) -> Path:
    """Write ``out`` (PNG): the step of every layer and channel as a map (channels sorted by
    their mean log step), the number of channels at each step per layer, and the channel gains
    (sorted) when the file has them, else the prior scale from which an element is coded at
    each layer (mask thresholds per channel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from plugins.learned.model_io import BaseModel

    p = dp.load(weights)
    base = BaseModel.get(p.meta.get("base_weights") or None)
    log_steps = np.log2(p.steps)
    order = np.lexsort((np.arange(p.channels), -log_steps.mean(axis=0)))
    fig, (left, middle, right) = plt.subplots(
        1, 3, figsize=(15, 4.6), gridspec_kw={"width_ratios": [2.2, 1, 1]}
    )
    shown = left.imshow(log_steps[:, order], aspect="auto", cmap="viridis", interpolation="nearest")
    left.set_yticks(range(p.layers), [str(k + 1) for k in range(p.layers)])
    left.set_ylabel("layer")
    left.set_xlabel("latent channel (sorted by mean log step)")
    left.set_title("step per layer and channel (log2)")
    fig.colorbar(shown, ax=left, label="log2 step (base model's integer grid)")
    values = np.unique(p.steps)
    bottom = np.zeros(p.layers)
    colours = plt.cm.viridis(np.linspace(0, 1, len(values)))
    for value, colour in zip(values, colours, strict=True):
        count = (p.steps == value).sum(axis=1)
        middle.bar(range(1, p.layers + 1), count, bottom=bottom, color=colour, label=f"{value:g}")
        bottom += count
    middle.set_xlabel("layer")
    middle.set_ylabel("channels")
    middle.set_title("channels at each step")
    middle.legend(title="step", fontsize=7)
    if p.channel_gain is not None:
        right.plot(np.sort(p.channel_gain)[::-1], color="C0")
        right.set_xlabel("latent channel (sorted by gain)")
        right.set_ylabel("squared pixel error per squared latent error")
        right.set_title("slope order: channel gains")
        right.grid(alpha=0.3)
    else:
        sigma = np.append(base.scale_table, np.inf)
        thr = sigma[np.minimum(p.mask_index_threshold, len(sigma) - 1)]
        thr = np.where(p.mask_index_threshold == 0, base.scale_table[0], thr)
        right.boxplot([thr[layer] for layer in range(p.layers)], showfliers=False)
        right.set_yscale("log")
        right.set_xlabel("layer")
        right.set_ylabel("smallest prior scale coded")
        right.set_title("selective compression: thresholds")
        right.grid(alpha=0.3, which="both")
    fig.suptitle(
        f"DeepHQ parameters {Path(weights).name} (made by this project, not the paper's)",
        fontsize=10,
    )
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    print(plot_steps(sys.argv[1], sys.argv[2]))
