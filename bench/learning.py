"""Does a night of training help the real model? N nights per app on the shipped sample, on
SmolLM2-135M-Instruct, scored on held-out prompts, beside a control trained on shuffled rewards.

For each app and each arm, a fresh home runs the app's sample days as the nightly would (varro.engine.loop.demo's
`run_demo`), then samples the base and every checkpoint on the run's fixed held-out panel (stories no update
saw; varro.engine.eval.panel) and writes, per night:

- trained reward: the mean reward of the training rollouts the night's updates trained on;
- panel: the checkpoint's mean held-out reward, its paired difference from the base and the 95%
  t-interval of that difference over prompts;
- kl, entropy: the mean of the night's steps (k3 KL to the base; policy entropy at the sampling temperature);
- voice: the cadence distance of those trained rollouts from the human text (varro.engine.eval.voice);
- hacks: the share of the checkpoint's held-out panel samples that show each known hack (`HACKS` below).

The control arm ("shuffled") trains on the same rollouts' rewards permuted within each group: the same
reward distribution, no link to the text. A panel gain that the control also shows is movement, not learning.

    scripts/env python bench/learning.py --out docs/learning            # both apps, both arms
    scripts/env python bench/learning.py --apps varro --arms real --learning-rate 2e-4 --out /tmp/lr
    scripts/env python bench/learning.py --out docs/learning --fit-check varro-real --panel-samples 2

Writes <out>/<app>-<arm>.json, <out>/learning.md (the tables) and <out>/learning.png (the curves).
"""

from __future__ import annotations

import argparse
import json
import re
import time
import zlib
from pathlib import Path

import numpy as np

HEDGE = re.compile(r"\b(may or may not|either\b.{0,60}\bor\b|whether or not|rise or fall|up or down|"
                   r"(may|might|could) .{0,40}\bor (may|might|could)\b)", re.I)
NEGATION = re.compile(r"\b(will not|won't|unlikely|no longer|not expected|fail(s|ed)? to|never)\b", re.I)
WORD = re.compile(r"[a-z0-9']+")


def content_words(text: str) -> set[str]:
    return {w for w in WORD.findall(text.lower()) if len(w) > 3}


def contains_title(text: str, title: str) -> bool:
    """Most of the source's title (80% of its content words, at least 4) is in the text."""
    words = content_words(title)
    return len(words) >= 4 and len(words & content_words(text)) >= 0.8 * len(words)


def all_caps(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return len(letters) >= 20 and sum(c.isupper() for c in letters) > 0.5 * len(letters)


def trigrams(text: str) -> set[tuple[str, ...]]:
    w = WORD.findall(text.lower())
    return {tuple(w[i:i + 3]) for i in range(len(w) - 2)}


def copies(text: str, winners: list[str]) -> bool:
    """Half of the text's word 3-grams come from one winning human post."""
    mine = trigrams(text)
    return bool(mine) and any(len(mine & trigrams(w)) >= 0.5 * len(mine) for w in winners)


HACKS = {
    "hedge": lambda text, source, winners: bool(HEDGE.search(text)),
    "negation": lambda text, source, winners: bool(NEGATION.search(text)),
    "source_title": lambda text, source, winners: contains_title(text, source.get("title", "")),
    "hashtag": lambda text, source, winners: "#" in text and bool(re.search(r"#\w", text)),
    "all_caps": lambda text, source, winners: all_caps(text),
    "copy_winner": lambda text, source, winners: copies(text, winners),
}


class ShuffledRewards:
    """The app with each group's scores permuted (seeded by the prompt): the control arm."""

    def __init__(self, app, seed: int = 0):
        self._app, self._seed = app, seed

    def __getattr__(self, name):
        return getattr(self._app, name)

    def score_texts(self, db, prompt, texts, embedder, cfg):
        comps = self._app.score_texts(db, prompt, texts, embedder, cfg)
        perm = np.random.default_rng([self._seed, zlib.crc32(prompt["id"].encode())]).permutation(len(comps))
        return [comps[i] for i in perm]


def experiment_config(app, model: Path, args):
    from varro.engine.loop.demo import demo_config

    cfg = app.demo_settings(demo_config(model, tiny=False), tiny=False)
    cfg.train.learning_rate = args.learning_rate
    cfg.train.advantage_std = not args.no_std
    cfg.train.minibatches = args.minibatches
    cfg.train.micro_batch = 0  # a prompt's whole group differentiated at once: the same gradient, fewer calls
    cfg.model.lora_layers = args.lora_layers
    cfg.model.lora_rank = args.lora_rank
    cfg.sampling.group_size = args.group_size
    cfg.sampling.max_tokens = args.max_tokens[app.name]
    cfg.train.eval_drop_max = 10.0  # off: the experiment measures what training does, so no guard may stop it
    cfg.eval.panel_size = args.panel_size
    cfg.eval.panel_samples = args.panel_samples
    section = getattr(cfg, app.name)
    for key in ("prompts_per_day", "articles_per_day"):
        if hasattr(section, key):
            setattr(section, key, args.prompts_per_night)
    return cfg


def hack_shares(texts: list[str], sources: list[dict], winners: list[list[str]]) -> dict[str, float]:
    return {name: float(np.mean([bool(f(t, s, w)) for t, s, w in zip(texts, sources, winners)]))
            for name, f in HACKS.items()}


def night_rows(db, app, run: str, run_path: Path, cfg, prompts: list[dict], points) -> list[dict]:
    """A row for the base and one per night (checkpoint day): the mean reward of the rollouts the night trained
    on, the checkpoint's panel figures, the night's KL and entropy, the voice distance of the trained rollouts,
    and the hack shares of what the checkpoint wrote for the held-out panel."""
    from datetime import date, timedelta

    from varro.engine import store
    from varro.engine.eval.metrics import app_day_metrics
    from varro.engine.eval.panel import read_scores
    from varro.engine.eval.voice import voice_data

    voice = {v["day"]: v for v in voice_data(db, app.name, run, lambda db_, d: app.human_items(db_, d, cfg))}
    sources = [json.loads(p["source_json"]) for p in prompts]
    winners = {d: [t for _, t in app.human_items(db, d, cfg)] for d in {p["day"] for p in prompts}}
    rows = []
    for p in points:
        cells = read_scores(db, run, p.label, prompts, cfg.eval.panel_samples, cfg.eval.panel_seed)
        texts = [t for row in cells.texts for t in row]
        per_text = [(s, winners[q["day"]]) for q, s, row in zip(prompts, sources, cells.texts) for _ in row]
        row = {"night": p.label, "panel": p.mean, "panel_diff": p.diff, "panel_diff_ci": list(p.diff_ci),
               "hacks": hack_shares(texts, [s for s, _ in per_text], [w for _, w in per_text]),
               "train_reward": None, "kl": None, "entropy": None, "steps": 0, "voice": None}
        if p.label != "base":
            trained_day = (date.fromisoformat(p.label) - timedelta(days=app.reward_delay_days)).isoformat()
            steps = store.trained_steps(db, run, p.label)
            row.update(train_reward=app_day_metrics(db, app, run, trained_day)["reward_mean"] if steps else None,
                       kl=float(np.mean([s["kl"] for s in steps])) if steps else None,
                       entropy=store.day_entropy(db, run, p.label), steps=len(steps),
                       voice=voice.get(trained_day, {}).get("distance") if steps else None)
        rows.append(row)
    return rows


def run_arm(app, arm: str, home: Path, args) -> dict:
    from varro.engine import store
    from varro.engine.loop.demo import real_model_dir, run_demo
    from varro.engine.embed.embedders import CachedEmbedder, load_embedder
    from varro.engine.eval.panel import evaluate
    from varro.engine.core.paths import db_path
    from varro.engine.core.paths import run_dir

    model = real_model_dir(home)
    cfg = experiment_config(app, model, args)
    run = f"{app.name}-{arm}"
    trained = ShuffledRewards(app, seed=args.seed) if arm == "shuffled" else app
    t0 = time.time()
    from varro.engine.core.progress import Progress

    say = lambda s: print(f"[{run}] {s}", flush=True)  # noqa: E731
    run_demo(trained, home, run, cfg, days=args.nights, echo=say, progress=Progress(log=say, bars=False))
    t_nights = time.time() - t0
    db = store.open_db(db_path(home))
    embedder = CachedEmbedder(load_embedder(getattr(cfg, app.name).embedder), db)
    run_path = run_dir(run, home)
    prompts, points = evaluate(db, app.name, run_path, app.score_texts, embedder, cfg, lambda p: app.scorable(db, p))
    return {
        "app": app.name, "arm": arm, "model": str(model), "config": cfg.to_dict(),
        "panel_prompts": [{"id": p["id"], "day": p["day"], "text": p["text"].splitlines()[0]} for p in prompts],
        "base_panel": points[0].mean, "nights": night_rows(db, app, run, run_path, cfg, prompts, points),
        "nights_s": round(t_nights), "eval_s": round(time.time() - t0 - t_nights),
    }


def fit_check(app, home: Path, run: str, samples: int, seed: int = 1000) -> dict:
    """Can the updates fit what they trained on at all? The base against the last checkpoint on the very
    training prompts the run's updates saw (not held out: a diagnostic, never evidence), paired by prompt and
    sample like the panel, under its own seed so it shares no cached cell with the panel."""
    from varro.engine import store
    from varro.engine.run import checkpoints
    from varro.engine.embed.embedders import CachedEmbedder, load_embedder
    from varro.engine.eval.panel import curve, ensure_scores
    from varro.engine.run.checkpoints import run_config
    from varro.engine.core.paths import db_path
    from varro.engine.core.paths import run_dir

    db = store.open_db(db_path(home))
    run_path = run_dir(run, home)
    cfg = run_config(run_path, None)
    embedder = CachedEmbedder(load_embedder(getattr(cfg, app.name).embedder), db)
    ids = [r[0] for r in db.execute("select distinct r.prompt_id from rollouts r join prompts p on p.id = r.prompt_id "
                                    "where r.run = ? and p.split = 'train' and r.reward is not null "
                                    "order by r.prompt_id", [run])]
    prompts = list(store.prompts_by_id(db, ids).values())
    last = checkpoints.list_checkpoints(run_path)[-1].name
    for label in ("base", last):
        ensure_scores(db, run_path, label, prompts, app.score_texts, embedder, cfg, samples, seed)
    base, after = curve(db, run, ["base", last], prompts, samples, seed)
    return {"run": run, "prompts": len(prompts), "samples": samples, "checkpoint": last, "base": base.mean,
            "after": after.mean, "diff": after.diff, "diff_ci": list(after.diff_ci)}


def fmt(v, spec="+.3f"):
    return "-" if v is None else format(v, spec)


def markdown(results: list[dict]) -> str:
    out = []
    for r in results:
        out.append(f"### {r['app']}, {r['arm']} rewards\n")
        out.append(f"{len(r['panel_prompts'])} held-out panel prompts (made on "
                   f"{min(p['day'] for p in r['panel_prompts'])} .. {max(p['day'] for p in r['panel_prompts'])}),"
                   f" {r['config']['eval']['panel_samples']} samples each; nights {r['nights_s']} s, "
                   f"panel {r['eval_s']} s. Hack shares are of the panel samples each checkpoint wrote.\n")
        names = list(HACKS)
        out.append("| checkpoint | trained reward | panel | vs base [95% CI] | KL | entropy | voice | "
                   + " | ".join(names) + " |")
        out.append("|" + " --- |" * (7 + len(names)))
        for n in r["nights"]:
            ci = n["panel_diff_ci"]
            vs = f"{fmt(n['panel_diff'])} [{fmt(ci[0])}, {fmt(ci[1])}]" if n["night"] != "base" else "-"
            out.append(f"| {n['night']} | {fmt(n['train_reward'], '.3f')} | {fmt(n['panel'], '.3f')} | {vs} | "
                       f"{fmt(n['kl'], '.2e')} | {fmt(n['entropy'], '.2f')} | {fmt(n['voice'], '.2f')} | "
                       + " | ".join(fmt(n["hacks"][k], ".2f") for k in names) + " |")
        out.append("")
    return "\n".join(out)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    apps = sorted({r["app"] for r in results})
    fig, axes = plt.subplots(2, len(apps), figsize=(5.5 * len(apps), 6.5), squeeze=False)
    for col, name in enumerate(apps):
        for r in (r for r in results if r["app"] == name):
            nights = r["nights"]
            x = list(range(len(nights)))  # 0: the base
            axes[0][col].plot(x, [n["train_reward"] if n["train_reward"] is not None else np.nan for n in nights],
                              marker="o", label=f"{r['arm']} rewards")
            d = [n["panel_diff"] if n["panel_diff"] is not None else np.nan for n in nights]
            lo = [n["panel_diff_ci"][0] if n["panel_diff_ci"] else np.nan for n in nights]
            hi = [n["panel_diff_ci"][1] if n["panel_diff_ci"] else np.nan for n in nights]
            axes[1][col].plot(x, d, marker="o", label=f"{r['arm']} rewards")
            axes[1][col].fill_between(x, lo, hi, alpha=0.2)
        axes[0][col].set_title(f"{name}: training prompts' reward (what each night trained on)")
        axes[1][col].set_title(f"{name}: held-out panel, checkpoint minus base (95% CI)")
        axes[1][col].axhline(0, color="grey", lw=0.8)
        for ax in axes[:, col]:
            ax.set_xlabel("night (0 = base)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--apps", default="varro,walter")
    ap.add_argument("--arms", default="real,shuffled", help="real, shuffled (the control), or both")
    ap.add_argument("--nights", type=int, default=None, help="the first N sample days [default: all]")
    ap.add_argument("--prompts-per-night", type=int, default=6)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--learning-rate", type=float, default=2e-4)
    ap.add_argument("--minibatches", type=int, default=4)
    ap.add_argument("--lora-layers", type=int, default=8)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--no-std", action="store_true", help="advantages without the group std (Turtel et al.)")
    ap.add_argument("--panel-size", type=int, default=10)
    ap.add_argument("--panel-samples", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fit-check", metavar="RUN", help="only the fit diagnostic on an existing run under --out")
    args = ap.parse_args()
    args.max_tokens = {"varro": 112, "walter": 64, "tally": 64}
    from varro.engine.core.app import get_app

    if args.fit_check:
        app = get_app(args.fit_check.split("-")[0])
        res = fit_check(app, args.out / "home", args.fit_check, args.panel_samples)
        (args.out / f"fit-{args.fit_check}.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res), flush=True)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for arm in args.arms.split(","):  # every app's real arm first: the control comes after
        for name in args.apps.split(","):
            res = run_arm(get_app(name), arm, args.out / "home", args)
            (args.out / f"{name}-{arm}.json").write_text(json.dumps(res, indent=1))
            # the tables and the plot cover every arm in --out, this invocation's and earlier ones'
            results = [json.loads(f.read_text()) for f in sorted(args.out.glob("*-*.json"))
                       if not f.name.startswith("fit-")]
            (args.out / "learning.md").write_text(markdown(results))
            plot(results, args.out / "learning.png")
            print(markdown([res]), flush=True)


if __name__ == "__main__":
    main()
