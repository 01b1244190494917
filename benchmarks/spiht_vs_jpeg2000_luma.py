"""SPIHT against single-layer JPEG 2000 on the 24 Kodak images converted to luma, side by side.

For each Kodak image converted to 8-bit grey (Pillow's ``convert("L")``: ITU-R 601 luma, rounded)
and each target bpp:

* ``spiht`` and ``spiht-ac``: one embedded stream per image, cut at ``floor(bpp * H * W / 8)``
  bytes (header included) and decoded from that prefix alone, exactly as the harness does. The
  grey image reaches the codec as ``(H, W, 3)`` with R = G = B, so one component is coded.
* JPEG 2000: Pillow's bundled OpenJPEG on the ``"L"`` image, raw codestream (``no_jp2``), 9/7
  irreversible, 6 resolutions (5 levels), one quality layer. The layer's compression ratio starts
  at ``8 / bpp`` and is bisected (in log ratio) so that the whole codestream, headers included,
  is as large as possible but at most the same byte budget.

PSNR is measured on the 8-bit grey image (peak 255). The gap is ``JPEG 2000 - SPIHT`` in dB
(positive: SPIHT is worse); the requirements are a mean gap at most 0.7 dB for ``spiht`` and
0.3 dB for ``spiht-ac`` at 0.25, 0.5 and 1.0 bpp.

``--rgb`` also prints the mean PSNR-RGB curves of both variants on the RGB Kodak images at 0.1,
0.2, ..., 2.0 bpp (one stream per image, cut at each budget), with single-layer OpenJPEG (colour
transform on, fitted to the budget the same way) at 0.1, 0.2, 0.5, 1.0 and 2.0 bpp beside them.
This is a script, not a test::

    .venv/bin/python benchmarks/spiht_vs_jpeg2000_luma.py            # 24 images, luma table
    .venv/bin/python benchmarks/spiht_vs_jpeg2000_luma.py --rgb      # plus the RGB curves
    .venv/bin/python benchmarks/spiht_vs_jpeg2000_luma.py --images 1,5 --bpp 0.5
    .venv/bin/python benchmarks/spiht_vs_jpeg2000_luma.py --params '{"recon": 0.4}'
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.grid import budget_bytes  # noqa: E402
from bench.metrics import psnr_rgb  # noqa: E402
from plugins.spiht.codec import SpihtCodec  # noqa: E402

KODAK = ROOT / "datasets" / "kodak"
LUMA_BPP = (0.25, 0.5, 1.0)
RGB_BPP = tuple(round(0.1 * i, 1) for i in range(1, 21))
RGB_J2K_BPP = (0.1, 0.2, 0.5, 1.0, 2.0)
LIMITS = {"spiht": 0.7, "spiht-ac": 0.3}


def psnr_grey(a: np.ndarray, b: np.ndarray) -> float:
    d = a.astype(np.float64) - b.astype(np.float64)
    mse = float(np.mean(d * d))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def j2k_encode(image: np.ndarray, ratio: float) -> bytes:
    """One quality layer at compression ratio ``ratio``; grey ("L") or RGB (with the ICT)."""
    from PIL import Image

    grey = image.ndim == 2
    buf = io.BytesIO()
    Image.fromarray(image, "L" if grey else "RGB").save(
        buf,
        format="JPEG2000",
        no_jp2=True,
        irreversible=True,
        mct=0 if grey else 1,
        quality_mode="rates",
        quality_layers=[ratio],
        num_resolutions=6,
    )
    return buf.getvalue()


def j2k_decode(data: bytes, mode: str = "L") -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert(mode), dtype=np.uint8)


def j2k_at_budget(image: np.ndarray, bpp: float, budget: int) -> tuple[bytes, int]:
    """Largest single-layer encode found within ``budget`` bytes (and encodes tried)."""
    bits = 8.0 if image.ndim == 2 else 24.0
    lo, hi = math.log(bits / bpp) - 0.3, math.log(bits / bpp) + 0.3  # log compression ratios
    best, tries = b"", 0
    data = j2k_encode(image, math.exp(lo))
    tries += 1
    while len(data) <= budget:  # make sure ``lo`` overshoots
        best = data if len(data) > len(best) else best
        hi, lo = lo, lo - 0.3
        data = j2k_encode(image, math.exp(lo))
        tries += 1
    while True:  # and that ``hi`` fits
        data = j2k_encode(image, math.exp(hi))
        tries += 1
        if len(data) <= budget:
            best = data if len(data) > len(best) else best
            break
        lo, hi = hi, hi + 0.3
    for _ in range(14):
        mid = 0.5 * (lo + hi)
        data = j2k_encode(image, math.exp(mid))
        tries += 1
        if len(data) <= budget:
            hi = mid
            best = data if len(data) > len(best) else best
        else:
            lo = mid
        if budget - len(best) <= max(2, budget // 2000):
            break
    return best, tries


def load(index: int):
    from PIL import Image

    with Image.open(KODAK / f"kodim{index:02d}.png") as im:
        rgb = np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
        grey = np.ascontiguousarray(np.asarray(im.convert("L"), dtype=np.uint8))
    return rgb, grey


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="1-24", help="e.g. 1-24 or 1,5,23")
    parser.add_argument("--bpp", default=",".join(str(b) for b in LUMA_BPP))
    parser.add_argument("--rgb", action="store_true", help="also the RGB curves 0.1..2.0 bpp")
    parser.add_argument(
        "--params", default="{}", help="SpihtCodec keywords as JSON, e.g. '{\"recon\": 0.4}'"
    )
    args = parser.parse_args()
    params = json.loads(args.params)
    if "-" in args.images:
        a, b = args.images.split("-")
        images = list(range(int(a), int(b) + 1))
    else:
        images = [int(x) for x in args.images.split(",")]
    rates = [float(x) for x in args.bpp.split(",")]
    codecs = {
        "spiht": SpihtCodec(max_bpp=max(rates), **params),
        "spiht-ac": SpihtCodec(max_bpp=max(rates), arithmetic=True, **params),
    }
    names = list(codecs)
    rows = []  # (image, bpp, j2k, spiht, spiht-ac, j2k bytes, budget)
    started = time.time()
    print("Kodak luma (grey), PSNR dB; JPEG 2000 = OpenJPEG single layer, 9/7, 5 levels")
    print(f"{'image':>7} {'bpp':>5} {'budget':>7} {'j2k B':>7} {'J2K':>7} "
          + " ".join(f"{n:>9}" for n in names) + "   gaps")  # fmt: skip
    for index in images:
        _, grey = load(index)
        h, w = grey.shape
        grey3 = np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
        streams = {n: c.encode(grey3) for n, c in codecs.items()}
        for bpp in rates:
            budget = budget_bytes(bpp, h, w)
            data, _ = j2k_at_budget(grey, bpp, budget)
            ref = psnr_grey(grey, j2k_decode(data))
            ours = [psnr_grey(grey, codecs[n].decode(streams[n][:budget])[..., 0]) for n in names]
            rows.append((index, bpp, ref, *ours, len(data), budget))
            gaps = " ".join(f"{ref - p:+.2f}" for p in ours)
            print(f"kodim{index:02d} {bpp:5.2f} {budget:7d} {len(data):7d} {ref:7.2f} "
                  + " ".join(f"{p:9.2f}" for p in ours) + f"   {gaps}", flush=True)  # fmt: skip
    print(f"\nMean over {len(images)} images (luma PSNR dB; gap = JPEG 2000 - codec)")
    header = f"{'bpp':>5} {'J2K':>7} " + " ".join(f"{n:>9} {'gap':>7}" for n in names)
    print(header + "   verdict")
    ok_all = True
    for bpp in rates:
        sel = [r for r in rows if r[1] == bpp]
        ref = float(np.mean([r[2] for r in sel]))
        means = [float(np.mean([r[3 + k] for r in sel])) for k in range(len(names))]
        verdicts = []
        for n, m in zip(names, means, strict=True):
            ok = ref - m <= LIMITS[n]
            ok_all &= ok
            verdicts.append(f"{n} {'ok' if ok else 'FAIL'} (<= {LIMITS[n]})")
        print(f"{bpp:5.2f} {ref:7.3f} "
              + " ".join(f"{m:9.3f} {ref - m:+7.3f}" for m in means)
              + "   " + ", ".join(verdicts))  # fmt: skip
    fill = np.mean([r[-2] / r[-1] for r in rows])
    print(f"JPEG 2000 streams used {100 * fill:.2f} % of the budget on average")
    print(f"requirements {'met' if ok_all else 'NOT met'}; {time.time() - started:.0f} s")

    if args.rgb:
        print("\nRGB Kodak, mean PSNR-RGB dB (one stream per image cut at each budget; JPEG 2000:")
        print("OpenJPEG single layer fitted to each budget as above, with the colour transform)")
        curves = {n: {b: [] for b in RGB_BPP} for n in [*names, "J2K"]}
        for index in images:
            rgb, _ = load(index)
            h, w = rgb.shape[:2]
            for b in RGB_J2K_BPP:
                data, _ = j2k_at_budget(rgb, b, budget_bytes(b, h, w))
                curves["J2K"][b].append(psnr_rgb(rgb, j2k_decode(data, "RGB")))
        for n in names:
            codec = SpihtCodec(max_bpp=2.0, arithmetic=n == "spiht-ac", **params)
            for index in images:
                rgb, _ = load(index)
                h, w = rgb.shape[:2]
                stream = codec.encode(rgb)
                for b in RGB_BPP:
                    out = codec.decode(stream[: budget_bytes(b, h, w)])
                    curves[n][b].append(psnr_rgb(rgb, out))
        print(f"{'bpp':>5} " + " ".join(f"{n:>9}" for n in names) + f"{'J2K':>9}   gaps")
        for b in RGB_BPP:
            row = [float(np.mean(curves[n][b])) for n in names]
            ref = float(np.mean(curves["J2K"][b])) if curves["J2K"][b] else math.nan
            gaps = "" if math.isnan(ref) else " ".join(f"{ref - m:+.2f}" for m in row)
            shown = f"{'-':>9}" if math.isnan(ref) else f"{ref:9.2f}"
            print(f"{b:5.1f} " + " ".join(f"{m:9.2f}" for m in row) + f"{shown}   {gaps}")


if __name__ == "__main__":
    main()
