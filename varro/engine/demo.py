"""The offline demo: Varro's daily cycle over the shipped sample days, on the tiny model.

Each sample day runs `varro step`: ingest the day's sample headlines, score
yesterday's forecasts against them, train, checkpoint, and forecast today's
headlines. A re-run does no work twice.
"""

from __future__ import annotations

import json
from pathlib import Path

from varro.engine import store as dbm
from varro.engine.config import SAMPLE_DIR, Config, db_path, home_dir, run_dir
from varro.forecast.cycle import day_metrics, format_metrics, step
from varro.engine.embed import CachedEmbedder, load_embedder
from varro.engine.models import write_tiny_model


DEMO_MODEL = {"vocab_size": 4096, "hidden_size": 128, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
              "intermediate_size": 384}


def tiny_model_dir(home: str | Path | None = None) -> Path:
    return home_dir(home) / "data" / "models" / "tiny-qwen3"


def ensure_tiny_model(home: str | Path | None = None, seed: int = 0, warm: bool = True, echo=print) -> Path:
    """The demo model under <home>/data/models, written (and warmed up) on first use.

    With `warm` the random model is first fine-tuned on the sample text (see
    varro.warmup), so its samples read as words; that takes a few minutes once.
    """
    cold = tiny_model_dir(home)
    if not (cold / "model.safetensors").is_file():
        write_tiny_model(cold, seed=seed, **DEMO_MODEL)
    if not warm:
        return cold
    from varro.engine.warmup import warm_up

    hot = cold.with_name(cold.name + "-warm")
    if not (hot / "model.safetensors").is_file():
        echo(f"warming up the tiny model on the sample text (once) -> {hot}")
        warm_up(cold, hot, steps=400, batch=16, max_len=128, lr=3e-3, seed=seed, log=echo)
    return hot


def demo_config(model_path: Path | None) -> Config:
    """The demo's recipe: a handful of prompts, short completions, a learning rate that moves a tiny model."""
    cfg = Config()
    if model_path is not None:
        cfg.model.model = str(model_path)
    cfg.model.lora_layers = 2
    cfg.sampling.group_size = 8
    cfg.sampling.max_tokens = 96
    cfg.train.learning_rate = 3e-4
    cfg.varro.prompts_per_day = 16
    cfg.varro.eval_every = 4
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


def walter_demo_config(cfg: Config) -> Config:
    """Walter's demo recipe on the same model: fewer articles, shorter posts, and one story in 4 held
    out (the sample has 21 stories: at 1 in 8 the held-out panel would have two or three prompts)."""
    cfg = Config.from_dict(cfg.to_dict())
    cfg.walter.articles_per_day = 8
    cfg.walter.eval_every = 4
    cfg.sampling.max_tokens = 64
    return cfg


def run_full_demo(home: str | Path | None, cfg: Config, days: int | None = None, echo=print) -> dict:
    """The README's demo: Varro's days, Walter's days, both reports and a before/after compare."""
    from walter.demo import run_demo as run_walter_demo

    from varro.engine.compare import compare, format_comparison, held_out_prompts, write_html
    from varro.engine.report import build_report

    echo("== Varro: forecasts from the sample headlines")
    varro_metrics = run_demo(home, "demo", cfg, days=days, echo=echo)
    echo("")
    echo("== Walter: Bluesky posts from the sample articles")
    walter_metrics = run_walter_demo(home, "walter-demo", walter_demo_config(cfg), days=days, echo=echo)
    db = dbm.open_db(db_path(home))
    echo("")
    echo("== Learning curves on the held-out panels (stories no update has seen; base = day 0)")
    from varro.cli import app_scoring
    from varro.engine.panel import PanelError, evaluate, format_curve

    curves = {}
    for app, run in (("varro", "demo"), ("walter", "walter-demo")):
        score_texts, scorable, _ = app_scoring(app, db)
        embedder = CachedEmbedder(load_embedder(getattr(cfg, app).embedder), db)
        try:
            prompts, points = evaluate(db, app, run_dir(run, home), score_texts, embedder, cfg, scorable)
        except PanelError as e:  # too few days for a held-out prompt with its targets: say so, go on
            echo(f"{app}: {e}")
            continue
        curves[app] = (prompts, points)
        days = sorted({p["day"] for p in prompts})
        echo(f"{app}: {len(prompts)} held-out prompts made on {days[0]} .. {days[-1]}, "
             f"{cfg.eval.panel_samples} samples each")
        echo(format_curve(points))
    echo("")
    echo("== Voice: cadence distance from the human text (lower = closer), template share, policy entropy")
    from varro.engine.report import app_spec
    from varro.engine.voice import voice_data

    voices = {}
    for app, run in (("varro", "demo"), ("walter", "walter-demo")):
        voices[app] = voice_data(db, app, run, app_spec(app).human_items)
        echo(f"{app}:")
        echo(format_voice(voices[app]))
    echo("")
    echo("== Before and after: the base model against the last checkpoint on Varro's panel")
    score_texts, scorable, targets = app_scoring("varro", db)
    embedder = CachedEmbedder(load_embedder(cfg.varro.embedder), db)
    result, compare_html = None, None
    if "varro" in curves:
        prompts, note = held_out_prompts(db, "varro", run_dir("demo", home), 8, scorable, cfg, embedder)
        result = compare(db, run_dir("demo", home), prompts, "base", "latest", score_texts, embedder, cfg,
                         samples=cfg.eval.panel_samples, seed=cfg.eval.panel_seed, note=note)
        for line in format_comparison(result).splitlines()[-3:]:
            echo(line)
        compare_html = write_html(result, run_dir("demo", home) / "compare.html")
    else:
        echo("no held-out Varro prompt can be scored yet: nothing to compare")
    reports = {
        "varro": build_report(db, "varro", "demo", run_dir("demo", home) / "report.html"),
        "walter": build_report(db, "walter", "walter-demo", run_dir("walter-demo", home) / "report.html"),
    }
    echo("")
    echo(f"report (Varro):  {reports['varro']}")
    echo(f"report (Walter): {reports['walter']}")
    if compare_html:
        echo(f"compare:         {compare_html}")
    return {"varro": varro_metrics, "walter": walter_metrics, "reports": reports, "compare": result,
            "curves": curves, "voice": voices}


def format_voice(rows: list[dict]) -> str:
    """day, humans, distance, template share, entropy and the model's mean spike rate, one line a day."""
    def cell(v) -> str:
        return f"{v:>9.3f}" if isinstance(v, float) else f"{'-':>9}"

    lines = [f"{'day':>12} {'humans':>7} {'distance':>9} {'template':>9} {'entropy':>9} {'spikes':>9} {'human':>9}"]
    for v in rows:
        if not v["model"]:
            continue
        human = (v["human"] or {}).get("spike_rate")
        lines.append(f"{v['day']:>12} {v['humans']:>7} {cell(v['distance'])} {cell(v['template_share'])} "
                     f"{cell(v['entropy'])} {cell(v['model'].get('spike_rate'))} {cell(human[0] if human else None)}")
    return "\n".join(lines)
