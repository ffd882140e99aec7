"""The `tally` command: the engine's commands for tally (varro.engine.cli.commands.app_cli)."""

from __future__ import annotations

from varro.engine.core.app import get_app
from varro.engine.cli.commands import app_cli

cli = app_cli(get_app("tally"), "tally.cli")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
