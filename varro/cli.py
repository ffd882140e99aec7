"""The `varro` command: the engine's commands for Varro (varro.forecast), plus the whole offline demo and
`tiny-model`."""

from __future__ import annotations

import click

from varro.engine.app import get_app
from varro.engine.cli import HOME_OPTION, app_cli, model_config
from varro.engine.cli_options import config_options


@click.command("tiny-model")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, help="seed for the random weights")
@click.option("--vocab-size", default=1024, show_default=True, help="BPE vocabulary size")
def tiny_model(out_dir: str, seed: int, vocab_size: int) -> None:
    """Write a tiny random Qwen3-architecture model with a locally trained tokenizer.

    The folder loads with mlx_lm.load unchanged; use it as --model offline.

    Example: varro tiny-model data/models/tiny-qwen3
    """
    from varro.engine.models import write_tiny_model

    path = write_tiny_model(out_dir, seed=seed, vocab_size=vocab_size)
    click.echo(str(path))


@click.command()
@click.option("--days", default=None, type=int, help="only the first N sample days [default: all]")
@click.option("--varro-only", is_flag=True, help="skip Walter, the reports and the compare")
@click.option("--cold", is_flag=True, help="use the random tiny model without the warm-up")
@HOME_OPTION
@config_options("varro")
def demo(days: int | None, varro_only: bool, cold: bool, home: str | None, **kwargs) -> None:
    """Run the offline demo on a tiny model: Varro and Walter over the sample days, then report and compare.

    Builds the tiny model (and, once, a few minutes' warm-up on the sample
    text so its samples read as words), runs Varro's daily cycle over the seven
    sample days (run "demo") and Walter's over the five Bluesky sample days (run
    "walter-demo"), writes both HTML reports, compares the base model with the
    last checkpoint, and prints where everything is. Any setting can be
    overridden, e.g. --model or --learning-rate.

    Example: varro demo --days 3
    """
    from varro.demo import SECTIONS, run_full_demo
    from varro.engine.demo import demo_config, ensure_tiny_model, run_demo
    from varro.engine.models import check_model

    if kwargs.get("cfg__model__model"):  # a bad --model fails before the tiny model and its warm-up are built
        check_model(kwargs["cfg__model__model"])
    model = ensure_tiny_model(home, warm=not cold, echo=click.echo)
    names = ["varro"] if varro_only else [name for name, _ in SECTIONS]
    # each app's demo recipe, then what the command line says
    configs = {name: model_config(dict(kwargs), base=get_app(name).demo_settings(demo_config(model)))
               for name in names}
    if varro_only:
        app = get_app("varro")
        run_demo(app, home, app.demo_run_name(), configs["varro"], days=days, echo=click.echo)
    else:
        run_full_demo(home, configs, days=days, echo=click.echo)


cli = app_cli(get_app("varro"), "varro.cli", extra=[tiny_model, demo])


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
