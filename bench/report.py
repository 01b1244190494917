"""Rendering a run directory into report files, from the stored rows alone.

Writes into the run directory: ``report.md`` (Markdown), ``rd.png`` (R-D plot), ``curves.csv``
(aggregated points), ``bdrate.csv`` (Bjontegaard table against the anchor), one
CompressAI-compatible ``<codec>.json`` per codec, readable by ``python -m compressai.utils.plot``,
and ``report.html`` with ``plotly.min.js`` (interactive plots and the progressive viewer,
:mod:`bench.report_html`).

A report with other anchors or another BD method than the run's own (``bench report RUN
--anchor X``) is a *variant*: ``report-anchor-X.md``, ``report-anchor-X.html`` and
``bdrate-anchor-X.csv`` beside the run's own files, which stay as they are
(:func:`variant_suffix`).

What a number leaves out is said beside it: images without a per-image BD-rate with the reason,
every place a codec's PSNR falls as its rate rises, BD-rates from fewer than 4 points per curve,
targets a whole stream did not reach; and the learned codecs' "not the papers' weights" caveat,
with the base model's gap to the published curve, heads the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bench.curves import aggregate, bd_csv, bd_table, psnr_drops, rows_frame, short_streams
from bench.provenance import describe_load
from bench.published import MBT2018_MEAN_KODAK
from bench.report_html import DECODE_TIME, FLOPS_NOTE, render_html
from bench.store import CODECS, RUN, RunStore, dumps
from bench.viewer import safe_filename

#: Time table columns: medians say "median", sums over a codec's units say "sum".
TIME_COLUMNS = {
    "codec": "codec",
    "encode_s": "encode s (median per image)",
    "decode_s": DECODE_TIME,
    "wall_s": "unit wall s (sum)",
    "codec_s": "in codec s (sum)",
    "metrics_s": "metrics s (sum)",
    "viewer_s": "viewer s (sum)",
    "overhead_s": "overhead s (sum)",
}
TIME_CAPTION = (
    "Seconds, per codec. `encode s`: median over images of one whole encode; `decode s`: median "
    "over points of one decode (after warm-up; each the median of its timed calls: the scored "
    "decode itself, alone when it takes at least 0.25 s, else repeated until two calls agree "
    "within 10 %, at most the run's repeats; rows.jsonl has `decode_calls`). The "
    "`(sum)` columns add up all the codec's (codec, image) units: the workers' wall time and "
    "its split into the codec's own calls, metrics, saving the viewer's reconstructions "
    "(report.html) and the rest (image loading, cutting, messaging). Timings depend on the "
    "machine's load, stated below."
)
KIND_LABELS = {"progressive": "progressive", "rate-ladder": "non-progressive anchor (rate ladder)"}


def compressai_json(label: str, description: str, points: pd.DataFrame) -> dict:
    """CompressAI's results format: ``{"name", "description", "results": {metric: [...]}}``.

    Points sorted by bpp. ``ms-ssim-rgb`` is the raw MS-SSIM (CompressAI converts to dB when
    plotting); times are seconds per image (decode: per point; encode: one full encode).
    """
    points = points.sort_values("bpp")

    def column(name: str) -> list:
        return [None if isinstance(v, float) and math.isnan(v) else v for v in points[name]]

    return {
        "name": label,
        "description": description,
        "results": {
            "bpp": column("bpp"),
            "psnr-rgb": column("psnr_rgb"),
            "psnr-y": column("psnr_y"),
            "ms-ssim-rgb": column("ms_ssim"),
            "decoding_time": column("decode_s"),
            "encoding_time": column("encode_s"),
            "target_bpp": column("target_bpp"),
        },
    }


def _plot(curves: pd.DataFrame, kinds: dict[str, str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for codec, points in curves.groupby("codec", sort=False):
        style = "--" if kinds.get(codec) == "rate-ladder" else "-"
        left.plot(points["bpp"], points["psnr_rgb"], style, marker="o", ms=3, label=codec)
        msssim = points["ms_ssim"]
        if msssim.notna().any():
            right.plot(
                points["bpp"],
                -10 * (1 - msssim).apply(math.log10),
                style,
                marker="o",
                ms=3,
                label=codec,
            )
    left.set(xlabel="bits per pixel", ylabel="PSNR-RGB [dB]", title=title)
    right.set(xlabel="bits per pixel", ylabel="MS-SSIM-RGB [dB]", title="MS-SSIM (-10 log10(1-x))")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value: object, digits: int = 3) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}f}"
    return str(value)


def _table(frame: pd.DataFrame, columns: dict[str, str], digits: dict[str, int]) -> str:
    """A Markdown table of ``frame``'s ``columns`` (key -> header); a ``|`` inside a cell (e.g.
    hc's description, ``y3 | y4``) is escaped so that it does not split the cell."""
    header = "| " + " | ".join(columns.values()) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    lines = [header, rule]
    for _, row in frame.iterrows():
        cells = [_fmt(row[c], digits.get(c, 3)).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _timing(store: RunStore, rows: pd.DataFrame) -> pd.DataFrame:
    units = pd.DataFrame(store.units())
    if units.empty:
        return units
    units = units.drop_duplicates(subset=["codec", "image"], keep="last")
    out = []
    for codec, group in units.groupby("codec", sort=False):
        decode = rows[(rows["codec"] == codec) & rows["decodable"]]["decode_s"]
        wall, inside, metrics = (
            group["wall_s"].sum(),
            group["codec_s"].sum(),
            group["metrics_s"].sum(),
        )
        saving = group["save_s"].sum() if "save_s" in group else 0.0
        out.append(
            {
                "codec": codec,
                "encode_s": float(group["encode_s"].median()),
                "decode_s": float(decode.median()) if len(decode) else math.nan,
                "wall_s": float(wall),
                "codec_s": float(inside),
                "metrics_s": float(metrics),
                "viewer_s": float(saving),
                "overhead_s": float(wall - inside - metrics - saving),
            }
        )
    return pd.DataFrame(out)


def run_anchors(record: dict) -> list[str]:
    """The anchors a run's own report uses: those recorded by ``bench run``, else its first
    codec."""
    return list(record.get("anchors") or [c["label"] for c in record["config"]["codecs"]][:1])


def variant_suffix(record: dict, anchors: Sequence[str], method: str) -> str:
    """File-name suffix of a report with ``anchors`` and ``method``: ``""`` for the run's own
    report (its anchors, or none given, and pchip), else e.g. ``"-anchor-spiht"``,
    ``"-anchor-a-b-cubic"`` or ``"-cubic"``."""
    parts = []
    if anchors and list(anchors) != run_anchors(record):
        parts.append("anchor-" + "-".join(safe_filename(a) for a in anchors))
    if method != "pchip":
        parts.append(method)
    return "".join(f"-{p}" for p in parts)


def render(
    directory: str | Path, anchors: Sequence[str] = (), method: str = "pchip", suffix: str = ""
) -> Path:
    """(Re)write every report file of a run from its stored rows; return the report path.

    ``anchors``: codecs to measure BD-rates against (default: the run's, else its first codec);
    the report has one BD table per anchor and ``bdrate.csv`` holds them all. ``suffix`` (from
    :func:`variant_suffix`) names a variant: ``report<suffix>.md``, ``report<suffix>.html`` and
    ``bdrate<suffix>.csv``; the anchor-independent files (curves, JSON, ``rd.png``) are the
    same for every variant. The report is written whatever is missing (no rows, no aggregated
    point, an anchor that failed): it says what is missing and why. ``ValueError`` only for an
    anchor that is not a codec of the run.
    """
    store = RunStore(directory)
    record = store.read_json(RUN)
    infos = store.read_json(CODECS) if (store.dir / CODECS).exists() else {}
    rows = rows_frame(store.rows())
    labels = [c["label"] for c in record["config"]["codecs"]]
    n_images = len(record["dataset"]["images"])
    curves = aggregate(rows, n_images)
    anchors = list(anchors) or run_anchors(record)
    for anchor in anchors:
        if anchor not in labels:
            raise ValueError(f"anchor {anchor!r} is not a codec of this run ({', '.join(labels)})")
    curves.to_csv(store.dir / "curves.csv", index=False)
    tables = [bd_table(rows, curves, anchor, method) for anchor in anchors]
    bd_csv(tables).to_csv(store.dir / f"bdrate{suffix}.csv", index=False)
    for label, points in curves.groupby("codec", sort=False):
        info = infos.get(label, {})
        (store.dir / f"{safe_filename(label)}.json").write_text(
            dumps(compressai_json(label, info.get("description", ""), points), indent=2) + "\n"
        )
    kinds = {label: info.get("kind", "") for label, info in infos.items()}
    if not curves.empty:
        _plot(
            curves, kinds, store.dir / "rd.png", f"{record['dataset']['name']} ({n_images} images)"
        )
    codec_rows = _codec_rows(record["config"], infos)
    no_table = {
        a: f"No BD-rates: the anchor `{a}` has no aggregated curve ({_missing(store, rows, a)})."
        for a in anchors
        if a not in set(curves["codec"])
    }
    html_name = f"report{suffix}.html"
    render_html(
        store.dir,
        record,
        rows,
        curves,
        (tables, anchors, no_table, method),
        codec_rows,
        _timing(store, rows).rename(columns=TIME_COLUMNS),
        extras={
            "caveat": learned_caveat(record["config"], infos),
            "drops": psnr_drops(rows),
            "load": _load_lines(record),
            "markdown": f"report{suffix}.md",
        },
        name=html_name,
    )
    path = store.dir / f"report{suffix}.md"
    path.write_text(
        _markdown(
            store, record, infos, rows, curves, (tables, anchors, method), codec_rows, html_name
        )
    )
    return path


def learned_caveat(config: dict, infos: dict) -> str:
    """The caveat on codecs running this project's own (bundled) learned weights, with their
    base model's gap to the published mbt2018-mean curve; ``""`` when no codec has any."""
    ours = {}
    for label in [c["label"] for c in config["codecs"]]:
        weights = (infos.get(label) or {}).get("weights") or {}
        if weights.get("source") == "bundled":
            ours[label] = weights.get("base_kodak")
    if not ours:
        return ""
    names = ", ".join(f"`{label}`" for label in ours)
    text = (
        f"**Not the papers' weights.** {names} run on small weights this project trained itself "
        "(`bench train`), not the papers' or CompressAI's models: their R-D figures are far "
        "below the published ones and compare codecs on the same weak base."
    )
    points = {(p["bpp"], p["psnr_rgb"], p.get("num_images")) for p in ours.values() if p}
    for bpp, psnr, images in sorted(points):
        gap = MBT2018_MEAN_KODAK.gap_db(bpp, psnr)
        using = ", ".join(f"`{label}`" for label, p in ours.items() if p and p["bpp"] == bpp)
        text += (
            f" The base model of {using} codes Kodak ({images or '?'} images) at {bpp:.3f} bpp / "
            f"{psnr:.2f} dB, {gap.describe()} on CompressAI's published curve."
        )
    return text


def _load_lines(record: dict) -> list[str]:
    """One line per attempt that recorded the machine load (``run.json`` ``load``)."""
    lines = []
    attempts = record["attempts"]
    for number, attempt in enumerate(attempts, 1):
        if "load" not in attempt:
            continue
        where = f"in attempt {number}" if len(attempts) > 1 else "during the run"
        executor = record["config"].get("executor", "local")
        described = describe_load(attempt["load"], attempt.get("jobs", 1), executor)
        lines.append(f"Machine load {where}: {described}.")
    return lines


def _left_out_lines(table: pd.DataFrame) -> list[str]:
    """Markdown bullets naming each image left out of a codec's per-image BD-rates."""
    out = []
    for _, row in table.iterrows():
        for image, reason in row["images_left_out"]:
            out.append(f"- `{row['codec']}`: {image} left out: {reason}")
    return out


def _drops_section(drops: pd.DataFrame) -> list[str]:
    """The section listing where a codec's PSNR falls as its rate rises."""
    if drops.empty:
        return []
    shown = drops.assign(
        bpp=[
            f"{a:.3f} -> {b:.3f}" for a, b in zip(drops["bpp_from"], drops["bpp_to"], strict=True)
        ],
        psnr=[
            f"{a:.2f} -> {b:.2f}" for a, b in zip(drops["psnr_from"], drops["psnr_to"], strict=True)
        ],
    )
    return [
        "## PSNR falling as the rate rises",
        "",
        "At these steps a codec's PSNR-RGB on an image does not rise with its rate: that "
        "image's curve is not invertible, so it has no per-image BD-rate against any anchor "
        "(and an aggregated curve that falls has no BD-rate at all).",
        "",
        _table(shown, {"codec": "codec", "image": "image", "bpp": "bpp", "psnr": "PSNR dB"}, {}),
        "",
    ]


def _bd_section(table: pd.DataFrame, anchor: str, method: str) -> list[str]:
    out = [f"## BD-rate against `{anchor}` (PSNR-RGB, {method})", ""]
    if table.empty:
        return [*out, "No other codec has an aggregated curve to compare.", ""]
    shown = table.assign(
        overlap=table["overlap_psnr_db"].map(
            lambda o: f"{o[0]:.2f}-{o[1]:.2f} dB" if isinstance(o, tuple | list) else "none"
        ),
        images_shown=[
            f"{a}/{b}" for a, b in zip(table["images_with_bd"], table["images"], strict=True)
        ],
        note=[
            r or (f"warning: {w}" if w else "")
            for r, w in zip(table["reason"], table["warning"], strict=True)
        ],
    )
    columns = {
        "codec": "codec",
        "bd_rate_pct": "BD-rate %",
        "bd_psnr_db": "BD-PSNR dB",
        "overlap": "overlap",
        "bd_rate_per_image_mean_pct": "mean per-image BD-rate %",
        "images_shown": "images",
        "note": "note",
    }
    out += [_table(shown, columns, {"bd_psnr_db": 3}), ""]
    left_out = _left_out_lines(table)
    if left_out:
        out += ["Images without a per-image BD-rate (not in the mean):", "", *left_out, ""]
    return out


def _added_parameters(info: dict) -> str:
    """``+N (+x %)`` of the parameters a codec adds over its ``"base"`` group, else ``-``."""
    groups = info.get("parameter_groups") or {}
    if "base" not in groups:
        return "-"
    added = {k: v for k, v in groups.items() if k != "base"}
    total = sum(added.values())
    parts = ", ".join(f"{k} {v:,}" for k, v in added.items())
    share = 100.0 * total / groups["base"] if groups["base"] else math.nan
    return f"+{total:,} (+{share:.3f} %: {parts})" if added else "+0"


def _base_gap(weights: dict) -> str:
    """The base model's export-time Kodak point against the published mbt2018-mean curve."""
    point = weights.get("base_kodak")
    if not point:
        return "-"
    gap = MBT2018_MEAN_KODAK.gap_db(point["bpp"], point["psnr_rgb"])
    images = point.get("num_images")
    extra = ", extrapolated" if gap.extrapolated else ""
    return (
        f"{-gap.gap_db:+.2f} dB at {gap.bpp:.3f} bpp "
        f"({images if images is not None else '?'} img{extra})"
    )


def _flops_per_pixel(info: dict, side: str) -> str:
    """A codec's ``side`` (``"encoder"``/``"decoder"``) FLOPs per pixel, ``-`` when unknown
    (analytic codecs, runs from before the field existed)."""
    value = (info.get("flops_per_pixel") or {}).get(side)
    return f"{value:,.0f}" if value is not None else "-"


def _codec_rows(config: dict, infos: dict) -> list[dict]:
    """The codec table, one row per configured codec (Markdown and HTML reports)."""
    codec_rows = []
    for label in [c["label"] for c in config["codecs"]]:
        info = infos.get(label, {})
        weights = info.get("weights") or {}
        codec_rows.append(
            {
                "codec": label,
                "kind": KIND_LABELS.get(info.get("kind", ""), "?"),
                "version": info.get("version", "?"),
                "parameters": f"{info['num_parameters']:,}" if "num_parameters" in info else "n/a",
                "added over base": _added_parameters(info),
                "encoder FLOPs/px": _flops_per_pixel(info, "encoder"),
                "decoder FLOPs/px": _flops_per_pixel(info, "decoder"),
                "weights": f"{info.get('weights_bytes', 0) / 1e6:.2f} MB" if weights else "none",
                "source": f"{weights.get('source')} `{weights.get('sha256', '')[:12]}`"
                if weights
                else "-",
                "base vs mbt2018-mean": _base_gap(weights),
                "device": info.get("device", "?"),
                "description": info.get("description", "(did not run)"),
            }
        )
    return codec_rows


def _markdown(store, record, infos, rows, curves, bd, codec_rows, html_name) -> str:
    tables, anchors, method = bd
    config, attempt = record["config"], record["attempts"][-1]
    git = attempt.get("git", {})
    out = [
        f"# bench report: {store.dir.name}",
        "",
        f"- dataset: **{record['dataset']['name']}**, {len(record['dataset']['images'])} images "
        f"(manifest sha256 `{record['dataset']['manifest_sha256'][:16]}`)",
        f"- target bpp: {', '.join(f'{b:g}' for b in config['bpp'])}; rate = 8 x bytes handed "
        "to the decoder / (H x W)",
        f"- status: {record['status']}; git {git.get('commit') or 'unknown'}"
        f"{' (dirty)' if git.get('dirty') else ''}; {attempt['timestamp']}",
        f"- host: {attempt['cpu']} ({attempt['cpu_count']} cpus), {attempt['platform']}, "
        f"python {attempt['python']}; jobs {config['jobs']}, threads {config['threads']}, "
        f"timing: median of at most {config['repeats']} timed calls (policy in units.jsonl)",
        "",
        f"Interactive report with the progressive viewer: [{html_name}]({html_name}) "
        "(opens from disk, no network).",
        "",
    ]
    caveat = learned_caveat(config, infos)
    if caveat:
        out += [caveat, ""]
    out += ["![R-D curves](rd.png)", ""]
    for table, anchor in zip(tables, anchors, strict=True):
        if anchor not in set(curves["codec"]):
            out += [
                f"## BD-rate against `{anchor}`",
                "",
                f"No BD-rates: the anchor `{anchor}` has no aggregated curve "
                f"({_missing(store, rows, anchor)}).",
                "",
            ]
            continue
        out += _bd_section(table, anchor, method)
    out.append(
        "Negative BD-rate: fewer bits than the anchor for the same PSNR. `n/a`: undefined (see "
        "note); never extrapolated beyond the overlap of the two curves. `warning: few points`: "
        "fewer than 4 measured points of a curve lie in the overlap, so the figure is rough."
    )
    drops = _drops_section(psnr_drops(rows))
    out += ["", *drops[:-1]] if drops else []
    out += ["", "## Codecs", ""]
    out.append(_table(pd.DataFrame(codec_rows), {k: k for k in codec_rows[0]}, {}))
    if any((infos.get(r["codec"], {}).get("weights") or {}).get("base_kodak") for r in codec_rows):
        out.append(
            "\n`base vs mbt2018-mean`: the learned base model's own (non-progressive) mean Kodak "
            "point, measured when its weights were exported, minus CompressAI's published "
            f"mbt2018-mean PSNR-RGB at the same bpp ({MBT2018_MEAN_KODAK.source}; linear in "
            "log-bpp between its points). Negative: below the published model."
        )
    if any(r["encoder FLOPs/px"] != "-" for r in codec_rows):
        out.append(f"\n{FLOPS_NOTE}")
    for label in [c["label"] for c in config["codecs"]]:
        info = infos.get(label, {})
        if info:
            out.append(
                f"\n`{label}` parameters: `{dumps(info.get('parameters', {}))}`"
                + (f"; external: `{dumps(info['external'])}`" if info.get("external") else "")
            )
            if info.get("weights"):
                w = info["weights"]
                out.append(
                    f"`{label}` weights ({w['source']}, sha256 `{w['sha256']}`): {w['description']}"
                )
    timing = _timing(store, rows)
    if not timing.empty:
        out += ["", "## Time", "", TIME_CAPTION, ""]
        out.append(_table(timing, TIME_COLUMNS, {}))
        out.append(
            f"\nRun wall time: {sum(a.get('wall_s', 0) for a in record['attempts']):.1f} s "
            f"over {len(record['attempts'])} attempt(s)."
        )
        load = _load_lines(record)
        out += ["", *load] if load else ["", "Machine load: not recorded (an older run)."]
    out += ["", "## Mean R-D points", ""]
    for label in [c["label"] for c in config["codecs"]]:
        points = curves[curves["codec"] == label]
        if points.empty:
            out += [f"### {label}", "", f"No aggregated point: {_missing(store, rows, label)}.", ""]
            continue
        out += [
            f"### {label}",
            "",
            _table(
                points,
                {
                    "target_bpp": "target bpp",
                    "bpp": "bpp",
                    "psnr_rgb": "PSNR-RGB",
                    "psnr_y": "PSNR-Y",
                    "ms_ssim": "MS-SSIM",
                    "decode_s": "decode s",
                },
                {
                    "target_bpp": 2,
                    "bpp": 4,
                    "psnr_rgb": 3,
                    "psnr_y": 3,
                    "ms_ssim": 5,
                    "decode_s": 4,
                },
            ),
            "",
        ]
    out += _notes(store, rows)
    return "\n".join(out) + "\n"


def _missing(store: RunStore, rows: pd.DataFrame, label: str) -> str:
    """Why codec ``label`` has no aggregated point: failed units, undecodable points, no rows."""
    failed = [f for f in store.failures() if f["codec"] == label]
    mine = rows[rows["codec"] == label]
    reasons = []
    if failed:
        reasons.append(f"{len(failed)} unit(s) failed, e.g. {failed[-1]['error']}")
    if len(mine):
        undecodable = int((~mine["decodable"].astype(bool)).sum())
        reasons.append(
            f"{undecodable} of its {len(mine)} points undecodable (prefix shorter than the "
            "header or no ladder setting fits), and every target needs all images decoded"
        )
    elif not failed:
        reasons.append("no result rows")
    return "; ".join(reasons)


def _notes(store: RunStore, rows: pd.DataFrame) -> list[str]:
    out = ["## Notes and failures", ""]
    for _, short in short_streams(rows).iterrows():
        targets = ", ".join(f"{t:g}" for t in short["targets"])
        out.append(
            f"- `{short['codec']}`: the whole stream is shorter than the budget at target(s) "
            f"{targets} bpp on {short['images']} image(s) (whole streams up to "
            f"{short['max_stream_bpp']:.3f} bpp): those points decode the complete stream, and "
            "a target whose mean rate does not rise has no aggregated point."
        )
    undecodable = rows[~rows["decodable"]].groupby("codec").size()
    for codec, count in undecodable.items():
        out.append(
            f"- `{codec}`: {count} undecodable point(s) (prefix shorter than the header or "
            "no ladder setting fits); their targets have no aggregated point."
        )
    for note in sorted(set(rows["note"].dropna()) - {""}):
        out.append(f"- {note} ({int((rows['note'] == note).sum())} rows)")
    for unit in store.units():
        for note in unit.get("notes", []):
            out.append(f"- `{unit['codec']}` on {unit['image']}: {note}")
    done = {(c, i) for c, i in rows[["codec", "image"]].itertuples(index=False)}
    for failure in store.failures():
        if (failure["codec"], failure["image"]) not in done:
            out.append(f"- FAILED `{failure['codec']}` on {failure['image']}: {failure['error']}")
    if len(out) == 2:
        out.append("None.")
    return out
