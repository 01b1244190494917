"""PLONQ's whole stream (its finest level) against the base model's own stream, side by side.

For each Kodak image, the same weights:

* **base**: CompressAI's ``MeanScaleHyperprior.compress`` (float32, rANS), size = the y and z
  strings (no header), PSNR-RGB of ``decompress``, cropped and rounded to uint8;
* **PLONQ**: the ``plonq`` codec's complete stream (header, z, all chunks of the 4 levels),
  PSNR-RGB of its decode.

Requirements checked: size within 3 % of the base, PSNR within 0.05 dB. The breakdown shows
where the extra bytes go: the header (tag, size, weights id, scheme, z length), the z string
(range coder instead of rANS), and the latent chunks (one length byte each, coder flushes)
against the base's y string. With ``--chunk-bits`` several chunk sizes are compared (the
overhead/granularity trade-off). A script, not a test::

    .venv/bin/python benchmarks/plonq_finest_vs_base.py                  # all 24 images
    .venv/bin/python benchmarks/plonq_finest_vs_base.py --images 1,5 --chunk-bits 512,1024,2048
    .venv/bin/python benchmarks/plonq_finest_vs_base.py --weights checkpoints/dev.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.images import load_rgb  # noqa: E402
from bench.metrics import psnr_rgb  # noqa: E402

KODAK = ROOT / "datasets" / "kodak"
SIZE_LIMIT = 0.03
PSNR_LIMIT_DB = 0.05


def default_weights() -> str:
    from plugins.learned.testing import test_weights_spec

    spec = test_weights_spec()
    if spec is None:
        raise SystemExit("no weights found (bundled, $BENCH_TEST_WEIGHTS, checkpoints/dev)")
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="weights spec (default: bundled)")
    parser.add_argument("--images", default="", help="Kodak numbers, e.g. 1,5 (default all)")
    parser.add_argument("--chunk-bits", default="1024", help="comma-separated chunk sizes")
    parser.add_argument("--json", default="", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    import torch

    from plugins.plonq.codec import PlonqCodec

    weights = args.weights or default_weights()
    chunk_sizes = [int(c) for c in args.chunk_bits.split(",")]
    codecs = {c: PlonqCodec(weights=weights, chunk_bits=c) for c in chunk_sizes}
    base = codecs[chunk_sizes[0]].base
    model = base.model  # CompressAI's own module
    names = (
        [f"kodim{int(n):02d}.png" for n in args.images.split(",")]
        if args.images
        else sorted(p.name for p in KODAK.glob("kodim*.png"))
    )
    print(f"weights: {base.resolved.spec} sha256 {base.resolved.sha256[:16]}...")
    print(f"torch threads: {torch.get_num_threads()}")
    header = (
        f"{'image':8} {'base B':>8} {'chunk':>5} {'plonq B':>8} {'size %':>7} "
        f"{'base dB':>8} {'plonq dB':>8} {'dPSNR':>7} {'hdr':>4} {'dz':>4} {'chunks':>6} "
        f"{'len B':>6} {'y vs base':>9}"
    )
    print(header)
    rows = []
    for name in names:
        image = load_rgb(KODAK / name)
        height, width = image.shape[:2]
        with torch.no_grad():
            enc = model.compress(base.to_tensor(image))
            y_base, z_base = len(enc["strings"][0][0]), len(enc["strings"][1][0])
            out = model.decompress(enc["strings"], enc["shape"])["x_hat"][0, :, :height, :width]
        rec = out.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        base_bytes = y_base + z_base
        base_psnr = psnr_rgb(image, np.ascontiguousarray(rec))
        for chunk_bits, codec in codecs.items():
            t0 = time.perf_counter()
            data, stats = codec.encode_with_stats(image)
            decoded = codec.decode_full(data)
            seconds = time.perf_counter() - t0
            psnr = psnr_rgb(image, decoded.image)
            z_ours = decoded.header_bytes - _fixed_header(data, decoded.header_bytes)
            row = {
                "image": name,
                "chunk_bits": chunk_bits,
                "base_bytes": base_bytes,
                "base_y_bytes": y_base,
                "base_z_bytes": z_base,
                "plonq_bytes": len(data),
                "size_ratio": len(data) / base_bytes,
                "base_psnr": base_psnr,
                "plonq_psnr": psnr,
                "header_bytes": decoded.header_bytes - z_ours,
                "z_bytes": z_ours,
                "chunks": stats.chunks,
                "chunks_per_level": stats.chunks_per_level,
                "length_bytes": stats.length_bytes,
                "payload_bytes": stats.payload_bytes,
                "ideal_y_bytes": stats.ideal_bits / 8,
                "overhead_bytes": stats.overhead_bytes,
                "seconds": seconds,
            }
            rows.append(row)
            y_ours = stats.payload_bytes + stats.length_bytes
            print(
                f"{name[:-4]:8} {base_bytes:8d} {chunk_bits:5d} {len(data):8d} "
                f"{100 * (row['size_ratio'] - 1):+7.2f} {base_psnr:8.3f} {psnr:8.3f} "
                f"{psnr - base_psnr:+7.3f} {row['header_bytes']:4d} {z_ours - z_base:+4d} "
                f"{stats.chunks:6d} {stats.length_bytes:6d} {y_ours - y_base:+9d}"
            )
    print()
    ok = True
    for chunk_bits in chunk_sizes:
        sel = [r for r in rows if r["chunk_bits"] == chunk_bits]
        ratio = np.mean([r["size_ratio"] for r in sel])
        total = sum(r["plonq_bytes"] for r in sel) / sum(r["base_bytes"] for r in sel)
        dpsnr = np.mean([r["plonq_psnr"] - r["base_psnr"] for r in sel])
        worst_size = max(r["size_ratio"] for r in sel)
        worst_psnr = max(abs(r["plonq_psnr"] - r["base_psnr"]) for r in sel)
        overhead = np.mean([r["overhead_bytes"] for r in sel])
        chunks = np.mean([r["chunks"] for r in sel])
        print(
            f"chunk {chunk_bits} bits: mean size {100 * (ratio - 1):+.2f} % (total "
            f"{100 * (total - 1):+.2f} %, worst {100 * (worst_size - 1):+.2f} %), mean dPSNR "
            f"{dpsnr:+.4f} dB (worst |dPSNR| {worst_psnr:.4f}), mean {chunks:.0f} chunks, "
            f"chunk overhead {overhead:.0f} B/image ({overhead / chunks:.2f} B/chunk), mean "
            f"base {np.mean([r['base_bytes'] for r in sel]) * 8 / (512 * 768):.3f} bpp"
        )
        good = worst_size <= 1 + SIZE_LIMIT and worst_psnr <= PSNR_LIMIT_DB
        ok &= good
        print(
            f"  requirement (size <= +{100 * SIZE_LIMIT:.0f} %, |dPSNR| <= {PSNR_LIMIT_DB} dB "
            f"on every image): {'met' if good else 'NOT met'}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if ok else 1


def _fixed_header(data: bytes, header_end: int) -> int:
    """Bytes of the header before z (tag .. z length), by re-reading it."""
    from plugins.learned.coding.bits import read_varint

    pos = 1
    for _ in range(2):  # H, W
        pos = read_varint(data, pos)[1]
    pos += 4 + 1  # weights id, reconstruction
    pos = read_varint(data, pos)[1]  # chunk size
    pos += 1  # PLONQ scheme: number of levels
    pos = read_varint(data, pos)[1]  # z length
    return pos


if __name__ == "__main__":
    sys.exit(main())
