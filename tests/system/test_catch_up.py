"""A nightly without --date catches up the days since the run's last finished one; logs are rotated."""

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from varro.engine.loop import nightly
from varro.engine.loop.nightly import (
    Plan,
    first_unfinished,
    last_finished,
    plan_catch_up,
    prune_day_logs,
    record_finished,
    rotate_log,
    run_nightly,
)
from varro.engine.core.dates import span

TINY = ["--source", "sample", "--quiet", "--embedder", "hash", "--max-tokens", "8", "--lora-layers", "2",
        "--group-size", "2", "--prompts-per-day", "2"]


# ---------------------------------------------------------------- which days


def test_a_new_run_runs_today_only():
    assert plan_catch_up(first_unfinished(None, None), "2026-12-02", 7).days == ["2026-12-02"]


def test_the_day_after_the_last_finished_one_starts_the_catch_up():
    assert first_unfinished("2026-11-05", "2026-11-05") == "2026-11-06"
    assert first_unfinished("2026-11-05", "2026-11-09") == "2026-11-10"  # days skipped for no data, recorded
    assert first_unfinished(None, "2026-11-09") == "2026-11-10"
    # killed after checkpoint 11-05 was written (or made by `step`): 11-05 runs again, idempotent
    assert first_unfinished("2026-11-05", "2026-11-04") == "2026-11-05"
    assert first_unfinished("2026-11-05", None) == "2026-11-05"


def test_more_than_catch_up_behind_runs_the_most_recent_and_says_which_were_left_out():
    plan = plan_catch_up("2026-11-10", "2026-11-30", 7)
    assert plan.days == [f"2026-11-{d}" for d in range(24, 31)]
    assert plan.behind == [f"2026-11-{d}" for d in range(10, 24)]
    assert plan.summary(plan.days) == ("caught up 7 days (2026-11-24..30); skipped 2026-11-10..23: more than "
                                       "--catch-up 7 behind; run them with --from/--to")
    assert plan_catch_up("2026-11-29", "2026-11-30", 7).summary(["2026-11-29", "2026-11-30"]) == \
        "caught up 2 days (2026-11-29..30)"
    assert plan_catch_up("2026-12-03", "2026-12-02", 7).days == ["2026-12-02"]  # nothing behind: today again
    assert Plan(["2026-11-02", "2026-11-03"]).summary(["2026-11-02", "2026-11-03"]) == "ran 2026-11-02..03 (2 days)"
    with pytest.raises(ValueError, match="at least 1"):
        plan_catch_up(None, "2026-12-02", 0)


def test_span_shortens_what_both_ends_share():
    assert span(["2026-11-24"]) == "2026-11-24"
    assert span(["2026-11-24", "2026-11-30"]) == "2026-11-24..30"
    assert span(["2026-11-24", "2026-12-02"]) == "2026-11-24..12-02"
    assert span(["2026-12-30", "2027-01-02"]) == "2026-12-30..2027-01-02"


def test_a_backfill_never_moves_the_last_finished_day_back(tmp_path):
    assert last_finished(tmp_path) is None
    record_finished(tmp_path, "2026-11-05")
    record_finished(tmp_path, "2026-11-03")
    assert last_finished(tmp_path) == "2026-11-05"
    assert json.loads((tmp_path / "nightly.json").read_text())["last_finished_day"] == "2026-11-05"


def test_a_day_that_returns_is_recorded_and_a_failing_one_is_not(tmp_path):
    lines = []

    def run_day(day, progress):
        if day == "2026-11-04":
            raise RuntimeError("boom")
        return "ok"

    with pytest.raises(RuntimeError):
        run_nightly(tmp_path, Plan(["2026-11-03", "2026-11-04", "2026-11-05"], 7), run_day, quiet=True,
                    echo=lines.append)
    assert last_finished(tmp_path) == "2026-11-03"
    assert lines == [f"nightly {tmp_path.name}: ran 2026-11-03; 2026-11-04 FAILED"]


# ---------------------------------------------------------------- logs


def test_day_logs_keep_the_newest_and_never_those_just_written(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for d in range(1, 31):
        (logs / f"2026-11-{d:02d}.log").write_text("x\n")
    (logs / "cron.log").write_text("kept\n")
    lines = []
    run_nightly(tmp_path, ["2026-10-15", "2026-12-01"], lambda d, p: "ok", quiet=True, echo=lines.append,
                keep_logs=5)
    left = sorted(p.name for p in logs.iterdir())
    # the 5 newest by day, plus 2026-10-15's log of this very night (a backfill), and cron.log
    assert left == ["2026-10-15.log", "2026-11-27.log", "2026-11-28.log", "2026-11-29.log", "2026-11-30.log",
                    "2026-12-01.log", "cron.log"]
    assert "done: ok" in (logs / "2026-12-01.log").read_text()
    assert prune_day_logs(logs, 2) == ["2026-10-15.log", "2026-11-27.log", "2026-11-28.log", "2026-11-29.log"]
    with pytest.raises(ValueError, match="at least 1"):
        prune_day_logs(logs, 0)


def test_cron_log_is_rotated_by_renaming_at_the_start_of_a_night(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    cron = logs / "cron.log"
    with open(cron, "wb") as f:
        f.truncate(nightly.ROTATE_BYTES + 1)  # sparse: over the limit without writing 5 MB
    for k in (1, 2, 3):
        (logs / f"cron.log.{k}").write_text(f"old {k}\n")
    (logs / "launchd.log").write_text("small\n")
    appender = open(cron, "a")  # the shell's `>> cron.log`, opened before the nightly starts
    run_nightly(tmp_path, ["2026-11-02"], lambda d, p: "ok", quiet=True, echo=lambda line: None)
    appender.write("tonight\n")
    appender.close()
    assert not cron.exists()  # the next night's `>>` makes a new one
    assert (logs / "cron.log.1").stat().st_size == nightly.ROTATE_BYTES + 1 + len("tonight\n")
    assert (logs / "cron.log.2").read_text() == "old 1\n"
    assert (logs / "cron.log.3").read_text() == "old 2\n"  # old 3 is dropped
    assert not (logs / "cron.log.4").exists()
    assert (logs / "launchd.log").read_text() == "small\n"  # under the limit: left alone
    assert rotate_log(logs / "launchd.log", max_bytes=3) and (logs / "launchd.log.1").read_text() == "small\n"


# ---------------------------------------------------------------- the nightly itself, on the tiny model


def night(model, home: Path, today: str, monkeypatch, *extra):
    from varro.cli import cli

    monkeypatch.setattr(nightly, "today", lambda: today)
    out = CliRunner().invoke(cli, ["nightly", "--run", "n", "--home", str(home), "--model", str(model), *TINY,
                                   *extra])
    assert out.exit_code == 0, out.output
    return out.output


def rows(home: Path):
    db = sqlite3.connect(home / "data" / "varro.db")
    rollouts = db.execute("select day, prompt_id, group_index, checkpoint, completion, round(reward, 6), "
                          "round(advantage, 6) from rollouts order by 1, 2, 3").fetchall()
    steps = db.execute("select day, step, minibatch, sequences, round(loss, 5), round(kl, 6) from steps "
                       "order by step").fetchall()
    db.close()
    return rollouts, steps


def weights(home: Path) -> dict:
    import mlx.core as mx

    root = home / "runs" / "n" / "checkpoints"
    return {d.name: {k: np.array(v) for k, v in mx.load(str(d / "adapters.safetensors")).items()}
            for d in sorted(root.glob("20*"))}


def test_catching_up_a_two_night_gap_equals_running_each_night(tiny_model_path, tmp_path, monkeypatch):
    nights = ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]
    each, late = tmp_path / "each", tmp_path / "late"
    for today in nights:
        night(tiny_model_path, each, today, monkeypatch)
    night(tiny_model_path, late, nights[0], monkeypatch)
    out = night(tiny_model_path, late, nights[-1], monkeypatch)  # the laptop slept through 11-03 and 11-04
    assert out.splitlines()[-1] == "nightly n: caught up 3 days (2026-11-03..05)"
    assert last_finished(late / "runs" / "n") == nights[-1]

    want, got = rows(each), rows(late)
    assert {r[0] for r in got[0]} == set(nights) and got[1]  # every day sampled; some trained
    assert got == want
    w_each, w_late = weights(each), weights(late)
    assert list(w_late) == nights
    for day in nights:
        for k, v in w_each[day].items():
            np.testing.assert_allclose(w_late[day][k], v, atol=1e-6)


def test_catch_up_1_runs_today_and_says_which_days_it_left_out(tiny_model_path, tmp_path, monkeypatch):
    home = tmp_path / "h"
    night(tiny_model_path, home, "2026-11-02", monkeypatch)
    out = night(tiny_model_path, home, "2026-11-05", monkeypatch, "--catch-up", "1")
    assert out.splitlines()[-1] == ("nightly n: ran 2026-11-05; skipped 2026-11-03..04: more than --catch-up 1 "
                                    "behind; run them with --from/--to")
    assert sorted(p.name for p in (home / "runs" / "n" / "checkpoints").glob("20*")) == ["2026-11-02", "2026-11-05"]
    assert "skipped 2026-11-03..04" in (home / "runs" / "n" / "logs" / "2026-11-05.log").read_text()
