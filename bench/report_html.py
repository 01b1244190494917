"""``report.html``: the interactive report of a run, opened from disk with no network.

The page is one HTML file with its data, script and style inlined; beside it in the run
directory sit ``plotly.min.js`` (Plotly's offline bundle, written once) and the viewer's
lossless reconstructions (``viewer/``, see :mod:`bench.viewer`). Nothing is fetched from
elsewhere. It shows the R-D curves (PSNR-RGB, PSNR-Y, MS-SSIM against bpp; aggregated or any
one image; codecs toggle in the legend), the BD tables, the codec and time tables, the
provenance and the progressive viewer (codecs side by side at one budget chosen with a slider,
flip or split against the original, 1:1 or 2x nearest-neighbour zoom with synchronised
panning).
"""

from __future__ import annotations

import html
import json
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from bench.curves import METRICS
from bench.store import dumps
from bench.viewer import original_file

PLOTLY_FILE = "plotly.min.js"
REPORT_HTML = "report.html"
#: The time table's decode column (the codec table repeats it).
DECODE_TIME = "decode s (median per point)"
#: What the codec table's FLOPs columns count (Markdown-style; both reports print it).
FLOPS_NOTE = (
    "`encoder FLOPs/px`, `decoder FLOPs/px`: FLOPs of the networks each side runs, counted by "
    "`torch.utils.flop_counter` on a 256x256 input (2 per multiply-accumulate of convolutions "
    "and matrix products; element-wise work and entropy coding not counted) per pixel of that "
    "input; `-`: not known (analytic codecs, runs from before the count)."
)
METRIC_LABELS = {
    "psnr_rgb": "PSNR-RGB [dB]",
    "psnr_y": "PSNR-Y [dB]",
    "ms_ssim": "MS-SSIM",
    "ms_ssim_db": "MS-SSIM [dB] (-10 log10(1-x))",
}


def write_plotly(directory: Path) -> str:
    """Write Plotly's offline bundle into ``directory`` unless an identical one is there;
    return its plotly.js version."""
    from plotly.offline import get_plotlyjs, get_plotlyjs_version

    path = directory / PLOTLY_FILE
    script = get_plotlyjs().encode()
    if not path.exists() or path.read_bytes() != script:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(script)
        tmp.replace(path)
    return get_plotlyjs_version()


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, str):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _point(row: Any, n_images: int) -> dict:
    ms_ssim = _number(row["ms_ssim"])
    return {
        "target": float(row["target_bpp"]),
        "bpp": float(row["bpp"]),
        **{m: _number(row[m]) for m in METRICS},
        "ms_ssim_db": None
        if ms_ssim is None or ms_ssim >= 1
        else round(-10 * math.log10(1 - ms_ssim), 6),
        "n_images": n_images,
    }


def _curves(rows: pd.DataFrame, curves: pd.DataFrame, labels: list[str]) -> dict:
    """Plot data: ``{"aggregated" | image: {codec: [point, ...]}}`` sorted by target bpp."""
    out: dict[str, dict[str, list]] = {"aggregated": {}}
    for label in labels:
        mine = curves[curves["codec"] == label].sort_values("target_bpp")
        out["aggregated"][label] = [_point(r, int(r["n_images"])) for _, r in mine.iterrows()]
    for image in sorted(rows["image"].unique()) if len(rows) else []:
        out[image] = {}
        for label in labels:
            mine = rows[(rows["codec"] == label) & (rows["image"] == image) & rows["decodable"]]
            out[image][label] = [_point(r, 1) for _, r in mine.sort_values("target_bpp").iterrows()]
    return out


def _viewer(directory: Path, rows: pd.DataFrame, labels: list[str], targets: list[float]) -> dict:
    """Viewer data for every image with a saved reconstruction: files, rates and scores per
    (image, codec, target) in ``cells[image][codec][target index]`` (``None``: no row)."""
    if "recon_file" not in rows:
        return {"images": [], "codecs": labels, "targets": targets, "cells": {}}
    saved = rows[rows["recon_file"].notna()]
    images = [i for i in sorted(rows["image"].unique()) if i in set(saved["image"])]
    info, cells = [], {}
    for image in images:
        mine = rows[rows["image"] == image]
        first = mine.iloc[0]
        original = original_file(image)
        info.append(
            {
                "name": image,
                "width": int(first["width"]),
                "height": int(first["height"]),
                "original": original if (directory / original).exists() else None,
            }
        )
        cells[image] = {}
        for label in labels:
            ours = mine[mine["codec"] == label]
            by_target = {float(r["target_bpp"]): r for _, r in ours.iterrows()}
            cells[image][label] = [_cell(directory, by_target.get(t)) for t in targets]
    return {"images": info, "codecs": labels, "targets": targets, "cells": cells}


def _cell(directory: Path, row: Any) -> dict | None:
    if row is None:
        return None
    recon = row.get("recon_file")
    recon = recon if isinstance(recon, str) and (directory / recon).exists() else None
    setting = row.get("setting")
    return {
        "file": recon,
        "sha256": row.get("recon_sha256") if recon else None,
        "decodable": bool(row["decodable"]),
        "bpp": float(row["bpp"]),
        "bytes": int(row["bytes"]),
        "psnr_rgb": _number(row["psnr_rgb"]),
        "psnr_y": _number(row["psnr_y"]),
        "ms_ssim": _number(row["ms_ssim"]),
        "setting": None if setting is None or setting != setting else str(setting),
        "note": row.get("note") if isinstance(row.get("note"), str) else "",
    }


def _table(records: list[dict], columns: dict[str, str], table_id: str = "") -> str:
    """An HTML table of ``records`` with ``columns`` (key -> header); cells are escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in columns.values())
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r.get(k, '')))}</td>" for k in columns) + "</tr>"
        for r in records
    )
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _codec_table(codecs: list[dict]) -> str:
    """The codec table, with :data:`FLOPS_NOTE` below it when some codec states its FLOPs."""
    if not codecs:
        return ""
    table = _table(codecs, {k: k for k in codecs[0]}, "codec-table")
    if any(r.get("encoder FLOPs/px", "-") != "-" for r in codecs):
        table += f'<p class="small">{_inline(FLOPS_NOTE)}</p>'
    return table


def _fmt(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _inline(text: str) -> str:
    """Escape ``text`` for HTML, with Markdown's `code` and **bold** as <code> and <strong>."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def _left_out_html(table: pd.DataFrame) -> str:
    items = []
    for _, row in table.iterrows():
        for image, reason in row["images_left_out"]:
            items.append(
                f"<li><code>{html.escape(row['codec'])}</code>: {html.escape(image)} left out: "
                f"{_inline(reason)}</li>"
            )
    if not items:
        return ""
    return (
        '<p class="small">Images without a per-image BD-rate (not in the mean):</p>'
        f'<ul class="left-out">{"".join(items)}</ul>'
    )


def _drops_html(drops: pd.DataFrame) -> str:
    if drops.empty:
        return ""
    records = [
        {
            "codec": r["codec"],
            "image": r["image"],
            "bpp": f"{r['bpp_from']:.3f} -> {r['bpp_to']:.3f}",
            "psnr": f"{r['psnr_from']:.2f} -> {r['psnr_to']:.2f}",
        }
        for _, r in drops.iterrows()
    ]
    columns = {"codec": "codec", "image": "image", "bpp": "bpp", "psnr": "PSNR-RGB dB"}
    return (
        '<h3>PSNR falling as the rate rises</h3><p class="small">At these steps a codec\'s '
        "PSNR-RGB on an image does not rise with its rate: that image's curve is not "
        "invertible, so it has no per-image BD-rate against any anchor.</p>"
        + _table(records, columns, "psnr-drops")
    )


def _bd_html(tables: list[pd.DataFrame], anchors: list[str], notes: dict[str, str], method: str):
    out = []
    for table, anchor in zip(tables, anchors, strict=True):
        out.append(f"<h3>against <code>{html.escape(anchor)}</code> (PSNR-RGB, {method})</h3>")
        if anchor in notes:
            out.append(f"<p>{html.escape(notes[anchor])}</p>")
            continue
        if table.empty:
            out.append("<p>No other codec has an aggregated curve to compare.</p>")
            continue
        records = [
            {
                "codec": r["codec"],
                "bd_rate": _fmt(r["bd_rate_pct"], 2),
                "bd_psnr": _fmt(r["bd_psnr_db"], 3),
                "overlap": f"{r['overlap_psnr_db'][0]:.2f}-{r['overlap_psnr_db'][1]:.2f} dB"
                if isinstance(r["overlap_psnr_db"], tuple | list)
                else "none",
                "per_image": _fmt(r["bd_rate_per_image_mean_pct"], 2),
                "images": f"{r['images_with_bd']}/{r['images']}",
                "note": r["reason"] or (f"warning: {r['warning']}" if r["warning"] else ""),
            }
            for _, r in table.iterrows()
        ]
        columns = {
            "codec": "codec",
            "bd_rate": "BD-rate %",
            "bd_psnr": "BD-PSNR dB",
            "overlap": "overlap",
            "per_image": "mean per-image BD-rate %",
            "images": "images",
            "note": "note",
        }
        out.append(_table(records, columns, f"bd-{anchor}"))
        out.append(_left_out_html(table))
    return "\n".join(out)


def render_html(
    directory: Path,
    record: dict,
    rows: pd.DataFrame,
    curves: pd.DataFrame,
    bd: tuple[list[pd.DataFrame], list[str], dict[str, str], str],
    codec_rows: list[dict],
    timing: pd.DataFrame,
    extras: dict,
    name: str = REPORT_HTML,
) -> Path:
    """Write ``name`` (``report.html`` or a variant) and ``plotly.min.js`` into the run
    ``directory``; return the page's path.

    ``bd``: (BD tables, their anchors, anchor -> why it has no table, method); ``codec_rows``:
    the codec table as the Markdown report shows it; ``timing``: the time table, one row per
    codec, columns as displayed (``codec`` and :data:`DECODE_TIME` among them). ``extras``:
    ``caveat`` (Markdown-style text, may be empty), ``drops`` (:func:`bench.curves.psnr_drops`),
    ``load`` (lines on the machine load), ``markdown`` (the Markdown report's file name).
    """
    plotly_version = write_plotly(directory)
    config = record["config"]
    labels = [c["label"] for c in config["codecs"]]
    targets = [float(t) for t in config["bpp"]]
    decode = dict(zip(timing["codec"], timing[DECODE_TIME], strict=True)) if len(timing) else {}
    codecs = [
        {
            **r,
            "source": r["source"].replace("`", ""),
            "decode s (median)": _fmt(decode.get(r["codec"], math.nan), 4),
        }
        for r in codec_rows
    ]
    data = {
        "run": directory.name,
        "metrics": METRIC_LABELS,
        "kinds": {r["codec"]: r["kind"] for r in codec_rows},
        "curves": _curves(rows, curves, labels),
        "viewer": _viewer(directory, rows, labels, targets),
    }
    timing_records = [
        {k: _fmt(v, 3) if isinstance(v, float) else v for k, v in r.items()}
        for r in timing.to_dict("records")
    ]
    attempt = record["attempts"][-1]
    git = attempt.get("git", {})
    summary = (
        f"{record['dataset']['name']}, {len(record['dataset']['images'])} images, "
        f"target bpp {', '.join(f'{b:g}' for b in targets)}; status {record['status']}; "
        f"git {git.get('commit') or 'unknown'}{' (dirty)' if git.get('dirty') else ''}; "
        f"{attempt['timestamp']}; {attempt['cpu']} ({attempt['cpu_count']} cpus), "
        f"jobs {config['jobs']}, threads {config['threads']}"
    )
    assets = resources.files("bench") / "report_assets"
    page = (assets / "report.html").read_text()
    replacements = {
        "TITLE": html.escape(f"bench report: {directory.name}"),
        "SUMMARY": html.escape(summary),
        "PLOTLY_FILE": PLOTLY_FILE,
        "PLOTLY_VERSION": html.escape(plotly_version),
        "STYLE": (assets / "report.css").read_text(),
        "SCRIPT": (assets / "report.js").read_text(),
        "DATA": dumps(data).replace("</", "<\\/"),
        "BD_TABLES": _bd_html(*bd) + _drops_html(extras["drops"]),
        "CAVEAT": f'<p id="caveat">{_inline(extras["caveat"])}</p>' if extras["caveat"] else "",
        "MARKDOWN": html.escape(extras["markdown"]),
        "LOAD": "".join(f'<p class="small load">{html.escape(t)}</p>' for t in extras["load"])
        or '<p class="small load">Machine load: not recorded (an older run).</p>',
        "CODEC_TABLE": _codec_table(codecs),
        "TIME_TABLE": _table(timing_records, {k: k for k in timing.columns}, "time-table")
        if len(timing)
        else "<p>No unit finished.</p>",
        "PROVENANCE": html.escape(json.dumps(record, indent=2)),
    }
    page = re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: replacements[m.group(1)], page)
    path = directory / name
    path.write_text(page)
    return path
