"""The learned step sizes of a DeepHQ weights file, per layer and channel (the paper's Fig. 9
view), and the mask thresholds as prior scales.

``python -m plugins.deephq.figures WEIGHTS.safetensors OUT.png``
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from plugins.deephq import params as dp


def plot_steps(weights: str | Path, out: str | Path) -> Path:
    """Write ``out`` (PNG): left, every channel's step at each layer (channels sorted by their
    layer-1 step); right, the prior scale from which an element is coded at each layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from plugins.learned.model_io import BaseModel

    p = dp.load(weights)
    base = BaseModel.get(p.meta.get("base_weights") or None)
    order = np.argsort(-p.steps[0], kind="stable")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.cm.viridis(np.linspace(0, 0.9, p.layers))
    for layer in range(p.layers):
        left.plot(p.steps[layer, order], color=colours[layer], lw=1.2, label=f"layer {layer + 1}")
    left.set_yscale("log")
    left.set_xlabel("latent channel (sorted by its layer-1 step)")
    left.set_ylabel("quantization step (base model's integer grid)")
    left.set_title("learned step sizes per layer and channel")
    left.legend(fontsize=7, ncol=2)
    left.grid(alpha=0.3, which="both")
    sigma = np.append(base.scale_table, np.inf)
    thr = sigma[np.minimum(p.mask_index_threshold, len(sigma) - 1)]
    shown = np.where(p.mask_index_threshold == 0, base.scale_table[0], thr)
    right.boxplot([shown[layer] for layer in range(p.layers)], showfliers=False)
    right.set_yscale("log")
    right.set_xlabel("layer")
    right.set_ylabel("smallest prior scale coded (per channel)")
    right.set_title("selective compression: mask thresholds")
    right.grid(alpha=0.3, which="both")
    fig.suptitle(f"DeepHQ parameters {Path(weights).name} (trained by this project)", fontsize=10)
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
