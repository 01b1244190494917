"""Built-in plugin for the learned codecs: for now the ``bench train`` and ``bench train-export``
commands that train CompressAI's MeanScaleHyperprior and export its weights.

Heavy modules (torch, compressai) are imported inside the commands so that ``bench --help``
stays fast. The implementation is in :mod:`plugins.learned.train`; the torchvision/compressai
import fix in :mod:`plugins.learned.compat`.
"""

# No ``from __future__ import annotations`` here: typer reads the option annotations at runtime.

from pathlib import Path
from typing import Annotated

import typer

from bench import hookimpl

#: Exit code of a command given bad input (the CLI's convention: 0 ok, 1 problem found, 2 usage,
#: 3 bad input): unreadable training images or weights, a corrupt or mismatched checkpoint.
BAD_INPUT = 3


def _opt(flag: str, help: str):  # noqa: A002 - typer's parameter name
    return typer.Option(flag, help=help)


#: ``bench train MODEL``: models other than the base model and the module whose
#: ``main(argv)`` trains them (argparse: ``python -m MODULE --help`` lists its options).
TRAINERS = {"deephq": "plugins.deephq.train"}


def _forward(model: str, ctx: typer.Context, parsed: dict) -> None:
    """Run ``TRAINERS[model].main`` with the options typer parsed plus the ones it did not."""
    import importlib

    argv = []
    for key, value in parsed.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value not in (None, False):
            argv += [flag, str(value)]
    code = importlib.import_module(TRAINERS[model]).main(argv + list(ctx.args))
    raise typer.Exit(code)


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    @cli.command(
        "train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
    )
    def train_command(
        ctx: typer.Context,
        out: Annotated[
            Path | None,
            _opt(
                "--out",
                "Checkpoint directory (resumable state). msh default: the relay directory "
                "$BENCH_TRAIN_DIR/msh-nN-mM-lLAMBDA (~/.cache/bench/train/...), continued when "
                "it holds a checkpoint, else started from the shipped base weights.",
            ),
        ] = None,
        model: Annotated[
            str,
            typer.Argument(
                help="msh (the base MeanScaleHyperprior) or "
                + ", ".join(TRAINERS)
                + " (its options: `python -m plugins.deephq.train --help`)"
            ),
        ] = "msh",
        data: Annotated[
            Path | None,
            _opt("--data", "Training image folder (never Kodak); needed for a new run."),
        ] = None,
        N: Annotated[int | None, _opt("--N", "Channels N (default 128).")] = None,
        M: Annotated[int | None, _opt("--M", "Latent channels M (default 192).")] = None,
        lmbda: Annotated[
            float | None, _opt("--lmbda", "loss = lmbda*255^2*MSE + bpp (default 0.18).")
        ] = None,
        iterations: Annotated[
            int | None,
            _opt(
                "--iterations",
                "Planned last iteration: the schedule decays to --lr-min there (default 400000).",
            ),
        ] = None,
        batch: Annotated[int | None, _opt("--batch", "Batch size (default 8).")] = None,
        crop: Annotated[int | None, _opt("--crop", "Crop side (default 128).")] = None,
        lr: Annotated[float | None, _opt("--lr", "Peak Adam learning rate (default 1e-4).")] = None,
        lr_min: Annotated[
            float | None,
            _opt("--lr-min", "Learning rate at the planned end (--iterations); cosine decay."),
        ] = None,
        warmup: Annotated[
            int | None, _opt("--warmup", "Linear warm-up iterations (default 1000).")
        ] = None,
        threads: Annotated[
            int | None,
            _opt("--threads", "torch threads (default 1); 0 adapts to the machine's load."),
        ] = None,
        stop_at: Annotated[
            int | None,
            _opt("--stop-at", "Stop at this iteration, keeping the planned end (--iterations)."),
        ] = None,
        device: Annotated[
            str | None, _opt("--device", "cpu or cuda (cuda trains with bf16 autocast).")
        ] = None,
        precision: Annotated[
            str | None,
            _opt(
                "--precision",
                "fp32, bf16 (autocast of the transforms) or auto: the fastest mode whose A/B "
                "against fp32 passed, timed at start (default).",
            ),
        ] = None,
        channels_last: Annotated[
            bool | None,
            typer.Option(
                "--channels-last/--no-channels-last", help="Memory format (default channels_last)."
            ),
        ] = None,
        checkpoint_every: Annotated[
            int | None, _opt("--checkpoint-every", "Iterations between checkpoints (default 250).")
        ] = None,
        eval_every: Annotated[
            int | None,
            _opt("--eval-every", "Iterations between Kodak-subset evals; 0: none (default 1000)."),
        ] = None,
        eval_images: Annotated[
            str | None,
            _opt("--eval-images", "Comma-separated Kodak images (default kodim01,05,15,23)."),
        ] = None,
        kodak: Annotated[Path | None, _opt("--kodak", "Kodak folder (evaluation only).")] = None,
        resume: Annotated[bool, _opt("--resume", "Continue the checkpoint in --out.")] = False,
        seed: Annotated[int | None, _opt("--seed", "Random seed (default 0).")] = None,
        init: Annotated[
            Path | None,
            _opt("--init", "Start a new run from exported weights (e.g. the bundled file)."),
        ] = None,
    ) -> None:
        """Train CompressAI's MeanScaleHyperprior on random crops (resumable; Ctrl-C saves), or
        another model with ``bench train MODEL``."""
        if model in TRAINERS:
            base_only = {"--N": N, "--M": M, "--lmbda": lmbda, "--eval-every": eval_every,
                         "--eval-images": eval_images, "--kodak": kodak, "--lr-min": lr_min,
                         "--warmup": warmup, "--device": device, "--precision": precision,
                         "--channels-last": channels_last}  # fmt: skip
            given = [flag for flag, value in base_only.items() if value is not None]
            if given:
                typer.echo(f"error: {', '.join(given)} apply to the base model only", err=True)
                raise typer.Exit(2)
            if out is None:
                typer.echo(f"error: bench train {model} needs --out", err=True)
                raise typer.Exit(2)
            parsed = {
                "out": out, "data": data, "iterations": iterations, "batch": batch,
                "crop": crop, "lr": lr, "threads": threads, "checkpoint_every": checkpoint_every,
                "seed": seed, "init": init, "resume": resume,
            }  # fmt: skip
            _forward(model, ctx, parsed)
        if model != "msh" or ctx.args:
            typer.echo(f"error: unknown model {model!r} or options {ctx.args}", err=True)
            raise typer.Exit(2)
        from plugins.learned.train import CheckpointError, TrainConfig, train
        from plugins.learned.training import relay
        from plugins.learned.weights import BUNDLED_DIR, BUNDLED_NAME

        defaults = TrainConfig()
        try:
            out, resume, init_spec, what = relay.plan(
                out,
                resume,
                str(init) if init else None,
                N or defaults.N,
                M or defaults.M,
                lmbda if lmbda is not None else defaults.lmbda,
                BUNDLED_DIR / f"{BUNDLED_NAME}.safetensors",
            )
        except (FileNotFoundError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(BAD_INPUT) from exc
        typer.echo(what, err=True)
        images = None
        if eval_images is not None:
            images = tuple(s.strip() for s in eval_images.split(",") if s.strip())
        try:
            summary = train(
                out,
                resume=resume,
                data=str(data) if data is not None else None,
                N=N,
                M=M,
                lmbda=lmbda,
                iterations=iterations,
                batch=batch,
                crop=crop,
                lr=lr,
                lr_min=lr_min,
                warmup=warmup,
                threads=threads,
                stop_at=stop_at,
                device=device,
                precision=precision,
                channels_last=channels_last,
                checkpoint_every=checkpoint_every,
                eval_every=eval_every,
                eval_images=images,
                kodak=str(kodak) if kodak is not None else None,
                seed=seed,
                init=init_spec,
            )
        except (CheckpointError, ValueError, FileNotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(BAD_INPUT) from exc
        stopped = f" (stopped by {summary['stopped_by']})" if summary["stopped_by"] else ""
        typer.echo(
            f"iteration {summary['iteration']}{stopped}; "
            f"checkpoint {summary['checkpoint']}; log {summary['log']}"
        )

    @cli.command("train-export")
    def train_export_command(
        checkpoint: Annotated[
            Path, _opt("--checkpoint", "Checkpoint directory (or checkpoint.pt) of bench train.")
        ],
        out: Annotated[Path, _opt("--out", "Weights file to write (FILE.safetensors).")],
        kodak: Annotated[Path | None, _opt("--kodak", "Kodak folder for the evaluation.")] = None,
        threads: Annotated[int | None, _opt("--threads", "torch threads.")] = None,
    ) -> None:
        """Export float16 .safetensors weights + JSON sidecar, evaluated on all 24 Kodak images."""
        from plugins.learned.train import CheckpointError, export, sidecar_path

        try:
            export(checkpoint, out, kodak=kodak, threads=threads)
        except (CheckpointError, ValueError, FileNotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(BAD_INPUT) from exc
        typer.echo(f"wrote {out} and {sidecar_path(out)}")
