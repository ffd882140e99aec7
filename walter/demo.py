"""Walter's offline demo: the daily cycle over the shipped Bluesky sample on the tiny model."""

from __future__ import annotations

from pathlib import Path

from varro.engine import store as dbm
from varro.engine.config import Config, db_path, run_dir
from varro.forecast.cycle import format_metrics
from varro.engine.embed import CachedEmbedder, load_embedder

from .cycle import day_metrics, step
from .sample import ingest_sample_day, sample_days

COLUMNS = ["day", "scored", "reward_mean", "reward_std", "eval_reward", "transfer", "hashtag_rate",
           "copy_rate", "graphemes", "kl", "clip_fraction"]


def run_demo(home: str | Path | None, run: str, cfg: Config, days: int | None = None, echo=print) -> list[dict]:
    """Run the cycle over the sample days (the first `days` of them); returns the per-day metrics."""
    db = dbm.open_db(db_path(home))
    embedder = CachedEmbedder(load_embedder(cfg.walter.embedder), db)
    run_path = run_dir(run, home)
    all_days = sample_days()[: days or None]
    for day in all_days:
        res = step(db, cfg, run, run_path, day, embedder, ingest_sample_day)
        echo(f"{day}: ingested {res.ingested}, sampled {res.sampled}, scored {res.scored}, steps {res.steps}, "
             f"checkpoint {res.checkpoint}" + "".join(f"\n  note: {n}" for n in res.notes))
    metrics = [day_metrics(db, run, d) for d in all_days]
    echo("")
    echo(format_metrics(metrics, COLUMNS))
    echo("")
    echo(f"rollouts:    {db_path(home)}  (SQL view rollouts_readable)")
    echo(f"checkpoints: {run_path / 'checkpoints'}")
    return metrics
