"""bench/learning.py's pieces whose numbers go into docs/learning.md: the hack monitors and the control arm."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import learning  # noqa: E402


def shares(text, source=None, winners=()):
    return {k: f(text, source or {}, list(winners)) for k, f in learning.HACKS.items()}


def test_each_monitor_fires_on_its_hack_and_not_on_an_honest_forecast():
    honest = "Talks will resume on Monday and the union expects a deal on pay by Friday."
    assert not any(shares(honest, {"title": "Port strike enters its third week in Valdoria"}).values())
    assert shares("Prices may rise or fall over the coming weeks.")["hedge"]
    assert shares("The strike will not end this month.")["negation"]
    title = "Port strike enters its third week in Valdoria"
    assert shares(honest + " " + title, {"title": title})["source_title"]
    assert not shares("The port reopens.", {"title": title})["source_title"]
    assert shares("Big news today #news #ports")["hashtag"] and not shares("We are number #1")["all_caps"]
    assert shares("THE PORT STRIKE WILL END ON MONDAY, SAY UNION LEADERS")["all_caps"]
    winner = "the dockworkers finally got their raise and the port is open again tonight"
    assert shares("wow the dockworkers finally got their raise and the port is open again", winners=[winner])[
        "copy_winner"]
    assert not shares(honest, winners=[winner])["copy_winner"]


def test_the_control_permutes_each_groups_scores_and_keeps_them():
    class App:
        name = "toy"

        def score_texts(self, db, prompt, texts, embedder, cfg):
            return [{"reward": float(len(t))} for t in texts]

    texts = ["a" * n for n in range(1, 9)]
    control = learning.ShuffledRewards(App(), seed=0)
    got = [c["reward"] for c in control.score_texts(None, {"id": "p1"}, texts, None, None)]
    assert sorted(got) == [float(n) for n in range(1, 9)] and got != sorted(got)
    again = [c["reward"] for c in control.score_texts(None, {"id": "p1"}, texts, None, None)]
    assert again == got and control.name == "toy"


def test_fit_arms_change_one_knob_each_and_pair_by_cell():
    import argparse

    import numpy as np
    import fit

    from varro.engine.core.app import get_app

    args = argparse.Namespace(learning_rate=2e-4, max_tokens=96)
    app = get_app("varro")
    base = fit.arm_config(app, Path("m"), fit.ARMS["base"], args)
    for name, change in fit.ARMS.items():
        cfg = fit.arm_config(app, Path("m"), change, args)
        got = {"learning_rate": cfg.train.learning_rate, "advantage_std": cfg.train.advantage_std,
               "minibatches": cfg.train.minibatches, "lora_rank": cfg.model.lora_rank,
               "lora_layers": cfg.model.lora_layers, "group_size": cfg.sampling.group_size}
        want = {"learning_rate": 2e-4, "advantage_std": True, "minibatches": 4, "lora_rank": 8, "lora_layers": 8,
                "group_size": 4, **{k: v for k, v in change.items() if k != "shuffled"}}
        assert got == want, name
    assert base.sampling.max_tokens == 96 and base.train.micro_batch == 0
    before = np.array([[0.0, 0.2], [0.4, 0.4], [-0.2, 0.0]])
    after = before + np.array([[0.1, 0.1], [0.0, 0.2], [0.3, 0.1]])
    p = fit.paired(before, after)
    assert p["diff"] == np.mean(after - before) and p["base"] == before.mean()
    half = 4.302652729911275 * np.std([0.1, 0.1, 0.2], ddof=1) / np.sqrt(3)  # t(0.975, 2 df) x sd / sqrt(n)
    assert p["ci"] == pytest.approx((p["diff"] - half, p["diff"] + half))  # per-prompt means 0.1, 0.1, 0.2
