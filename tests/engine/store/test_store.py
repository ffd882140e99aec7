"""The store owns every query on the engine's tables; its named queries return what they say."""

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from varro.engine import store
from varro.engine.core.rollout import Rollout

ROOT = Path(__file__).resolve().parents[3]
ENGINE_TABLES = ("prompts", "rollouts", "steps", "guards", "stories", "panel", "panel_scores", "cadence",
                 "human_cadence", "voice_days", "embeddings", "curriculum", "_migrations",
                 "rollouts_readable", "rollouts_by_day", "day_summary", "steps_by_day")  # the tables, then views
PACKAGES = ("varro", "walter", "tally")  # every package checked
# Walter's applied migrations m004/m010 made the curriculum table before the engine owned it (m014), and an
# applied migration is never edited; nothing else may be listed here.
EXEMPT = {"walter/store.py"}

_NAMES = "|".join(sorted(ENGINE_TABLES, key=len, reverse=True))
_TABLE_IN_SQL = re.compile(rf"\b(?:from|into|update|join)\s+({_NAMES})\b", re.IGNORECASE)
_SQL_VERB = re.compile(r"\b(?:select|insert|delete|replace)\b|\bupdate\s+\w+\s+set\b", re.IGNORECASE)
_DB_TABLE = re.compile(rf"""\bdb\s*\[\s*["']({_NAMES})["']\s*\]""")


def _literals(tree: ast.AST):
    """(line, text) of every string literal but docstrings; an f-string's fields read as {}."""
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            yield node.lineno, "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value


def engine_table_sql(source: str) -> list[tuple[int, str]]:
    """(line, what) of each place in `source` that queries an engine table: a SQL string literal naming one
    after from/into/update/join, or `db["<table>"]`."""
    found = []
    for line, text in _literals(ast.parse(source)):
        if _SQL_VERB.search(text):
            found += [(line, m.group(0)) for m in _TABLE_IN_SQL.finditer(text)]
    found += [(source.count("\n", 0, m.start()) + 1, m.group(0)) for m in _DB_TABLE.finditer(source)]
    return sorted(set(found))


def test_the_detector_finds_engine_table_sql_and_passes_over_prose_and_app_tables():
    source = '''
def f(db, day):
    """Rows from rollouts of the day."""
    a = db.query("select r.day from rollouts r "
                 "join prompts p on p.id = r.prompt_id")
    b = db.execute(f"select {cols} from panel_scores where run = ?")
    db["guards"].upsert({})
    c = db.query("select * from headlines where day = ?")
    help = "headlines turned into prompts each day"
'''
    assert engine_table_sql(source) == [(4, "from rollouts"), (4, "join prompts"), (6, "from panel_scores"),
                                        (7, 'db["guards"]')]


def test_only_the_store_has_sql_on_engine_tables():
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("varro/engine/store/") or rel in EXEMPT:
                continue
            offenders += [f"{rel}:{line}: {what}" for line, what in engine_table_sql(path.read_text())]
    assert offenders == [], "SQL on engine tables outside varro/engine/store/:\n" + "\n".join(offenders)


def test_every_public_function_of_the_store_modules_is_reexported_by_the_package():
    import importlib
    import inspect

    from varro.engine.store import day_prompts, open_db  # noqa: F401  (both spellings keep working)

    missing = []
    for module in ("runs", "stories", "panel", "voice", "embeddings", "schema", "clock"):
        mod = importlib.import_module(f"varro.engine.store.{module}")
        for name, fn in inspect.getmembers(mod, inspect.isfunction):
            if fn.__module__ == mod.__name__ and not name.startswith("_") and not re.match(r"m\d{3}_", name):
                if getattr(store, name, None) is not fn or name not in store.__all__:
                    missing.append(f"{module}.{name}")
    assert missing == []
    assert store.MIGRATIONS is importlib.import_module("varro.engine.store.schema").MIGRATIONS


def _prompt(pid, app, day, split, **source):
    return {"id": pid, "app": app, "day": day, "split": split, "text": f"write about {pid}", "source_json": source}


def _rollout(pid, gi, reward=None):
    return Rollout(prompt_id=pid, group_index=gi, prompt_tokens=[1], completion_tokens=[2], text=f"{pid}/{gi}",
                   finish_reason="stop", reward=reward)


@pytest.fixture
def db(tmp_path):
    return store.open_db(tmp_path / "v.db")


def test_panel_sources_are_the_apps_panel_prompts_of_every_run_in_run_and_position_order(db):
    store.upsert_prompts(db, [_prompt("a1", "varro", "2026-11-01", "eval", title="one"),
                              _prompt("a2", "varro", "2026-11-02", "eval", title="two"),
                              _prompt("a3", "varro", "2026-11-02", "eval", title="not in a panel"),
                              _prompt("w1", "walter", "2026-11-01", "eval", title="walter's")])
    store.add_panel_members(db, [
        {"run": "r2", "position": 0, "prompt_id": "a1", "story_id": "s1", "added_utc": "t"},
        {"run": "r1", "position": 1, "prompt_id": "a1", "story_id": "s1", "added_utc": "t"},
        {"run": "r1", "position": 0, "prompt_id": "a2", "story_id": "s2", "added_utc": "t"},
        {"run": "r1", "position": 2, "prompt_id": "w1", "story_id": "s3", "added_utc": "t"},
    ])
    assert [s["title"] for s in store.panel_sources(db, "varro")] == ["two", "one", "one"]
    assert store.panel_sources(db, "walter") == [{"title": "walter's"}]
    assert [p["id"] for p in store.panel_members(db, "varro", "r1")] == ["a2", "a1"]
    assert store.panel_sources(db, "tally") == []


def test_rollout_days_and_runs_are_per_app(db):
    store.upsert_prompts(db, [_prompt("e1", "varro", "2026-11-01", "eval"), _prompt("e2", "varro", "2026-11-01", "eval"),
                              _prompt("t1", "varro", "2026-11-01", "train"),
                              _prompt("w", "walter", "2026-11-01", "eval")])
    rows = {"2026-11-01": [[_rollout("e1", 0, 0.2), _rollout("e1", 1, 0.4)], [_rollout("e2", 0, 0.9)],
                           [_rollout("t1", 0, 5.0)], [_rollout("w", 0, -3.0)]],
            "2026-11-02": [[_rollout("e1", 0, 0.1), _rollout("e1", 1)]],  # one unscored
            "2026-11-03": [[_rollout("e2", 0, 0.7)]]}
    for day, groups in rows.items():
        store.insert_rollouts(db, "r", day, "base", groups, {})
        store.save_scores(db, groups)
    store.insert_rollouts(db, "other", "2026-11-01", "base", [[_rollout("e1", 0)]], {})
    assert store.rollout_days(db, "varro", "r") == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert store.rollout_runs(db, "varro") == {"r", "other"}
    assert store.rollout_runs(db, "walter") == {"r"}


def test_first_prompt_with_source_is_the_earliest_by_day_then_id(db):
    store.upsert_prompts(db, [_prompt("walter:2026-11-03:b", "walter", "2026-11-03", "train", url_norm="x.com/a"),
                              _prompt("walter:2026-11-02:z", "walter", "2026-11-02", "train", url_norm="x.com/a"),
                              _prompt("walter:2026-11-02:c", "walter", "2026-11-02", "eval", url_norm="x.com/b"),
                              _prompt("tally:2026-11-01:a", "tally", "2026-11-01", "train", url_norm="x.com/a")])
    assert store.first_prompt_with_source(db, "walter", "url_norm", "x.com/a")["id"] == "walter:2026-11-02:z"
    assert store.first_prompt_with_source(db, "walter", "url_norm", "x.com/none") is None
    assert store.prompt_count(db, "walter", "2026-11-02") == 2


def test_cached_vectors_round_trip_as_float32_and_keep_the_first_vector(db):
    v = np.array([0.6, 0.8, 0.0], dtype=np.float64)
    store.insert_vectors(db, "m", {"k1": v})
    store.insert_vectors(db, "m", {"k1": np.zeros(3), "k2": np.ones(3)})
    got = store.cached_vectors(db, "m", ["k1", "k2", "k1", "missing"])
    assert sorted(got) == ["k1", "k2"]
    assert got["k1"].dtype == np.float32 and got["k1"].tolist() == pytest.approx([0.6, 0.8, 0.0])
    assert store.cached_vectors(db, "other model", ["k1"]) == {}


def test_record_guard_keeps_one_row_per_kind_and_run_guards_lists_them_by_day(db):
    store.record_guard(db, "r", "2026-11-02", "varro", "kl", "first")
    store.record_guard(db, "r", "2026-11-02", "varro", "kl", "second")
    store.record_guard(db, "r", "2026-11-01", "varro", "flat", "flat groups")
    store.record_guard(db, "r", "2026-11-01", "walter", "eval", "walter's")
    assert store.run_guards(db, "varro", "r") == [
        {"day": "2026-11-01", "kind": "flat", "reason": "flat groups"},
        {"day": "2026-11-02", "kind": "kl", "reason": "second"},
    ]


def test_policy_logprobs_and_the_days_pi_old_source_round_trip(db):
    store.upsert_prompts(db, [_prompt("p", "varro", "2026-11-01", "train")])
    with_values, without = _rollout("p", 0), _rollout("p", 1)
    with_values.completion_tokens = [2, 3, 4]
    with_values.policy_logprobs = [-0.125, -1e-7, -12.3456789012345]
    with_values.sampler_logprobs = [-0.1, 0.0, -9.0]
    store.insert_rollouts(db, "r", "2026-11-01", "base", [[with_values, without]], {})
    (loaded,) = store.load_groups(db, "r", "2026-11-01")
    assert loaded[0].policy_logprobs == [-0.125, -1e-7, -12.3456789012345]  # exact: JSON keeps every bit
    assert loaded[0].sampler_logprobs == [-0.1, 0.0, -9.0]
    assert loaded[1].policy_logprobs is None
    store.insert_steps(db, "r", "2026-11-01", [{"step": 1, "pi_old_source": "sampler", "pi_old_gap": 2.5e-7},
                                               {"step": 2, "pi_old_source": None, "pi_old_gap": None}])
    assert [(r["pi_old_source"], r["pi_old_gap"]) for r in db.query("select * from steps order by step")] == \
        [("sampler", 2.5e-7), (None, None)]


def test_an_old_database_gains_the_columns_and_its_rows_load_without_policy_logprobs(tmp_path):
    import shutil

    path = tmp_path / "varro.db"
    shutil.copy(ROOT / "tests" / "fixtures" / "varro-m002.db", path)
    db = store.open_db(path)
    assert "m019_pi_old_from_sampler" in {r["name"] for r in db["_migrations"].rows}
    assert {"policy_logprobs_json"} <= set(db["rollouts"].columns_dict)
    assert {"pi_old_source", "pi_old_gap"} <= set(db["steps"].columns_dict)
    (group,) = store.load_groups(db, "old", "2026-11-02")
    assert len(group) == 3 and all(r.policy_logprobs is None and r.sampler_logprobs is None for r in group)
    store.insert_steps(db, "old", "2026-11-03", [{"step": 9, "pi_old_source": "pass", "pi_old_gap": None}])
    assert db.execute("select pi_old_source from steps where step = 9").fetchone()[0] == "pass"
