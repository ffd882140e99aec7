"""A run's report: per-day metrics, reward-hacking monitors, plots and samples in one HTML page.

Self-contained (plots embedded as data URIs); every prompt and completion is HTML-escaped. What it gathers:
docs/evaluation.md.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Collection

import numpy as np
import sqlite_utils

from varro.engine import store
from varro.engine.core.app import App, get_app
from varro.engine.eval.cadence import FEATURES as CADENCE_FEATURES
from varro.engine.core.config import Config, EvalConfig
from varro.engine.eval.metrics import mean_or_none
from varro.engine.eval.intervals import format_ci, small_panel_warning
from varro.engine.eval.voice import voice_data, voice_drift
from varro.engine.rewards.text import EMOJI_RE, HASHTAG_RE, ngrams, repeated_ngram_rate, words
from varro.engine.core.errors import UserError


MONITOR_LABELS = {
    "len_words": "mean length (words)",
    "repeat3gram": "repeated 3-gram rate",
    "hashtags": "share with a hashtag",
    "emoji": "share with an emoji",
    "instr_echo": "share echoing the instruction",
    "distinct_2": "distinct 2-grams per group",
}


class ReportError(ValueError, UserError):
    """The report cannot be built: unknown application or a run without rollouts."""


def distinct_2(completions: list[str]) -> float | None:
    """Distinct word 2-grams / all word 2-grams over a group's completions (None without any 2-gram)."""
    grams = [g for text in completions for g in ngrams([w.lower() for w in words(text)], 2)]
    return len(set(grams)) / len(grams) if grams else None


def day_monitors(rows: list[dict[str, Any]], echo_component: str) -> dict[str, float | None]:
    """Reward-hacking monitors over one day's completions (`completion`, `prompt_id`, `components_json`).

    Text monitors use every completion; `instr_echo` only the scored ones
    (None when none is scored); `distinct_2` is averaged over the prompt groups.
    """
    texts = [r["completion"] or "" for r in rows]
    scored = [json.loads(r["components_json"]) for r in rows if r["components_json"]]
    groups: dict[str, list[str]] = {}
    for r, t in zip(rows, texts):
        groups.setdefault(r["prompt_id"], []).append(t)
    per_group = [d for d in (distinct_2(g) for g in groups.values()) if d is not None]
    return {
        "len_words": mean_or_none([float(len(words(t))) for t in texts]),
        "repeat3gram": mean_or_none([repeated_ngram_rate(t, 3) for t in texts]),
        "hashtags": mean_or_none([float(bool(HASHTAG_RE.search(t))) for t in texts]),
        "emoji": mean_or_none([float(bool(EMOJI_RE.search(t))) for t in texts]),
        "instr_echo": mean_or_none([float(c.get(echo_component, 0.0) > 0) for c in scored]),
        "distinct_2": mean_or_none(per_group),
    }


def train_up_eval_down(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The days whose training reward rose while the eval reward fell, against the previous listed day.

    Days where either reward is unknown, on that day or the one before, are never flagged.
    """
    flags = []
    for prev, cur in zip(metrics, metrics[1:]):
        values = (prev["reward_mean"], cur["reward_mean"], prev["eval_reward"], cur["eval_reward"])
        if any(v is None for v in values):
            continue
        r0, r1, e0, e1 = values
        if r1 > r0 and e1 < e0:
            flags.append({
                "day": cur["day"], "previous_day": prev["day"],
                "reward_mean_before": r0, "reward_mean": r1, "eval_reward_before": e0, "eval_reward": e1,
                "reason": (f"training reward rose {r0:.3f} -> {r1:.3f} ({r1 - r0:+.3f}) while eval reward fell "
                           f"{e0:.3f} -> {e1:.3f} ({e1 - e0:+.3f}) since {prev['day']}: possible reward hacking"),
            })
    return flags


def _sample(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    keys = ("id", "split", "prompt_id", "prompt", "completion", "reward", "advantage")
    return {k: row[k] for k in keys}


def panel_curve(db: sqlite_utils.Database, app: str, run: str) -> list[dict[str, Any]]:
    """The run's held-out learning curve from the cached panel scores (nothing is sampled here): one
    dict per checkpoint whose every panel cell is scored, base first; [] before `eval` has run."""
    from dataclasses import asdict

    from varro.engine.eval.panel import curve

    prompts = store.panel_members(db, app, run)
    if not prompts:
        return []
    draw = store.main_panel_draw(db, run)
    if draw is None:
        return []
    seed, samples = draw
    complete = store.complete_checkpoints(db, run, seed, samples, [p["id"] for p in prompts])
    labels = sorted(complete, key=lambda c: (c != "base", c))
    if not labels or labels[0] != "base":
        return []
    return [asdict(pt) for pt in curve(db, run, labels, prompts, samples, seed)]


def report_data(db: sqlite_utils.Database, app: App | str, run: str,
                voice_drift_max: float = EvalConfig.voice_drift_max) -> dict[str, Any]:
    """Every number of the report, JSON-ready.

    {"app", "run", "columns", "monitor_columns", "flags": [...], "days": [{"day",
    "metrics": day_metrics(...), "monitors": day_monitors(...), "best", "worst",
    "flag": reason or None}], "voice": voice_data(...), "voice_flags": voice_drift(voice, voice_drift_max),
    "voice_drift_max"}. Raises ReportError for a run without rollouts.
    """
    from varro.engine.eval.metrics import app_day_metrics
    app = get_app(app) if isinstance(app, str) else app
    cfg = Config()
    name = app.name
    days = store.rollout_days(db, name, run)
    if not days:
        raise ReportError(f"no {name} rollouts for run {run!r}")
    out_days = []
    for day in days:
        rows = store.day_rollouts(db, name, run, day)
        scored = sorted((r for r in rows if r["reward"] is not None), key=lambda r: (-r["reward"], r["id"]))
        out_days.append({
            "day": day,
            "metrics": app_day_metrics(db, app, run, day),
            "monitors": day_monitors(rows, app.echo_component),
            "best": _sample(scored[0] if scored else None),
            "worst": _sample(scored[-1] if scored else None),
            "flag": None,
        })
    flags = train_up_eval_down([d["metrics"] for d in out_days])
    by_day = {f["day"]: f["reason"] for f in flags}
    for d in out_days:
        d["flag"] = by_day.get(d["day"])
    guards = store.run_guards(db, name, run)
    skipped = app.skipped_records(db, days)
    for d in out_days:
        d["skipped"] = skipped.get(d["day"], 0)
    voice = voice_data(db, name, run, lambda db_, d: app.human_items(db_, d, cfg))
    return {"app": name, "run": run, "columns": list(app.metric_columns), "monitor_columns": list(MONITOR_LABELS),
            "plotted": list(app.plotted), "flags": flags, "guards": guards, "days": out_days,
            "skips_table": app.skips_table,
            "panel": panel_curve(db, name, run),
            "voice": voice, "voice_flags": voice_drift(voice, voice_drift_max), "voice_drift_max": voice_drift_max}


def _values(xs: list[float | None]) -> np.ndarray:
    return np.array([math.nan if x is None else x for x in xs], dtype=np.float64)


def plot_png(days: list[str], series: dict[str, list[float | None]], title: str,
             band: tuple[list[float | None], list[float | None]] | None = None,
             flagged: Collection[str] = (), band_label: str = "± std") -> bytes:
    """One line chart over the days as PNG bytes; `band` shades (low, high) around the first series,
    flagged days get a red dashed line. Drawn on the Agg canvas directly, never through pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(days))
    if band is not None:
        ax.fill_between(x, _values(band[0]), _values(band[1]), alpha=0.2, label=band_label)
    for label, ys in series.items():
        ax.plot(x, _values(ys), marker="o", label=label)
    marks = [i for i, d in enumerate(days) if d in flagged]
    for n, i in enumerate(marks):
        ax.axvline(i, color="red", linestyle="--", linewidth=1, label="flagged" if n == 0 else None)
    ax.set_xticks(x, days, rotation=30, ha="right", fontsize=8)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1 or band is not None or marks:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def report_plots(data: dict[str, Any]) -> dict[str, tuple[str, bytes]]:
    """{file stem: (title, PNG bytes)}: the rewards together, then one per metric and monitor with any value."""
    days = [d["day"] for d in data["days"]]
    flagged = {f["day"] for f in data["flags"]}
    metric = {k: [d["metrics"].get(k) for d in data["days"]] for k in ("reward_mean", "reward_std", "eval_reward",
                                                                         *data["plotted"])}
    mean, std = metric["reward_mean"], metric["reward_std"]
    band = ([None if m is None else m - s for m, s in zip(mean, std)],
            [None if m is None else m + s for m, s in zip(mean, std)])
    plots = {}
    if data.get("panel"):
        pts = data["panel"]
        plots["panel"] = ("held-out panel reward by checkpoint (95% CI)",
                          plot_png([p["label"] for p in pts], {"panel reward": [p["mean"] for p in pts]},
                                   "held-out panel: mean reward by checkpoint",
                                   ([p["ci"][0] for p in pts], [p["ci"][1] for p in pts]), band_label="95% CI"))
    voice = data.get("voice") or []
    if any(v["model"] for v in voice):
        vdays = [v["day"] for v in voice]
        plots["voice_distance"] = ("cadence distance from the humans (RMS of human z-scores; lower = closer)",
                                   plot_png(vdays, {"distance": [v["distance"] for v in voice]},
                                            "cadence distance from the human text",
                                            flagged={f["day"] for f in data["voice_flags"]}))
        plots["voice_sameness"] = ("sameness: template share across prompts, policy entropy of the updates",
                                   plot_png(vdays, {"template share": [v["template_share"] for v in voice],
                                                    "entropy (nats/token)": [v["entropy"] for v in voice]},
                                            "template share and policy entropy"))
        for k in CADENCE_FEATURES:
            model = [(v["model"] or {}).get(k) for v in voice]
            human = [((v["human"] or {}).get(k)) for v in voice]
            if all(m is None for m in model):
                continue
            band = ([None if h is None else h[0] - h[1] for h in human], [None if h is None else h[0] + h[1] for h in human])
            plots[f"cadence_{k}"] = (f"cadence: {k}, model against the human band",
                                     plot_png(vdays, {"model": model, "human mean": [None if h is None else h[0]
                                                                                  for h in human]},
                                              f"{k}: model vs human", band, band_label="human ± std"))
    plots["reward"] = ("reward: train mean ± std, eval mean",
                       plot_png(days, {"train": mean, "eval": metric["eval_reward"]}, "reward", band, flagged))
    for k in data["plotted"]:
        if any(v is not None for v in metric[k]):
            plots[k] = (k, plot_png(days, {k: metric[k]}, k, flagged=flagged))
    for k, label in MONITOR_LABELS.items():
        ys = [d["monitors"][k] for d in data["days"]]
        if any(v is not None for v in ys):
            plots[f"monitor_{k}"] = (label, plot_png(days, {k: ys}, label, flagged=flagged))
    return plots


def fmt(value: Any) -> str:
    """A table cell: 3 decimals for floats, '-' for unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th:first-child,td:first-child{text-align:left}.flag{background:#fde2e1;border:2px solid #c00;padding:.7em 1em;
margin:1em 0;font-weight:bold}tr.flagged td{background:#fde2e1}.guard{background:#fff1d6;border:2px solid #b60;padding:.7em 1em;margin:1em 0}.ok{color:#060}
.plots img{width:480px;margin:4px;border:1px solid #eee}pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em;
margin:.2em 0 1em}"""


def _table(headers: list[str], rows: list[list[str]], flagged_rows: set[int]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    flagged_tr = '<tr class="flagged">'
    body = "".join(
        (flagged_tr if i in flagged_rows else "<tr>") + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
        for i, row in enumerate(rows))
    return f"<table><tr>{head}</tr>{body}</table>"


def _sample_html(kind: str, s: dict[str, Any] | None) -> str:
    e = html.escape
    if s is None:
        return f"<p>{kind}: none scored yet</p>"
    return (f"<p><b>{kind}</b>: reward {fmt(s['reward'])}, advantage {fmt(s['advantage'])}, rollout {s['id']} "
            f"({e(s['split'])}, prompt {e(s['prompt_id'])})</p><pre class=\"prompt\">{e(s['prompt'] or '')}</pre>"
            f"<pre class=\"completion\">{e(s['completion'] or '')}</pre>")


def _voice_flags_html(data: dict[str, Any]) -> str:
    """A flag box per voice drift flag; else a line saying none fired, or that the flag is off."""
    e = html.escape
    limit = data["voice_drift_max"]
    if data["voice_flags"]:
        return "".join(f"<div class=\"flag voice\">⚠ {e(f['day'])}: {e(f['reason'])}</div>"
                       for f in data["voice_flags"])
    if limit == 0:
        return "<p>Voice drift flag off (eval.voice_drift_max is 0).</p>"
    return (f"<p class=\"ok\">No day whose cadence distance from the humans is more than {limit:+.0%} over the "
            "first measured day's.</p>")


def render_html(data: dict[str, Any], plots: dict[str, tuple[str, bytes]]) -> str:
    """The self-contained page: flags, per-day tables, embedded plots, best and worst samples."""
    e = html.escape
    days = data["days"]
    flagged = {i for i, d in enumerate(days) if d["flag"]}
    if data["flags"]:
        flags = "".join(f"<div class=\"flag\">⚠ {e(f['day'])}: {e(f['reason'])}</div>" for f in data["flags"])
    else:
        flags = "<p class=\"ok\">No day where the training reward rose while the eval reward fell.</p>"
    if data.get("guards"):
        guards = "".join(f"<div class=\"guard\">🛑 {e(g['day'])} ({e(g['kind'])} guard): {e(g['reason'])}</div>"
                         for g in data["guards"])
    else:
        guards = "<p class=\"ok\">No collapse guard acted and no checkpoint was skipped.</p>"
    guards += "".join(f"<div class=\"guard\">{e(d['day'])}: {d['skipped']} records the ingest could not use "
                      f"(table {e(data.get('skips_table') or '')})</div>" for d in data["days"] if d.get("skipped"))
    metrics = _table(data["columns"], [[fmt(d["metrics"].get(c)) for c in data["columns"]] for d in days], flagged)
    monitors = _table(["day", *(MONITOR_LABELS[k] for k in data["monitor_columns"])],
                      [[d["day"], *(fmt(d["monitors"][k]) for k in data["monitor_columns"])] for d in days], flagged)
    images = "".join(
        f"<img alt=\"{e(title)}\" title=\"{e(title)}\" src=\"data:image/png;base64,"
        f"{base64.b64encode(png).decode('ascii')}\">" for title, png in plots.values())
    samples = "".join(
        f"<h3>{e(d['day'])}</h3>" + _sample_html("best", d["best"]) + _sample_html("worst", d["worst"])
        for d in days)
    voice = [v for v in data.get("voice") or [] if v["model"]]
    drifted = {f["day"] for f in data["voice_flags"]}
    if voice:
        voice_html = ("<p>The model's cadence under the base model (as plain text), against the human text it is "
                      "rewarded by that day; distance is the RMS of the model's mean in the humans' z-scores; "
                      "template share is the share of completions whose nearest neighbour among other prompts' "
                      "completions is above cosine 0.9.</p>" + _table(
                          ["day", "humans", "distance", "template share", "entropy", *CADENCE_FEATURES],
                          [[v["day"], str(v["humans"]), fmt(v["distance"]), fmt(v["template_share"]), fmt(v["entropy"]),
                            *(fmt(v["model"].get(k)) for k in CADENCE_FEATURES)] for v in voice],
                          {i for i, v in enumerate(voice) if v["day"] in drifted}))
        voice_html += _voice_flags_html(data)
    else:
        voice_html = "<p>No cadence stored yet.</p>"
    if data.get("panel"):
        pts = data["panel"]
        small = small_panel_warning(pts[0]["prompts"])
        panel = (f"<p>{pts[0]['prompts']} held-out prompts (stories no update has seen), the same prompts and "
                 "seeds for every checkpoint; base is day 0.</p>"
                 + (f"<div class=\"flag small\">{e(small)}</div>" if small else "") + _table(
                     ["checkpoint", "mean reward", "95% CI", "vs base", "95% CI"],
                     [[p["label"], fmt(p["mean"]), format_ci(p["ci"]), f"{p['diff']:+.3f}", format_ci(p["diff_ci"])]
                      for p in pts], set()))
    else:
        panel = f"<p>No panel scores yet: run <code>{e(data['app'])} eval --run {e(data['run'])}</code>.</p>"
    title = f"{data['app']} run {data['run']}"
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{e(title)}</title><style>{CSS}</style>"
            f"</head><body><h1>{e(title)}</h1><p>{len(days)} days, {e(days[0]['day'])} to {e(days[-1]['day'])}</p>"
            f"<h2>Held-out learning curve</h2>{panel}<h2>Voice</h2>{voice_html}<h2>Flags</h2>{flags}<h2>Training health</h2>{guards}<h2>Per-day metrics</h2>{metrics}<h2>Reward-hacking monitors</h2>{monitors}"
            f"<h2>Plots</h2><div class=\"plots\">{images}</div><h2>Best and worst samples</h2>{samples}"
            "</body></html>")


def write_report(data: dict[str, Any], out_html: Path) -> Path:
    """Write the plots into `<name>_files/` next to `out_html` and the page itself; returns the page's path."""
    out_html = Path(out_html)
    files = out_html.with_name(out_html.stem + "_files")
    files.mkdir(parents=True, exist_ok=True)
    plots = report_plots(data)
    for stem, (_, png) in plots.items():
        (files / f"{stem}.png").write_bytes(png)
    tmp = out_html.with_name(out_html.name + ".tmp")
    tmp.write_text(render_html(data, plots), encoding="utf-8")
    tmp.replace(out_html)
    return out_html


def build_report(db: sqlite_utils.Database, app: App | str, run: str, out_html: Path) -> Path:
    """Write `app`'s report for `run` to `out_html` (plots in `<name>_files/`); returns the page's path.

    Raises ReportError for an unknown app or a run without rollouts.
    """
    return write_report(report_data(db, app, run), out_html)


def format_summary(data: dict[str, Any]) -> str:
    """The per-day metrics and monitors as text tables, then the flags (voice drift ones too), each on a line
    of its own."""
    from varro.engine.eval.metrics import format_metrics

    lines = [format_metrics([d["metrics"] for d in data["days"]], data["columns"]), "",
             format_metrics([{"day": d["day"], **d["monitors"]} for d in data["days"]],
                            ["day", *data["monitor_columns"]]), ""]
    if data["flags"]:
        lines += [f"FLAG {f['day']}: {f['reason']}" for f in data["flags"]]
    else:
        lines.append("no flags: no day where the training reward rose while the eval reward fell")
    lines += [f"VOICE {f['day']}: {f['reason']}" for f in data["voice_flags"]]
    lines += [f"GUARD {g['day']} ({g['kind']}): {g['reason']}" for g in data.get("guards", [])]
    lines += [f"SKIPPED {d['day']}: {d['skipped']} records its ingest could not use (table {data['skips_table']})"
              for d in data["days"] if d.get("skipped")]
    return "\n".join(lines)
