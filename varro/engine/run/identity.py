"""A run: its folder (`run_dir`), the runs of an app that exist (`known_runs`, `require_run`; `require_db`
for a reading command's database), and its identity, runs/<run>/run.toml.

run.toml, written by a run's first night, holds the app, the base model and
every resolved setting; later nights start from it. Another app or base model is
refused (`RunIdentityError`); another setting is applied, with a notice, and
recorded. The rule in full: docs/workflow.md, "A run's identity: run.toml".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from varro.engine.core.config import Config
from varro.engine.core.errors import ConfigError, UserError
from varro.engine.core.paths import home_dir, looks_local, run_dir

RUN_FILE = "run.toml"


class UnknownRunError(ConfigError):
    """A reading command was given a run name that has neither rows in the database nor checkpoints."""


def known_runs(db: Any, app: str, home: str | Path | None = None) -> list[str]:
    """The runs of `app`: those with `app` rollouts in the database, and those whose runs/<run>/checkpoints/
    holds a complete checkpoint written by `app` (or by no app named)."""
    from varro.engine.store import rollout_runs

    names = rollout_runs(db, app)
    root = home_dir(home) / "runs"
    for meta in root.glob("*/checkpoints/*/metadata.json") if root.is_dir() else []:
        try:
            written_by = json.loads(meta.read_text()).get("app", app)
        except (OSError, ValueError):
            continue  # a half-written or foreign file says nothing about the run
        if written_by == app:
            names.add(meta.parents[2].name)
    return sorted(names)


def require_run(db: Any, app: str, run: str, home: str | Path | None = None) -> Path:
    """runs/<run> of an existing `app` run (see `known_runs`); raises UnknownRunError naming the runs that exist."""
    path = run_dir(run, home)
    runs = known_runs(db, app, home)
    if run not in runs:
        have = f"the {app} runs are: {', '.join(runs)}" if runs else f"there are no {app} runs in {home_dir(home)} yet"
        raise UnknownRunError(f"no {app} rollouts for run {run!r} and no checkpoint in {path / 'checkpoints'}; "
                              f"{have}")
    return path


class RunIdentityError(ConfigError, UserError):
    """A command asked a run to be another app's or to sit on another base model."""


def run_file(run_path: Path) -> Path:
    return Path(run_path) / RUN_FILE


def read_run(run_path: Path) -> dict[str, Any] | None:
    """run.toml of the run as a dict ({"app", "model", "created_utc", "settings", "changes"}), or None."""
    import tomllib

    path = run_file(run_path)
    if not path.is_file():
        return None
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RunIdentityError(f"{path} is not valid TOML ({e}); fix it or move it away to start the run's "
                               "settings afresh") from None


def run_owner(run_path: Path) -> str | None:
    """The app a run belongs to, as `nightly` reads it: run.toml's app, else its latest checkpoint's (see
    varro.engine.run.checkpoints.check_run_owner); None for a run that has neither."""
    from varro.engine.run.checkpoints import METADATA, list_checkpoints

    stored = read_run(run_path)
    if stored is not None:
        return stored.get("app")
    found = list_checkpoints(run_path)
    return json.loads((found[-1] / METADATA).read_text()).get("app") if found else None


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a TOML basic string: JSON's escapes are TOML's
    raise TypeError(f"run.toml cannot hold {v!r}")


def to_toml(data: dict[str, Any]) -> str:
    """The run file's TOML: top-level keys, [settings.<section>] tables, [[changes]] entries."""
    lines = ["# This run's identity and recipe, written by its first night (see varro/engine/run/identity.py).",
             "# Later nights start from these settings; a changed option is applied and recorded below.", ""]
    for k in ("app", "model", "created_utc"):
        lines.append(f"{k} = {_toml_value(data[k])}")
    for section, values in data["settings"].items():
        lines += ["", f"[settings.{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    for change in data.get("changes", []):
        lines += ["", "[[changes]]"] + [f"{k} = {_toml_value(v)}" for k, v in change.items()]
    return "\n".join(lines) + "\n"


def write_run(run_path: Path, data: dict[str, Any]) -> Path:
    """Write run.toml atomically (a temporary file renamed into place)."""
    path = run_file(run_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(to_toml(data), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _same_model(a: str, b: str) -> bool:
    if looks_local(a) and looks_local(b):
        return Path(a).resolve() == Path(b).resolve()
    return a == b


def settle(app: str, run: str, run_path: Path, cfg: Config, given: dict[str, dict[str, Any]], day: str,
           now: str, legacy: Config | None = None) -> tuple[Config, list[str]]:
    """The night's config and its notices.

    `cfg` is what the command line, `--config` and the defaults resolve to;
    `given` the settings the command line and `--config` named explicitly. The
    first night writes run.toml from `cfg`. A later night starts from run.toml
    and applies each `given` setting that differs (one notice each, recorded
    in run.toml as of `day`). A run from before run.toml (`legacy`: its latest
    checkpoint's config) is settled as if that had been its first night.
    Raises RunIdentityError for another app or base model.
    """
    stored = read_run(run_path)
    if stored is None:
        first = legacy if legacy is not None else cfg
        stored = {"app": app, "model": first.model.model, "created_utc": now, "settings": first.to_dict(),
                  "changes": []}
        write_run(run_path, stored)
        if legacy is None:
            return cfg, []
        wrote = [f"wrote runs/{run}/run.toml from its newest checkpoint's settings (the run had none): later "
                 "nights keep them unless a setting is given again"]
    else:
        wrote = []
    if stored.get("app") != app:
        raise RunIdentityError(f"run {run!r} belongs to {stored.get('app')} (runs/{run}/run.toml); {app} will not "
                               f"train it: use another --run, e.g. --run {app}")
    model = (given.get("model") or {}).get("model")
    if model is not None and not _same_model(model, stored["model"]):
        raise RunIdentityError(f"run {run!r} was started on base model {stored['model']}, not {model}: its "
                               f"adapters only fit that model; start a new run for {model} with --run NAME")
    base = Config()
    base.update({k: v for k, v in stored.get("settings", {}).items() if k in base.sections()},
                origin=str(run_file(run_path)))
    notices, changes = [], []
    current = base.sections()
    for section, values in given.items():
        for name, value in values.items():
            old = getattr(current[section], name)
            if section == "model" and name == "model":
                continue
            if old != value:
                setattr(current[section], name, value)
                notices.append(f"setting {section}.{name} changed from {old!r} to {value!r} for this run from "
                               f"{day} on (recorded in runs/{run}/run.toml)")
                changes.append({"day": day, "setting": f"{section}.{name}", "old": old, "new": value})
    if changes:
        write_run(run_path, {**stored, "settings": base.to_dict(), "changes": [*stored.get("changes", []), *changes]})
    return base, wrote + notices
