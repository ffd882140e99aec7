"""Why does a night not help? The loop's knobs, one at a time, on a fixed set of prompts.

`bench/learning.py` trains night after night on new prompts, so its training reward follows the prompt mix and
its held-out panel is small. This diagnostic takes that noise away: for one app it fixes a set of training
prompts (the sample's first days, training split, scorable) and a set of held-out prompts of the same days
(the eval split: other stories), then for each arm trains a fresh LoRA on the real model for R rounds, each
round sampling a group per training prompt from the current weights, scoring it, and taking the night's GSPO
steps on it, as a night would but on the same prompts every round.

Per arm it reports the training prompts' mean reward round by round (the policy's own fresh samples: a
learning curve with the prompt mix held still), the KL and entropy of the last round, and the base against
the final weights, paired by prompt and sample under one seed, on the training prompts (does it fit?) and on
the held-out ones (does what it learned carry over?), with 95% Student-t intervals over prompts.

The arms change one knob each from the experiment's settings (learning rate 2e-4, group 4, advantages divided
by the group std, 4 steps a round, LoRA rank 8 on the top 8 blocks): `shuffled` trains on the same rewards
permuted within each group (the control: the same update sizes, no link to the text).

    scripts/env python bench/fit.py --app varro --out docs/learning/fit-varro
    scripts/env python bench/fit.py --app walter --arms base,shuffled --rounds 4 --out /tmp/fit-walter

Writes <out>/<arm>.json per arm and <out>/fit.md (a table over every arm in <out>).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

ARMS = {
    "base": {},
    "shuffled": {"shuffled": True},
    "no-std": {"advantage_std": False},
    "group-8": {"group_size": 8},
    "steps-8": {"minibatches": 8},
    "lr-5e-4": {"learning_rate": 5e-4},
    "lora-16x16": {"lora_rank": 16, "lora_layers": 16},
}
EVAL_SEED = 7


def arm_config(app, model: Path, arm: dict, args):
    from varro.engine.loop.demo import demo_config

    cfg = app.demo_settings(demo_config(model, tiny=False), tiny=False)
    cfg.train.learning_rate = arm.get("learning_rate", args.learning_rate)
    cfg.train.advantage_std = arm.get("advantage_std", True)
    cfg.train.minibatches = arm.get("minibatches", 4)
    cfg.train.micro_batch = 0
    cfg.model.lora_rank = arm.get("lora_rank", 8)
    cfg.model.lora_layers = arm.get("lora_layers", 8)
    cfg.sampling.group_size = arm.get("group_size", 4)
    cfg.sampling.max_tokens = args.max_tokens
    return cfg


def fixed_prompts(app, home: Path, cfg, n: int) -> tuple[list[dict], list[dict]]:
    """(training prompts, held-out prompts): the first `n` scorable prompts of each split, day by day."""
    from varro.engine import store
    from varro.engine.loop.cycle import prompt_rng
    from varro.engine.embed.embedders import CachedEmbedder, load_embedder
    from varro.engine.core.paths import db_path

    db = store.open_db(db_path(home))
    embedder = CachedEmbedder(load_embedder(getattr(cfg, app.name).embedder), db)
    days = app.sample_days()
    train, held, loaded = [], [], set()
    for i, day in enumerate(days):
        for d in set(days[i:i + 1 + app.reward_delay_days]) - loaded:
            app.load_sample_day(db, d)  # idempotent: a second call stores nothing new
            loaded.add(d)
        for p in app.choose_prompts(db, "fit", day, cfg, embedder, prompt_rng(cfg, day)):
            if app.scorable(db, p):
                (train if p["split"] == "train" else held).append(p)
        if len(train) >= n and len(held) >= n:
            break
    return train[:n], held[:n]


def mean_reward(app, db, prompts, groups, embedder, cfg) -> np.ndarray:
    """(prompts, samples) rewards of `groups` under the app's own reward."""
    return np.array([[c["reward"] for c in app.score_texts(db, p, [r.text for r in g], embedder, cfg)]
                     for p, g in zip(prompts, groups)])


def sample_rewards(policy, app, db, prompts, embedder, cfg, samples: int, seed: int) -> tuple[np.ndarray, list]:
    group = policy.config.sampling.group_size
    policy.config.sampling.group_size = samples
    try:
        groups = policy.sample([(p["id"], p["text"]) for p in prompts], seed=seed)
    finally:
        policy.config.sampling.group_size = group
    return mean_reward(app, db, prompts, groups, embedder, cfg), [[r.text for r in g] for g in groups]


def paired(before: np.ndarray, after: np.ndarray) -> dict:
    from varro.engine.eval.intervals import mean_ci

    d = after - before
    lo, hi = mean_ci(d)
    return {"base": float(before.mean()), "after": float(after.mean()), "diff": float(d.mean()), "ci": [lo, hi]}


def run_arm(app, name: str, home: Path, args, base_eval: dict | None) -> tuple[dict, dict]:
    from varro.engine import store
    from varro.engine.loop.cycle import set_scores
    from varro.engine.loop.demo import real_model_dir
    from varro.engine.embed.embedders import CachedEmbedder, load_embedder
    from varro.engine.core.paths import db_path
    from varro.engine.run.policy import Policy
    from varro.engine.core.paths import run_dir

    sys_path = Path(__file__).resolve().parent
    import sys

    sys.path.insert(0, str(sys_path))
    from learning import ShuffledRewards  # noqa: E402 (bench/ is not a package)

    arm = ARMS[name]
    cfg = arm_config(app, real_model_dir(home), arm, args)
    db = store.open_db(db_path(home))
    embedder = CachedEmbedder(load_embedder(getattr(cfg, app.name).embedder), db)
    train, held = fixed_prompts(app, home, cfg, args.prompts)
    run_path = run_dir(f"fit-{name}", home)
    policy = Policy.open(cfg, run_path)
    say = lambda s: print(f"[{app.name} {name}] {s}", flush=True)  # noqa: E731
    t0 = time.time()
    if base_eval is None:  # the LoRA starts at zero: every arm's base is the same model under the same seeds
        base_eval = {}
        for split, prompts in (("train", train), ("held", held)):
            r, texts = sample_rewards(policy, app, db, prompts, embedder, cfg, args.eval_samples, EVAL_SEED)
            base_eval[split] = {"rewards": r.tolist(), "texts": texts}
        say(f"base: train {np.mean(base_eval['train']['rewards']):+.3f}, held {np.mean(base_eval['held']['rewards']):+.3f}")
    scorer = ShuffledRewards(app, seed=0) if arm.get("shuffled") else app
    rounds = []
    for k in range(args.rounds):
        ids = [(p["id"], p["text"]) for p in train]
        groups = policy.sample(ids, seed=1000 + k)
        for p, g in zip(train, groups):
            set_scores(g, scorer.score_texts(db, p, [r.text for r in g], embedder, cfg))
        reward = float(np.mean([r.reward for g in groups for r in g]))  # a permutation keeps the mean
        policy.trainer.cfg = dataclasses.replace(policy.trainer.cfg, micro_batch=0)
        rows = policy.trainer.train_day(groups)
        rounds.append({"reward": reward, "steps": len(rows),
                       "kl": float(np.mean([r["kl"] for r in rows])) if rows else None,
                       "kl_after": rows[-1].get("kl_after") if rows else None,
                       "entropy": float(np.mean([r["entropy"] for r in rows])) if rows else None,
                       "clip_fraction": float(np.mean([r["clip_fraction"] or 0 for r in rows])) if rows else None})
        say(f"round {k + 1}: reward {reward:+.3f}, kl {rounds[-1]['kl']}, entropy {rounds[-1]['entropy']}")
    after = {}
    for split, prompts in (("train", train), ("held", held)):
        r, texts = sample_rewards(policy, app, db, prompts, embedder, cfg, args.eval_samples, EVAL_SEED)
        after[split] = {"rewards": r.tolist(), "texts": texts}
    res = {
        "app": app.name, "arm": name, "changes": arm, "config": cfg.to_dict(), "rounds": rounds,
        "train_prompts": [p["id"] for p in train], "held_prompts": [p["id"] for p in held],
        "fit": paired(np.array(base_eval["train"]["rewards"]), np.array(after["train"]["rewards"])),
        "transfer": paired(np.array(base_eval["held"]["rewards"]), np.array(after["held"]["rewards"])),
        "after": after, "seconds": round(time.time() - t0),
    }
    say(f"fit {res['fit']['diff']:+.3f} {res['fit']['ci']}, transfer {res['transfer']['diff']:+.3f} "
        f"{res['transfer']['ci']}")
    return res, base_eval


def markdown(results: list[dict]) -> str:
    if not results:
        return ""
    r0 = results[0]
    rounds = max(len(r["rounds"]) for r in results)
    out = [f"{r0['app']}: {len(r0['train_prompts'])} training prompts, {len(r0['held_prompts'])} held-out, "
           f"{rounds} rounds; base on the training prompts {r0['fit']['base']:+.3f}, "
           f"on the held-out {r0['transfer']['base']:+.3f}.\n",
           "| arm | change | reward by round | KL (last) | entropy (last) | fit: trained prompts [95% CI] | "
           "transfer: held-out [95% CI] | s |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        last = r["rounds"][-1]
        curve = " ".join(f"{x['reward']:+.2f}" for x in r["rounds"])
        cell = lambda p: f"{p['diff']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]"  # noqa: E731
        change = ", ".join(f"{k}={v}" for k, v in r["changes"].items()) or "-"
        kl = "-" if last["kl"] is None else f"{last['kl']:.2e}"
        ent = "-" if last["entropy"] is None else f"{last['entropy']:.2f}"
        out.append(f"| {r['arm']} | {change} | {curve} | {kl} | {ent} | {cell(r['fit'])} | "
                   f"{cell(r['transfer'])} | {r['seconds']} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--app", default="varro")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--prompts", type=int, default=6, help="training prompts (and as many held-out ones)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--eval-samples", type=int, default=4)
    ap.add_argument("--learning-rate", type=float, default=2e-4)
    ap.add_argument("--max-tokens", type=int, default=None, help="[default: varro 96, walter 64]")
    args = ap.parse_args()
    from varro.engine.core.app import get_app

    app = get_app(args.app)
    args.max_tokens = args.max_tokens or {"varro": 96}.get(app.name, 64)
    args.out.mkdir(parents=True, exist_ok=True)
    base_file = args.out / "base-eval.json"
    base_eval = json.loads(base_file.read_text()) if base_file.exists() else None
    for name in args.arms.split(","):
        res, base_eval = run_arm(app, name, args.out / "home", args, base_eval)
        base_file.write_text(json.dumps(base_eval))
        (args.out / f"{name}.json").write_text(json.dumps(res, indent=1))
        results = [json.loads((args.out / f"{a}.json").read_text()) for a in ARMS if (args.out / f"{a}.json").exists()]
        (args.out / "fit.md").write_text(markdown(results))
        print(markdown([res]), flush=True)


if __name__ == "__main__":
    main()
