"""Is the base model overfitting its training photos? Its R-D loss on training crops and on Kodak.

For each exported MeanScaleHyperprior weights file (typically two exports of one relay, an
earlier and a later one), real entropy coding (``compress``/``decompress``) of

* **train**: ``--crops`` fixed crops of 256 x 256 px cut from the training photos (seeded, the
  same crops for every file, no resizing), and
* **kodak**: the Kodak images (padded to a multiple of 64, reconstruction cropped),

with the mean bpp, PSNR-RGB and the training objective ``lmbda * 255**2 * MSE + bpp`` (MSE of
the uint8 reconstruction, in [0, 1] units). Between two files, a training loss falling much
faster than Kodak's says the model memorises its 518 photos (more data or augmentation would
help); Kodak falling as fast or faster says it does not (the model is short of capacity or of
optimisation, not of data). A diagnostic, not a test; about 2 minutes per file on one core::

    .venv/bin/python benchmarks/generalization.py EARLY.safetensors LATE.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from plugins.learned.training.data import load_kodak, load_training_images  # noqa: E402
from plugins.learned.training.evaluation import code_image  # noqa: E402
from plugins.learned.weights.format import load_weights  # noqa: E402

KODAK = ROOT / "datasets" / "kodak"
TRAIN = ROOT.parent / "shared" / "datasets" / "train"
CROP = 256


def training_crops(data: Path, count: int, seed: int) -> list[np.ndarray]:
    """``count`` crops of ``(CROP, CROP, 3)`` uint8 from the photos under ``data``, each from a
    uniformly drawn photo at a uniform position (``numpy`` generator seeded with ``seed``)."""
    images = load_training_images(data, CROP, log=lambda _: None)
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(count):
        img = images[int(rng.integers(len(images)))]
        h, w = img.shape[:2]
        top, left = int(rng.integers(h - CROP + 1)), int(rng.integers(w - CROP + 1))
        crops.append(np.ascontiguousarray(img[top : top + CROP, left : left + CROP]))
    return crops


def rd_point(model, images: list[np.ndarray], lmbda: float) -> tuple[float, float, float]:
    """Mean (bpp, PSNR-RGB in dB, ``lmbda * 255**2 * MSE + bpp``) of ``images`` coded by
    ``model`` (eval mode, tables built)."""
    rows = []
    for img in images:
        coded = code_image(model, img)
        diff = coded["reconstruction"].astype(np.float64) - img.astype(np.float64)
        mse = float(np.mean(diff**2)) / 255.0**2
        rows.append((coded["bpp"], coded["psnr_rgb"], lmbda * 255.0**2 * mse + coded["bpp"]))
    bpp, psnr, loss = np.mean(rows, axis=0)
    return float(bpp), float(psnr), float(loss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+", help="exported weights files, earliest first")
    parser.add_argument("--data", default=str(TRAIN), help="training photos (default ../shared)")
    parser.add_argument("--crops", type=int, default=48, help="training crops (default 48)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the crops (default 7)")
    parser.add_argument("--images", default="", help="Kodak numbers, e.g. 1,5 (default all)")
    parser.add_argument("--lmbda", type=float, default=None, help="default: each file's own")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    names = [f"kodim{int(n):02d}" for n in args.images.split(",")] if args.images else None
    sets = {
        "train": training_crops(Path(args.data), args.crops, args.seed),
        "kodak": list(load_kodak(KODAK, names).values()),
    }
    kodak = len(sets["kodak"])
    print(f"{args.crops} training crops of {CROP} px (seed {args.seed}); {kodak} Kodak images")
    print(f"{'iterations':>10} {'set':6} {'bpp':>7} {'PSNR':>7} {'loss':>7}")
    for path in args.weights:
        model, meta = load_weights(path)
        lmbda = args.lmbda if args.lmbda is not None else float(meta["lmbda"])
        for name, images in sets.items():
            bpp, psnr, loss = rd_point(model, images, lmbda)
            print(f"{meta.get('iterations', '?'):>10} {name:6} {bpp:7.4f} {psnr:7.3f} {loss:7.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
