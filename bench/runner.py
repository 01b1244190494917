"""A benchmark run: every requested codec on every dataset image at every target bpp.

:func:`run` verifies the dataset, plans the (codec, image) units still missing from the run
directory (image by image, every codec of an image in turn: :func:`interleaved`), spreads them
over worker processes (:mod:`bench.worker`), appends each row to disk the moment it arrives
(:mod:`bench.store`) and shows its progress (:mod:`bench.progress`: a bar on a terminal, plain
lines in a log). Killed at any point, a run keeps every finished row;
``resume=True`` measures only what is missing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import datasets
from bench.executors import ExecutorError, check_spec, open_executor
from bench.grid import DEFAULT_BPP_GRID
from bench.params import ParameterError, bind
from bench.progress import RunProgress, progress_interval
from bench.provenance import LoadRecorder, environment
from bench.registry import Registry, load_registry
from bench.store import CODECS, FAILURES, ROWS, RUN, UNITS, RunStore
from bench.viewer import select_viewer_images
from bench.worker import Unit


class RunError(Exception):
    """A run cannot start or resume as asked; the message says why and what to do."""


class CodecRequestError(RunError):
    """A codec list naming an unknown codec or parameter, or a value of the wrong type (a usage
    error: the CLI exits 2)."""


@dataclass(frozen=True)
class CodecRequest:
    """A codec with factory parameters, written ``name`` or ``name[key=value,key=value]``.

    ``label`` (the text as written) names the codec in rows and reports. ``params`` hold the
    text of each value as parsed, or the values coerced to the factory's declared types after
    :func:`bind_requests` (what a run stores and the workers pass to the factory).
    """

    label: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)


_REQUEST = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(?:\[(.*)\])?\s*$")


def split_labels(text: str) -> list[str]:
    """Split ``"a,b[x=1,y=2]"`` at the commas outside brackets; strip items, drop empty ones."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return [i.strip() for i in items if i.strip()]


def parse_codec_requests(text: str) -> list[CodecRequest]:
    """Parse ``"jpeg2000,spiht[levels=4,weighted=false],deephq[layers=[8,4]]"``: names and the
    text of each value (commas inside brackets belong to the value). :func:`bind_requests`
    checks them against the codecs' declarations."""
    requests = []
    for item in split_labels(text):
        match = _REQUEST.match(item)
        if not match:
            raise CodecRequestError(
                f"cannot parse codec {item!r}; write name or name[key=value,...]"
            )
        params: dict[str, Any] = {}
        for pair in split_labels(match.group(2) or ""):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise CodecRequestError(f"codec parameter {pair!r} in {item!r} is not key=value")
            if key.strip() in params:
                raise CodecRequestError(f"codec parameter {key.strip()!r} given twice in {item!r}")
            params[key.strip()] = value.strip()
        requests.append(
            CodecRequest(label=item.replace(" ", ""), name=match.group(1), params=params)
        )
    labels = [r.label for r in requests]
    if not requests or len(set(labels)) != len(labels):
        raise CodecRequestError(f"codec list {text!r} is empty or names a codec twice")
    return requests


def bind_requests(requests: Sequence[CodecRequest], registry: Registry) -> list[CodecRequest]:
    """``requests`` with their parameters coerced to each codec's declared types
    (:func:`bench.params.bind`); no codec is built. Raises :class:`CodecRequestError` for an
    unknown codec (naming the closest ones) or parameter (listing the valid ones with types and
    defaults) or a value that does not fit."""
    bound = []
    for request in requests:
        try:
            spec = registry.spec(request.name)
        except KeyError as exc:
            raise CodecRequestError(str(exc.args[0])) from None
        try:
            params = bind(request.name, spec.factory, request.params)
        except ParameterError as exc:
            raise CodecRequestError(str(exc)) from None
        bound.append(CodecRequest(request.label, request.name, params))
    return bound


@dataclass(frozen=True)
class RunConfig:
    """What to measure. ``timeout`` is seconds per (codec, image) unit.

    ``viewer_images``: whose reconstructions are saved for report.html's viewer, as
    :func:`bench.viewer.select_viewer_images` reads it (empty: none).
    """

    codecs: tuple[CodecRequest, ...]
    dataset: str
    bpp: tuple[float, ...] = DEFAULT_BPP_GRID
    images: tuple[str, ...] = ()  # empty: every image of the dataset
    jobs: int = 1
    threads: int = 1
    repeats: int = 3
    timeout: float = 1800.0
    plugin_files: tuple[str, ...] = ()
    entry_points: bool = True
    executor: str = "local"  # local, dask, dask://HOST:PORT, dask-jobqueue:KIND (bench.executors)
    viewer_images: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> RunConfig:
        raw = dict(raw)
        raw["codecs"] = tuple(CodecRequest(**c) for c in raw["codecs"])
        for key in ("bpp", "images", "plugin_files", "viewer_images"):
            raw[key] = tuple(raw.get(key, ()))
        return cls(**raw)

    def comparable(self) -> dict:
        """The settings that must not change between a run and its resumption."""
        d = self.to_dict()
        return {k: d[k] for k in ("codecs", "dataset", "bpp", "images", "repeats")}


@dataclass
class RunOutcome:
    """What happened: rows written this time, failed units, and whether it was interrupted."""

    directory: Path
    rows_written: int = 0
    failures: list[dict] = field(default_factory=list)
    interrupted: bool = False
    wall_s: float = 0.0


def _select_images(manifest: datasets.Manifest, wanted: Sequence[str]) -> list[tuple[str, Path]]:
    paths = datasets.verify(manifest)
    by_name = {p.name: p for p in paths} | {p.stem: p for p in paths}
    if not wanted:
        return [(p.name, p) for p in paths]
    missing = [w for w in wanted if w not in by_name]
    if missing:
        raise RunError(f"images not in dataset {manifest.name!r}: {', '.join(missing)}")
    return [(by_name[w].name, by_name[w]) for w in wanted]


def _plan(
    request: CodecRequest,
    config: RunConfig,
    images: list[tuple[str, Path]],
    done: set[tuple],
    viewer: set[str],
    directory: Path,
) -> list[Unit]:
    """Units still to measure; ``viewer``: images whose reconstructions go into ``directory``."""
    units = []
    for name, path in images:
        targets = tuple(t for t in config.bpp if (request.label, name, t) not in done)
        if targets:
            units.append(
                Unit(
                    request.label,
                    request.name,
                    request.params,
                    name,
                    str(path),
                    targets,
                    tuple(config.bpp),
                    config.repeats,
                    str(directory) if name in viewer else None,
                )
            )
    return units


def interleaved(units: list[Unit], image_order: list[str]) -> list[Unit]:
    """``units`` image by image: every codec's unit of an image before the next image (codecs in
    their given order). Timings are compared between codecs of one run, so a change in the
    machine's load during the run (another job starting, a training pausing) must touch every
    codec alike, not only the codecs that happen to run last."""
    position = {name: i for i, name in enumerate(image_order)}
    return sorted(units, key=lambda unit: position[unit.image])


def prepare_directory(config: RunConfig, directory: Path, resume: bool) -> tuple[RunStore, set]:
    """Create or reopen a run directory; return the store and the (codec, image, bpp) done."""
    store = RunStore(directory)
    if store.exists() and not resume:
        raise RunError(
            f"{directory} already holds a run; pass --resume to continue it, "
            "or choose another --out"
        )
    if resume and store.exists():
        stored = RunConfig.from_dict(store.read_json(RUN)["config"])
        if stored.comparable() != config.comparable():
            raise RunError(
                f"{directory} was made with other settings; resume it with the same "
                f"ones (stored: {stored.comparable()})"
            )
        store.repair()
    directory.mkdir(parents=True, exist_ok=True)
    done = {(r["codec"], r["image"], r["target_bpp"]) for r in store.rows()}
    return store, done


def run(
    config: RunConfig,
    directory: Path,
    *,
    resume: bool = False,
    console: Console | None = None,
    registry: Registry | None = None,
) -> RunOutcome:
    """Measure what is missing in ``directory``; see the module docstring.

    ``registry``: the plugins of ``config.plugin_files`` and ``config.entry_points`` when the
    caller has loaded them already (the command line has); loaded here when ``None``.
    """
    console = console or Console(stderr=True)
    start = time.perf_counter()
    try:
        interval = progress_interval()
    except ValueError as exc:
        raise RunError(str(exc)) from None
    manifest = datasets.load_manifest(config.dataset)
    images = _select_images(manifest, config.images)
    try:
        viewer = set(select_viewer_images(config.viewer_images, [n for n, _ in images]))
    except ValueError as exc:
        raise RunError(str(exc)) from None
    if registry is None:
        registry = load_registry(config.plugin_files, entry_points=config.entry_points)
    config = replace(config, codecs=tuple(bind_requests(config.codecs, registry)))
    try:
        check_spec(config.executor)
    except ExecutorError as exc:
        raise RunError(str(exc)) from None
    store, done = prepare_directory(config, directory, resume)
    record = store.read_json(RUN) if store.exists() else {"attempts": []}
    record.update(
        config=config.to_dict(),
        status="running",
        dataset={
            "name": manifest.name,
            "manifest": str(manifest.path),
            "manifest_sha256": manifest.sha256,
            "images": [n for n, _ in images],
        },
    )
    record["attempts"].append(environment() | {"threads": config.threads, "jobs": config.jobs})
    store.write_json(RUN, record)

    outcome = RunOutcome(directory=directory)
    units = []
    available = 0
    for request in config.codecs:
        unavailable = registry.availability(request.name)
        if unavailable is not None:
            failure = {
                "codec": request.label,
                "image": "*",
                "error": f"unavailable: {unavailable}",
                "traceback": "",
            }
            store.append(FAILURES, failure)
            outcome.failures.append(failure)
            console.print(f"[yellow]skipping {request.label}: {unavailable}[/]")
            continue
        available += 1
        units += _plan(request, config, images, done, viewer, directory)
    units = interleaved(units, [name for name, _ in images])

    infos: dict = store.read_json(CODECS) if (directory / CODECS).exists() else {}
    units_total = available * len(images)
    points_total = units_total * len(config.bpp)
    points_left = sum(len(u.targets) for u in units)
    load = LoadRecorder(interval)
    progress = RunProgress(
        console,
        points_total=points_total,
        points_done=points_total - points_left,
        units_total=units_total,
        units_done=units_total - len(units),
        interval_s=interval,
        on_tick=load.poll,
    )
    try:
        with (
            progress,
            open_executor(
                config.executor,
                jobs=config.jobs,
                threads=config.threads,
                plugin_files=list(config.plugin_files),
                timeout=config.timeout,
                entry_points=config.entry_points,
            ) as pool,
        ):
            progress.describe(f"starting workers ({config.executor})")
            record["attempts"][-1]["executor"] = pool.describe()
            store.write_json(RUN, record)
            for kind, *payload in pool.run(units):
                if kind == "row":
                    row = payload[0]
                    store.append(ROWS, row)
                    outcome.rows_written += 1
                    progress.point(f"{row['codec']} {row['image']} {row['target_bpp']:g} bpp")
                elif kind == "info":
                    label, info = payload
                    infos[label] = info
                    store.write_json(CODECS, infos)
                elif kind == "done":
                    store.append(UNITS, payload[0])
                    progress.unit_done()
                elif kind == "failed":
                    failure = payload[0]
                    store.append(FAILURES, failure)
                    outcome.failures.append(failure)
                    progress.failed(f"{failure['codec']} on {failure['image']}: {failure['error']}")
            record["attempts"][-1]["executor"] = pool.describe()  # with the hosts used
    except KeyboardInterrupt:
        outcome.interrupted = True
    except ExecutorError as exc:
        record["status"] = f"executor failed: {exc}"
        store.write_json(RUN, record)
        raise RunError(str(exc)) from None
    outcome.wall_s = time.perf_counter() - start
    record["status"] = (
        "interrupted"
        if outcome.interrupted
        else ("failed units" if outcome.failures else "complete")
    )
    record["attempts"][-1]["wall_s"] = outcome.wall_s
    record["attempts"][-1]["load"] = load.finish()
    store.write_json(RUN, record)
    return outcome
