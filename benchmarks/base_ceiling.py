"""Where the base model's Kodak gap lies: its transforms' ceiling against its coded point.

For one exported MeanScaleHyperprior weights file (default: the shipped base), on each Kodak
image (padded to a multiple of 64, reconstruction cropped and rounded to uint8), PSNR-RGB of

* **coded**: real entropy coding (``compress``/``decompress``), with its bpp;
* **rounded**: ``g_s`` of the latents rounded around the hyperprior's means, without coding
  (should equal *coded*: a check that the two paths agree);
* **noise**: ``g_s`` of the latents plus the training proxy's uniform noise in [-0.5, 0.5)
  (seeded): equal to *rounded* means the proxy does not mislead the decoder;
* **unquantized**: ``g_s(g_a(x))``, the transforms' ceiling: no entropy model or quantizer
  change can code better than this without better transforms.

It also says how the latent's bits spread over its M channels (the rounded latents' likelihoods
under the hyperprior, summed over the images): how many channels hold 50/80/95/99 % of them.
When nearly every channel is needed, the latent's width M limits the model at this rate.

The last line compares the means with CompressAI's published mbt2018-mean curve at the coded
mean bpp (:mod:`bench.published`). A diagnostic, not a test; about 3 s per image on one core::

    .venv/bin/python benchmarks/base_ceiling.py
    .venv/bin/python benchmarks/base_ceiling.py --weights /tmp/w.safetensors --images 1,5,15,23
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.metrics import psnr_rgb  # noqa: E402
from bench.published import MBT2018_MEAN_KODAK  # noqa: E402
from plugins.learned.training.data import load_kodak  # noqa: E402
from plugins.learned.training.evaluation import (  # noqa: E402
    code_image,
    pad_to_multiple,
    to_tensor,
    to_uint8,
)
from plugins.learned.weights.format import load_weights  # noqa: E402
from plugins.learned.weights.specs import BUNDLED_NAME, find_bundled  # noqa: E402

KODAK = ROOT / "datasets" / "kodak"
#: Shares of the latent's bits for which :func:`channel_spread` counts the channels.
SHARES = (0.5, 0.8, 0.95, 0.99)


def reconstructions(model, img: np.ndarray, seed: int) -> tuple[dict[str, float], np.ndarray]:
    """PSNR-RGB of the rounded, noisy and unquantized latents' reconstructions of ``img``
    (``(H, W, 3)`` uint8), ``model`` in eval mode, and the rounded latent's bits per channel
    (``(M,)`` float64, -log2 of the hyperprior's likelihoods)."""
    import torch

    h, w = img.shape[:2]
    x = pad_to_multiple(to_tensor(img))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        y = model.g_a(x)
        z_hat = model.entropy_bottleneck.quantize(
            model.h_a(y), "dequantize", model.entropy_bottleneck._get_medians()
        )
        scales, means = model.h_s(z_hat).chunk(2, 1)
        noise = torch.rand(y.shape, generator=generator) - 0.5
        rounded = torch.round(y - means) + means
        latents = {"rounded": rounded, "noise": y + noise, "unquantized": y}
        psnrs = {
            name: psnr_rgb(img, to_uint8(model.g_s(v)[..., :h, :w])) for name, v in latents.items()
        }
        likelihoods = model.gaussian_conditional(y, scales, means, training=False)[1]
        # float16 files store CompressAI's 1e-9 likelihood floor as 0. Those float16 constants
        # are the shipped model for every inference path (CompressAI's modules and our own
        # nets agree bit for bit because both read them; restoring them in load_weights
        # breaks that), so the floor is put back here, where a log is taken.
        bits = -torch.log2(likelihoods.double().clamp_min(1e-9))[0].sum((1, 2)).numpy()
    return psnrs, bits


def channel_spread(bits: np.ndarray, shares: tuple[float, ...] = SHARES) -> list[int]:
    """How many of the channels (``bits``: ``(M,)``, any unit) hold each share of the total,
    taking the richest channels first."""
    cumulative = np.cumsum(np.sort(bits)[::-1]) / bits.sum()
    return [int(np.searchsorted(cumulative, share)) + 1 for share in shares]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="weights file (default: the shipped base)")
    parser.add_argument("--images", default="", help="Kodak numbers, e.g. 1,5 (default all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    weights = args.weights or find_bundled(BUNDLED_NAME)
    if weights is None:
        raise SystemExit(f"no shipped {BUNDLED_NAME} weights found; pass --weights")
    model, _ = load_weights(weights)
    names = [f"kodim{int(n):02d}" for n in args.images.split(",")] if args.images else None
    images = load_kodak(KODAK, names)
    print(f"weights {weights}; {len(images)} Kodak images; PSNR-RGB in dB")
    print(f"{'image':8} {'bpp':>6} {'coded':>7} {'rounded':>8} {'noise':>7} {'unquantized':>11}")
    rows, bits = [], 0.0
    for i, (name, img) in enumerate(images.items()):
        coded = code_image(model, img)
        psnrs, image_bits = reconstructions(model, img, i)
        row = {"bpp": coded["bpp"], "coded": coded["psnr_rgb"], **psnrs}
        rows.append(row)
        bits = bits + image_bits
        print(
            f"{name:8} {row['bpp']:6.3f} {row['coded']:7.2f} {row['rounded']:8.2f} "
            f"{row['noise']:7.2f} {row['unquantized']:11.2f}"
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    reference = MBT2018_MEAN_KODAK.gap_db(mean["bpp"], mean["coded"]).reference_psnr_rgb
    print(
        f"{'mean':8} {mean['bpp']:6.3f} {mean['coded']:7.2f} {mean['rounded']:8.2f} "
        f"{mean['noise']:7.2f} {mean['unquantized']:11.2f}"
    )
    print(
        f"published mbt2018-mean at {mean['bpp']:.3f} bpp: {reference:.2f} dB; the ceiling "
        f"(unquantized) is {reference - mean['unquantized']:.2f} dB below it, the coded point "
        f"{reference - mean['coded']:.2f} dB"
    )
    counts = channel_spread(bits)
    spread = ", ".join(f"{n} for {s:.0%}" for n, s in zip(counts, SHARES, strict=True))
    print(f"latent bits over its {len(bits)} channels: {spread} of them")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
