"""The ``bench`` command line.

Exit codes (for CI): 0 success; 1 the command ran but found a problem (failed units, a failed
conformance check, a regression in ``compare`` or ``regress``, a plugin that did not load
with ``--strict``);
2 bad usage; 3 bad input (unknown codec or dataset, checksum mismatch, missing run directory);
130 interrupted (a run keeps what it measured: continue it with ``--resume``).
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench import datasets
from bench.registry import Registry, load_registry

EXIT_PROBLEM, EXIT_USAGE, EXIT_INPUT, EXIT_INTERRUPTED = 1, 2, 3, 130

app = typer.Typer(
    help="Compare progressive image codecs from real truncated bitstreams: R-D curves, BD-rates, "
    "model size and decode time.\n\nExit codes: 0 ok, 1 problem found (failed units, failed "
    "check, regression), 2 usage, 3 bad input, 130 interrupted.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: no type column (<bool>, <list[Path]>), no markup eaten
)
datasets_app = typer.Typer(
    help="List, download, import and verify datasets.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(datasets_app, name="datasets")

out = Console()
err = Console(stderr=True)


class _State:
    """The plugin options of this invocation and the registry loaded with them (once)."""

    plugin_files: tuple[str, ...] = ()
    entry_points: bool = True
    registry: Registry | None = None


def _fail(message: str, code: int = EXIT_INPUT) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(message)}")
    return typer.Exit(code)


@app.callback()
def main_options(
    plugin: Annotated[
        Optional[list[Path]],  # noqa: UP045 - typer needs Optional here
        typer.Option(
            "--plugin", metavar="FILE.py", help="Load a plugin from a local .py file (repeatable)."
        ),
    ] = None,
    no_entry_points: Annotated[
        bool,
        typer.Option(
            "--no-entry-points",
            help="Ignore installed third-party plugins (entry-point group bench).",
        ),
    ] = False,
) -> None:
    options = (tuple(str(p) for p in plugin or ()), not no_entry_points)
    if options != (_State.plugin_files, _State.entry_points):
        _State.plugin_files, _State.entry_points = options
        _State.registry = None


def _registry() -> Registry:
    """The plugins of this invocation, loaded once (by :func:`main` before the command line is
    parsed, or here on first use when the app is called directly, as tests do)."""
    if _State.registry is None:
        _State.registry = load_registry(_State.plugin_files, entry_points=_State.entry_points)
    return _State.registry


EXECUTOR_HELP = (
    "Where units run: local (--jobs worker processes here), dask (a Dask LocalCluster of --jobs "
    "workers), dask://HOST:PORT (an existing Dask scheduler) or dask-jobqueue:KIND (slurm, pbs, "
    "...; README 'Running on a cluster'). Dask needs the extra: pip install -e '.[dask]'."
)


def _executor(value: str) -> str:
    from bench.executors import ExecutorError, check_spec

    try:
        return check_spec(value, imports=False)
    except ExecutorError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def codecs(
    strict: Annotated[bool, typer.Option(help="Exit 1 if any plugin failed to load.")] = False,
    params: Annotated[
        str,
        typer.Option(
            "--params",
            metavar="CODEC",
            help="Show CODEC's parameters (name[key=value,...]): type, default, meaning.",
        ),
    ] = "",
) -> None:
    """List every codec found, whether it can run here, and why not; plugins that failed to
    load (import error, unknown hook name, a hook that raised) are listed below the table."""
    registry = _registry()
    if params:
        _show_parameters(registry, params)
        return
    table = Table(title="codecs")
    for column in ("codec", "kind", "plugin", "status"):
        table.add_column(column)
    for name in sorted(registry.codecs):
        spec = registry.codecs[name]
        problem = registry.availability(name)
        status = (
            "[green]available[/]"
            if problem is None
            else (
                f"[yellow]unavailable:[/] {escape(problem.reason)}"
                + (f"\n  fix: {escape(problem.fix)}" if problem.fix else "")
            )
        )
        table.add_row(name, spec.kind, spec.plugin, status)
    out.print(table)
    for failure in registry.failures:
        out.print(
            f"[red]plugin failed to load:[/] {escape(failure.plugin)}: {escape(failure.error)}"
        )
    if strict and registry.failures:
        raise typer.Exit(EXIT_PROBLEM)


def _show_parameters(registry: Registry, name: str) -> None:
    """The table of ``bench codecs --params NAME``."""
    from bench.params import declared, type_name

    try:
        spec = registry.spec(name)
    except KeyError as exc:
        raise _fail(str(exc.args[0]), EXIT_USAGE) from None
    declaration = declared(spec.factory)
    table = Table(title=f'{name} parameters: --codecs "{name}\\[key=value,...]"')
    for column in ("parameter", "type", "default", "meaning"):
        table.add_column(column)
    for p in declaration.parameters.values():
        default = "(required)" if p.required else repr(p.default)
        table.add_row(p.name, escape(type_name(p.annotation)), escape(default), escape(p.help))
    out.print(table)
    if not declaration.parameters:
        out.print(f"{name} takes no parameters")
    if declaration.open:
        out.print(f"{name} also accepts other keys (**kwargs), passed as Python literals")


@app.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    add_help_option=False,
)
def train(
    args: Annotated[
        Optional[list[str]],  # noqa: UP045 - typer needs Optional here
        typer.Argument(
            metavar="NAME [ARGS]...",
            help="A trainer and its own options (`bench train NAME --help`).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train a model with a plugin's trainer: ARGS go to it verbatim. `bench train --help`
    lists the trainers."""
    registry = _registry()
    name, *rest = args or [""]
    if name in ("", "-h", "--help"):
        table = Table(title="trainers: bench train NAME [ARGS]... (NAME --help: its options)")
        for column in ("trainer", "plugin", "what it trains"):
            table.add_column(column)
        for trainer in sorted(registry.trainers.values(), key=lambda t: t.name):
            table.add_row(trainer.name, trainer.plugin, trainer.summary)
        out.print(table)
        raise typer.Exit(0 if name else EXIT_USAGE)
    if name not in registry.trainers:
        close = difflib.get_close_matches(name, list(registry.trainers), n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        known = ", ".join(sorted(registry.trainers)) or "none"
        raise _fail(f"unknown model {name!r}{hint} (trainers: {known})", EXIT_USAGE)
    raise typer.Exit(registry.trainers[name].main(list(rest)))


@datasets_app.command("list")
def datasets_list() -> None:
    """Every dataset manifest, where its files are, and whether they verify."""
    table = Table(title="datasets")
    for column in ("dataset", "images", "where", "status"):
        table.add_column(column, overflow="fold")  # names and paths in full, never cut
    for path in sorted(datasets.manifests_dir().glob("*.toml")):
        try:
            manifest = datasets.load_manifest(path)
        except datasets.DatasetError as exc:
            table.add_row(path.stem, "?", str(path), f"[red]broken manifest: {exc}[/]")
            continue
        try:
            count = len(datasets.verify(manifest))
            status = "[green]ready, verified[/]"
        except datasets.DatasetError as exc:
            count = len(datasets.expected_files(manifest)) or "?"
            lines = str(exc).splitlines()
            status = (
                "[yellow]not downloaded[/]"
                if "not downloaded" in str(exc)
                else f"[red]failed verification: {' '.join(lines[1:2]).strip() or lines[0]}[/]"
            )
        where = "bundled" if manifest.bundled else str(manifest.root)
        if manifest.checksums != "published":
            status += " (checksums pinned on first download)"
        table.add_row(manifest.name, str(count), where, status)
    _print_wide(table)


def _print_wide(table: Table) -> None:
    """Print ``table`` at its natural width when stdout is not a terminal (a file or a pipe
    has no width to fit, and rich would otherwise cut it to 80 columns)."""
    if out.is_terminal:
        out.print(table)
    else:
        Console(width=max(out.width, 1000), no_color=out.no_color).print(table)


def _manifest(name: str) -> datasets.Manifest:
    try:
        return datasets.load_manifest(name)
    except datasets.DatasetError as exc:
        raise _fail(str(exc)) from None


@datasets_app.command("fetch")
def datasets_fetch(name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    """Download a dataset into the cache ($BENCH_DATA_DIR) and verify it."""
    try:
        paths = datasets.fetch(_manifest(name))
    except datasets.DatasetError as exc:
        raise _fail(str(exc)) from None
    out.print(f"{name}: {len(paths)} images verified in {paths[0].parent}")


@datasets_app.command("import")
def datasets_import(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    source: Annotated[
        Path, typer.Option("--from", metavar="DIR", help="Folder holding the dataset's images.")
    ],
) -> None:
    """Copy a dataset from a local folder into the cache, verifying checksums."""
    try:
        paths = datasets.import_from(_manifest(name), source)
    except datasets.DatasetError as exc:
        raise _fail(str(exc)) from None
    out.print(f"{name}: {len(paths)} images verified in {paths[0].parent}")


@datasets_app.command("verify")
def datasets_verify(name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    """Check every file of a dataset against its manifest (size and sha256)."""
    try:
        paths = datasets.verify(_manifest(name))
    except datasets.DatasetError as exc:
        raise _fail(str(exc), EXIT_PROBLEM) from None
    out.print(f"{name}: {len(paths)} images verified")


@app.command()
def run(
    codecs: Annotated[
        str,
        typer.Option(
            metavar="CODECS",
            help="Comma-separated codecs, e.g. 'jpeg2000,spiht' or 'jpeg2000[levels=4]'.",
        ),
    ] = "",
    dataset: Annotated[
        str, typer.Option(metavar="NAME", help="Dataset name or manifest path.")
    ] = "kodak",
    bpp: Annotated[
        str,
        typer.Option(metavar="GRID", help="Target bpp: a list '0.25,0.5,1' or 'start:stop:step'."),
    ] = "0.1:2.0:0.1",
    anchor: Annotated[
        str,
        typer.Option(
            metavar="CODECS",
            help="Codec(s) the BD-rates are measured against, comma-separated "
            "(default: the first progressive codec, else the first codec).",
        ),
    ] = "",
    images: Annotated[
        str, typer.Option(metavar="NAMES", help="Comma-separated subset of image names.")
    ] = "",
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Run directory (default results/<dataset>-<time>).",
        ),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
    jobs: Annotated[int, typer.Option(min=1, metavar="N", help="Worker processes.")] = 1,
    threads: Annotated[int, typer.Option(min=1, metavar="N", help="Threads per worker.")] = 1,
    repeats: Annotated[int, typer.Option(min=1, metavar="N", help="Timed repeats (median).")] = 3,
    timeout: Annotated[
        float, typer.Option(metavar="SECONDS", help="Seconds allowed per codec and image.")
    ] = 1800.0,
    executor: Annotated[
        str, typer.Option(metavar="WHERE", help=EXECUTOR_HELP, callback=_executor)
    ] = "local",
    method: Annotated[str, typer.Option(metavar="FIT", help="BD fit: pchip or cubic.")] = "pchip",
    viewer_images: Annotated[
        str,
        typer.Option(
            metavar="NAMES",
            help="Images whose reconstructions report.html's viewer shows: comma-separated "
            "names, 'auto' (the first and last image), 'all' or 'none'.",
        ),
    ] = "auto",
) -> None:
    """Run codecs over a dataset at fixed bpp truncations and write the report."""
    _check_method(method)
    from bench.grid import parse_bpp_grid
    from bench.runner import (
        CodecRequestError,
        RunConfig,
        RunError,
        bind_requests,
        parse_codec_requests,
        split_labels,
    )
    from bench.runner import run as run_benchmark
    from bench.store import RUN, RunStore

    if resume and out_dir is None:
        raise _fail("--resume needs --out with the run directory to continue", EXIT_USAGE)
    if not codecs and not resume:
        raise _fail("--codecs is required (see `bench codecs`)", EXIT_USAGE)
    try:
        grid = parse_bpp_grid(bpp)
    except ValueError as exc:
        raise _fail(f"--bpp: {exc}", EXIT_USAGE) from None
    try:
        if resume and not codecs:
            config = RunConfig.from_dict(RunStore(out_dir).read_json(RUN)["config"])
            config = RunConfig(
                **{
                    **config.__dict__,
                    "jobs": jobs,
                    "threads": threads,
                    "timeout": timeout,
                    "executor": executor,
                    "plugin_files": _State.plugin_files,
                }
            )
        else:
            config = RunConfig(
                codecs=tuple(parse_codec_requests(codecs)),
                dataset=dataset,
                bpp=grid,
                images=tuple(filter(None, images.split(","))),
                jobs=jobs,
                threads=threads,
                repeats=repeats,
                timeout=timeout,
                executor=executor,
                plugin_files=_State.plugin_files,
                entry_points=_State.entry_points,
                viewer_images=tuple(filter(None, viewer_images.split(","))),
            )
        # names and parameters checked against the declarations before any folder or worker
        config = dataclasses.replace(
            config, codecs=tuple(bind_requests(config.codecs, _registry()))
        )
        labels = [c.label for c in config.codecs]
        anchors = [a.replace(" ", "") for a in split_labels(anchor)]
        for name in anchors:
            if name not in labels:
                raise CodecRequestError(
                    f"--anchor {name!r} is not among the codecs ({', '.join(labels)})"
                )
        directory = (
            out_dir or Path("results") / f"{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        err.print(f"run directory: {directory}")
        loaded = (config.plugin_files, config.entry_points) == (
            _State.plugin_files,
            _State.entry_points,
        )  # a resumed run keeps its stored entry-point choice
        registry = _registry() if loaded else None
        outcome = run_benchmark(config, directory, resume=resume, console=err, registry=registry)
    except CodecRequestError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except (RunError, datasets.DatasetError, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if outcome.interrupted:
        err.print(f"[yellow]interrupted[/]; continue with: bench run --out {directory} --resume")
        raise typer.Exit(EXIT_INTERRUPTED)
    _record_anchors(directory, anchors, labels)
    if outcome.failures:
        err.print(f"[red]{len(outcome.failures)} unit(s) failed[/]: see {directory}/failures.jsonl")
    _render_and_summarise(directory, anchors, method)
    if outcome.failures:
        raise typer.Exit(EXIT_PROBLEM)


def _check_method(method: str) -> None:
    from bench.bdrate import METHODS

    if method not in METHODS:
        raise _fail(f"--method must be one of {', '.join(METHODS)}, not {method!r}", EXIT_USAGE)


def _default_anchors(directory: Path, labels: list[str]) -> list[str]:
    """The first progressive codec of the run (a curve to measure every other codec against),
    else its first codec: a single-point anchor such as ``msh`` leaves every BD-rate undefined."""
    from bench.store import CODECS, RunStore

    known = (directory / CODECS).is_file()  # absent when every unit failed
    kinds = RunStore(directory).read_json(CODECS) if known else {}
    progressive = [k for k in labels if str(kinds.get(k, {}).get("kind")) == "progressive"]
    return (progressive or labels)[:1]


def _record_anchors(directory: Path, anchors: list[str], labels: list[str]) -> None:
    """Store ``--anchor``'s codecs in the run's record; without it, a resumed run keeps those it
    has and a new one gets :func:`_default_anchors`."""
    from bench.store import RUN, RunStore

    store = RunStore(directory)
    record = store.read_json(RUN)
    if anchors or not record.get("anchors"):
        record["anchors"] = anchors or _default_anchors(directory, labels)
        store.write_json(RUN, record)


def _render_and_summarise(
    directory: Path, anchors: list[str], method: str, suffix: str = ""
) -> None:
    """Render the report (``suffix``: a variant's, see bench.report.variant_suffix) and print
    its BD tables, the PSNR drops that leave images out of them, and where it is."""
    import pandas as pd

    from bench.curves import psnr_drops, rows_frame
    from bench.report import render
    from bench.store import RunStore

    try:
        path = render(directory, anchors, method, suffix)
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc), EXIT_PROBLEM) from None
    tables = pd.read_csv(directory / f"bdrate{suffix}.csv", keep_default_na=False, na_values=[""])
    for anchor, table in tables.groupby("anchor", sort=False):
        shown = Table(title=f"BD-rate vs {escape(anchor)} ({method})")
        for column in ("codec", "BD-rate %", "BD-PSNR dB", "per-image mean %", "images", "note"):
            shown.add_column(column)
        for _, row in table.iterrows():
            note = row["reason"] if isinstance(row["reason"], str) else ""
            if not note and isinstance(row["warning"], str):
                note = f"warning: {row['warning']}"
            shown.add_row(
                escape(row["codec"]),
                f"{row['bd_rate_pct']:.2f}",
                f"{row['bd_psnr_db']:.3f}",
                f"{row['bd_rate_per_image_mean_pct']:.2f}",
                f"{row['images_with_bd']}/{row['images']}",
                escape(note),
            )
        _print_wide(shown)
    for _, drop in psnr_drops(rows_frame(RunStore(directory).rows())).iterrows():
        out.print(
            f"note: {drop['codec']} on {drop['image']}: PSNR-RGB falls from "
            f"{drop['psnr_from']:.2f} dB at {drop['bpp_from']:.3f} bpp to {drop['psnr_to']:.2f} dB "
            f"at {drop['bpp_to']:.3f} bpp; that image has no per-image BD-rate",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"report: {path}", markup=False, highlight=False, soft_wrap=True)
    if suffix:
        out.print(
            f"(a variant: {directory / 'report.md'}, the run's own report, is unchanged)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def report(
    directory: Annotated[Path, typer.Argument(metavar="RUN", help="A run directory.")],
    anchor: Annotated[
        str,
        typer.Option(
            metavar="CODECS",
            help="Anchor codec(s), comma-separated (default: the run's). Other anchors or "
            "--method make a variant beside the run's own report: report-anchor-X.md, "
            "report-anchor-X.html, bdrate-anchor-X.csv.",
        ),
    ] = "",
    method: Annotated[str, typer.Option(metavar="FIT", help="BD fit: pchip or cubic.")] = "pchip",
) -> None:
    """Re-render a run's report from its stored rows (other anchors: a variant beside it)."""
    _check_method(method)
    from bench.runner import split_labels

    if not (directory / "run.json").exists():
        raise _fail(f"{directory} is not a bench run directory (no run.json)")
    from bench.store import RUN, RunStore

    anchors = [a.replace(" ", "") for a in split_labels(anchor)]
    labels = [c["label"] for c in RunStore(directory).read_json(RUN)["config"]["codecs"]]
    for name in anchors:
        if name not in labels:
            close = difflib.get_close_matches(name, labels, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise _fail(
                f"--anchor {name!r} is not a codec of this run{hint} ({', '.join(labels)})",
                EXIT_USAGE,
            )
    from bench.report import variant_suffix

    suffix = variant_suffix(RunStore(directory).read_json(RUN), anchors, method)
    _render_and_summarise(directory, anchors, method, suffix)


@app.command()
def plot(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="A run directory.")],
    out_file: Annotated[
        Optional[Path],  # noqa: UP045 - typer needs Optional here
        typer.Option(
            "--out",
            metavar="FILE.png",
            help="Where to write the plot (default: RUN/rd-compressai.png).",
        ),
    ] = None,
    with_files: Annotated[
        Optional[list[Path]],  # noqa: UP045 - typer needs Optional here
        typer.Option(
            "--with",
            metavar="FILE.json",
            help="A CompressAI-format results file to draw beside the run: CompressAI's "
            "published results, another run's <codec>.json (repeatable).",
        ),
    ] = None,
    published: Annotated[
        bool,
        typer.Option(
            "--published", help="Add CompressAI's published mbt2018-mean Kodak curve (psnr)."
        ),
    ] = False,
    metric: Annotated[
        str, typer.Option(metavar="METRIC", help="psnr or ms-ssim (in dB).")
    ] = "psnr",
) -> None:
    """Plot a run's R-D curves beside CompressAI-format results (PNG)."""
    from bench.plot import METRICS, PlotError, published_curve, read_curve, run_curves
    from bench.plot import plot as draw

    if metric not in METRICS:
        raise _fail(f"--metric must be one of {', '.join(METRICS)}, not {metric!r}", EXIT_USAGE)
    if published and metric != "psnr":
        raise _fail("--published has PSNR-RGB only: use it with --metric psnr", EXIT_USAGE)
    try:
        curves = run_curves(run_dir, metric)
        curves += [read_curve(f, metric) for f in with_files or ()]
    except PlotError as exc:
        raise _fail(str(exc)) from None
    if published:
        curves.append(published_curve())
    target = out_file or run_dir / "rd-compressai.png"
    draw(curves, target, metric, run_dir.name)
    out.print(
        f"plot: {target} ({len(curves)} curves)", markup=False, highlight=False, soft_wrap=True
    )


@app.command()
def compare(
    baseline: Annotated[Path, typer.Argument(metavar="BASE", help="The reference run.")],
    candidate: Annotated[Path, typer.Argument(metavar="NEW", help="The run to compare with it.")],
    fail_above: Annotated[
        float | None,
        typer.Option(  # noqa: UP045
            metavar="PCT",
            help="Exit 1 if a codec's BD-rate (candidate vs baseline) exceeds this many percent, "
            "or cannot be computed.",
        ),
    ] = None,
    method: Annotated[str, typer.Option(metavar="FIT", help="BD fit: pchip or cubic.")] = "pchip",
) -> None:
    """Compare the same codecs across two runs, such as main and a pull request."""
    _check_method(method)
    from bench.compare import compare_runs

    try:
        result = compare_runs(baseline, candidate, method)
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None
    table = Table(title=f"{candidate.name} vs {baseline.name} ({method})")
    for column in ("codec", "BD-rate %", "BD-PSNR dB", "mean dPSNR dB", "points", "note"):
        table.add_column(column)
    regressions = []
    for row in result:
        table.add_row(
            row["codec"],
            f"{row['bd_rate_pct']:.3f}",
            f"{row['bd_psnr_db']:.4f}",
            f"{row['mean_delta_psnr_db']:.4f}",
            str(row["points"]),
            row["reason"],
        )
        bad = row["bd_rate_pct"] != row["bd_rate_pct"] or row["bd_rate_pct"] > (fail_above or 0)
        if fail_above is not None and bad:
            regressions.append(row["codec"])
    out.print(table)
    if regressions:
        err.print(
            f"[red]regression[/] above {fail_above}% (or not comparable): {', '.join(regressions)}"
        )
        raise typer.Exit(EXIT_PROBLEM)


@app.command()
def regress(
    baseline: Annotated[
        Path, typer.Option(metavar="DIR", help="Committed baseline run, e.g. results/baseline.")
    ],
    run_dir: Annotated[
        Optional[Path],  # noqa: UP045 - typer needs Optional here
        typer.Argument(
            metavar="RUN",
            help="Run to check; omitted: measure the baseline's subset now (into --out).",
        ),
    ] = None,
    max_bd_rate: Annotated[
        float,
        typer.Option(
            metavar="PCT", help="Fail a codec whose BD-rate against the baseline exceeds this %."
        ),
    ] = 0.5,
    max_psnr_drop: Annotated[
        float,
        typer.Option(
            metavar="DB", help="Fail a codec losing more PSNR-RGB than this (dB) at any point."
        ),
    ] = 0.05,
    update: Annotated[
        bool,
        typer.Option(help="Make RUN (or a fresh run of the subset) the new baseline; exit 0."),
    ] = False,
    codecs: Annotated[
        str,
        typer.Option(
            metavar="CODECS",
            help="Gate only these codecs (labels as in the baseline; the others are skipped), "
            "measuring only them when there is no RUN. With --update and no RUN: the new "
            "baseline's codecs, 'builtin' (every built-in codec available here) or a list "
            "(default: the baseline's).",
        ),
    ] = "",
    out_dir: Annotated[
        Optional[Path],  # noqa: UP045 - typer needs Optional here
        typer.Option(
            "--out",
            metavar="DIR",
            help="Directory of the fresh run (default results/regress-<time>).",
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option(min=1, metavar="N", help="Worker processes for the fresh run.")
    ] = 1,
    executor: Annotated[
        str, typer.Option(metavar="WHERE", help=EXECUTOR_HELP, callback=_executor)
    ] = "local",
    method: Annotated[str, typer.Option(metavar="FIT", help="BD fit: pchip or cubic.")] = "pchip",
) -> None:
    """Gate a run against a baseline: exit 1 with a table of what moved when a codec got worse."""
    _check_method(method)
    from bench.regress import RegressError, Tolerances, adopt, markdown, measure, subset_config
    from bench.regress import regress as regress_runs
    from bench.runner import CodecRequestError, RunError, bind_requests, parse_codec_requests

    if codecs and run_dir is not None and update:
        raise _fail(
            "--codecs with --update needs no RUN: RUN becomes the baseline whole", EXIT_USAGE
        )
    if codecs and not update and codecs.strip() == "builtin":
        raise _fail("--codecs builtin goes with --update; to gate, name the codecs", EXIT_USAGE)
    try:
        selected = tuple(r.label for r in parse_codec_requests(codecs)) if codecs else ()
    except CodecRequestError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    if not update and not (baseline / "run.json").exists():
        raise _fail(f"{baseline} is not a bench run directory (no run.json)")
    if run_dir is None:
        run_dir = out_dir or Path("results") / f"regress-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            config, record = subset_config(
                baseline,
                codecs,
                _registry(),
                jobs=jobs,
                plugin_files=_State.plugin_files,
                entry_points=_State.entry_points,
            )
            codec_list = tuple(bind_requests(config.codecs, _registry()))  # before any folder
            config = dataclasses.replace(config, codecs=codec_list, executor=executor)
            err.print(f"run directory: {run_dir}")
            outcome = measure(config, record, run_dir, err, _registry())
        except CodecRequestError as exc:  # --codecs is usage; the baseline's own list is input
            raise _fail(str(exc), EXIT_USAGE if codecs else EXIT_INPUT) from None
        except (RunError, datasets.DatasetError, FileNotFoundError, ValueError) as exc:
            raise _fail(str(exc)) from None
        if outcome.interrupted:
            raise typer.Exit(EXIT_INTERRUPTED)
        out.print(
            f"measured the subset in {outcome.wall_s:.1f} s: {len(config.codecs)} codecs, "
            f"{outcome.rows_written} points, jobs {config.jobs}, threads {config.threads}",
            soft_wrap=True,
        )
    try:
        if (baseline / "run.json").exists():
            tolerances = Tolerances(max_bd_rate, max_psnr_drop)
            only = () if update else selected
            result = regress_runs(run_dir, baseline, tolerances, method, only)
            text = markdown(result)
            (run_dir / "regress.md").write_text(text)
            out.print(text, markup=False, highlight=False, soft_wrap=True)
        if update:
            from bench.report import render

            render(run_dir)
            adopt(run_dir, baseline)
            out.print(f"baseline updated: {baseline} now holds {run_dir}")
            return
    except (RegressError, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None
    out.print(f"table: {run_dir / 'regress.md'}")
    if not result.passed:
        raise typer.Exit(EXIT_PROBLEM)


@app.command()
def check(
    codec: Annotated[
        str, typer.Argument(metavar="CODEC", help="Codec name, optionally name[key=value,...].")
    ],
) -> None:
    """Run the conformance suite on a codec: Kodak crops of odd sizes (1x1 included), every
    short prefix and spread cuts to the whole stream, PSNR not falling as the prefix grows,
    decoding in a fresh process. One progress line per step goes to stderr; the table of
    checks and a final PASS/FAIL line go to stdout."""
    from bench.conformance import run_checks
    from bench.runner import CodecRequestError, bind_requests, parse_codec_requests

    try:
        requests = bind_requests(parse_codec_requests(codec), _registry())
    except CodecRequestError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    if len(requests) != 1:
        raise _fail(f"bench check takes one codec, got {len(requests)}", EXIT_USAGE)
    (request,) = requests
    spec = _registry().spec(request.name)
    start = time.perf_counter()
    results = run_checks(
        request.name,
        request.params,
        plugin_files=_State.plugin_files,
        factory=spec.factory,
        progress=lambda line: err.print(line, markup=False, highlight=False, soft_wrap=True),
    )
    seconds = time.perf_counter() - start
    table = Table(title=f"conformance: {codec}")
    for column in ("check", "image", "result", "detail"):
        table.add_column(column)
    for r in results:
        result = "[green]pass[/]" if r.passed else "[red]FAIL[/]"
        table.add_row(r.check, r.image, result, escape(r.detail))
    out.print(table)
    failed = [r for r in results if not r.passed]
    images = len({r.image for r in results})
    if failed:
        where = ", ".join(f"{r.check} on {r.image}" for r in failed)
        verdict = f"FAIL, {len(failed)} of {len(results)} checks failed ({where})"
    else:
        verdict = f"PASS, {len(results)} checks on {images} images"
    line = f"bench check {codec}: {verdict} in {seconds:.1f} s"
    out.print(line, markup=False, highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(EXIT_PROBLEM)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings reach users as one line, without Python's file name and source line."""
    err.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def plugin_options(argv: list[str]) -> tuple[tuple[str, ...], bool]:
    """``(--plugin files, not --no-entry-points)`` from the global options before the command
    name in ``argv`` (read before typer parses anything, so that plugin commands exist)."""
    files, entry_points, index = [], True, 0
    while index < len(argv) and argv[index].startswith("-"):
        arg = argv[index]
        if arg == "--plugin" and index + 1 < len(argv):
            files.append(str(Path(argv[index + 1])))
            index += 1
        elif arg.startswith("--plugin="):
            files.append(str(Path(arg.removeprefix("--plugin="))))
        elif arg == "--no-entry-points":
            entry_points = False
        index += 1
    return tuple(files), entry_points


def main() -> None:
    """Console entry point: load the plugins named by the global options (their commands join
    the app), then run the command line."""
    warnings.showwarning = _show_warning
    _State.plugin_files, _State.entry_points = plugin_options(sys.argv[1:])
    _State.registry = load_registry(_State.plugin_files, entry_points=_State.entry_points, cli=app)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
