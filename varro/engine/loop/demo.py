"""The offline demo of any application: its daily cycle over its shipped sample days.

Each sample day runs as `step` would (varro.engine.loop.cycle); a re-run does no
work twice. The demo runs on the real SmolLM2-135M-Instruct, converted once
from the wheel scripts/setup installs (varro.engine.model.gguf); `--tiny` runs the
quick tour on the tiny model instead, built and warmed up once on the sample
text by `ensure_tiny_model`.
"""

from __future__ import annotations

from pathlib import Path

from varro.engine import store as dbm
from varro.engine.core.app import App
from varro.engine.core.config import Config
from varro.engine.core.paths import db_path, home_dir
from varro.engine.core.paths import run_dir
from varro.engine.loop.cycle import step
from varro.engine.eval.metrics import app_day_metrics, format_metrics
from varro.engine.core.progress import NULL_PROGRESS, Progress
from varro.engine.embed.embedders import CachedEmbedder, load_embedder
from varro.engine.model.tiny import write_tiny_model


DEMO_MODEL = {"vocab_size": 4096, "hidden_size": 128, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
              "intermediate_size": 384}


def tiny_model_dir(home: str | Path | None = None) -> Path:
    return home_dir(home) / "data" / "models" / "tiny-qwen3"


def ensure_tiny_model(home: str | Path | None = None, seed: int = 0, warm: bool = True, echo=print) -> Path:
    """The demo model under <home>/data/models, written (and warmed up) on first use.

    With `warm` the random model is first fine-tuned on the sample text (see
    varro.engine.model.warmup), so its samples read as words; that takes a few minutes once.
    """
    cold = tiny_model_dir(home)
    if not (cold / "model.safetensors").is_file():
        write_tiny_model(cold, seed=seed, **DEMO_MODEL)
    if not warm:
        return cold
    from varro.engine.model.warmup import warm_up

    hot = cold.with_name(cold.name + "-warm")
    if not (hot / "model.safetensors").is_file():
        echo(f"warming up the tiny model on the sample text (once) -> {hot}")
        warm_up(cold, hot, steps=400, batch=16, max_len=128, lr=3e-3, seed=seed, log=echo)
    return hot


def real_model_dir(home: str | Path | None = None) -> Path:
    """The real demo model's folder under <home>/data/models, converted from the shipped GGUF on first use."""
    from varro.engine.model.gguf import ensure_smollm

    return ensure_smollm(home_dir(home) / "data" / "models")


def demo_model(home: str | Path | None, tiny: bool, cold: bool = False, echo=print) -> Path:
    """The demo's base model: the real SmolLM2-135M-Instruct, or with `tiny` the (warm or `cold`) tiny one."""
    if tiny:
        return ensure_tiny_model(home, warm=not cold, echo=echo)
    return real_model_dir(home)


def demo_config(model_path: Path | None, tiny: bool = True) -> Config:
    """The demo's recipe (each app adds its own with `App.demo_settings`). The tiny model: short completions
    and a learning rate that moves it. The real model: adapters on its top 8 of 30 blocks, 4 samples a prompt,
    and learning rate 1e-4, where its weights measurably move without the guards discarding nights (1e-5
    barely moves them, 5e-4 blew the KL up; docs/learning.md)."""
    cfg = Config()
    if model_path is not None:
        cfg.model.model = str(model_path)
    if tiny:
        cfg.model.lora_layers = 2
        cfg.sampling.group_size = 8
        cfg.sampling.max_tokens = 96
        cfg.train.learning_rate = 3e-4
    else:
        cfg.model.lora_layers = 8
        cfg.sampling.group_size = 4
        cfg.sampling.max_tokens = 96
        cfg.train.learning_rate = 1e-4
        cfg.eval.panel_size = 4
        cfg.eval.panel_samples = 2
    return cfg


REAL_DEMO_DAYS = 4  # sample days the real model's demo runs by default, to stay within 20 minutes here


def demo_base(app: App, home: str | Path | None, tiny: bool, cold: bool, model_given: bool, echo=print) -> Config:
    """`app`'s demo recipe on the demo model (the real one, or with `tiny` the tiny one); no demo model is
    built when the command line names another (`model_given`)."""
    model = None if model_given else demo_model(home, tiny=tiny, cold=cold, echo=echo)
    return app.demo_settings(demo_config(model, tiny), tiny)


def demo_days(days: int | None, tiny: bool) -> int | None:
    """The sample days to run: `days` when given, else all on the tiny model and REAL_DEMO_DAYS on the real."""
    return days or (None if tiny else REAL_DEMO_DAYS)


def run_demo(app: App, home: str | Path | None, run: str, cfg: Config, days: int | None = None,
             echo=print, progress: Progress = NULL_PROGRESS) -> list[dict]:
    """Run `app`'s cycle over its sample days (the first `days` of them); returns the per-day metrics of the
    days whose completions are scored. `progress` sees each day's stages (a timed line each, say)."""
    db = dbm.open_db(db_path(home))
    embedder = CachedEmbedder(load_embedder(getattr(cfg, app.name).embedder), db)
    run_path = run_dir(run, home)
    all_days = app.sample_days()[: days or None]
    for day in all_days:
        res = step(app, db, cfg, run, run_path, day, embedder, progress=progress)
        echo(f"{day}: {res.summary()}" + "".join(f"\n  note: {n}" for n in res.notes))
    scored = all_days[: len(all_days) - app.reward_delay_days] if app.reward_delay_days else all_days
    metrics = [app_day_metrics(db, app, run, d) for d in scored]
    echo("")
    if app.metrics_note:
        echo(app.metrics_note)
    echo(format_metrics(metrics, list(app.metric_columns)))
    echo("")
    echo(f"rollouts:    {db_path(home)}  (SQL view rollouts_readable)")
    echo(f"checkpoints: {run_path / 'checkpoints'}")
    return metrics


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
