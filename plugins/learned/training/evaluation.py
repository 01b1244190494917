"""Evaluation of a MeanScaleHyperprior with real entropy coding (CompressAI's compress and
decompress): bytes, bpp and PSNR-RGB per image, and the mean point's gap to the published
mbt2018-mean curve."""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np

from bench.published import MBT2018_MEAN_KODAK

#: compress/decompress need sides that are multiples of 2**6 (four stride-2 analysis layers
#: plus two in the hyper analysis).
PAD_MULTIPLE = 64


def to_tensor(img: np.ndarray):
    """``(H, W, 3)`` uint8 -> ``(1, 3, H, W)`` float32 in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)[None]


def to_uint8(x) -> np.ndarray:
    """``(1, 3, H, W)`` in [0, 1] -> ``(H, W, 3)`` uint8, rounded."""
    import torch

    arr = x[0].clamp(0, 1).mul(255.0).round().to(dtype=torch.uint8).permute(1, 2, 0)
    return np.ascontiguousarray(arr.numpy())


def pad_to_multiple(x, multiple: int = PAD_MULTIPLE):
    """Pad ``(1, 3, H, W)`` right and bottom (edge replication) to multiples of ``multiple``."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def code_image(model, img: np.ndarray) -> dict[str, Any]:
    """Compress and decompress one image with real entropy coding.

    ``model`` must be in eval mode with its CDF tables built (``update()``). Returns the byte
    count, real bpp, PSNR-RGB of the rounded, cropped reconstruction and the reconstruction.
    """
    import torch

    from bench.metrics import psnr_rgb

    h, w = img.shape[:2]
    with torch.no_grad():
        x = pad_to_multiple(to_tensor(img))
        enc = model.compress(x)
        nbytes = sum(len(s) for group in enc["strings"] for s in group)
        x_hat = model.decompress(enc["strings"], enc["shape"])["x_hat"][..., :h, :w]
    rec = to_uint8(x_hat)
    return {
        "bytes": nbytes,
        "bpp": 8.0 * nbytes / (h * w),
        "psnr_rgb": psnr_rgb(img, rec),
        "reconstruction": rec,
    }


def evaluate(model, images: dict[str, np.ndarray], *, prepared: bool = False) -> dict[str, Any]:
    """Real-coding evaluation on named images; means of bpp and PSNR-RGB plus per-image values.

    Unless ``prepared``, works on a deep copy (CPU, contiguous, eval mode, ``update(force=True)``),
    so the model being trained is left untouched. ``published_gap`` is the mean point's distance
    below CompressAI's published mbt2018-mean curve at the same bpp (:mod:`bench.published`);
    a subset's mean is not comparable with the 24-image figure.
    """
    import torch

    t0 = time.perf_counter()
    if not prepared:
        model = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format).eval()
        model.update(force=True)
    per_image = []
    with torch.no_grad():
        for name, img in images.items():
            r = code_image(model, img)
            per_image.append(
                {"image": name, "bytes": r["bytes"], "bpp": r["bpp"], "psnr_rgb": r["psnr_rgb"]}
            )
    bpp = float(np.mean([p["bpp"] for p in per_image]))
    psnr = float(np.mean([p["psnr_rgb"] for p in per_image]))
    return {
        "images": list(images),
        "bpp": bpp,
        "psnr_rgb": psnr,
        "published_gap": MBT2018_MEAN_KODAK.gap_db(bpp, psnr).to_dict(),
        "per_image": per_image,
        "eval_seconds": time.perf_counter() - t0,
    }


def evaluate_weights(
    path, kodak, names=None, threads: int = 1
) -> tuple[dict[str, Any], dict[str, str]]:
    """:func:`evaluate` of exported weights (a ``.safetensors`` file, as shipped: float16) on
    the Kodak folder ``kodak`` (all ``kodim*.png``, or the stems in ``names``), on ``threads``
    torch threads. Returns the evaluation and the file's metadata (``iterations``...).
    ``FileNotFoundError``/``ValueError`` for a missing or foreign file or missing images."""
    import torch

    from plugins.learned.training.data import load_kodak
    from plugins.learned.weights.format import load_weights

    torch.set_num_threads(threads)
    model, meta = load_weights(path)
    return evaluate(model, load_kodak(kodak, names), prepared=True), meta
