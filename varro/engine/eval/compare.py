"""Before and after: two checkpoints on the run's held-out panel, the same seeds, the same reward.

The mean reward difference comes with a paired Student-t interval over prompts; docs/evaluation.md says why.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import sqlite_utils

from varro.engine.core.config import Config
from varro.engine.embed.embedders import Embedder
from varro.engine.eval.intervals import format_ci, mean_ci, small_panel_warning
from varro.engine.eval.panel import Cells, PanelError, ScoreTexts, ensure_scores, panel_prompts, read_scores
from varro.engine.run.checkpoints import resolve_label, run_config

__all__ = ["CompareError", "Comparison", "Side", "compare", "held_out_prompts", "ScoreTexts"]

CompareError = PanelError
Side = Cells


@dataclass
class Comparison:
    prompts: list[dict]
    before: Side
    after: Side
    mean_diff: float
    ci: tuple[float, float]
    note: str = ""  # how many prompts, and why fewer than asked


def held_out_prompts(db: sqlite_utils.Database, app: str, run_path: Path, n: int, scorable: Callable[[dict], bool],
                     fallback: Config, embedder: Embedder | None = None) -> tuple[list[dict], str]:
    """The first `n` prompts of the run's panel and a note that says plainly when there are fewer."""
    cfg = run_config(run_path, fallback)
    prompts = panel_prompts(db, app, Path(run_path).name, cfg.eval.panel_size, scorable, embedder,
                            cfg.eval.leak_cosine)[:n]
    if not prompts:
        raise CompareError(f"no held-out {app} prompt can be scored yet: nothing to compare on")
    note = (f"{len(prompts)} held-out prompts" if len(prompts) >= n else
            f"only {len(prompts)} held-out prompts can be scored (asked for {n}); no training prompt is used")
    return prompts, note


def compare(
    db: sqlite_utils.Database,
    run_path: Path,
    prompts: list[dict],
    before: str,
    after: str,
    score_texts: ScoreTexts,
    embedder: Embedder,
    config: Config,
    samples: int = 4,
    seed: int = 0,
    note: str = "",
) -> Comparison:
    """Both checkpoints on `prompts` with the panel's per-prompt seeds, scored by the same reward."""
    if not prompts:
        raise CompareError("no prompts to compare on")
    labels = (resolve_label(run_path, before), resolve_label(run_path, after))
    config = run_config(run_path, config)  # the base side uses the model and LoRA settings of the run
    run = Path(run_path).name
    sides = []
    for label in labels:
        ensure_scores(db, run_path, label, prompts, score_texts, embedder, config, samples, seed)
        sides.append(read_scores(db, run, label, prompts, samples, seed))
    diffs = sides[1].rewards - sides[0].rewards
    return Comparison(prompts, sides[0], sides[1], float(diffs.mean()), mean_ci(diffs), note)


def to_json(c: Comparison, targets: Callable[[dict], str]) -> dict:
    """Every prompt with its id, day, split, what scores it, and both sides' samples and rewards."""
    return {
        "before": c.before.label, "after": c.after.label, "mean_diff": c.mean_diff, "ci": list(c.ci),
        "note": c.note,
        "prompts": [{"id": p["id"], "day": p["day"], "split": p["split"], "targets": targets(p),
                     "before": [{"text": t, "reward": float(r)} for t, r in zip(c.before.texts[i], c.before.rewards[i])],
                     "after": [{"text": t, "reward": float(r)} for t, r in zip(c.after.texts[i], c.after.rewards[i])]}
                    for i, p in enumerate(c.prompts)],
    }


def side_by_side(c: Comparison):
    """Each prompt with its samples paired: (prompt, [(reward before, text before, reward after, text after)])."""
    for i, p in enumerate(c.prompts):
        yield p, [(c.before.rewards[i, k], tb, c.after.rewards[i, k], ta)
                  for k, (tb, ta) in enumerate(zip(c.before.texts[i], c.after.texts[i]))]


def format_comparison(c: Comparison, width: int = 60) -> str:
    """Each held-out prompt's headline, then each sample pair side by side, whole, wrapped in two columns of
    `width` with its reward above it; then the means, the paired difference with its CI, and a warning line
    when the panel is under MIN_PANEL prompts."""
    import textwrap

    def column(reward: float, text: str) -> list[str]:
        return [f"reward {reward:+.3f}"] + (textwrap.wrap(" ".join(text.split()), width) or ["(empty)"])

    lines = [f"{'before: ' + c.before.label:<{width}} | after: {c.after.label}"]
    for p, samples in side_by_side(c):
        lines.append("")
        lines.append(f"== {p['id']}  {' '.join(p['text'].splitlines()[0].split())}")
        for k, (rb, tb, ra, ta) in enumerate(samples):
            left, right = column(rb, tb), column(ra, ta)
            if k:
                lines.append(f"{'-' * width} | {'-' * width}")
            for i in range(max(len(left), len(right))):
                a = left[i] if i < len(left) else ""
                b = right[i] if i < len(right) else ""
                lines.append(f"{a:<{width}} | {b}".rstrip())
    lines.append("")
    lines.append(f"mean reward {c.before.label}: {c.before.rewards.mean():.3f}   "
                 f"{c.after.label}: {c.after.rewards.mean():.3f}")
    lines.append(f"difference (after - before): {c.mean_diff:+.3f}   95% CI {format_ci(c.ci)} "
                 f"over {len(c.prompts)} prompts")
    warning = small_panel_warning(len(c.prompts))
    if warning:
        lines.append(warning)
    if c.note:
        lines.append(c.note)
    return "\n".join(lines)


def write_html(c: Comparison, path: Path) -> Path:
    esc = html.escape
    rows = []
    for p, samples in side_by_side(c):
        prompt = "<br>".join(esc(line) for line in p["text"].splitlines())  # the headline, then its summary
        rows.append(f"<tr><th colspan=4>{prompt}</th></tr>")
        for rb, tb, ra, ta in samples:
            rows.append(f"<tr><td>{rb:+.3f}</td><td>{esc(tb)}</td><td>{ra:+.3f}</td><td>{esc(ta)}</td></tr>")
    page = f"""<!doctype html><meta charset="utf-8"><title>compare {esc(c.before.label)} vs {esc(c.after.label)}</title>
<style>body{{font-family:sans-serif}} td,th{{border:1px solid #ccc;padding:4px;vertical-align:top;text-align:left}}
th{{background:#f4f4f4}} table{{border-collapse:collapse}}</style>
<h1>{esc(c.before.label)} vs {esc(c.after.label)}</h1>
<p>Mean reward {esc(c.before.label)}: {c.before.rewards.mean():.3f}; {esc(c.after.label)}: {c.after.rewards.mean():.3f}.
Difference {c.mean_diff:+.3f}, 95% CI {format_ci(c.ci)} over {len(c.prompts)} prompts.
{esc(small_panel_warning(len(c.prompts)) or '')} {esc(c.note)}</p>
<table><tr><th>reward</th><th>{esc(c.before.label)}</th><th>reward</th><th>{esc(c.after.label)}</th></tr>
{''.join(rows)}</table>"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
