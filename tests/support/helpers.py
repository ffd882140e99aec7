"""Shared test helpers: a policy on the tiny model, toy-scored groups, and homes built once and copied."""

import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from varro.engine.core.config import Config
from varro.engine.run.policy import Policy
from support.toy import toy_reward


def tiny_config(model_path, **train) -> Config:
    cfg = Config()
    cfg.model.model = str(model_path)
    cfg.model.lora_layers = 2
    cfg.sampling.group_size = 8
    cfg.sampling.max_tokens = 12
    cfg.sampling.profile = "default"
    cfg.train.learning_rate = 5e-3
    cfg.train.kl_max = 1000.0  # tests move a tiny model fast on purpose; test_health sets its own limit
    cfg.train.entropy_min_share = 0.0  # likewise the entropy guard (tests/engine/train/test_entropy.py sets its own)
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def assert_step_rows_equal(got: list[dict], want: list[dict]) -> None:
    """Two training days' step rows agree: every float to float32 rounding (rel 1e-4), every other value
    exactly, timings and memory aside."""
    for g, w in zip(got, want, strict=True):
        for k in w:
            if k in ("duration_ms", "peak_memory_mb"):
                continue
            if isinstance(w[k], float):
                assert g[k] == pytest.approx(w[k], rel=1e-4, abs=1e-6), k
            else:
                assert g[k] == w[k], k


def open_policy(model_path, run_path: Path, before_day=None, **train) -> Policy:
    return Policy.open(tiny_config(model_path, **train), run_path, before_day=before_day)


# Frequent words, so an untrained tiny model already hits some and groups have variance.
COMMON = frozenset({"the", "of", "to", "in", "and", "for", "on", "a"})

PROMPTS = [("a", "Write about the port strike."), ("b", "Write about the central bank."),
           ("c", "Write about prices.")]


def scored_groups(policy: Policy, seed: int, prompts=PROMPTS):
    groups = policy.sample(prompts, seed=seed)
    for g in groups:
        for r in g:
            r.reward = toy_reward(r.text, COMMON) + 0.01 * len(r.completion_tokens)
    return groups


def varro_app():
    from varro.engine.core.app import get_app

    return get_app("varro")


def walter_app():
    from varro.engine.core.app import get_app

    return get_app("walter")


def varro_step(db, cfg, run, run_path, day, embedder, **kwargs):
    """The engine's daily cycle for Varro (varro.engine.loop.cycle.step)."""
    from varro.engine.loop.cycle import step

    return step(varro_app(), db, cfg, run, run_path, day, embedder, **kwargs)


def walter_step(db, cfg, run, run_path, day, embedder, ingest=None, **kwargs):
    """The engine's daily cycle for Walter."""
    from varro.engine.loop.cycle import step

    return step(walter_app(), db, cfg, run, run_path, day, embedder, ingest, **kwargs)


def varro_day_metrics(db, run, day):
    from varro.engine.eval.metrics import app_day_metrics

    return app_day_metrics(db, varro_app(), run, day)


def walter_day_metrics(db, run, day):
    from varro.engine.eval.metrics import app_day_metrics

    return app_day_metrics(db, walter_app(), run, day)


def varro_human_items(db, day):
    from varro.forecast.task import varro_human_items as items

    return items(db, day)


def varro_sample_days():
    return varro_app().sample_days()


@contextmanager
def building_home(home: Path):
    """VARRO_HOME set to `home` while a module- or session-scoped fixture fills it: the autouse per-test home
    is not set yet when such a fixture runs, and without this the build would write into the checkout."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VARRO_HOME", str(home))
        yield home


def copy_home(built: Path, home: Path) -> Path:
    """A test's own copy of a home built once (its database, runs and links), so a test that writes to it
    cannot change what the next test reads. Copying a tiny model's home takes well under a second."""
    shutil.copytree(built, home, symlinks=True, dirs_exist_ok=True)
    return home
