"""Typed codec parameters: the declaration read from a factory, text coerced to it, and the
command line refusing bad codecs and parameters before any run folder or worker exists."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
from collections.abc import Sequence
from typing import Literal, Optional

import pytest
from conftest import BITPLANE, MISBEHAVING, bench_command
from typer.testing import CliRunner, Result

from bench.cli import app
from bench.params import ParameterError, bind, coerce, declared
from bench.registry import load_registry
from bench.runner import CodecRequestError, bind_requests, parse_codec_requests

cli = CliRunner(env={"COLUMNS": "250"})


def factory(
    *,
    flag: bool = True,
    count: int = 3,
    rate: float = 0.5,
    name: str = "a",
    layers: list[int] = (8, 4),  # noqa: B006 - a declared default, never mutated
    pair: tuple[float, float] = (1.0, 2.0),
    cap: Optional[float] = None,  # noqa: UP045 - the spelling under test
    limit: int | None = None,
    mode: Literal["mean", "midpoint"] = "mean",
    rates: Sequence[float] = (0.5,),
):
    """A codec factory.

    Args:
        flag: a switch.
        count: how many, on a line
            that goes on.
    """
    return dict(flag=flag, count=count)


@pytest.mark.parametrize(
    "text, value",
    [("true", True), ("False", False), ("YES", True), ("no", False), ("1", True), ("0", False)],
)
def test_bool_accepts_the_six_spellings(text, value):
    assert coerce(text, bool) is value


@pytest.mark.parametrize("text", ["2", "falsey", "", "none", "on"])
def test_bool_rejects_everything_else(text):
    with pytest.raises(ValueError, match="true/false"):
        coerce(text, bool)


def test_numbers_strings_and_already_typed_values():
    assert coerce("0.5", float) == 0.5 and coerce("1e-3", float) == 0.001
    assert coerce("4", float) == 4.0 and isinstance(coerce(4, float), float)
    assert coerce("-7", int) == -7 and coerce(7, int) == 7
    for bad, kind in (("4.0", int), ("x", float), (True, int), ("1,2", float)):
        with pytest.raises(ValueError):
            coerce(bad, kind)
    assert coerce("'quoted, text'", str) == "quoted, text" and coerce("plain", str) == "plain"
    assert coerce(False, bool) is False  # a stored run's configuration passes unchanged


def test_lists_tuples_optional_and_literal():
    hints = {p.name: p.annotation for p in declared(factory).parameters.values()}
    assert coerce("[8,4]", hints["layers"]) == [8, 4]
    assert coerce("(8, 4, 2)", hints["layers"]) == [8, 4, 2]
    assert coerce("[]", hints["layers"]) == []
    assert coerce([8, 4], hints["layers"]) == [8, 4]
    assert coerce("[0.5, 1e-3]", hints["rates"]) == [0.5, 0.001]
    assert coerce("[1,2]", hints["pair"]) == (1.0, 2.0)
    with pytest.raises(ValueError, match="exactly 2"):
        coerce("[1,2,3]", hints["pair"])
    with pytest.raises(ValueError, match="bracketed"):
        coerce("8;4", hints["layers"])
    with pytest.raises(ValueError, match="integer"):
        coerce("[8,x]", hints["layers"])
    assert coerce("none", hints["cap"]) is None and coerce("0.25", hints["cap"]) == 0.25
    assert coerce("None", hints["limit"]) is None and coerce("3", hints["limit"]) == 3
    assert coerce("midpoint", hints["mode"]) == "midpoint"
    with pytest.raises(ValueError, match="'mean', 'midpoint'"):
        coerce("laplace", hints["mode"])


def test_declaration_reads_types_defaults_and_help():
    declaration = declared(factory)
    count = declaration.parameters["count"]
    assert (count.annotation, count.default) == (int, 3)
    assert count.help == "how many, on a line that goes on."
    assert declaration.parameters["flag"].help == "a switch."
    assert declaration.describe().startswith("flag: bool = True, count: int = 3, rate: float")
    assert "layers: list[int] = (8, 4)" in declaration.describe()
    assert not declaration.open


def test_bind_names_the_key_value_type_and_every_parameter():
    assert bind("f", factory, {"flag": "false", "layers": "[2]"}) == {"flag": False, "layers": [2]}
    with pytest.raises(ParameterError) as unknown:
        bind("f", factory, {"levls": "4"})
    assert "f has no parameter 'levls'" in str(unknown.value)
    assert "f's parameters: flag: bool = True, count: int = 3" in str(unknown.value)
    with pytest.raises(ParameterError) as wrong:
        bind("f", factory, {"count": "many"})
    assert "f[count=many]: expected int (an integer)" in str(wrong.value)


def test_parse_keeps_brackets_inside_values_and_bind_types_them():
    requests = parse_codec_requests("jpeg2000[layer_bpp=[0.5,1],levels=4],spiht[weighted=no]")
    assert [r.label for r in requests] == [
        "jpeg2000[layer_bpp=[0.5,1],levels=4]",
        "spiht[weighted=no]",
    ]
    assert requests[0].params == {"layer_bpp": "[0.5,1]", "levels": "4"}
    bound = bind_requests(requests, load_registry(entry_points=False))
    assert bound[0].params == {"layer_bpp": [0.5, 1.0], "levels": 4}
    assert bound[1].params == {"weighted": False}
    with pytest.raises(CodecRequestError, match="given twice"):
        parse_codec_requests("spiht[levels=4,levels=5]")


def test_unknown_codec_suggests_the_closest_names():
    registry = load_registry(entry_points=False)
    with pytest.raises(CodecRequestError, match="did you mean deephq\\?"):
        bind_requests(parse_codec_requests("deephg"), registry)
    with pytest.raises(CodecRequestError, match="did you mean spiht-ac or spiht\\?"):
        bind_requests(parse_codec_requests("spiht-acc"), registry)


#: The class each built-in factory builds (module, class), and whether it needs torch.
CODEC_CLASSES = {
    "spiht": ("plugins.spiht.codec", "SpihtCodec", False),
    "spiht-ac": ("plugins.spiht.codec", "SpihtCodec", False),
    "bpg": ("plugins.bpg.bpg", "BpgCodec", False),
    "hevc444": ("plugins.bpg.hevc444", "Hevc444Codec", False),
    "plonq": ("plugins.plonq.codec", "PlonqCodec", True),
    "dzq": ("plugins.dzq.codec", "DzqCodec", True),
    "deephq": ("plugins.deephq.codec", "DeepHQCodec", True),
    "hc": ("plugins.hc.codec", "HCCodec", True),
    "plonq-naive": ("plugins.learned.ladder", "NaiveScalingLadder", True),
    "msh": ("plugins.learned.ladder", "BaseModelLadder", True),
}


def _codec_class_defaults(name: str) -> dict:
    """The keyword defaults of the class a built-in factory builds (imports the codec)."""
    import importlib

    assert name in CODEC_CLASSES, f"add the class that {name}'s factory builds to CODEC_CLASSES"
    module, cls, needs_torch = CODEC_CLASSES[name]
    if needs_torch:
        pytest.importorskip("torch")
    signature = inspect.signature(getattr(importlib.import_module(module), cls))
    return {p.name: p.default for p in signature.parameters.values() if p.default is not p.empty}


def test_every_builtin_factory_declares_its_codecs_parameters_and_defaults():
    """The factories repeat the codec classes' keyword parameters (so that declaring them
    imports nothing heavy): same names, same defaults, a type and a help line for each."""
    registry = load_registry(entry_points=False)
    for name, spec in registry.codecs.items():
        declaration = declared(spec.factory)
        assert not declaration.open, name
        for parameter in declaration.parameters.values():
            assert parameter.help and parameter.annotation is not inspect.Parameter.empty, (
                name,
                parameter.name,
            )
        if isinstance(spec.factory, type):
            continue  # the class itself is the declaration (jpeg2000)
        expected = _codec_class_defaults(name)
        expected.pop("arithmetic", None)  # spiht vs spiht-ac: fixed by the factory
        declared_defaults = {p.name: p.default for p in declaration.parameters.values()}
        normalise = {k: list(v) if isinstance(v, tuple) else v for k, v in expected.items()}
        assert {
            k: list(v) if isinstance(v, tuple) else v for k, v in declared_defaults.items()
        } == normalise, name


def _run(*args: str) -> subprocess.CompletedProcess:
    """``bench ARGS`` in a fresh process."""
    return subprocess.run(bench_command(*args), capture_output=True, text=True, timeout=600)


def _invoke(*args: str) -> Result:
    """``bench ARGS`` called in this process (the same app, plugins and global options)."""
    return cli.invoke(
        app, ["--no-entry-points", "--plugin", BITPLANE, "--plugin", MISBEHAVING, *args]
    )


def test_run_records_the_coerced_parameters(crops_dataset, tmp_path):
    """``spiht[weighted=false]`` used to run weighted (``bool("false")``). The command line is
    called in this process: what is checked is how it reads the text, not a fresh process."""
    out = tmp_path / "run"
    done = _invoke(
        "run", "--codecs", "spiht[weighted=false,levels=3],spiht-ac[weighted=yes]",
        "--dataset", str(crops_dataset), "--images", "b.png", "--bpp", "1,2",
        "--repeats", "1", "--out", str(out),
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    config = json.loads((out / "run.json").read_text())["config"]
    assert [c["params"] for c in config["codecs"]] == [
        {"weighted": False, "levels": 3},
        {"weighted": True},
    ]
    infos = json.loads((out / "codecs.json").read_text())
    assert infos["spiht[weighted=false,levels=3]"]["parameters"]["weighted"] is False
    assert infos["spiht[weighted=false,levels=3]"]["parameters"]["levels"] == 3
    assert infos["spiht-ac[weighted=yes]"]["parameters"]["weighted"] is True
    anchor = _invoke("report", str(out), "--anchor", "spiht[weighted=False,levels=3]")
    assert anchor.exit_code == 2, anchor.output  # usage, not 1 (a problem found) as it was
    assert "did you mean spiht[weighted=false,levels=3]" in " ".join(anchor.stderr.split())


def test_bad_codecs_and_parameters_exit_2_before_any_run_folder(crops_dataset, tmp_path):
    """The first refusal is the real command in a fresh process; the others call the same
    command line in this process."""
    out = tmp_path / "never"
    common = ["--dataset", str(crops_dataset), "--bpp", "1", "--out", str(out)]
    bogus = _run("run", "--codecs", "jpeg2000,spiht[bogus=1]", *common)
    assert bogus.returncode == 2, bogus.stderr
    text = " ".join(bogus.stderr.split())
    assert "spiht has no parameter 'bogus'" in text
    assert (
        "spiht's parameters: max_bpp: float = 2.5, levels: int = 5, weighted: bool = False, "
        "recon: float = 0.5" in text
    )
    wrong = _invoke("run", "--codecs", "spiht[weighted=maybe]", *common)
    assert wrong.exit_code == 2
    assert "spiht[weighted=maybe]: expected bool" in " ".join(wrong.stderr.split())
    near = _invoke("run", "--codecs", "deephg", *common)
    assert near.exit_code == 2 and "did you mean deephq?" in near.stderr
    check = _invoke("check", "spiht[levls=4]")
    assert check.exit_code == 2 and "no parameter 'levls'" in check.stderr
    baseline = ["--baseline", str(tmp_path / "baseline"), "--update", "--out", str(out)]
    regress = _invoke("regress", *baseline, "--codecs", "jpeg2000[levels=many]")
    assert regress.exit_code == 2, regress.output
    assert "jpeg2000[levels=many]: expected int" in " ".join(regress.stderr.split())
    assert not out.exists()


def test_codecs_params_lists_types_defaults_and_meaning():
    done = subprocess.run(
        bench_command("codecs", "--params", "spiht"),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if "│" in line}
    assert "bool" in rows["weighted"] and "False" in rows["weighted"]
    assert "CDF 9/7 decomposition levels" in rows["levels"]
    unknown = _invoke("codecs", "--params", "spiht-acc")  # in this process
    assert unknown.exit_code == 2 and "did you mean spiht-ac" in unknown.stderr
