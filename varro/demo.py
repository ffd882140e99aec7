"""The offline demo: Varro's daily cycle over the shipped sample days, on the tiny model.

Each sample day runs `varro step`: ingest the day's sample headlines, score
yesterday's forecasts against them, train, checkpoint, and forecast today's
headlines. A re-run does no work twice.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import db as dbm
from .config import SAMPLE_DIR, Config, db_path, home_dir, run_dir
from .cycle import day_metrics, format_metrics, step
from .embed import CachedEmbedder, load_embedder
from .models import write_tiny_model


def tiny_model_dir(home: str | Path | None = None) -> Path:
    return home_dir(home) / "data" / "models" / "tiny-qwen3"


def ensure_tiny_model(home: str | Path | None = None, seed: int = 0) -> Path:
    """The tiny model under <home>/data/models, written on first use."""
    path = tiny_model_dir(home)
    if not (path / "model.safetensors").is_file():
        write_tiny_model(path, seed=seed)
    return path


def demo_config(model_path: Path | None) -> Config:
    """The demo's recipe: a handful of prompts, short completions, a learning rate that moves a tiny model."""
    cfg = Config()
    if model_path is not None:
        cfg.model.model = str(model_path)
    cfg.model.lora_layers = 2
    cfg.sampling.group_size = 8
    cfg.sampling.max_tokens = 96
    cfg.sampling.profile = "default"
    cfg.train.learning_rate = 2e-3
    cfg.varro.prompts_per_day = 9
    return cfg


def sample_days(path: Path | None = None) -> list[str]:
    path = path or SAMPLE_DIR / "headlines.jsonl"
    with open(path, encoding="utf-8") as f:
        return sorted({json.loads(line)["day"] for line in f if line.strip()})


def run_demo(home: str | Path | None, run: str, cfg: Config, days: int | None = None, echo=print) -> list[dict]:
    """Run the cycle over the sample days (the first `days` of them); returns the per-day metrics."""
    db = dbm.open_db(db_path(home))
    embedder = CachedEmbedder(load_embedder(cfg.varro.embedder), db)
    run_path = run_dir(run, home)
    all_days = sample_days()[: days or None]
    for day in all_days:
        res = step(db, cfg, run, run_path, day, embedder)
        echo(
            f"{day}: ingested {res.ingested}, scored {res.scored}, steps {res.steps}, "
            f"checkpoint {res.checkpoint}, sampled {res.sampled}"
            + "".join(f"\n  note: {n}" for n in res.notes)
        )
    metrics = [day_metrics(db, run, d) for d in all_days[:-1]]
    echo("")
    echo("forecasts by the day they were made (scored with the next day's headlines):")
    echo(format_metrics(metrics))
    echo("")
    echo(f"rollouts:    {db_path(home)}  (SQL view rollouts_readable)")
    echo(f"checkpoints: {run_path / 'checkpoints'}")
    return metrics
