"""From result rows to R-D curves and Bjontegaard tables.

The aggregated curve of a codec has one point per target bpp: the mean over images of the actual
bpp and of each metric. A target where any image is undecodable (or missing) has no aggregated
point, and neither does a target whose mean bpp does not exceed the previous point's (every
stream already exhausted): such points would repeat a rate. Per-image curves keep each image's
decodable points with distinct byte counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from bench.bdrate import bd_psnr, bd_rate, mean_finite

METRICS = ("psnr_rgb", "psnr_y", "ms_ssim")
#: Columns of :func:`aggregate`'s frame (present even when no codec has a point).
CURVE_COLUMNS = ("codec", "target_bpp", "bpp", *METRICS, "decode_s", "encode_s", "n_images")
#: Columns :func:`rows_frame` guarantees (present even when there are no rows).
ROW_COLUMNS = ("codec", "image", "target_bpp", "bpp", "decodable", "note", *METRICS, "decode_s")
BD_COLUMNS = (
    "codec",
    "anchor",
    "method",
    "bd_rate_pct",
    "bd_psnr_db",
    "overlap_psnr_db",
    "reason",
    "bd_rate_per_image_mean_pct",
    "images_with_bd",
    "images",
)


def rows_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows as a DataFrame with float metrics (``None`` -> NaN, ``"inf"`` -> inf)."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        frame = pd.DataFrame(columns=list(ROW_COLUMNS))
        return frame.astype({"decodable": bool, "target_bpp": float, "bpp": float})
    for column in (*METRICS, "bpp", "decode_s", "encode_s", "target_bpp"):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column].replace({"inf": math.inf}), errors="coerce")
    frame["decodable"] = frame["decodable"].astype(bool)
    return frame.drop_duplicates(subset=["codec", "image", "target_bpp"], keep="last")


def aggregate(rows: pd.DataFrame, n_images: int | None = None) -> pd.DataFrame:
    """One row per (codec, target_bpp) that every image decoded; see the module docstring.

    Columns: codec, target_bpp, bpp, psnr_rgb, psnr_y, ms_ssim, decode_s (mean over images of
    the per-point median), encode_s, n_images.
    """
    out = []
    for codec, group in rows.groupby("codec", sort=False):
        expected = n_images or group["image"].nunique()
        last_bpp = -math.inf
        for target, at in group.groupby("target_bpp", sort=True):
            if len(at) < expected or not at["decodable"].all():
                continue
            bpp = float(at["bpp"].mean())
            if bpp <= last_bpp:
                continue
            last_bpp = bpp
            out.append(
                {
                    "codec": codec,
                    "target_bpp": float(target),
                    "bpp": bpp,
                    **{m: float(at[m].mean()) for m in METRICS},
                    "decode_s": float(at["decode_s"].mean()),
                    "encode_s": float(at["encode_s"].mean()),
                    "n_images": int(len(at)),
                }
            )
    return pd.DataFrame(out, columns=list(CURVE_COLUMNS))


def image_curve(rows: pd.DataFrame, codec: str, image: str) -> tuple[np.ndarray, np.ndarray]:
    """(bpp, psnr_rgb) of one image's decodable points, one per distinct byte count."""
    sel = rows[(rows["codec"] == codec) & (rows["image"] == image) & rows["decodable"]]
    sel = sel.sort_values("bytes").drop_duplicates("bytes")
    return sel["bpp"].to_numpy(float), sel["psnr_rgb"].to_numpy(float)


def bd_table(
    rows: pd.DataFrame, curves: pd.DataFrame, anchor: str, method: str = "pchip"
) -> pd.DataFrame:
    """BD-rate and BD-PSNR (PSNR-RGB) of every codec against ``anchor``.

    ``bd_rate``/``bd_psnr``/``overlap``/``reason`` come from the aggregated curves;
    ``bd_rate_per_image_mean`` is the mean of the finite per-image BD-rates and
    ``images_with_bd`` how many images had one.
    """
    anchor_curve = curves[curves["codec"] == anchor]
    images = sorted(rows["image"].unique())
    table = []
    for codec in curves["codec"].unique():
        if codec == anchor:
            continue
        test = curves[curves["codec"] == codec]
        rate = bd_rate(
            anchor_curve["bpp"], anchor_curve["psnr_rgb"], test["bpp"], test["psnr_rgb"], method
        )
        psnr = bd_psnr(
            anchor_curve["bpp"], anchor_curve["psnr_rgb"], test["bpp"], test["psnr_rgb"], method
        )
        per_image = [
            bd_rate(*image_curve(rows, anchor, im), *image_curve(rows, codec, im), method).value
            for im in images
        ]
        mean, count = mean_finite(per_image)
        table.append(
            {
                "codec": codec,
                "anchor": anchor,
                "method": method,
                "bd_rate_pct": rate.value,
                "bd_psnr_db": psnr.value,
                "overlap_psnr_db": rate.overlap,
                "reason": rate.reason or psnr.reason,
                "bd_rate_per_image_mean_pct": mean,
                "images_with_bd": count,
                "images": len(images),
            }
        )
    return pd.DataFrame(table, columns=list(BD_COLUMNS))
