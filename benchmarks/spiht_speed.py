"""How fast is SPIHT here? Encode one Kodak RGB image to 2 bpp, decode it at all 20 cut points.

Figures printed (wall clock, ``time.perf_counter``):

* **JIT compilation**, measured apart: a fresh Python process with an empty numba cache
  (``NUMBA_CACHE_DIR`` pointed at a new temporary folder) imports the codec and codes a tiny image
  with both variants (grey and colour), so every numba function is compiled and written to that
  cache; then a second fresh process does the same from the now-filled cache (what every later
  run pays to load the cached machine code).
* **Encode + 20 decodes**, per variant, after warm-up in this process: ``encode`` of the RGB
  image with ``max_bpp=2.0`` (the stream stops at 2 bpp), then ``decode`` of the prefix cut at
  ``floor(bpp * H * W / 8)`` bytes for bpp = 0.1, 0.2, ..., 2.0, each decode from its prefix
  alone, exactly as the harness calls the codec. Repeated ``--repeat`` times; the best and the
  median total are printed, and the goal (under 2 s) is checked on the median. The same with the
  default ``max_bpp=2.5`` is printed for reference.
* **OpenJPEG** (Pillow's bundled library) on the same image, for the ratio: one encode with 20
  quality layers at the same 20 rates (9/7 irreversible, colour transform, 5 levels), then 20
  decodes of that stream. Pillow cannot decode a layer prefix, so each decode reads every layer
  (as much work as decoding the 2 bpp cut). A single-layer 2 bpp encode + one decode is printed
  too.
* **spiht-ac truncation overhead**: at each of the 20 cuts, how many bytes of the prefix carry
  decisions the honest decoder cannot use yet (bytes past the last encoder byte-shift whose
  decisions were all decoded).

Run it as a script, not a test::

    .venv/bin/python benchmarks/spiht_speed.py                    # kodim01, 5 repeats
    .venv/bin/python benchmarks/spiht_speed.py --image 23 --repeat 9
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.grid import DEFAULT_BPP_GRID, budget_bytes  # noqa: E402
from plugins.spiht.codec import HEADER_BYTES, SpihtCodec  # noqa: E402

KODAK = ROOT / "datasets" / "kodak"
GOAL_S = 2.0

COMPILE_SNIPPET = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
t = time.perf_counter()
import numpy as np
from plugins.spiht.codec import SpihtCodec
image = np.zeros((24, 40, 3), np.uint8)
image[..., 0] = np.arange(40)
image[..., 2] = np.arange(24)[:, None]
grey = np.repeat(image[..., :1], 3, axis=2)
for ac in (False, True):
    codec = SpihtCodec(arithmetic=ac)
    for im in (image, grey):
        codec.decode(codec.encode(np.ascontiguousarray(im)))
print(time.perf_counter() - t)
"""


def compile_times() -> tuple[float, float]:
    """(cold compile + first call, load from the disk cache + first call), in fresh processes."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        out = []
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-c", COMPILE_SNIPPET],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            out.append(float(done.stdout.strip().splitlines()[-1]))
    return out[0], out[1]


def load(index: int) -> np.ndarray:
    from PIL import Image

    with Image.open(KODAK / f"kodim{index:02d}.png") as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def spiht_round(codec: SpihtCodec, image: np.ndarray) -> tuple[float, float, list[float]]:
    """Encode once and decode all 20 cuts; (encode s, decodes s, per-decode s)."""
    h, w = image.shape[:2]
    t0 = time.perf_counter()
    stream = codec.encode(image)
    t1 = time.perf_counter()
    each = []
    for bpp in DEFAULT_BPP_GRID:
        t = time.perf_counter()
        codec.decode(stream[: budget_bytes(bpp, h, w)])
        each.append(time.perf_counter() - t)
    return t1 - t0, time.perf_counter() - t1, each


def openjpeg_round(image: np.ndarray, layered: bool) -> tuple[float, float]:
    """Pillow/OpenJPEG: (encode s, decodes s); 20 layers + 20 decodes, or 1 layer + 1 decode."""
    from PIL import Image

    pil = Image.fromarray(image, "RGB")
    rates = [24.0 / b for b in DEFAULT_BPP_GRID] if layered else [24.0 / 2.0]
    t0 = time.perf_counter()
    buf = io.BytesIO()
    pil.save(
        buf,
        format="JPEG2000",
        no_jp2=True,
        irreversible=True,
        mct=1,
        quality_mode="rates",
        quality_layers=rates,
        num_resolutions=6,
        progression="LRCP",
    )
    data = buf.getvalue()
    t1 = time.perf_counter()
    for _ in range(len(rates)):
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    return t1 - t0, time.perf_counter() - t1


def ac_overhead(image: np.ndarray) -> list[int]:
    """Bytes of each cut prefix not yet usable by the honest ``spiht-ac`` decoder."""
    codec = SpihtCodec(max_bpp=2.0, arithmetic=True)
    h, w = image.shape[:2]
    payload = codec.budget_bytes(h, w) - HEADER_BYTES
    trace = np.zeros(payload + 64, np.int64)
    header, body, _, _, _ = codec.encode_payload(image, payload, trace)
    stream = header + body
    lost = []
    for bpp in DEFAULT_BPP_GRID:
        k = budget_bytes(bpp, h, w)
        _, n = codec.decode_with_count(stream[:k])
        b = k - HEADER_BYTES
        usable = int(np.searchsorted(trace[: b + 1], n, side="right")) - 1
        lost.append(b - max(usable, 0))
    return lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=int, default=1, help="Kodak index (default 1)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-compile", action="store_true", help="skip the JIT measurement")
    args = parser.parse_args()
    image = load(args.image)
    h, w = image.shape[:2]
    print(f"kodim{args.image:02d} RGB {w}x{h}; {os.cpu_count()} CPUs; numba cache on disk")
    if not args.skip_compile:
        cold, cached = compile_times()
        print(f"JIT compile, empty cache (fresh process, both variants): {cold:6.2f} s")
        print(f"load from disk cache  (fresh process, both variants):   {cached:6.2f} s")

    j2k_layers = [openjpeg_round(image, True) for _ in range(args.repeat)]
    j2k_single = [openjpeg_round(image, False) for _ in range(args.repeat)]
    j2k_total = statistics.median(e + d for e, d in j2k_layers)
    j2k_single_total = statistics.median(e + d for e, d in j2k_single)
    print(
        f"OpenJPEG 20 layers: encode {statistics.median(e for e, _ in j2k_layers):.3f} s + "
        f"20 decodes {statistics.median(d for _, d in j2k_layers):.3f} s = {j2k_total:.3f} s"
        f"  (single layer 2 bpp encode + 1 decode: {j2k_single_total:.3f} s)"
    )
    verdicts = []
    print(
        f"\n{'codec':9} {'max_bpp':>7} {'encode':>8} {'20 dec':>8} {'total':>8} {'best':>8} "
        f"{'x OpenJPEG':>10}  per-decode ms (0.1 .. 2.0 bpp)"
    )
    for name, arithmetic in (("spiht", False), ("spiht-ac", True)):
        for max_bpp in (2.0, 2.5):
            codec = SpihtCodec(max_bpp=max_bpp, arithmetic=arithmetic)
            spiht_round(codec, image)  # warm-up: loads the cached machine code
            runs = [spiht_round(codec, image) for _ in range(args.repeat)]
            totals = [e + d for e, d, _ in runs]
            median = statistics.median(totals)
            enc = statistics.median(e for e, _, _ in runs)
            dec = statistics.median(d for _, d, _ in runs)
            per = np.median(np.array([p for _, _, p in runs]), axis=0) * 1000
            print(
                f"{name:9} {max_bpp:7.1f} {enc:8.3f} {dec:8.3f} {median:8.3f} {min(totals):8.3f} "
                f"{median / j2k_total:10.2f}  "
                + " ".join(f"{p:.0f}" for p in per[::3])
                + f" (every 3rd; max {per.max():.0f})"
            )
            if max_bpp == 2.0:
                verdicts.append((name, median))
    print()
    for name, median in verdicts:
        status = "met" if median < GOAL_S else "NOT met"
        what = f"{name}: encode to 2 bpp + 20 decodes, median {median:.3f} s"
        print(f"{what} (goal < {GOAL_S} s): {status}")
    lost = ac_overhead(image)
    print(
        f"spiht-ac honest truncation: bytes of each cut not yet usable: mean {np.mean(lost):.1f}, "
        f"max {max(lost)} (of {budget_bytes(0.1, h, w)} bytes at 0.1 bpp)"
    )


if __name__ == "__main__":
    main()
