"""Where things are: the repository and its shipped sample, the data folder (--home, $VARRO_HOME) and its
database, and a path or --model value as the user meant it."""

from __future__ import annotations

import os
from pathlib import Path

from varro.engine.core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLE_DIR = REPO_ROOT / "data" / "sample"


def home_dir(home: str | Path | None = None) -> Path:
    """The folder holding data/ and runs/: --home, else $VARRO_HOME, else the repository."""
    if home:
        return Path(home).expanduser().resolve()
    env = os.environ.get("VARRO_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return REPO_ROOT


def db_path(home: str | Path | None = None) -> Path:
    return home_dir(home) / "data" / "varro.db"


def run_dir(run: str, home: str | Path | None = None) -> Path:
    if not run or "/" in run or run.startswith("."):
        raise ConfigError(f"invalid run name {run!r}: use a plain folder name")
    return home_dir(home) / "runs" / run


class NoDatabaseError(ConfigError):
    """A reading command found no database in the data folder (it never creates one)."""


def require_db(home: str | Path | None = None) -> Path:
    """The database path of `home` for a reading command; raises NoDatabaseError when it does not exist."""
    path = db_path(home)
    if not path.is_file():
        raise NoDatabaseError(f"no database at {path}: run `varro nightly` or `varro demo` first, "
                              "or check VARRO_HOME")
    return path


def caller_path(path: str | Path) -> Path:
    """`path` as the user meant it: a relative one is taken from the folder the command was started in
    ($VARRO_CALLER_CWD, which scripts/env sets before it changes folder; else the current folder)."""
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = Path(os.environ.get("VARRO_CALLER_CWD") or os.getcwd()) / p
    return p.resolve()


def looks_local(model: str) -> bool:
    """Whether a --model value names a folder rather than a hub id ('owner/name')."""
    return (model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model
            or caller_path(model).exists())
