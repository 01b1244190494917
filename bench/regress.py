"""The rate-distortion regression gate: each codec of a run against itself in a baseline run.

:func:`regress` compares, codec by codec and on the same images and target bpps:

* the BD-rate (PSNR-RGB) of the run's aggregated curve against the baseline's
  (:func:`bench.compare.compare_runs`), gated by ``max_bd_rate`` percent;
* the largest per-point PSNR-RGB drop, with its image and bpp, gated by ``max_psnr_drop`` dB; a
  point the baseline decoded and the run did not is an infinite drop;
* the full-rate stream size (sum over images of ``stream_bytes`` at the largest target bpp) and
  how many points decoded a stream whose ``stream_sha256`` changed: reported, not gated;
* the decode-time ratio (run / baseline, summed over points both decoded): reported, never
  gated (timings are noisy).

A codec, image or point present on one side only, a failed unit in the run, or different dataset
manifests are errors: the gate fails and says which. A BD-rate that cannot be computed fails the
gate unless the baseline's curve cannot give one against itself either (a rate ladder with one
point per image, say): the per-point checks alone then gate that codec, and the table says so.

Which codecs a baseline covers is its run's ``run.json`` key ``"regress": {"codecs": RULE}``:
``RULE = "builtin"`` means every built-in codec that can run here (resolved anew for every run, so
a codec added to the built-ins shows up as "not in baseline"); anything else is a codec list. A
run made by plain ``bench run`` covers the codecs of its configuration. A contributor gates only
their codec with ``bench regress --baseline results/baseline --codecs NAME``: only NAME is
measured and compared; the baseline's other codecs are reported as skipped, not selected.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.console import Console

from bench.compare import compare_runs
from bench.curves import rows_frame
from bench.registry import BUILTIN_PLUGINS, Registry
from bench.runner import RunConfig, RunOutcome, parse_codec_requests
from bench.runner import run as run_benchmark
from bench.store import FAILURES, RUN, RunStore

#: The codec rule meaning "every built-in codec available here".
BUILTIN = "builtin"

#: The CI subset a new baseline measures: 4 full Kodak images (landscape and portrait, texture,
#: edges, smooth areas), 5 target bpp, one timed repeat (time is not gated), one thread per
#: worker (another thread count may change float reductions, hence learned codecs' streams).
CI_SUBSET = {
    "dataset": "kodak",
    "images": ("kodim01.png", "kodim04.png", "kodim08.png", "kodim23.png"),
    "bpp": (0.1, 0.25, 0.5, 1.0, 2.0),
    "repeats": 1,
    "threads": 1,
    "timeout": 900.0,
}

PASS, REGRESSION, ERROR, SKIPPED = "pass", "REGRESSION", "ERROR", "skipped"


class RegressError(Exception):
    """The comparison cannot be made as asked (missing or unusable run directory)."""


@dataclass(frozen=True)
class Tolerances:
    """The gate: BD-rate in percent and per-point PSNR-RGB drop in dB that still pass."""

    max_bd_rate: float = 0.5
    max_psnr_drop: float = 0.05


@dataclass
class CodecResult:
    """The comparison of one codec; ``changed`` is ``None`` when a side has no sha256s."""

    codec: str
    verdict: str
    bd_rate_pct: float = math.nan
    max_drop_db: float = math.nan
    max_drop_at: str = ""
    size_baseline: int = 0
    size_run: int = 0
    changed: int | None = None
    points: int = 0
    decode_ratio: float = math.nan
    notes: list[str] = field(default_factory=list)


@dataclass
class RegressResult:
    """Every codec's result plus run-level errors and notes."""

    run: Path
    baseline: Path
    tolerances: Tolerances
    codecs: list[CodecResult]
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.errors and all(c.verdict in (PASS, SKIPPED) for c in self.codecs)


def codec_rule(record: dict) -> str:
    """The codec rule a run was made with (see the module docstring)."""
    rule = record.get("regress", {}).get("codecs")
    return rule or ",".join(c["label"] for c in record["config"]["codecs"])


def resolve_codecs(rule: str, registry: Registry) -> tuple[str, dict[str, str]]:
    """The codec list a rule means here, and the codecs skipped with the reason.

    ``"builtin"``: every codec of :data:`~bench.registry.BUILTIN_PLUGINS`, except those
    unavailable here (skipped); anything else is returned as it is.
    """
    if rule != BUILTIN:
        return rule, {}
    names, skipped = [], {}
    for name in registry.codecs:  # plugin order: jpeg2000 first, the report's anchor
        if registry.codecs[name].plugin not in BUILTIN_PLUGINS:
            continue
        problem = registry.availability(name)
        if problem is None:
            names.append(name)
        else:
            skipped[name] = f"unavailable here: {problem.reason}"
    return ",".join(names), skipped


def subset_config(
    baseline: Path,
    codecs: str,
    registry: Registry,
    *,
    jobs: int,
    plugin_files: Sequence[str],
    entry_points: bool,
) -> tuple[RunConfig, dict]:
    """The configuration of a fresh run of the baseline's subset, and its ``regress`` record.

    Settings come from the baseline's ``run.json`` (:data:`CI_SUBSET` when there is none yet);
    ``codecs`` (a rule) replaces the baseline's codec rule when given. Threads, repeats, images
    and bpps are the baseline's, so that streams can be bit-identical.
    """
    store = RunStore(baseline)
    if store.exists():
        record = store.read_json(RUN)
        stored = RunConfig.from_dict(record["config"])
        settings = {k: getattr(stored, k) for k in CI_SUBSET}
        rule = codecs or codec_rule(record)
    else:
        settings, rule = dict(CI_SUBSET), codecs or BUILTIN
    text, skipped = resolve_codecs(rule, registry)
    config = RunConfig(
        codecs=tuple(parse_codec_requests(text)),
        jobs=jobs,
        plugin_files=tuple(plugin_files),
        entry_points=entry_points,
        **settings,
    )
    return config, {"codecs": rule, "skipped": skipped}


def measure(
    config: RunConfig,
    regress_record: dict,
    directory: Path,
    console: Console,
    registry: Registry | None = None,
) -> RunOutcome:
    """Run ``config`` into a new ``directory`` and store the ``regress`` record in its run.json
    (``registry``: the plugins of ``config``, if loaded already; see :func:`bench.runner.run`)."""
    for name, reason in regress_record["skipped"].items():
        console.print(f"[yellow]skipping {name}[/]: {reason}")
    outcome = run_benchmark(config, directory, console=console, registry=registry)
    store = RunStore(directory)
    record = store.read_json(RUN)
    record["regress"] = regress_record
    store.write_json(RUN, record)
    return outcome


def adopt(run: Path, baseline: Path) -> None:
    """Replace ``baseline`` with the files of ``run`` (not its ``regress.md``).

    Refuses a run with failed units: a baseline must be complete.
    """
    if RunStore(run).failures():
        raise RegressError(f"{run} has failed units ({run / FAILURES}); it cannot be a baseline")
    baseline.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{baseline.name}-", dir=baseline.parent))
    for path in sorted(run.iterdir()):
        if path.is_file() and path.name != "regress.md":
            shutil.copy2(path, staging / path.name)
    if baseline.exists():
        shutil.rmtree(baseline)
    staging.rename(baseline)


@dataclass
class _Side:
    record: dict
    rows: pd.DataFrame
    failures: list[dict]


def _load(directory: Path) -> _Side:
    store = RunStore(directory)
    if not store.exists():
        raise RegressError(f"{directory} is not a bench run directory (no run.json)")
    rows = rows_frame(store.rows())
    if rows.empty:
        raise RegressError(f"{directory} has no result rows")
    if "stream_sha256" not in rows:
        rows["stream_sha256"] = math.nan  # a run from before stream hashes: unknown
    return _Side(store.read_json(RUN), rows, store.failures())


def _point_drop(base_ok: bool, base_psnr: float, run_ok: bool, run_psnr: float) -> float:
    """PSNR lost at one point: inf if only the baseline decoded, -inf if it did not."""
    if not base_ok:
        return -math.inf
    if not run_ok:
        return math.inf
    return 0.0 if base_psnr == run_psnr else float(base_psnr - run_psnr)  # equal: also inf, inf


def _full_rate_bytes(rows: pd.DataFrame) -> int:
    top = rows[rows["target_bpp"] == rows["target_bpp"].max()]
    return int(pd.to_numeric(top["stream_bytes"], errors="coerce").fillna(0).sum())


def _keys(rows: pd.DataFrame) -> set[tuple[str, float]]:
    return set(zip(rows["image"], rows["target_bpp"], strict=True))


def _describe(keys: set[tuple[str, float]]) -> str:
    shown = [f"{image} @ {bpp:g}" for image, bpp in sorted(keys)[:4]]
    return ", ".join(shown) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def _compare_codec(
    codec: str,
    base: pd.DataFrame,
    new: pd.DataFrame,
    bd: dict | None,
    bd_self: dict | None,
    tolerances: Tolerances,
) -> CodecResult:
    result = CodecResult(codec, PASS)
    only_base, only_new = _keys(base) - _keys(new), _keys(new) - _keys(base)
    if only_base:
        result.notes.append(f"points only in baseline: {_describe(only_base)}")
    if only_new:
        result.notes.append(f"points only in run: {_describe(only_new)}")
    merged = base.merge(new, on=["image", "target_bpp"], suffixes=("_b", "_r"))
    result.points = len(merged)
    worst = -math.inf
    for _, row in merged.iterrows():
        drop = _point_drop(
            row["decodable_b"], row["psnr_rgb_b"], row["decodable_r"], row["psnr_rgb_r"]
        )
        if drop > worst:
            worst, result.max_drop_at = drop, f"{row['image']} @ {row['target_bpp']:g}"
    result.max_drop_db = worst if worst > -math.inf else math.nan
    if merged["stream_sha256_b"].notna().any() and merged["stream_sha256_r"].notna().any():
        result.changed = int((merged["stream_sha256_b"] != merged["stream_sha256_r"]).sum())
        result.changed -= int(
            (merged["stream_sha256_b"].isna() & merged["stream_sha256_r"].isna()).sum()
        )
    result.size_baseline, result.size_run = _full_rate_bytes(base), _full_rate_bytes(new)
    timed = merged[merged["decodable_b"] & merged["decodable_r"]]
    base_s, run_s = timed["decode_s_b"].sum(), timed["decode_s_r"].sum()
    result.decode_ratio = float(run_s / base_s) if base_s > 0 else math.nan

    if only_base or only_new:
        result.verdict = ERROR
        return result
    if bd is not None:
        result.bd_rate_pct = bd["bd_rate_pct"]
    if math.isnan(result.bd_rate_pct):
        self_reason = (
            bd_self["reason"]
            if bd_self
            else "no aggregated point: no target bpp where every image decoded"
        )
        if bd_self is not None and not math.isnan(bd_self["bd_rate_pct"]):
            result.verdict = REGRESSION
            result.notes.append(f"BD-rate undefined: {bd['reason'] if bd else 'no curve'}")
        else:
            result.notes.append(f"BD-rate not gated (baseline curve: {self_reason})")
    elif result.bd_rate_pct > tolerances.max_bd_rate:
        result.verdict = REGRESSION
        result.notes.append(f"BD-rate {result.bd_rate_pct:+.3f} % > {tolerances.max_bd_rate} %")
    if result.max_drop_db > tolerances.max_psnr_drop:
        result.verdict = REGRESSION
        result.notes.append(
            f"PSNR drop {result.max_drop_db:.3f} dB at {result.max_drop_at} "
            f"> {tolerances.max_psnr_drop} dB"
        )
    return result


def regress(
    run: Path,
    baseline: Path,
    tolerances: Tolerances = Tolerances(),
    method: str = "pchip",
    only: Sequence[str] = (),
) -> RegressResult:
    """Compare every codec of ``run`` with the same codec in ``baseline``; with ``only``
    (codec labels), just those: the baseline's other codecs are SKIPPED as not selected.

    Raises :class:`RegressError` when either directory is not a run with rows.
    """
    base, new = _load(baseline), _load(run)
    result = RegressResult(run, baseline, tolerances, [])
    if base.record["dataset"]["manifest_sha256"] != new.record["dataset"]["manifest_sha256"]:
        result.errors.append(
            f"different dataset manifests (sha256 {base.record['dataset']['manifest_sha256'][:12]} "
            f"in the baseline, {new.record['dataset']['manifest_sha256'][:12]} in the run): "
            "the images may differ"
        )
    images_b, images_r = set(base.record["dataset"]["images"]), set(new.record["dataset"]["images"])
    for side, images in (("baseline", images_b - images_r), ("run", images_r - images_b)):
        if images:
            result.errors.append(f"images only in the {side}: {', '.join(sorted(images))}")
    config = new.record["config"]
    result.notes.append(
        f"subset: dataset {config['dataset']}, {len(images_r)} images, {len(config['bpp'])} "
        f"target bpp; threads per worker {config['threads']} "
        f"(baseline {base.record['config']['threads']})"
    )
    if config["threads"] != base.record["config"]["threads"]:
        result.notes.append("thread counts differ: floating-point codecs may change their streams")
    bd, bd_self = {}, {}
    if not result.errors:
        bd = {r["codec"]: r for r in _try_compare(baseline, run, method)}
        bd_self = {r["codec"]: r for r in _try_compare(baseline, baseline, method)}
    skipped = new.record.get("regress", {}).get("skipped", {})
    failed = {f["codec"]: f["error"].splitlines()[0][:240] for f in new.failures}
    labels = [[c["label"] for c in side.record["config"]["codecs"]] for side in (base, new)]
    order = [*base.rows["codec"].unique(), *new.rows["codec"].unique(), *labels[0], *labels[1]]
    for codec in dict.fromkeys([*order, *skipped, *failed]):
        if only and codec not in only:
            result.codecs.append(CodecResult(codec, SKIPPED, notes=["not selected (--codecs)"]))
            continue
        in_base, in_run = codec in set(base.rows["codec"]), codec in set(new.rows["codec"])
        if not (in_base and in_run):
            result.codecs.append(_one_sided(codec, in_base, in_run, skipped, failed))
            continue
        item = _compare_codec(
            codec,
            base.rows[base.rows["codec"] == codec],
            new.rows[new.rows["codec"] == codec],
            bd.get(codec),
            bd_self.get(codec),
            tolerances,
        )
        if codec in failed:
            item.verdict = ERROR
            item.notes.insert(0, f"failed unit(s) in the run: {failed[codec]}")
        result.codecs.append(item)
    return result


def _one_sided(
    codec: str, in_base: bool, in_run: bool, skipped: dict[str, str], failed: dict[str, str]
) -> CodecResult:
    """A codec without rows on both sides: skipped when unavailable here and in neither, else
    an error saying which side has it and why the other does not."""
    if not in_base and not in_run and codec in skipped and codec not in failed:
        return CodecResult(codec, SKIPPED, notes=[skipped[codec]])
    if in_run:
        notes = ["only in run: not in baseline (review it, then `bench regress --update`)"]
    elif in_base:
        notes = [f"only in baseline: {skipped.get(codec, 'no rows in the run')}"]
    else:
        notes = ["in neither: no rows in the baseline or the run"]
    if codec in failed:
        notes.append(f"failed in the run: {failed[codec]}")
    return CodecResult(codec, ERROR, notes=notes)


def _try_compare(baseline: Path, run: Path, method: str) -> list[dict]:
    try:
        return compare_runs(baseline, run, method)
    except ValueError:  # no codec in common: every codec is then reported as one-sided
        return []


def _fmt(value: float, spec: str, unit: str = "") -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value if abs(value) >= 5e-4 else 0.0:{spec}}{unit}"  # no "-0.000"


def _size(item: CodecResult) -> str:
    if item.size_baseline == 0:
        return f"{item.size_run} B"
    change = 100.0 * (item.size_run - item.size_baseline) / item.size_baseline
    return f"{item.size_run} B ({change:+.2f} %)"


def markdown(result: RegressResult) -> str:
    """The regression table and verdict as Markdown (also readable as plain text in CI logs)."""
    tol = result.tolerances
    lines = [
        f"# bench regress: `{result.run}` against `{result.baseline}`",
        "",
        f"Gate: BD-rate (PSNR-RGB) <= {tol.max_bd_rate:g} % and per-point PSNR-RGB drop <= "
        f"{tol.max_psnr_drop:g} dB per codec. Stream size and decode time are reported, "
        "not gated.",
        "",
        "| codec | verdict | BD-rate % | max PSNR drop dB (where) | full-rate size | "
        "changed streams | decode time run/base | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in result.codecs:
        if c.verdict == SKIPPED or c.points == 0:
            lines.append(f"| {c.codec} | {c.verdict} | | | | | | {'; '.join(c.notes)} |")
            continue
        drop = _fmt(c.max_drop_db, "+.3f") + (f" ({c.max_drop_at})" if c.max_drop_db > 0 else "")
        changed = "unknown" if c.changed is None else f"{c.changed}/{c.points}"
        lines.append(
            f"| {c.codec} | {c.verdict} | {_fmt(c.bd_rate_pct, '+.3f')} | {drop} | {_size(c)} "
            f"| {changed} | {_fmt(c.decode_ratio, '.2f', 'x')} | {'; '.join(c.notes)} |"
        )
    lines.append("")
    lines += [f"- error: {e}" for e in result.errors] + [f"- note: {n}" for n in result.notes]
    failing = [c.codec for c in result.codecs if c.verdict not in (PASS, SKIPPED)]
    held = sum(c.verdict == PASS for c in result.codecs)
    verdict = (
        f"**PASS**: {held} codec(s) hold"
        if result.passed
        else f"**FAIL**: {', '.join(failing) or 'see the errors above'}"
    )
    return "\n".join([*lines, "", verdict, ""])
