"""Click options generated from the config dataclasses, so help text lives in one place.

Also the options every app's commands share (--home, --run, --source, --date)
and how a command's settings are resolved from them: command line, then
--config file, then defaults.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import click

from varro.engine.core.config import Config, load_config, read_config_file

from varro.engine.core.errors import ConfigError
from varro.engine.core.paths import caller_path

ENGINE_SECTIONS_BY_NAME = {f.name: f.default_factory for f in dataclasses.fields(Config) if f.name != "apps"}


def section_factory(name: str) -> Callable[[], Any]:
    """The dataclass of config section `name`: an engine one, or a registered application's settings."""
    if name in ENGINE_SECTIONS_BY_NAME:
        return ENGINE_SECTIONS_BY_NAME[name]  # type: ignore[return-value]
    from varro.engine.core.app import get_app

    return get_app(name).settings


def _option_name(section: str, name: str) -> str:
    return "--" + name.replace("_", "-")


ENGINE_SECTIONS = ("model", "sampling", "train", "eval")


def config_options(*apps: str) -> Callable[[Callable], Callable]:
    """Add --config FILE and one option per field of the engine's and `apps`' sections."""
    names = ENGINE_SECTIONS + apps

    def decorate(fn: Callable) -> Callable:
        return _add_options(fn, [(n, section_factory(n)) for n in names])

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


def config_file(kwargs: dict[str, Any]) -> Path | None:
    """The command's --config file, a relative path taken from the folder the command was run in (as
    --model and --html are), not from the checkout scripts/env runs in."""
    path = kwargs.get("config_file")
    return caller_path(path) if path else None


def named_settings(kwargs: dict[str, Any]) -> dict[str, set[str]]:
    """{section: {names}} of the settings a command's kwargs name explicitly: its options that were given,
    and every setting of its --config file. Leaves kwargs as they are; raises click.UsageError for a bad file."""
    named: dict[str, set[str]] = {}
    for key, value in kwargs.items():
        if key.startswith("cfg__") and value is not None:
            _, section, name = key.split("__")
            named.setdefault(section, set()).add(name)
    path = config_file(kwargs)
    if path:
        try:
            data = read_config_file(path)
        except ConfigError as e:
            raise click.UsageError(str(e)) from None
        except OSError as e:
            raise click.UsageError(f"config file {path}: {e}") from None
        for section, values in data.items():
            if isinstance(values, dict):
                named.setdefault(section, set()).update(values)
    return named


def resolve_config(kwargs: dict[str, Any], base: Config | None = None) -> Config:
    """Pop the config options out of a command's kwargs and build the Config (CLI > file > defaults)."""
    overrides: dict[str, dict[str, Any]] = {}
    for key in [k for k in kwargs if k.startswith("cfg__")]:
        value = kwargs.pop(key)
        _, section, name = key.split("__")
        if value is not None:
            overrides.setdefault(section, {})[name] = value
    try:
        path = config_file(kwargs)
        kwargs.pop("config_file", None)
        return load_config(path, overrides, base=base)
    except ConfigError as e:
        raise click.UsageError(str(e)) from e


def command_settings(kwargs: dict[str, Any]) -> tuple[Config, dict[str, set[str]]]:
    """(the Config, the settings named: `named_settings`) of a command that opens a run; a --model that looks
    local and is not there fails first (ModelLoadError), before the config is resolved."""
    from varro.engine.model.loading import check_model

    named = named_settings(kwargs)
    if kwargs.get("cfg__model__model"):  # a --model that is not there: one line before anything else
        check_model(kwargs["cfg__model__model"])
    return resolve_config(kwargs), named


def model_config(kwargs: dict, base=None) -> Config:
    """resolve_config, with a --model that looks local checked first, before any heavy work (ModelLoadError)."""
    from varro.engine.model.loading import check_model

    if kwargs.get("cfg__model__model"):
        check_model(kwargs["cfg__model__model"])
    cfg = resolve_config(kwargs, base=base)
    check_model(cfg.model.model)
    return cfg


def pop_ingest_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the app's own ingest options (`App.ingest_options`) out of a command's kwargs, leaving the config's."""
    return {k: kwargs.pop(k) for k in list(kwargs) if not k.startswith("cfg__") and k != "config_file"}


def check_day(day: str, param: str = "--date") -> str:
    """`day` as YYYY-MM-DD; a click BadParameter for anything else."""
    from datetime import date

    try:
        return date.fromisoformat(day).isoformat()
    except ValueError:
        raise click.BadParameter(f"{day!r} is not a date like 2026-11-03", param_hint=param) from None


def with_options(options: list[Callable]) -> Callable[[Callable], Callable]:
    """Apply click `options` in order, the first shown first in --help."""

    def decorate(fn: Callable) -> Callable:
        for deco in reversed(options):
            fn = deco(fn)
        return fn

    return decorate


HOME_OPTION = click.option("--home", default=None, help="folder for data/ and runs/ (default $VARRO_HOME or the repo)")


def run_option(app) -> Callable:
    """--run, defaulting to the app's own run (`varro`, `walter`, ...): two apps never share a run by default."""
    return click.option("--run", default=app.default_run, show_default=True, help="run name under runs/")


def source_option(app) -> Callable:
    return click.option("--source", type=click.Choice(list(app.sources)), default=app.sources[0],
                        show_default=True, help="where the day's data come from")
