"""The `tally` command: the engine's commands for tally (varro.engine.cli.app_cli)."""

from __future__ import annotations

from varro.engine.app import get_app
from varro.engine.cli import app_cli

cli = app_cli(get_app("tally"), "tally.cli")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
