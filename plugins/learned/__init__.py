"""Built-in plugin for the learned codecs' base model: the ``msh`` trainer (``bench train msh``,
CompressAI's MeanScaleHyperprior, :mod:`plugins.learned.training.msh`) and ``bench train-export``.

Heavy modules (torch, compressai) are imported inside the trainer and the command so that
``bench --help`` stays fast. The torchvision/compressai import fix is in
:mod:`plugins.learned.compat`.
"""

# No ``from __future__ import annotations`` here: typer reads the option annotations at runtime.

from pathlib import Path
from typing import Annotated

import typer

from bench import TrainerSpec, hookimpl
from plugins.learned.deferred import deferred

#: Exit code of a command given bad input (the CLI's convention: 0 ok, 1 problem found, 2 usage,
#: 3 bad input): unreadable weights, a corrupt or mismatched checkpoint.
BAD_INPUT = 3


@hookimpl
def register_trainers(register):
    register(
        TrainerSpec(
            name="msh",
            main=deferred("plugins.learned.training.msh:main"),
            summary=(
                "CompressAI's MeanScaleHyperprior on random crops (resumable, Ctrl-C saves); "
                "without --out it continues the relay directory"
            ),
        )
    )


def _opt(flag: str, help: str):  # noqa: A002 - typer's parameter name
    return typer.Option(flag, help=help)


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    @cli.command("train-export")
    def train_export_command(
        checkpoint: Annotated[
            Path, _opt("--checkpoint", "Checkpoint directory (or checkpoint.pt) of bench train.")
        ],
        out: Annotated[Path, _opt("--out", "Weights file to write (FILE.safetensors).")],
        kodak: Annotated[Path | None, _opt("--kodak", "Kodak folder for the evaluation.")] = None,
        threads: Annotated[int | None, _opt("--threads", "torch threads.")] = None,
        live_weights: Annotated[
            bool,
            _opt(
                "--live-weights",
                "Export the live weights even when the checkpoint keeps a moving average.",
            ),
        ] = False,
    ) -> None:
        """Export float16 .safetensors weights + JSON sidecar, evaluated on all 24 Kodak images."""
        from plugins.learned.training.msh_export import export
        from plugins.learned.training.run import CheckpointError
        from plugins.learned.weights.format import sidecar_path

        try:
            export(checkpoint, out, kodak=kodak, threads=threads, live=live_weights)
        except (CheckpointError, ValueError, FileNotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(BAD_INPUT) from exc
        typer.echo(f"wrote {out} and {sidecar_path(out)}")
