"""Click options generated from the config dataclasses, so help text lives in one place."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import click

from varro.engine.config import Config, ConfigError, load_config

SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(Config)}  # type: ignore[misc]


def _option_name(section: str, name: str) -> str:
    return "--" + name.replace("_", "-")


ENGINE_SECTIONS = ("model", "sampling", "train", "eval")


def config_options(*apps: str) -> Callable[[Callable], Callable]:
    """Add --config FILE and one option per field of the engine's and `apps`' sections."""
    names = ENGINE_SECTIONS + apps

    def decorate(fn: Callable) -> Callable:
        return _add_options(fn, [(n, SECTIONS[n]) for n in names])

    return decorate


def _add_options(fn: Callable, sections: list) -> Callable:
    for section, factory in reversed(sections):
        for f in reversed(dataclasses.fields(factory())):
            kind = type(f.default)
            name = _option_name(section, f.name)
            help_text = f"{f.metadata['help']} [default: {f.default}]"
            dest = f"cfg__{section}__{f.name}"
            if kind is bool:
                flag = f"{name}/--no-{name[2:]}"
                fn = click.option(flag, dest, default=None, help=help_text)(fn)
            else:
                fn = click.option(name, dest, type=kind, default=None, help=help_text)(fn)
    fn = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        default=None,
        help="TOML file with [model], [sampling] and [train] tables",
    )(fn)
    return fn


def resolve_config(kwargs: dict[str, Any], base: Config | None = None) -> Config:
    """Pop the config options out of a command's kwargs and build the Config (CLI > file > defaults)."""
    overrides: dict[str, dict[str, Any]] = {}
    for key in [k for k in kwargs if k.startswith("cfg__")]:
        value = kwargs.pop(key)
        _, section, name = key.split("__")
        if value is not None:
            overrides.setdefault(section, {})[name] = value
    try:
        return load_config(kwargs.pop("config_file", None), overrides, base=base)
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
