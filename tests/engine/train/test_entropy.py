"""The policy's entropy per step, and the guard that stops a day collapsing onto one way of writing."""

import mlx.core as mx
import numpy as np
import pytest

from support.helpers import open_policy, scored_groups, tiny_config
from varro.engine import store as dbm
from varro.engine.train.guards import entropy_collapsed, first_day_entropy
from varro.engine.train.logprobs import completion_logprobs, prefix_kv


def test_entropy_equals_a_direct_computation_from_the_logits(tiny_model_path, tmp_path):
    pol = open_policy(tiny_model_path, tmp_path / "run")
    rng = np.random.default_rng(1)
    head = mx.array(rng.integers(0, 500, (1, 5)), dtype=mx.int32)
    inputs = mx.array(rng.integers(0, 500, (3, 6)), dtype=mx.int32)
    targets = mx.array(rng.integers(0, 500, (3, 6)), dtype=mx.int32)
    for temp in (0.7, 1.0):
        _, ent = completion_logprobs(pol.model, prefix_kv(pol.model, head), inputs, targets, temp, with_entropy=True)
        full = mx.concatenate([mx.broadcast_to(head, (3, 5)), inputs], axis=1)
        logits = np.array(pol.model(full).astype(mx.float32), dtype=np.float64)[:, 5:] / temp  # (3, 6, V)
        logits -= logits.max(axis=-1, keepdims=True)
        p = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
        want = -(p * np.log(p)).sum(axis=-1)
        np.testing.assert_allclose(np.array(ent), want, rtol=1e-4, atol=1e-4)


def test_every_step_row_carries_the_mean_entropy(tiny_model_path, tmp_path):
    pol = open_policy(tiny_model_path, tmp_path / "run", minibatches=1)
    rows = pol.trainer.train_day(scored_groups(pol, seed=2))
    assert 0 < rows[0]["entropy"] <= np.log(512) + 1e-6  # at most the uniform distribution's


def test_entropy_guard_fires_on_a_collapse_and_not_on_a_healthy_day():
    healthy = [{"entropy": 3.1, "skipped": 0}, {"entropy": 2.9, "skipped": 0}]
    collapsed = [{"entropy": 1.2, "skipped": 0}, {"entropy": 1.0, "skipped": 0}]
    assert entropy_collapsed(healthy, 3.4, 0.5) is None
    reason = entropy_collapsed(collapsed, 3.4, 0.5)
    assert reason and "1.100" in reason and "3.400" in reason
    assert entropy_collapsed(collapsed, None, 0.5) is None  # the first day has nothing to compare with
    assert entropy_collapsed(collapsed, 3.4, 0.0) is None  # off
    assert entropy_collapsed([{"entropy": 0.1, "skipped": 1}], 3.4, 0.5) is None  # a skipped step moved nothing


def test_entropy_guard_judges_the_weights_the_day_keeps():
    """The steps measure the weights before each update; a collapse made by the day's last update shows only
    in `entropy_after`, and that is what the guard reads (and a recovery by then keeps the day)."""
    steps = [{"entropy": 3.3}, {"entropy": 3.2}]
    assert entropy_collapsed(steps + [{"entropy": 3.1, "entropy_after": 1.0}], 3.4, 0.5) is not None
    assert entropy_collapsed([{"entropy": 1.0}, {"entropy": 1.2, "entropy_after": 3.0}], 3.4, 0.5) is None


def test_a_collapsing_run_is_stopped_and_recorded(tiny_model_path, tmp_path):
    from varro.engine.train.guards import guarded_training
    from varro.engine.core.progress import NULL_PROGRESS

    db = dbm.open_db(tmp_path / "v.db")
    run = tmp_path / "runs" / "r"
    cfg = tiny_config(tiny_model_path)
    cfg.train.entropy_min_share = 0.5

    def day(d, policy):
        new, rows, notes = guarded_training(db, "varro", "r", d, policy, scored_groups(policy, seed=3), cfg,
                                            NULL_PROGRESS, lambda: open_policy(tiny_model_path, run))
        dbm.insert_steps(db, "r", d, rows)
        return new, rows, notes

    pol, rows, notes = day("2026-11-03", open_policy(tiny_model_path, run))
    assert rows and not any("policy entropy" in n for n in notes)  # the first day sets the reference
    mean = np.mean([r["entropy"] for r in rows])
    assert first_day_entropy(db, "r", "2026-11-04") == pytest.approx(mean)
    pol, rows, notes = day("2026-11-04", pol)  # a healthy day: quiet
    assert rows and not any("policy entropy" in n for n in notes)
    # a synthetic collapse: the run's first day says it started with far more entropy
    db.execute("update steps set entropy = entropy * 10 where day = '2026-11-03'")
    db.conn.commit()
    trained = pol
    pol, rows, notes = day("2026-11-05", pol)
    assert rows and any("policy entropy" in n for n in notes)
    assert db.execute("select kind from guards where day = '2026-11-05'").fetchone()[0] == "entropy"
    assert pol is not trained  # the day's updates were discarded: a fresh policy at the last checkpoint
