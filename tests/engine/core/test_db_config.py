"""Storage migrations and row writers; configuration precedence."""

import json

import pytest

from varro.engine import store as dbm
from varro.engine.core.config import Config, load_config
from varro.engine.core.errors import ConfigError
from varro.engine.core.rollout import Rollout


def test_migrations_apply_once_and_are_recorded(tmp_path):
    path = tmp_path / "v.db"
    db = dbm.open_db(path)
    names = [r["name"] for r in db["_migrations"].rows]
    assert names == [name for name, _ in dbm.all_migrations()]  # the engine's, then each app's
    assert dbm.migrate(db) == []
    db2 = dbm.open_db(path)
    assert db2.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert db2.execute("pragma foreign_keys").fetchone()[0] == 1
    assert {"prompts", "rollouts", "steps"} <= set(db2.table_names())
    assert "rollouts_readable" in db2.view_names()


def test_unknown_migration_is_refused(tmp_path):
    db = dbm.open_db(tmp_path / "v.db")
    db["_migrations"].insert({"name": "m999_future", "applied_utc": "x"})
    with pytest.raises(dbm.MigrationError, match="m999_future"):
        dbm.migrate(db)


def rollout(pid, gi, text="hello"):
    return Rollout(prompt_id=pid, group_index=gi, prompt_tokens=[1, 2, 3], completion_tokens=[4, 5, 2],
                   text=text, finish_reason="stop")


def test_rollouts_round_trip_and_never_duplicate(tmp_path):
    db = dbm.open_db(tmp_path / "v.db")
    dbm.upsert_prompts(db, [{"id": "p", "app": "toy", "day": "2026-11-02", "split": "train",
                             "text": "Write.", "source_json": {"a": 1}}])
    groups = [[rollout("p", 0), rollout("p", 1, "bye")]]
    dbm.insert_rollouts(db, "r", "2026-11-02", "base", groups, {"temp": 1.0})
    again = [[rollout("p", 0, "other"), rollout("p", 1, "other")]]
    dbm.insert_rollouts(db, "r", "2026-11-02", "base", again, {"temp": 1.0})
    assert db["rollouts"].count == 2
    assert [r.id for r in again[0]] == [r.id for r in groups[0]]
    groups[0][0].reward, groups[0][1].reward = 0.25, 0.75
    groups[0][0].components = {"semantic": 0.2, "format": None}
    groups[0][0].advantage = -1.0
    dbm.save_scores(db, groups)
    back = dbm.load_groups(db, "r", "2026-11-02")
    assert back[0][0].text == "hello" and back[0][1].text == "bye"
    assert back[0][0].completion_tokens == [4, 5, 2]
    assert back[0][0].components == {"semantic": 0.2, "format": None}
    assert (back[0][0].reward, back[0][1].reward, back[0][0].advantage) == (0.25, 0.75, -1.0)
    view = list(db.query("select prompt, completion from rollouts_readable order by group_index"))
    assert view == [{"prompt": "Write.", "completion": "hello"}, {"prompt": "Write.", "completion": "bye"}]
    dbm.upsert_prompts(db, [{"id": "p", "app": "toy", "day": "2026-11-02", "split": "train",
                             "text": "Write.", "source_json": {"a": 1}}])
    assert db["prompts"].count == 1


def test_rollout_needs_a_stored_prompt(tmp_path):
    import sqlite3

    db = dbm.open_db(tmp_path / "v.db")
    with pytest.raises(sqlite3.IntegrityError):
        dbm.insert_rollouts(db, "r", "2026-11-02", "base", [[rollout("missing", 0)]], {})
    assert db["rollouts"].count == 0


def test_config_precedence_cli_over_file_over_defaults(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[train]\nlearning_rate = 2e-4\nbeta = 0\n[sampling]\ngroup_size = 4\n')
    cfg = load_config(f, {"sampling": {"group_size": 6}})
    assert cfg.train.learning_rate == 2e-4
    assert cfg.train.beta == 0.0 and isinstance(cfg.train.beta, float)
    assert cfg.sampling.group_size == 6
    assert cfg.train.eps_low == Config().train.eps_low
    assert json.loads(cfg.to_json())["sampling"]["group_size"] == 6


@pytest.mark.parametrize("text,match", [
    ("[train]\nlearning_rat = 1\n", "unknown setting train.learning_rat"),
    ("[trian]\n", "unknown section"),
    ("[sampling]\ngroup_size = 'eight'\n", "group_size must be int"),
    ("[sampling\n", "not valid TOML"),
])
def test_bad_config_files_say_what_is_wrong(tmp_path, text, match):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(f)


def test_unknown_sampler_profile():
    cfg = Config()
    cfg.sampling.profile = "wild"
    with pytest.raises(ConfigError, match="unknown sampler profile"):
        cfg.sampling.sampler_settings()


def test_database_from_an_older_version_migrates_forward_after_a_backup(tmp_path):
    import shutil
    import sqlite3
    from pathlib import Path

    fixture = Path(__file__).resolve().parents[2] / "fixtures" / "varro-m002.db"
    path = tmp_path / "varro.db"
    shutil.copy(fixture, path)
    db = dbm.open_db(path)
    applied = [r["name"] for r in db["_migrations"].rows]
    assert sorted(applied) == sorted(name for name, _ in dbm.all_migrations())
    assert applied[:2] == ["m001_engine", "m002_varro_headlines"]  # the old ones, then the pending in order
    assert applied[2:] == [n for n, _ in dbm.all_migrations() if n not in applied[:2]]
    assert db["rollouts"].count == 3 and db["steps"].count == 1 and db["headlines"].count == 1
    assert [r["completion"] for r in db.query("select completion from rollouts_readable order by group_index")] \
        == ["forecast 0", "forecast 1", "forecast 2"]
    assert "bsky_posts" in db.table_names() and "curriculum" in db.table_names()
    backups = list(tmp_path.glob("varro.db.bak-*-before-m005_reading_views"))
    assert len(backups) == 1
    old = sqlite3.connect(backups[0])
    assert [r[0] for r in old.execute("select name from _migrations order by name")] == \
        ["m001_engine", "m002_varro_headlines"]
    assert old.execute("select count(*) from rollouts").fetchone()[0] == 3
    dbm.open_db(path)  # nothing pending: no new backup
    assert len(list(tmp_path.glob("varro.db.bak-*"))) == 1


def test_failing_migration_rolls_back_and_keeps_the_data(tmp_path, monkeypatch):
    path = tmp_path / "v.db"
    db = dbm.open_db(path)
    db["steps"].insert({"run": "r", "step": 1})
    db.conn.commit()

    def broken(d):
        d["half_made"].create({"x": int})
        raise RuntimeError("migration bug")

    monkeypatch.setattr(dbm, "MIGRATIONS", dbm.MIGRATIONS + [("m999_broken", broken)])
    with pytest.raises(RuntimeError, match="migration bug"):
        dbm.open_db(path)
    again = dbm.sqlite_utils.Database(path)
    assert "half_made" not in again.table_names()
    assert again["steps"].count == 1
    assert "m999_broken" not in {r["name"] for r in again["_migrations"].rows}
