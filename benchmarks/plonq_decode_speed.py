"""Decode speed of PLONQ at the full rate against CompressAI's ``decompress`` of the same model,
and the throughput of the latent entropy coder.

On one Kodak image (default kodim01), same weights, same torch thread count, after a warm-up:

* ``decompress``: CompressAI's ``MeanScaleHyperprior.decompress`` of its own ``compress``
  strings (rANS, float32 hyper path), cropped to the image;
* ``plonq``: the ``plonq`` codec's ``decode`` of its complete stream (z by range coder, float64
  hyper path, all 4 levels of chunks, synthesis), no memo.

Each time is the median of ``--repeats`` calls. The goal is a ratio of at most 1.5. The
throughput is the number of latent symbols (one per element and level that needs one) decoded
(and encoded) per second by :func:`plugins.learned.coding.latent.decode_latent`, which includes
the per-chunk table lookups, not only constriction. A script, not a test::

    .venv/bin/python benchmarks/plonq_decode_speed.py
    .venv/bin/python benchmarks/plonq_decode_speed.py --image 5 --repeats 7 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.images import load_rgb  # noqa: E402

KODAK = ROOT / "datasets" / "kodak"
GOAL = 1.5


def median_time(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="weights spec (default: bundled)")
    parser.add_argument("--image", type=int, default=1, help="Kodak image number")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)

    import torch

    from plugins.learned.coding import latent as lc
    from plugins.learned.testing import test_weights_spec
    from plugins.plonq.codec import PlonqCodec

    if args.threads:
        torch.set_num_threads(args.threads)
    weights = args.weights or test_weights_spec()
    if weights is None:
        raise SystemExit("no weights found (bundled, $BENCH_TEST_WEIGHTS, checkpoints/dev)")
    codec = PlonqCodec(weights=weights)
    base = codec.base
    model = base.model
    name = f"kodim{args.image:02d}.png"
    image = load_rgb(KODAK / name)
    height, width = image.shape[:2]
    x = base.to_tensor(image)
    with torch.no_grad():
        enc = model.compress(x)

    def decompress():
        with torch.no_grad():
            out = model.decompress(enc["strings"], enc["shape"])["x_hat"]
            out = out[0, :, :height, :width].clamp(0, 1).mul(255).round().to(torch.uint8)
            return out.permute(1, 2, 0).numpy()

    data, enc_stats = codec.encode_with_stats(image)
    decompress()
    codec.decode(data)  # warm-up (tables, caches)
    t_base = median_time(decompress, args.repeats)
    t_plonq = median_time(lambda: codec.decode(data), args.repeats)
    parts = [codec.decode_full(data) for _ in range(args.repeats)]
    split = {k: statistics.median(p.seconds[k] for p in parts) for k in parts[0].seconds}
    latent = [p.state.stats for p in parts]
    symbols = latent[0].symbols
    dec_s = statistics.median(s.entropy_seconds for s in latent)
    enc_runs = []
    analysis = base.analyse(image)
    hyper = analysis.hyper
    order = lc.refinement_order(hyper.indexes)
    fine = np.rint(analysis.y - hyper.means).reshape(-1).astype(np.int64)[order]
    idx = hyper.indexes.reshape(-1).astype(np.int64)[order]
    from plugins.learned.levels import PlonqLevels
    from plugins.learned.nested import cached_tables

    tables = cached_tables(base, PlonqLevels(codec.levels), codec.reconstruction)
    units = codec.chunk_bits * lc.UNITS_PER_BIT
    for trim in (True, False):
        runs = []
        for _ in range(args.repeats):
            _, st = lc.encode_latent(tables, fine, idx, units, trim=trim)
            runs.append(st.entropy_seconds)
        enc_runs.append(statistics.median(runs))
    # constriction alone: the same symbols and rows in one call per level, no chunks
    import constriction

    cs = constriction.stream
    family = cs.model.Categorical(perfect=False)
    rows, syms = [], []
    cur = idx.copy()
    for level in range(1, tables.num_levels + 1):
        n_ch = tables.n_children[cur]
        single = n_ch == 1
        active = np.flatnonzero(n_ch > 1)
        cur[single] = tables.first_child[cur[single]]
        child = tables.bin_of_fine[level - 1][
            tables.fine_offset[idx[active]] + fine[active] + tables.c[idx[active]]
        ]
        par = cur[active]
        k = int(tables.n_children[par].max())
        rows.append(tables.child_freq[level - 1][par - tables.level_offset[level - 1], :k])
        syms.append((child - tables.first_child[par]).astype(np.int32))
        cur[active] = child

    def raw_decode():
        for s, r in zip(syms, rows, strict=True):
            e = cs.queue.RangeEncoder()
            e.encode(s, family, r)
            d = cs.queue.RangeDecoder(e.get_compressed())
            d.decode(family, r)

    raw = median_time(raw_decode, args.repeats)

    print(f"weights: {base.resolved.spec} sha256 {base.resolved.sha256[:16]}...")
    print(
        f"image {name} ({width}x{height}), torch threads {torch.get_num_threads()}, "
        f"median of {args.repeats}"
    )
    print(
        f"stream: plonq {len(data)} B, compressai {sum(len(s[0]) for s in enc['strings'])} B, "
        f"{enc_stats.chunks} chunks, {symbols} latent symbols"
    )
    print(f"CompressAI decompress: {t_base:.3f} s")
    print(
        f"PLONQ decode (full):   {t_plonq:.3f} s  -> ratio {t_plonq / t_base:.2f} "
        f"(goal <= {GOAL}: {'met' if t_plonq / t_base <= GOAL else 'NOT met'})"
    )
    print("  PLONQ decode split: " + ", ".join(f"{k} {v:.3f} s" for k, v in split.items()))
    print(
        f"latent entropy decoding: {symbols / dec_s / 1e6:.2f} M symbols/s "
        f"({dec_s * 1e3:.1f} ms for {symbols} symbols in {enc_stats.chunks} chunks)"
    )
    print(
        f"latent entropy encoding: {symbols / enc_runs[0] / 1e6:.2f} M symbols/s with the "
        f"chunk trimming, {symbols / enc_runs[1] / 1e6:.2f} M symbols/s without"
    )
    print(
        f"constriction alone (same symbols, one stream per level, encode+decode): "
        f"{symbols / raw / 1e6:.2f} M symbols/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
