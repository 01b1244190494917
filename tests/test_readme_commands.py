"""Every command README.md shows is classified here, and the cheap ones run as written.

The command lines come from README's code blocks: indented blocks and fenced blocks without a
language or marked as shell; each line split at ``&&``, and in a ``$ `` transcript only the
``$`` lines. Fenced Python, YAML and TOML blocks are files, not commands. :data:`PLAN` says for each
exact command what the test does with it: run it (with arguments appended that make it small:
one Kodak image, one or two target bpps, one timed repeat) or skip it, with the reason. A README
command missing from the plan, or a planned command no longer in README, fails the test, so
the list stays complete. The runnable commands run in README order, in a temporary folder laid
out like a checkout (``results/``, and ``../shared`` beside it when there is one), with this
install's ``bench`` and ``python``; any non-zero exit fails.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
#: Appended to `bench run` commands: one image, two targets, one repeat, no viewer images.
SMALL_RUN = ("--images", "kodim24", "--bpp", "0.5,1", "--repeats", "1", "--viewer-images", "none")
#: The same with one target, for runs whose output no later command reads (a learned codec's
#: decode of a whole Kodak image costs about a second a target; `bench compare` needs two).
ONE_TARGET = ("--images", "kodim24", "--bpp", "1", "--repeats", "1", "--viewer-images", "none")
#: Repository files that commands read, copied into the temporary checkout.
FIXTURES = ("results/reference/compressai-bpg444-kodak.json",)


@dataclass(frozen=True)
class Run:
    """Run the command with ``extra`` arguments appended and ``replace`` substitutions."""

    extra: tuple[str, ...] = ()
    replace: tuple[tuple[str, str], ...] = ()
    why: str = ""
    creates: str = ""  # a file the command must have written (relative to the checkout)


@dataclass(frozen=True)
class Skip:
    reason: str


INSTALL = Skip("installs packages: the test runs inside that install")
CLUSTER = Skip("needs a Dask scheduler on a host named head; tests/test_dask.py runs a cluster")
TRAIN_DEEPHQ = Skip(
    "trains for minutes (800 iterations); tests/test_deephq.py "
    "trains, exports and calibrates with a handful of iterations and crops"
)

PLAN: dict[str, Run | Skip] = {
    "bench run --codecs deephq,plonq,spiht --dataset kodak": Run(ONE_TARGET),
    "python3 -m venv .venv": INSTALL,
    ".venv/bin/pip install -q torch==2.13.0 torchvision==0.28.0": INSTALL,
    '.venv/bin/pip install -q -e ".[test]"': INSTALL,
    '.venv/bin/pip install -q -e ".[test,dask]"': INSTALL,
    '.venv/bin/pip install -q -e ".[dask]"': INSTALL,
    # the main job: the same command on one image and one target (the whole job takes an hour)
    ".venv/bin/bench run --codecs deephq,plonq,spiht --dataset kodak --anchor plonq --jobs 2": Run(
        ONE_TARGET
    ),
    ".venv/bin/python -m pytest -q": Skip("the whole test suite, which holds this test"),
    "bench run --codecs jpeg2000 --dataset kodak --out results/reference/kodak-jpeg2000": Run(
        SMALL_RUN, why="writes the temporary checkout's results/reference/kodak-jpeg2000"
    ),
    "bench compare results/reference/kodak-jpeg2000 results/<new-run> --fail-above 1.0": Run(
        replace=(("results/<new-run>", "results/reference/kodak-jpeg2000"),),
        why="<new-run> is a placeholder: the run is compared with itself",
    ),
    "bench plot results/reference/kodak-jpeg2000 --with "
    "results/reference/compressai-bpg444-kodak.json --published --out "
    "jpeg2000-vs-published.png": Run(creates="jpeg2000-vs-published.png"),
    "dask scheduler --port 8786": CLUSTER,
    "dask worker tcp://head:8786 --nthreads 4 --name node1": CLUSTER,
    "bench run --codecs jpeg2000,spiht --dataset kodak --executor dask://head:8786": CLUSTER,
    "bench run --codecs deephq,plonq,spiht --dataset kodak --executor dask-jobqueue:slurm "
    "--jobs 4 --out results/kodak-slurm": Skip("needs a SLURM cluster"),
    "bench regress --baseline results/baseline --jobs 2": Skip(
        "measures the committed baseline's subset, 4 full Kodak images x 9 codecs (2-7 min); "
        "tests/test_regress.py runs bench regress on crops"
    ),
    "bench regress --baseline results/baseline --update --jobs 2": Skip(
        "rewrites the committed baseline"
    ),
    "bench train msh --data ../shared/datasets/train --threads 0": Skip(
        "continues the shared training relay in ~/.cache/bench/train for hours"
    ),
    "bench train hc --data ../shared/datasets/train --threads 1": Skip(
        "continues HC's training relay in ~/.cache/bench/train for hours"
    ),
    "bench train deephq --out checkpoints/deephq-step2 --data ../shared/datasets/train --step 2 "
    "--iterations 800 --threads 1 --grid dead-zone": TRAIN_DEEPHQ,
    "bench train deephq --out checkpoints/deephq-step3 --data ../shared/datasets/train --step 3 "
    "--init checkpoints/deephq-step2 --iterations 800 --threads 1": TRAIN_DEEPHQ,
    "bench train deephq --out checkpoints/deephq-step3 --export "
    "checkpoints/deephq-layered.safetensors --calibrate --data ../shared/datasets/train": (
        TRAIN_DEEPHQ
    ),
    "bench train deephq --ladder 128,64,32,16,8,4,2,1 --grid dead-zone --export "
    "plugins/deephq/weights/deephq-msh-n128-m192-l1100-it398250.safetensors --channel-gains "
    "--data ../shared/datasets/train --threads 2": Skip(
        "rewrites the shipped weights (a minute of gain measurement); tests/test_deephq.py runs "
        "--ladder and --channel-gains on two small crops"
    ),
}

#: Fence languages of shell blocks (other fenced blocks are files: Python, YAML, TOML).
SHELL = ("", "sh", "bash", "console", "shell")
#: Indented blocks that hold no command, by how they start.
NOT_COMMANDS = (
    "| target bpp | bpp    | PSNR-RGB |",  # report excerpt
    "bench/ ",  # the Layout tree
)


def code_blocks(text: str) -> list[str]:
    """README's shell blocks: fenced ones in a :data:`SHELL` language and indented ones (4
    spaces after a blank line)."""
    blocks, lines, index = [], text.splitlines(), 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("```"):
            end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
            if line[3:].strip() in SHELL:
                blocks.append("\n".join(lines[index + 1 : end]))
            index = end + 1
        elif line.startswith("    ") and index > 0 and not lines[index - 1].strip():
            block = []
            while index < len(lines) and (lines[index].startswith("    ") or not lines[index]):
                block.append(lines[index][4:])
                index += 1
            blocks.append("\n".join(block).strip("\n"))
        else:
            index += 1
    return blocks


def readme_commands(text: str) -> list[str]:
    """Every shell command of README's code blocks, in order (see the module docstring)."""
    commands = []
    for block in code_blocks(text):
        if block.lstrip().startswith(NOT_COMMANDS):
            continue
        lines = block.splitlines()
        if any(line.startswith("$ ") for line in lines):
            lines = [line[2:] for line in lines if line.startswith("$ ")]
        for line in lines:
            line = re.sub(r"\s+#.*$", "", line).strip()  # trailing comments
            commands += [part.strip() for part in line.split(" && ") if part.strip()]
    return commands


def test_every_readme_command_is_planned():
    commands = readme_commands(README.read_text())
    unplanned = [c for c in commands if c not in PLAN]
    assert not unplanned, f"README commands with no entry in PLAN: {unplanned}"
    stale = [c for c in PLAN if c not in commands]
    assert not stale, f"PLAN entries no longer in README: {stale}"


def _argv(command: str, action: Run) -> list[str]:
    for old, new in action.replace:
        command = command.replace(old, new)
    argv = [*shlex.split(command), *action.extra]
    program = argv[0].removeprefix(".venv/bin/")
    if program in ("bench", "python", "python3"):
        argv[0] = str(BIN / "bench") if program == "bench" else sys.executable
    return argv


def test_readme_commands_run_as_written(tmp_path):
    checkout = tmp_path / "main"
    for fixture in FIXTURES:
        (checkout / fixture).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / fixture, checkout / fixture)
    if (ROOT.parent / "shared").is_dir():
        (tmp_path / "shared").symlink_to(ROOT.parent / "shared")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    ran = []
    for command in readme_commands(README.read_text()):
        action = PLAN[command]
        if isinstance(action, Skip):
            continue
        done = subprocess.run(
            _argv(command, action),
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        if action.creates:
            assert (checkout / action.creates).stat().st_size > 10_000, command
        ran.append(command)
    assert len(ran) == sum(isinstance(a, Run) for a in PLAN.values())


@pytest.mark.parametrize(
    "broken",
    [
        "bench plot results/reference/kodak-jpeg2000 --with-published",  # no such option
        "bench compare results/reference/kodak-jpeg2000 results/nowhere",  # no such run
    ],
)
def test_a_broken_command_fails(tmp_path, broken):
    """What the runner above checks: a README command that does not work exits non-zero."""
    done = subprocess.run(
        _argv(broken, Run()), cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
