"""``bench regress``, the R-D regression gate: real codecs (JPEG 2000, SPIHT-AC), Kodak crops."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import BITPLANE, PLUGINS, write_dataset
from typer.testing import CliRunner

from bench.cli import app
from bench.registry import load_registry
from bench.regress import BUILTIN, ERROR, PASS, REGRESSION, SKIPPED, regress, resolve_codecs
from bench.runner import RunConfig, parse_codec_requests, run
from bench.store import FAILURES, RUN, RunStore

BPP = (0.25, 0.5, 1.0, 2.0)
TUNED = str(PLUGINS / "tuned_spiht.py")
REGRESSED = str(PLUGINS / "tuned_spiht_regressed.py")
cli = CliRunner(env={"COLUMNS": "250"})


def _regress(plugin, *args):
    return cli.invoke(app, ["--no-entry-points", "--plugin", plugin, "regress", *args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """A baseline (jpeg2000, tuned-spiht on three crops), then ``bench regress`` measuring the
    baseline's subset again with tuned-spiht regressed (``worse``) and unchanged (``same``)."""
    root = tmp_path_factory.mktemp("regress")
    config = RunConfig(
        codecs=tuple(parse_codec_requests("jpeg2000,tuned-spiht")),
        dataset=str(write_dataset(root / "data")),
        bpp=BPP,
        plugin_files=(TUNED,),
        entry_points=False,
        repeats=1,
    )
    run(config, root / "baseline")
    out = {"baseline": root / "baseline"}
    for name, plugin in (("worse", REGRESSED), ("same", TUNED)):
        out[name] = root / name
        out[f"{name}_cli"] = _regress(
            plugin, "--baseline", str(out["baseline"]), "--out", str(out[name])
        )
    return out


def _verdicts(text: str) -> dict[str, str]:
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| ")]
    return {cells[1].strip(): cells[2].strip() for cells in rows[1:]}


def _edited(source: Path, target: Path, keep) -> Path:
    """A copy of run ``source`` with only the rows ``keep(row)`` accepts (and their images)."""
    shutil.copytree(source, target)
    rows = [r for r in RunStore(source).rows() if keep(r)]
    (target / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    record = RunStore(target).read_json(RUN)
    images = {r["image"] for r in rows}
    record["dataset"]["images"] = [i for i in record["dataset"]["images"] if i in images]
    RunStore(target).write_json(RUN, record)
    return target


def test_regressed_codec_fails_the_gate_and_unchanged_ones_pass(runs):
    worse = runs["worse_cli"]
    assert worse.exit_code == 1, worse.output
    assert _verdicts(worse.output) == {"jpeg2000": PASS, "tuned-spiht": REGRESSION}
    assert "**FAIL**: tuned-spiht" in worse.output
    table = (runs["worse"] / "regress.md").read_text()
    assert "BD-rate +" in table and "dB at " in table  # says by how much and where
    row = next(line for line in table.splitlines() if line.startswith("| tuned-spiht"))
    assert "| 12/12 |" in row  # every stream changed


def test_same_codecs_give_identical_streams_and_pass(runs):
    same = runs["same_cli"]
    assert same.exit_code == 0, same.output
    assert _verdicts(same.output) == {"jpeg2000": PASS, "tuned-spiht": PASS}
    for codec in ("jpeg2000", "tuned-spiht"):  # bit-identical: BD-rate and drop exactly 0
        row = next(line for line in same.output.splitlines() if line.startswith(f"| {codec} "))
        assert "| +0.000 | +0.000 |" in row and "| 0/12 |" in row


def test_update_adopts_the_run_as_baseline(runs, tmp_path):
    baseline = tmp_path / "baseline"
    shutil.copytree(runs["baseline"], baseline)
    result = _regress(REGRESSED, str(runs["worse"]), "--baseline", str(baseline), "--update")
    assert result.exit_code == 0, result.output
    assert "REGRESSION" in result.output  # the reviewer sees what the update accepts
    assert not (baseline / "regress.md").exists() and (baseline / "report.md").exists()
    assert regress(runs["worse"], baseline).passed
    # without RUN, --update measures the stored subset afresh, then adopts it
    shutil.rmtree(baseline)
    shutil.copytree(runs["baseline"], baseline)
    fresh = _regress(
        REGRESSED, "--baseline", str(baseline), "--update", "--out", str(tmp_path / "f")
    )
    assert fresh.exit_code == 0, fresh.output
    assert regress(runs["worse"], baseline).passed


def test_codecs_gates_only_the_named_codecs(runs, tmp_path):
    """``--codecs`` measures and compares only the named codecs: the regressed tuned-spiht
    fails alone, jpeg2000 is skipped as not selected (and not run); given a RUN, a selection
    without the regressed codec passes."""
    out = tmp_path / "only"
    result = _regress(
        REGRESSED, "--baseline", str(runs["baseline"]), "--codecs", "tuned-spiht", "--out", str(out)
    )
    assert result.exit_code == 1, result.output
    assert _verdicts(result.output) == {"tuned-spiht": REGRESSION, "jpeg2000": SKIPPED}
    assert "not selected (--codecs)" in result.output
    assert {r["codec"] for r in RunStore(out).rows()} == {"tuned-spiht"}
    assert regress(runs["worse"], runs["baseline"], only=("jpeg2000",)).passed
    assert not regress(runs["worse"], runs["baseline"], only=("tuned-spiht",)).passed


def test_codec_or_image_on_one_side_only_is_an_error(runs, tmp_path):
    full = runs["baseline"]
    jpeg_only = _edited(full, tmp_path / "jpeg", lambda r: r["codec"] == "jpeg2000")
    result = regress(full, jpeg_only)
    assert not result.passed
    verdicts = {c.codec: (c.verdict, c.notes) for c in result.codecs}
    assert (
        verdicts["tuned-spiht"][0] == ERROR and "not in baseline" in verdicts["tuned-spiht"][1][0]
    )
    assert verdicts["jpeg2000"][0] == PASS
    missing = regress(jpeg_only, full)
    assert {c.codec: c.verdict for c in missing.codecs} == {"jpeg2000": PASS, "tuned-spiht": ERROR}
    # a codec whose every unit failed has no rows, but is an error, not silence
    failed = _edited(full, tmp_path / "failed", lambda r: True)
    RunStore(failed).append(FAILURES, {"codec": "broken", "image": "a.png", "error": "E: boom"})
    (verdict,) = [c for c in regress(failed, full).codecs if c.codec == "broken"]
    assert verdict.verdict == ERROR and "failed in the run: E: boom" in verdict.notes
    fewer = _edited(full, tmp_path / "fewer", lambda r: r["image"] != "c.png")
    result = regress(fewer, full)
    assert not result.passed and result.errors == ["images only in the baseline: c.png"]
    cli_result = _regress(TUNED, str(fewer), "--baseline", str(full))
    assert cli_result.exit_code == 1 and "images only in the baseline: c.png" in cli_result.output


def test_rows_without_stream_hashes_still_compare(runs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(runs["baseline"], old)
    rows = RunStore(old).rows()
    for row in rows:
        assert len(row.pop("stream_sha256")) == 64
    (old / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = regress(runs["same"], old)
    assert result.passed and all(c.changed is None for c in result.codecs)


def test_builtin_rule_covers_available_builtins_only():
    registry = load_registry([BITPLANE], entry_points=False)
    codecs, skipped = resolve_codecs(BUILTIN, registry)
    names = codecs.split(",")
    assert {"jpeg2000", "spiht", "spiht-ac", "hevc444"} <= set(names)
    assert "bitplane" not in names and set(names).isdisjoint(skipped)
    for name, reason in skipped.items():
        assert registry.availability(name) is not None and reason.startswith("unavailable here")
    assert resolve_codecs("jpeg2000,spiht", registry) == ("jpeg2000,spiht", {})


def test_usage_errors(runs, tmp_path):
    baseline = runs["baseline"]
    both = _regress(TUNED, str(baseline), "--baseline", str(baseline), "--codecs", "x", "--update")
    assert both.exit_code == 2 and "--codecs with --update needs no RUN" in both.output
    gate_all = _regress(TUNED, "--baseline", str(baseline), "--codecs", "builtin")
    assert gate_all.exit_code == 2 and "name the codecs" in gate_all.output
    missing = _regress(TUNED, str(baseline), "--baseline", str(tmp_path / "nothing"))
    assert missing.exit_code == 3 and "no run.json" in missing.output
