"""From result rows to R-D curves and Bjontegaard tables.

The aggregated curve of a codec has one point per target bpp: the mean over images of the actual
bpp and of each metric. A target where any image is undecodable (or missing) has no aggregated
point, and neither does a target whose mean bpp does not exceed the previous point's (every
stream already exhausted): such points would repeat a rate. Per-image curves keep each image's
decodable points with distinct byte counts.

What a BD table leaves out is named, never dropped silently: :func:`bd_table` lists every image
without a per-image BD-rate with its reason, :func:`psnr_drops` every place where a codec's
PSNR falls as its rate rises (which makes an image's curve non-invertible), and
:func:`short_streams` every target the whole stream did not reach.
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
    "images_left_out",
    "warning",
)
#: Columns of :func:`psnr_drops`.
DROP_COLUMNS = ("codec", "image", "bpp_from", "bpp_to", "psnr_from", "psnr_to")


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

    ``bd_rate``/``bd_psnr``/``overlap``/``reason`` come from the aggregated curves, and
    ``warning`` says when they rest on fewer than 4 points per curve in the overlap;
    ``bd_rate_per_image_mean`` is the mean of the finite per-image BD-rates,
    ``images_with_bd`` how many images had one and ``images_left_out`` each other image with
    its reason (a list of ``(image, reason)``; :func:`bd_csv` writes it as text).
    """
    anchor_curve = curves[curves["codec"] == anchor]
    images = sorted(rows["image"].unique())
    table = []
    for codec in curves["codec"].unique():
        if codec == anchor:
            continue
        test = curves[curves["codec"] == codec]
        names = (f"`{anchor}`", f"`{codec}`")
        points = (anchor_curve["bpp"], anchor_curve["psnr_rgb"], test["bpp"], test["psnr_rgb"])
        rate = bd_rate(*points, method, names=names)
        psnr = bd_psnr(*points, method, names=names)
        per_image = {
            im: bd_rate(
                *image_curve(rows, anchor, im),
                *image_curve(rows, codec, im),
                method,
                names=(f"`{anchor}` on {im}", f"`{codec}` on {im}"),
            )
            for im in images
        }
        mean, count = mean_finite(r.value for r in per_image.values())
        left_out = [(im, r.reason) for im, r in per_image.items() if r.reason]
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
                "images_left_out": left_out,
                "warning": rate.warning or psnr.warning,
            }
        )
    return pd.DataFrame(table, columns=list(BD_COLUMNS))


def bd_csv(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """The BD tables as ``bdrate.csv`` holds them: ``images_left_out`` as
    ``"image: reason | image: reason"`` (empty when none)."""
    frame = pd.concat(tables, ignore_index=True)
    frame["images_left_out"] = [
        " | ".join(f"{image}: {reason}" for image, reason in items)
        for items in frame["images_left_out"]
    ]
    return frame


def psnr_drops(rows: pd.DataFrame) -> pd.DataFrame:
    """Every step where an image's PSNR-RGB falls (or stays) as its rate rises.

    One row per (codec, image, consecutive pair of its decodable points with distinct byte
    counts) where the PSNR at the higher rate is not above the lower one: columns
    :data:`DROP_COLUMNS` (bpp and PSNR-RGB in dB at both points). Such an image curve is not
    invertible, so it has no per-image BD-rate. Lossless points (infinite PSNR) never count.
    """
    out = []
    for (codec, image), _ in rows.groupby(["codec", "image"], sort=False):
        bpp, psnr = image_curve(rows, codec, image)
        finite = np.isfinite(psnr)
        bpp, psnr = bpp[finite], psnr[finite]
        for i in np.flatnonzero(np.diff(psnr) <= 0):
            out.append(
                {
                    "codec": codec,
                    "image": image,
                    "bpp_from": float(bpp[i]),
                    "bpp_to": float(bpp[i + 1]),
                    "psnr_from": float(psnr[i]),
                    "psnr_to": float(psnr[i + 1]),
                }
            )
    return pd.DataFrame(out, columns=list(DROP_COLUMNS))


def short_streams(rows: pd.DataFrame) -> pd.DataFrame:
    """Targets a progressive codec's whole stream did not reach, per codec.

    Columns: codec, targets (sorted target bpps where, for some image, the stream ended before
    the budget, so the point decodes the complete stream), images (how many images),
    max_stream_bpp (the largest whole-stream rate among them). Rate-ladder rows (a ``setting``)
    are never counted: a ladder's encoding fits its budget by construction.
    """
    columns = ["codec", "targets", "images", "max_stream_bpp"]
    if rows.empty or "stream_bytes" not in rows:
        return pd.DataFrame(columns=columns)
    progressive = rows["setting"].isna() if "setting" in rows else True
    short = rows[progressive & rows["decodable"] & (rows["stream_bytes"] < rows["budget_bytes"])]
    out = []
    for codec, group in short.groupby("codec", sort=False):
        stream_bpp = 8 * group["stream_bytes"] / (group["height"] * group["width"])
        out.append(
            {
                "codec": codec,
                "targets": sorted(group["target_bpp"].unique().tolist()),
                "images": int(group["image"].nunique()),
                "max_stream_bpp": float(stream_bpp.max()),
            }
        )
    return pd.DataFrame(out, columns=columns)
