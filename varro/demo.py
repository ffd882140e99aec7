"""The README's demo: Varro and Walter over their sample days, then their held-out panels, voices, reports and a
before/after compare, on the tiny model, offline.

It sits above the engine and the applications (it names two of them), so
neither imports it.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from varro.engine import store
from varro.engine.core.app import get_app
from varro.engine.eval.compare import compare, format_comparison, held_out_prompts, write_html
from varro.engine.core.config import Config
from varro.engine.loop.demo import format_voice, run_demo
from varro.engine.embed.embedders import CachedEmbedder, load_embedder
from varro.engine.eval.panel import PanelError, evaluate, format_curve
from varro.engine.core.paths import db_path, home_dir
from varro.engine.eval.report import build_report
from varro.engine.eval.rollout_log import list_rollouts
from varro.engine.core.paths import run_dir
from varro.engine.eval.voice import voice_data

SECTIONS = (("varro", "Varro: forecasts from the sample headlines"),
            ("walter", "Walter: Bluesky posts from the sample articles"))


def run_full_demo(home: str | Path | None, configs: dict[str, Config], days: int | None = None,
                  echo=print) -> dict:
    """Varro's days, Walter's days, the learning curves, the voice, both reports and a compare on Varro's
    panel; `configs` holds each app's settings by name."""
    apps = [get_app(name) for name, _ in SECTIONS]
    cfg = configs["varro"]
    metrics = {}
    for (name, heading), app in zip(SECTIONS, apps):
        if metrics:
            echo("")
        echo(f"== {heading}")
        metrics[name] = run_demo(app, home, app.demo_run_name(), configs[name], days=days, echo=echo)
    db = store.open_db(db_path(home))
    embedders = {app.name: CachedEmbedder(load_embedder(getattr(configs[app.name], app.name).embedder), db)
                 for app in apps}
    echo("")
    echo("== Learning curves on the held-out panels (stories no update has seen; base = day 0)")
    curves = {}
    for app in apps:
        try:
            prompts, points = evaluate(db, app.name, run_dir(app.demo_run_name(), home), app.score_texts,
                                       embedders[app.name], configs[app.name],
                                       lambda p, app=app: app.scorable(db, p))
        except PanelError as e:  # too few days for a held-out prompt with its targets: say so, go on
            echo(f"{app.name}: {e}")
            continue
        curves[app.name] = (prompts, points)
        made = sorted({p["day"] for p in prompts})
        echo(f"{app.name}: {len(prompts)} held-out prompts made on {made[0]} .. {made[-1]}, "
             f"{cfg.eval.panel_samples} samples each")
        echo(format_curve(points))
    echo("")
    echo("== Voice: cadence distance from the human text (lower = closer), template share, policy entropy")
    voices = {}
    for app in apps:
        voices[app.name] = voice_data(db, app.name, app.demo_run_name(),
                                      lambda db_, d, app=app: app.human_items(db_, d, configs[app.name]))
        echo(f"{app.name}:")
        echo(format_voice(voices[app.name]))
    echo("")
    first = apps[0]
    echo("== Before and after: the base model against the last checkpoint on Varro's panel")
    result, compare_html = None, None
    run_path = run_dir(first.demo_run_name(), home)
    if first.name in curves:
        prompts, note = held_out_prompts(db, first.name, run_path, 8, lambda p: first.scorable(db, p), cfg,
                                         embedders[first.name])
        result = compare(db, run_path, prompts, "base", "latest", first.score_texts, embedders[first.name], cfg,
                         samples=cfg.eval.panel_samples, seed=cfg.eval.panel_seed, note=note)
        lines = format_comparison(result).splitlines()
        heads = [i for i, line in enumerate(lines) if line.startswith("== ")]
        tail = next(i for i, line in enumerate(lines) if line.startswith("mean reward"))  # the summary lines
        shown = lines[: heads[1] if len(heads) > 1 else tail]  # the header and the first prompt whole
        for line in shown + ([f"... {len(heads) - 1} more held-out prompts: `varro compare --run "
                               f"{first.demo_run_name()}` or compare.html", ""] if len(heads) > 1 else []) + lines[tail:]:
            echo(line)
        compare_html = write_html(result, run_path / "compare.html")
    else:
        echo("no held-out Varro prompt can be scored yet: nothing to compare")
    reports = {app.name: build_report(db, app, app.demo_run_name(),
                                      run_dir(app.demo_run_name(), home) / "report.html") for app in apps}
    echo("")
    echo(f"report (Varro):  {reports['varro']}")
    echo(f"report (Walter): {reports['walter']}")
    if compare_html:
        echo(f"compare:         {compare_html}")
    echo("")
    for line in try_next(db, home, walter=True):
        echo(line)
    return {**metrics, "reports": reports, "compare": result, "curves": curves, "voice": voices}


def try_next(db, home: str | Path | None, walter: bool) -> list[str]:
    """The demo's last lines: the names of its runs and three commands to try on them, each of which runs as
    printed from the checkout (with --home when the demo was given one)."""
    varro_run, walter_run = get_app("varro").demo_run_name(), get_app("walter").demo_run_name()
    where = f" --home {shlex.quote(str(home_dir(home)))}" if home else ""
    best = list_rollouts(db, "varro", varro_run, best=1)
    lines = [f"runs: {varro_run} (Varro)" + (f" and {walter_run} (Walter)" if walter else "")
             + f" in {home_dir(home) / 'runs'}; pass --run to the commands (without it they read your own run, "
             "varro or walter)", "try next:",
             f"  scripts/env varro rollouts --run {varro_run} --best 5{where}    # the best forecasts, every reward "
             "component"]
    if best:
        lines.append(f"  scripts/env varro rollouts show {best[0]['id']} --run {varro_run}{where}    # the best one "
                     "whole, with its group")
    if walter:
        lines.append(f"  scripts/env walter rollouts --run {walter_run} --worst 3{where}    # Walter's weakest posts")
    else:
        lines.append(f"  scripts/env varro metrics --run {varro_run}{where}    # the per-day metrics again")
    return lines
