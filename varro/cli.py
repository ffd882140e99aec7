"""The `varro` command line."""

from __future__ import annotations

import sys

import click

from .checkpoints import CheckpointError
from .cli_options import config_options, resolve_config
from .config import ConfigError
from .db import MigrationError
from .models import ModelLoadError
from .train import TrainingError

# Errors the library raises on purpose; the CLI prints them as one line and exits 1.
EXPECTED_ERRORS = (ConfigError, CheckpointError, MigrationError, ModelLoadError, TrainingError, FileNotFoundError)


class VarroGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EXPECTED_ERRORS as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)


@click.group(cls=VarroGroup)
def cli() -> None:
    """Varro: a nightly RL loop that teaches a small model from real-world signals.

    Example: varro demo
    """


@cli.command("tiny-model")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, help="seed for the random weights")
@click.option("--vocab-size", default=1024, show_default=True, help="BPE vocabulary size")
def tiny_model(out_dir: str, seed: int, vocab_size: int) -> None:
    """Write a tiny random Qwen3-architecture model with a locally trained tokenizer.

    The folder loads with mlx_lm.load unchanged; use it as --model offline.

    Example: varro tiny-model data/models/tiny-qwen3
    """
    from .models import write_tiny_model

    path = write_tiny_model(out_dir, seed=seed, vocab_size=vocab_size)
    click.echo(str(path))


@cli.command()
@click.option("--days", default=3, show_default=True, help="simulated days to run")
@click.option("--start", default="2026-11-02", show_default=True, help="first simulated day")
@click.option("--run", default="demo", show_default=True, help="run name under runs/")
@click.option("--home", default=None, help="folder for data/ and runs/ (default $VARRO_HOME or the repo)")
@config_options
def demo(days: int, start: str, run: str, home: str | None, **kwargs) -> None:
    """Run the offline demo: a tiny model learns a toy reward over a few simulated days.

    Writes one checkpoint per day under runs/<run>/checkpoints and the rollout
    and step rows to data/varro.db.

    The demo's own settings (tiny model, short completions, a high learning
    rate) can be overridden like any run's, e.g. --model or --learning-rate.

    Example: varro demo --days 3
    """
    from .demo import demo_config, ensure_tiny_model, run_demo

    cfg = resolve_config(kwargs, base=demo_config(ensure_tiny_model(home)))
    run_demo(home, run, days, start, cfg, echo=click.echo)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
