"""Built-in plugin for the learned codecs' base model: the ``msh`` trainer (``bench train msh``,
CompressAI's MeanScaleHyperprior, :mod:`plugins.learned.training.msh`), ``bench train-export``,
``bench train-eval``, ``bench train-fork`` and ``bench train-ab``.

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

    @cli.command("train-eval")
    def train_eval_command(
        weights: Annotated[list[Path], typer.Argument(help="Exported .safetensors files.")],
        kodak: Annotated[Path | None, _opt("--kodak", "Kodak folder (default: bundled).")] = None,
        images: Annotated[
            str | None, _opt("--images", "Comma-separated Kodak names (default: all 24).")
        ] = None,
        threads: Annotated[int, _opt("--threads", "torch threads.")] = 1,
        as_json: Annotated[
            bool, _opt("--json", "One JSON object per file (per-image values, full precision).")
        ] = False,
    ) -> None:
        """Evaluate exported weights on Kodak with real coding: mean bpp, PSNR-RGB and the
        distance below CompressAI's published mbt2018-mean curve at that bpp."""
        import json

        from bench.published import MBT2018_MEAN_KODAK
        from plugins.learned.training.data import DEFAULT_KODAK
        from plugins.learned.training.evaluation import evaluate_weights

        names = [n.strip() for n in images.split(",") if n.strip()] if images else None
        failed = False
        for path in weights:
            try:
                result, meta = evaluate_weights(path, kodak or DEFAULT_KODAK, names, threads)
            except (FileNotFoundError, ValueError) as exc:
                typer.echo(f"error: {path}: {exc}", err=True)
                failed = True
                continue
            if as_json:
                record = {"weights": str(path), "iterations": meta.get("iterations"), **result}
                typer.echo(json.dumps(record))
                continue
            gap = MBT2018_MEAN_KODAK.gap_db(result["bpp"], result["psnr_rgb"])
            typer.echo(
                f"{path}: {meta.get('iterations', '?')} iterations; Kodak "
                f"({len(result['images'])} images) {result['bpp']:.4f} bpp, "
                f"{result['psnr_rgb']:.3f} dB PSNR-RGB, {gap.describe()}"
            )
        if failed:
            raise typer.Exit(BAD_INPUT)

    @cli.command("train-fork")
    def train_fork_command(
        checkpoint: Annotated[
            Path, _opt("--checkpoint", "Checkpoint directory (or checkpoint.pt) to fork.")
        ],
        out: Annotated[Path, _opt("--out", "New run directory for the arm.")],
        set_: Annotated[
            list[str],
            typer.Option(
                "--set",
                help="FIELD=VALUE of an objective field (lmbda, quantization, batch, crop, "
                "scale_min, clip); repeatable.",
            ),
        ],
    ) -> None:
        """Copy a bench train msh checkpoint as an A/B arm with objective fields changed (same
        weights, optimiser, average, schedule and RNG); train it with --out DIR --resume."""
        from plugins.learned.training.fork import fork, parse_changes
        from plugins.learned.training.run import CheckpointError

        try:
            changed = fork(checkpoint, out, parse_changes(set_))
        except (CheckpointError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(BAD_INPUT) from exc
        described = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
        typer.echo(
            f"forked {checkpoint} into {out} ({described}); continue it with "
            f"bench train msh --out {out} --resume"
        )

    @cli.command("train-ab")
    def train_ab_command(
        run_a: Annotated[Path, typer.Argument(help="Run directory of arm A (the reference).")],
        run_b: Annotated[Path, typer.Argument(help="Run directory of arm B (the candidate).")],
        live: Annotated[
            bool, _opt("--live", "Compare the live weights even where a weight average is kept.")
        ] = False,
    ) -> None:
        """Pair two A/B arms' Kodak-subset evaluations since their shared state: a Markdown table
        of each arm's dB below CompressAI's published mbt2018-mean curve, and B - A."""
        from plugins.learned.training.ab import arm_settings, markdown_table, paired_evaluations

        try:
            start, pairs = paired_evaluations(run_a, run_b, live=live)
        except (FileNotFoundError, ValueError, KeyError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(BAD_INPUT) from exc
        typer.echo(f"A: {run_a} ({arm_settings(run_a)})")
        typer.echo(f"B: {run_b} ({arm_settings(run_b)})")
        if not pairs:
            typer.echo(f"no evaluation of both arms since iteration {start:,} yet")
            return
        weights = "weight average" if all(p.averaged for p in pairs) else "live weights"
        typer.echo(f"since iteration {start:,}; Kodak subset, {weights}, dB below mbt2018-mean:\n")
        typer.echo(markdown_table(pairs))
