"""A plugin adding a sub-command (``bench hello``) and a trainer (``bench train echo``), as a
third-party package would; the trainer prints the arguments it received and exits 0, or 4 when
given ``--fail``."""

import json

import typer

from bench import TrainerSpec, hookimpl


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    @cli.command("hello")
    def hello(name: str = "world") -> None:
        """Say hello."""
        typer.echo(f"hello {name}")


def echo_main(argv: list[str]) -> int:
    print(json.dumps(argv))
    return 4 if "--fail" in argv else 0


@hookimpl
def register_trainers(register):
    register(TrainerSpec(name="echo", main=echo_main, summary="prints its arguments"))
