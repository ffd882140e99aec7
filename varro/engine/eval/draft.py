"""Drafting with a run's latest checkpoint: what the apps' daily-use commands (`walter draft`,
`varro forecast`) share. The run's settings, N samples for one prompt, and the ranked or unranked print
(its table of every component is also what `score` prints)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from varro.engine.core.config import Config
from varro.engine.core.errors import UserError


class DraftError(ValueError, UserError):
    """A draft asked for another base model than the run's, or for no texts."""


def existing_db(home: str | None):
    """The data folder's database, or None when there is none yet (drafting needs none)."""
    from varro.engine import store
    from varro.engine.core.paths import db_path

    return store.open_db(db_path(home)) if db_path(home).is_file() else None


def draft_config(app: str, run_path: Path, given: Config, named: dict[str, set[str]]) -> Config:
    """The run's config (run.toml, else its latest checkpoint's config.json, else `given`), with the
    settings the command line named (`named`, from `named_settings`) taken from `given`.

    Raises DraftError for a named base model that is not the run's (its adapters would not fit), and
    CheckpointError or RunIdentityError for another app's run.
    """
    from varro.engine.run.checkpoints import check_run_owner
    from varro.engine.run.checkpoints import run_config
    from varro.engine.run.identity import RunIdentityError, _same_model, read_run

    check_run_owner(run_path, app, None)
    stored = read_run(run_path)
    if stored is not None and stored.get("app") != app:
        raise RunIdentityError(f"run {run_path.name!r} belongs to {stored.get('app')}: {app} cannot draft with "
                               f"it; pick another --run")
    if stored is not None:
        cfg = Config()
        cfg.update({k: v for k, v in stored.get("settings", {}).items() if k in cfg.sections()},
                   origin=str(run_path / "run.toml"))
        cfg.model.model = stored.get("model", cfg.model.model)
    else:
        cfg = run_config(run_path, given)
    if cfg is given:
        return cfg
    ours, theirs = cfg.sections(), given.sections()
    for section, names in named.items():
        for name in names:
            value = getattr(theirs[section], name)
            if section == "model" and name == "model":
                if not _same_model(value, cfg.model.model):
                    raise DraftError(f"run {run_path.name} was trained on base model {cfg.model.model}, not "
                                     f"{value}: drop --model or pick another --run")
                continue
            setattr(ours[section], name, value)
    return cfg


def draft(cfg: Config, run_path: Path, prompt_id: str, text: str, n: int,
          seed: int) -> tuple[list[str], str, list[str]]:
    """(texts, checkpoint, notes): `n` completions of `text` sampled from the run's latest usable checkpoint
    (its day, or 'base' when it has none; a note says so). Raises DraftError for n < 1."""
    from varro.engine.run.policy import Policy

    if n < 1:
        raise DraftError(f"--n must be at least 1, got {n}")
    cfg.sampling.group_size = n
    policy = Policy.open(cfg, run_path, before_day=None)
    notes = list(policy.notes)
    if policy.checkpoint == "base":
        notes.append(f"run {run_path.name} has no checkpoint yet: drafting with the base model {cfg.model.model}")
    [group] = policy.sample([(prompt_id, text)], seed=seed)
    return [r.text for r in group], policy.checkpoint, notes


def format_scores(texts: list[str], comps: list[dict], head: str = "") -> str:
    """Every component of each text as a table: one row per component, one column per text."""
    lines = [head] if head else []
    lines += [f"[{i}] {t if len(t) <= 100 else t[:97] + '...'}" for i, t in enumerate(texts, 1)]
    keys = list(comps[0]) if comps else []
    width = max([len("component"), *(len(k) for k in keys)])
    lines.append(f"{'component':<{width}}" + "".join(f"  {f'[{i}]':>8}" for i in range(1, len(texts) + 1)))
    def cell(v) -> str:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return f"{v:>8.3f}"
        return f"{'-' if v is None else str(v):>8}"

    for k in keys:
        lines.append(f"{k:<{width}}" + "".join(f"  {cell(c.get(k))}" for c in comps))
    return "\n".join(lines)


def echo_ranked(texts: list[str], comps: list[dict], head: str, as_json: bool) -> None:
    """The texts best first by reward, each with every component: a table, or one JSON object per text."""
    order = sorted(range(len(texts)), key=lambda i: -comps[i]["reward"])  # stable: equal rewards keep their draw
    if as_json:
        for rank, i in enumerate(order, 1):
            click.echo(json.dumps({"rank": rank, "text": texts[i], **comps[i]}))
    else:
        click.echo(format_scores([texts[i] for i in order], [comps[i] for i in order], head))


def echo_unranked(texts: list[str], why: str, as_json: bool) -> None:
    """The texts in the order drawn, after one line saying why they are not ranked."""
    click.echo(f"not ranked: {why}", err=as_json)
    for i, t in enumerate(texts, 1):
        click.echo(json.dumps({"rank": None, "text": t}) if as_json else f"[{i}] {t}")


def echo_drafts(texts: list[str], ranked, unscored: str, as_json: bool) -> None:
    """The drafts best first by `ranked()` -> (their reward components, a heading); when that raises
    LookupError, as drawn, with one line: its message, then `unscored`."""
    try:
        comps, head = ranked()
    except LookupError as e:
        echo_unranked(texts, f"{e}, {unscored}", as_json)
        return
    echo_ranked(texts, comps, head, as_json)
