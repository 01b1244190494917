"""Comparing two runs of the same codecs: the regression check CI needs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bench.bdrate import bd_psnr, bd_rate
from bench.curves import aggregate, rows_frame
from bench.store import RUN, RunStore


def _curves(directory: Path):
    store = RunStore(directory)
    record = store.read_json(RUN)
    rows = rows_frame(store.rows())
    if rows.empty:
        raise ValueError(f"{directory} has no result rows")
    return aggregate(rows, len(record["dataset"]["images"])), record


def compare_runs(baseline: Path, candidate: Path, method: str = "pchip") -> list[dict]:
    """BD-rate / BD-PSNR of each codec in ``candidate`` against the same codec in ``baseline``.

    Also the mean PSNR-RGB difference at the target bpps both aggregated curves share.
    Raises ``ValueError`` when the runs share no codec or used different datasets.
    """
    base, base_record = _curves(baseline)
    cand, cand_record = _curves(candidate)
    if base_record["dataset"]["manifest_sha256"] != cand_record["dataset"]["manifest_sha256"]:
        raise ValueError("the two runs used different dataset manifests")
    if base_record["dataset"]["images"] != cand_record["dataset"]["images"]:
        raise ValueError("the two runs used different images")
    common = [c for c in cand["codec"].unique() if c in set(base["codec"])]
    if not common:
        raise ValueError("the two runs have no codec in common")
    out = []
    for codec in common:
        a, b = base[base["codec"] == codec], cand[cand["codec"] == codec]
        rate = bd_rate(a["bpp"], a["psnr_rgb"], b["bpp"], b["psnr_rgb"], method)
        psnr = bd_psnr(a["bpp"], a["psnr_rgb"], b["bpp"], b["psnr_rgb"], method)
        shared = a.merge(b, on="target_bpp", suffixes=("_a", "_b"))
        delta = (shared["psnr_rgb_b"] - shared["psnr_rgb_a"]).to_numpy(float)
        out.append(
            {
                "codec": codec,
                "bd_rate_pct": rate.value,
                "bd_psnr_db": psnr.value,
                "mean_delta_psnr_db": float(np.mean(delta)) if len(delta) else math.nan,
                "points": len(shared),
                "reason": rate.reason or psnr.reason,
            }
        )
    return out
