"""Reports, CompressAI-compatible JSON, run comparison and the command line, on real runs."""

from __future__ import annotations

import html
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from conftest import BITPLANE, CROPS, MISBEHAVING, PLUGINS, ROOT, bench_command, write_dataset
from typer.testing import CliRunner

from bench.cli import app
from bench.compare import compare_runs
from bench.report import render, variant_suffix
from bench.runner import RunConfig, parse_codec_requests, run

BPP = (3.1, 6.1, 9.1, 12.1, 15.1, 18.1)  # one more complete bit-plane each
cli = CliRunner(env={"COLUMNS": "250"})
#: The global options of :func:`conftest.bench_command`, for the app called in this process.
PLUGIN_OPTIONS = ("--no-entry-points", "--plugin", BITPLANE, "--plugin", MISBEHAVING)


def _run(dataset, out, codecs="bitplane,slow[delay=0]", plugins=(BITPLANE, MISBEHAVING), bpp=BPP):
    config = RunConfig(
        codecs=tuple(parse_codec_requests(codecs)),
        dataset=str(dataset),
        bpp=bpp,
        plugin_files=plugins,
        entry_points=False,
        repeats=1,
    )
    run(config, out)
    return out


@pytest.fixture(scope="module")
def pristine_run(tmp_path_factory):
    """One run of ``bitplane`` and ``slow[delay=0]`` on the Kodak crops, made once per module."""
    folder = tmp_path_factory.mktemp("finished")
    return _run(write_dataset(folder / "data"), folder / "base")


@pytest.fixture
def finished_run(pristine_run, tmp_path):
    """A copy of :func:`pristine_run` of this test's own, which it may re-render or add to."""
    return Path(shutil.copytree(pristine_run, tmp_path / "base"))


def test_report_files_and_contents(finished_run):
    path = render(finished_run, ["bitplane", "slow[delay=0]"])
    text = path.read_text()
    for heading in ("## BD-rate against `bitplane`", "## Codecs", "## Time", "## Mean R-D points"):
        assert heading in text
    assert (finished_run / "rd.png").stat().st_size > 10_000
    assert "## BD-rate against `slow[delay=0]`" in text  # one table per anchor
    table = pd.read_csv(finished_run / "bdrate.csv")
    assert set(table["anchor"]) == {"bitplane", "slow[delay=0]"}
    row = table[(table["codec"] == "slow[delay=0]") & (table["anchor"] == "bitplane")].iloc[0]
    assert row["bd_rate_pct"] == pytest.approx(0.0, abs=1e-9)  # the same bitstream
    # c.png's bit-plane curve dips (22.8 dB, then 21.3 dB): its BD-rate is undefined, not a number
    assert row["images_with_bd"] == 2 and row["images"] == 3
    curves = pd.read_csv(finished_run / "curves.csv")
    assert list(curves[curves["codec"] == "bitplane"]["target_bpp"]) == list(BPP)


def _compressai_plot_utility() -> ModuleType:
    """CompressAI's plot utility (``compressai/utils/plot/__main__.py``) loaded from its file in
    the installed package: its own code, without compressai's ``__init__`` (torch, the models),
    which ``parse_json_file`` does not use."""
    package = importlib.util.find_spec("compressai")
    assert package is not None and package.submodule_search_locations
    path = Path(package.submodule_search_locations[0]) / "utils" / "plot" / "__main__.py"
    spec = importlib.util.spec_from_file_location("compressai_plot_utility", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compressai_json_is_read_by_compressais_plot_utility(finished_run):
    render(finished_run)
    data = json.loads((finished_run / "bitplane.json").read_text())
    assert data["name"] == "bitplane" and data["description"]
    results = data["results"]
    assert results["bpp"] == sorted(results["bpp"])
    assert len(results["bpp"]) == len(results["psnr-rgb"]) == len(results["decoding_time"])
    parsed = _compressai_plot_utility().parse_json_file(finished_run / "bitplane.json", "psnr")
    assert parsed["name"] == "bitplane" and parsed["xs"] == results["bpp"]
    assert parsed["ys"] == results["psnr-rgb"]


def test_compare_identical_and_regressed_runs(crops_dataset, tmp_path, finished_run):
    same = compare_runs(finished_run, finished_run)
    assert all(r["bd_rate_pct"] == pytest.approx(0, abs=1e-9) for r in same)
    worse = _run(
        crops_dataset,
        tmp_path / "worse",
        codecs="bitplane",
        plugins=(str(PLUGINS / "regressed_bitplane.py"),),
    )
    (row,) = compare_runs(finished_run, worse)
    assert row["bd_rate_pct"] > 0 and row["mean_delta_psnr_db"] < 0
    result = cli.invoke(app, ["compare", str(finished_run), str(worse), "--fail-above", "0.5"])
    assert result.exit_code == 1, result.output
    assert "regression" in result.output
    ok = cli.invoke(app, ["compare", str(finished_run), str(finished_run), "--fail-above", "0.5"])
    assert ok.exit_code == 0, ok.output


def test_cli_help_codecs_and_datasets():
    result = cli.invoke(app, ["--help"])
    assert result.exit_code == 0 and "Exit codes" in result.output
    result = cli.invoke(app, ["--plugin", str(PLUGINS / "broken_import.py"), "codecs"])
    assert result.exit_code == 0
    assert "jpeg2000" in result.output and "plugin failed to load" in result.output
    strict = cli.invoke(app, ["--plugin", str(PLUGINS / "broken_import.py"), "codecs", "--strict"])
    assert strict.exit_code == 1
    result = cli.invoke(app, ["datasets", "list"])
    assert result.exit_code == 0
    for name in ("kodak", "clic-2020-professional-valid", "tecnick"):
        assert name in result.output


def test_cli_bad_input_and_usage_exit_codes(tmp_path):
    """3 for input that is not there or not valid (dataset, run directory); 2 for a command line
    naming an unknown codec or a malformed grid."""
    assert cli.invoke(app, ["run", "--codecs", "jpeg2000", "--dataset", "nope"]).exit_code == 3
    assert cli.invoke(app, ["report", str(tmp_path)]).exit_code == 3
    assert cli.invoke(app, ["datasets", "verify", "nope"]).exit_code == 3
    unknown = ["run", "--codecs", "nope", "--dataset", "kodak", "--out", str(tmp_path / "x")]
    assert cli.invoke(app, unknown).exit_code == 2
    assert cli.invoke(app, ["run", "--codecs", "jpeg2000", "--bpp", "0:1"]).exit_code == 2
    assert not (tmp_path / "x").exists()


def test_cli_run_end_to_end_with_failures_gives_exit_1(crops_dataset, tmp_path):
    out = tmp_path / "cli"
    command = bench_command(
        "run",
        "--codecs",
        "bitplane,crashy,slow[delay=0]",
        "--anchor",
        "bitplane",
        "--dataset",
        str(crops_dataset),
        "--bpp",
        "3.1:18.1:3",
        "--repeats",
        "1",
        "--out",
        str(out),
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "1 unit(s) failed" in done.stderr
    report = (out / "report.md").read_text()
    assert "FAILED `crashy` on c.png" in report
    # re-render from the stored rows alone gives the same BD table
    before = (out / "bdrate.csv").read_text()
    assert cli.invoke(app, ["report", str(out)]).exit_code == 0
    assert (out / "bdrate.csv").read_text() == before
    table = pd.read_csv(out / "bdrate.csv")
    # slow[delay=0] is bitplane with a pause: the same streams, so the same curve, BD-rate 0
    (same,) = table[table["codec"] == "slow[delay=0]"].itertuples()
    assert same.anchor == "bitplane" and same.bd_rate_pct == pytest.approx(0.0, abs=1e-6)
    assert same.bd_psnr_db == pytest.approx(0.0, abs=1e-6) and same.images == 3
    # c.png's curve falls from 22.85 dB at 3.1 bpp to 21.32 dB at 6.1 (raw bit-planes, MSB
    # first): not invertible, so only a.png and b.png have a per-image BD-rate
    assert same.images_with_bd == 2 and same.bd_rate_per_image_mean_pct == pytest.approx(0.0)
    # crashy lacks c.png, so it has no aggregated point: never a number in the BD table
    assert table[table["codec"] == "crashy"]["bd_rate_pct"].isna().all()
    assert "### crashy\n\nNo aggregated point: 1 unit(s) failed" in report


def test_cli_check_passes_a_conforming_codec_and_fails_a_leaky_one():
    good = cli.invoke(app, ["--no-entry-points", "--plugin", BITPLANE, "check", "bitplane"])
    assert good.exit_code == 0, good.output
    assert "fresh-process" in good.output and "FAIL" not in good.output
    bad = cli.invoke(
        app, ["--no-entry-points", "--plugin", BITPLANE, "--plugin", MISBEHAVING, "check", "leaky"]
    )
    assert bad.exit_code == 1 and "FAIL" in bad.output


def test_report_is_written_when_no_codec_has_a_point_or_the_anchor_failed(tmp_path):
    """Issue 13: no aggregated point anywhere, and an anchor with no row at all. The first run
    is the real command in a fresh process (its exit status and console); the run without any
    result row goes through the same command line in this process."""
    dataset = write_dataset(tmp_path / "data", crops={"c.png": CROPS["c.png"]})  # crashy fails
    out = tmp_path / "run"
    command = bench_command(
        "run", "--codecs", "crashy,bitplane", "--anchor", "crashy", "--dataset", str(dataset),
        "--bpp", "0.001", "--repeats", "1", "--out", str(out),
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "1 unit(s) failed" in done.stderr
    report = (out / "report.md").read_text()
    assert "No BD-rates: the anchor `crashy` has no aggregated curve (1 unit(s) failed" in report
    assert "crashy codec refuses width 53" in report
    assert "### bitplane\n\nNo aggregated point: 1 of its 1 points undecodable" in report
    assert pd.read_csv(out / "bdrate.csv").empty
    own = (out / "report.md").read_text()
    variant = cli.invoke(app, ["report", str(out), "--anchor", "bitplane"])
    assert variant.exit_code == 0, variant.output
    # another anchor writes a variant beside the run's own report, which stays as it was
    assert "report-anchor-bitplane.md" in variant.output and "is unchanged" in variant.output
    assert (out / "report.md").read_text() == own
    text = (out / "report-anchor-bitplane.md").read_text()
    assert "No BD-rates: the anchor `bitplane`" in text
    assert "[report-anchor-bitplane.html](report-anchor-bitplane.html)" in text
    assert (out / "report-anchor-bitplane.html").is_file()
    assert (out / "bdrate-anchor-bitplane.csv").is_file()
    alone = tmp_path / "alone"  # no result row at all
    done = cli.invoke(
        app, [*PLUGIN_OPTIONS, "run", "--codecs", "crashy", "--dataset", str(dataset), "--out",
              str(alone)],
    )  # fmt: skip
    # exit 1 from the command itself (typer.Exit), not from an exception the runner caught
    assert done.exit_code == 1 and isinstance(done.exception, SystemExit), done.exception
    assert "1 unit(s) failed" in done.stderr, done.output
    assert (
        "### crashy\n\nNo aggregated point: 1 unit(s) failed" in (alone / "report.md").read_text()
    )


def test_images_left_out_of_bd_rates_are_named_with_the_psnr_drop(finished_run):
    """Issue 18 item 2: an image leaving the per-image BD-rates is named, with its reason, in
    report.md, report.html, bdrate.csv and on the console (``bench report`` called in this
    process: the console's text is what is checked)."""
    done = cli.invoke(app, [*PLUGIN_OPTIONS, "report", str(finished_run)])
    assert done.exit_code == 0, done.output
    # c.png's bit-plane curve falls (raw bit-planes, most significant first)
    assert (
        "note: bitplane on c.png: PSNR-RGB falls from 22.85 dB at 3.096 bpp to 21.32 dB at "
        "6.099 bpp; that image has no per-image BD-rate" in done.stdout
    )
    report = (finished_run / "report.md").read_text()
    assert "| slow[delay=0] | 0.000 | 0.000 |" in report and "| 2/3 |" in report
    assert (
        "- `slow[delay=0]`: c.png left out: non-invertible curve: `bitplane` on c.png has PSNR "
        "decreasing with rate (22.8453 dB at 3.09638 bpp, then 21.3231 dB at 6.09893 bpp)"
    ) in report
    assert "## PSNR falling as the rate rises" in report
    assert "| bitplane | c.png | 3.096 -> 6.099 | 22.85 -> 21.32 |" in report
    table = pd.read_csv(finished_run / "bdrate.csv", keep_default_na=False)
    (row,) = table[table["codec"] == "slow[delay=0]"].itertuples()
    assert row.images_left_out.startswith("c.png: non-invertible curve: `bitplane` on c.png")
    page = (finished_run / "report.html").read_text()
    assert 'id="psnr-drops"' in page and "c.png left out: non-invertible curve" in page


def test_few_points_short_streams_and_the_learned_caveat(crops_dataset, tmp_path):
    """Issue 18 items 6 and 8: a BD-rate from fewer than 4 points per curve is marked on the
    console and in the reports; a target past the whole stream is noted; the learned codecs'
    'not the papers' weights' caveat, with the base's gap, heads report.md and report.html.
    ``bench run`` is called in this process (the console's text is what is checked; the tests
    above run the command in a fresh process)."""
    out = tmp_path / "run"
    done = cli.invoke(
        app, [*PLUGIN_OPTIONS, "run", "--codecs", "jpeg2000,spiht,plonq", "--anchor", "jpeg2000",
              "--dataset", str(crops_dataset), "--bpp", "0.5,1,5", "--repeats", "1", "--out",
              str(out)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    spiht = next(line for line in done.stdout.splitlines() if "│ spiht " in line)
    assert "warning: few points: `jpeg2000` has" in spiht and "a rough figure" in spiht
    report = (out / "report.md").read_text()
    assert "| spiht |" in report and "warning: few points: `jpeg2000` has" in report
    assert pd.read_csv(out / "bdrate.csv")["warning"].str.startswith("few points").all()
    # spiht's encoder stops at 2.5 bpp: the 5 bpp target decodes the whole stream
    assert (
        "- `spiht`: the whole stream is shorter than the budget at target(s) 5 bpp on 3" in report
    )
    top, _, _ = report.partition("![R-D curves](rd.png)")
    assert "**Not the papers' weights.** `plonq` run on small weights this project trained" in top
    assert re.search(r"at \d\.\d{3} bpp / \d+\.\d\d dB, \d+\.\d\d dB below mbt2018-mean", top)
    page = (out / "report.html").read_text()
    header = page[: page.index("</header>")]
    assert '<p id="caveat"><strong>Not the papers' in html.unescape(header)


def test_help_shows_metavars_not_types():
    """Issue 18 item 8: no <bool>, <list[Path]>, literal double backticks or eaten markup. The
    top-level help is the real command's in a fresh process; the commands' helps come from the
    same app called in this process."""
    done = subprocess.run(bench_command("--help"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    helps = {(): done.stdout}
    for args in (("run",), ("report",), ("plot",), ("compare",), ("datasets", "list")):
        result = cli.invoke(app, [*PLUGIN_OPTIONS, *args, "--help"])
        assert result.exit_code == 0, result.output
        helps[args] = result.stdout
    for args, text in helps.items():
        for noise in ("<bool>", "<list[Path]>", "<str>", "<int range>", "``", "\\["):
            assert noise not in text, (args, noise, text)
    assert "--plugin FILE.py" in helps[()] and "plot" in helps[()]
    run_help = helps[("run",)]
    assert "'jpeg2000[levels=4]'" in run_help and "'.[dask]'" in run_help
    assert "--bpp GRID" in run_help and "--jobs N" in run_help


def test_datasets_list_prints_full_names_and_paths_off_terminal():
    from bench import datasets

    done = subprocess.run(
        bench_command("datasets", "list"), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    clic = datasets.load_manifest("clic-2020-professional-valid")
    assert "clic-2020-professional-valid" in done.stdout and str(clic.root) in done.stdout
    assert "…" not in done.stdout


def test_plot_draws_a_run_beside_other_results_and_names_what_it_cannot_read(finished_run):
    """Issue 18 item 7: `bench plot` works on the README's install (no compressai import)."""
    render(finished_run)  # the CompressAI-format <codec>.json files
    png = finished_run.parent / "rd.png"
    done = subprocess.run(
        bench_command(
            "plot", str(finished_run), "--with", "results/reference/compressai-bpg444-kodak.json",
            "--published", "--out", str(png),
        ),
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"plot: {png} (4 curves)" in done.stdout and png.stat().st_size > 20_000
    # what it cannot read: the same command called in this process
    bad = cli.invoke(
        app, [*PLUGIN_OPTIONS, "plot", str(finished_run), "--with", str(finished_run / "run.json")]
    )
    assert bad.exit_code == 3 and "not in CompressAI's results format" in " ".join(
        bad.stderr.split()
    )
    empty = cli.invoke(app, [*PLUGIN_OPTIONS, "plot", str(finished_run.parent)])
    assert empty.exit_code == 3
    assert "no CompressAI-format <codec>.json" in " ".join(empty.stderr.split())


def test_the_default_anchor_is_the_first_progressive_codec(tmp_path):
    """``bench run`` without ``--anchor``: a single-point or ladder codec listed first (``msh``
    in the issue's own command) would leave every BD-rate undefined."""
    from bench.cli import _default_anchors
    from bench.store import CODECS, RunStore

    kinds = {"msh": "rate-ladder", "plonq": "progressive", "spiht": "progressive"}
    RunStore(tmp_path).write_json(CODECS, {k: {"kind": v} for k, v in kinds.items()})
    assert _default_anchors(tmp_path, ["msh", "plonq", "spiht"]) == ["plonq"]
    assert _default_anchors(tmp_path, ["spiht", "msh"]) == ["spiht"]
    assert _default_anchors(tmp_path, ["msh"]) == ["msh"]  # no progressive codec: the first
    assert _default_anchors(tmp_path, ["failed", "spiht"]) == ["spiht"]  # no info: not chosen
    assert _default_anchors(tmp_path / "no-unit-ran", ["a", "b"]) == ["a"]


def test_variant_names():
    record = {"anchors": ["spiht"], "config": {"codecs": [{"label": "jpeg2000"}]}}
    assert variant_suffix(record, [], "pchip") == ""
    assert variant_suffix(record, ["spiht"], "pchip") == ""
    assert variant_suffix(record, ["jpeg2000"], "pchip") == "-anchor-jpeg2000"
    assert variant_suffix(record, ["jpeg2000", "spiht"], "cubic") == "-anchor-jpeg2000-spiht-cubic"
    assert variant_suffix(record, [], "cubic") == "-cubic"


def _codec_table(report: str) -> dict[str, dict[str, str]]:
    """report.md's codec table: codec -> column -> cell (cells split at unescaped ``|``)."""
    section = report.split("## Codecs", 1)[1].strip().splitlines()
    header = [c.strip() for c in section[0].strip("|").split("|")]
    rows = {}
    for line in section[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def test_codec_table_shows_the_learned_codecs_flops_per_pixel(tmp_path):
    """Issue 14: hc's and msh's encoder and decoder FLOPs per pixel (torch's count on 256x256,
    recorded by the workers in codecs.json) in the codec table of report.md and report.html;
    `-` for an analytic codec. One target bpp: the counts do not depend on the rate, and the
    run's cost is the learned codecs' start-up."""
    crop = {"a.png": ("kodim05.png", 50, 300, 40, 48)}
    data = write_dataset(tmp_path / "data", crops=crop)
    out = _run(data, tmp_path / "run", "hc,msh,spiht", (), bpp=(1.0,))
    render(out)
    infos = json.loads((out / "codecs.json").read_text())
    hc, msh = infos["hc"]["flops_per_pixel"], infos["msh"]["flops_per_pixel"]
    assert infos["spiht"]["flops_per_pixel"] == {}
    # HC adds its conditional priors and LC convolutions to a base of the same N and M
    assert 1.0 < hc["encoder"] / msh["encoder"] < 1.2 and 1.0 < hc["decoder"] / msh["decoder"] < 1.2
    assert 5e4 < msh["decoder"] < msh["encoder"] < 2e5  # the encoder adds h_a to g_a ~ g_s
    table = _codec_table((out / "report.md").read_text())
    for name, flops in (("hc", hc), ("msh", msh)):
        assert table[name]["encoder FLOPs/px"] == f"{flops['encoder']:,.0f}"
        assert table[name]["decoder FLOPs/px"] == f"{flops['decoder']:,.0f}"
    assert table["spiht"]["encoder FLOPs/px"] == table["spiht"]["decoder FLOPs/px"] == "-"
    assert (
        "counted by `torch.utils.flop_counter` on a 256x256 input"
        in (out / "report.md").read_text()
    )
    page = (out / "report.html").read_text()
    codecs_html = page[page.index('id="codec-table"') : page.index('id="time-table"')]
    assert "<th>encoder FLOPs/px</th><th>decoder FLOPs/px</th>" in codecs_html
    assert f"<td>{hc['encoder']:,.0f}</td><td>{hc['decoder']:,.0f}</td>" in codecs_html
    assert "<code>torch.utils.flop_counter</code>" in codecs_html


def test_a_run_recorded_before_the_flops_count_still_renders(tmp_path):
    """A run recorded before the count (results/reference/kodak-learned with
    ``flops_per_pixel`` taken out of its codecs.json, as runs of that time wrote it) renders
    with `-` in the FLOPs columns and no FLOPs note."""
    old = Path(shutil.copytree(ROOT / "results/reference/kodak-learned", tmp_path / "old"))
    codecs = json.loads((old / "codecs.json").read_text())
    assert any("flops_per_pixel" in i for i in codecs.values())
    for info in codecs.values():
        info.pop("flops_per_pixel", None)
    (old / "codecs.json").write_text(json.dumps(codecs))
    report = render(old).read_text()
    table = _codec_table(report)
    assert {"plonq", "dzq", "msh", "spiht"} <= set(table)
    assert {r["encoder FLOPs/px"] for r in table.values()} == {"-"}
    assert "torch.utils.flop_counter" not in report
    assert "<th>encoder FLOPs/px</th>" in (old / "report.html").read_text()
