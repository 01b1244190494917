"""HC's progression: "by depth only" (``hc[nested=false]``) against "by depth with nested
refinement" (``hc``), on Kodak images, side by side.

For each image and variant the stream is encoded once; the script decodes prefixes at the
target bpps and at each depth boundary (header + y4, + y3, + y2: the whole stream) and prints
the mean bpp and PSNR-RGB over the images of each point, with what the prefix held of each
latent (none / partial / complete). Rates are real bytes of the prefix. A script, not a test::

    .venv/bin/python benchmarks/hc_depths.py                          # kodim05, kodim23
    .venv/bin/python benchmarks/hc_depths.py --images 1,5,23 --bpp 0.25,0.5,1,2
    .venv/bin/python benchmarks/hc_depths.py --weights path/to/hc.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.images import load_rgb  # noqa: E402
from bench.metrics import psnr_rgb  # noqa: E402
from plugins.hc.codec import HCCodec  # noqa: E402
from plugins.hc.weights import DEFAULT_WEIGHTS  # noqa: E402


def points(codec: HCCodec, image: np.ndarray, targets: list[float]) -> list[dict]:
    """Decoded prefixes of one image: each target bpp and each depth boundary."""
    header, sections = codec.encode_sections(image)
    data = header + b"".join(sections)
    pixels = image.shape[0] * image.shape[1]
    cuts = {min(len(data), int(t * pixels / 8)): f"{t:g} bpp" for t in targets}
    end = len(header)
    for name, section in zip(("y4", "y3", "y2"), sections, strict=True):
        end += len(section)
        cuts[end] = f"through {name}"
    out = []
    for cut in sorted(cuts):
        if cut < len(header):
            continue
        decoded = codec.decode_full(data[:cut])
        out.append(
            {
                "label": cuts[cut],
                "bpp": 8.0 * cut / pixels,
                "psnr": psnr_rgb(image, decoded.image),
                "received": "/".join(decoded.received),
            }
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="5,23", help="Kodak numbers, comma-separated")
    parser.add_argument("--bpp", default="0.1,0.25,0.5,1,1.5,2", help="target bpps")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS)
    args = parser.parse_args()
    targets = [float(t) for t in args.bpp.split(",")]
    names = [f"kodim{int(n):02d}.png" for n in args.images.split(",")]
    images = [load_rgb(ROOT / "datasets" / "kodak" / n) for n in names]
    for nested in (False, True):
        codec = HCCodec(weights=args.weights, nested=nested)
        rows = [points(codec, image, targets) for image in images]
        label = "hc (nested, 4 levels)" if nested else "hc[nested=false] (by depth only)"
        print(f"\n{label}, {len(images)} images ({', '.join(names)}): mean of each point")
        print("| point | bpp | PSNR-RGB | received y4/y3/y2 (first image) |\n|---|---|---|---|")
        by_label: dict[str, list[dict]] = {}
        for per_image in rows:
            for p in per_image:
                by_label.setdefault(p["label"], []).append(p)
        for label, ps in sorted(
            by_label.items(), key=lambda kv: np.mean([p["bpp"] for p in kv[1]])
        ):
            if len(ps) != len(images):
                continue  # a target past the end of some image's stream
            print(
                f"| {label} | {np.mean([p['bpp'] for p in ps]):.4f} | "
                f"{np.mean([p['psnr'] for p in ps]):.2f} | {ps[0]['received']} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
