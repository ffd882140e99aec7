"""The rollout log, the HTML report, their commands and the reading views.

A small trained run of each app (three sample days on the tiny model) is built
once for the module; hand-made databases pin the monitors and the flag to
hand-computed values.
"""

import base64
import json
import re
import sqlite3

import click
import numpy as np
import pytest
from click.testing import CliRunner

from support.handmade import handmade
from support.helpers import tiny_config
from support.helpers import varro_day_metrics, varro_step, walter_day_metrics, walter_step
from varro.engine import store as dbm
from varro.engine.cli.inspect import register
from varro.engine.embed.embedders import HashEmbedder
from varro.engine.core.paths import db_path
from varro.engine.eval.report import build_report, day_monitors, report_data, train_up_eval_down
from varro.engine.rewards.text import words
from varro.engine.core.paths import run_dir
from varro.engine.eval.rollout_log import (
    RolloutNotFound,
    SortKeyError,
    format_detail,
    format_table,
    list_rollouts,
    rollout_detail,
)
from walter.sample import ingest_sample_day

DAYS = ["2026-11-02", "2026-11-03", "2026-11-04"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def home(tiny_model_path, tmp_path_factory):
    """A data folder with Varro run 'v' and Walter run 'w', three sample days each."""
    home = tmp_path_factory.mktemp("inspect") / "home"
    db = dbm.open_db(db_path(home))
    cfg = tiny_config(tiny_model_path, learning_rate=2e-3)
    cfg.sampling.max_tokens = 16
    cfg.varro.prompts_per_day, cfg.varro.eval_every = 4, 4
    cfg.walter.articles_per_day, cfg.walter.eval_every = 4, 4
    emb = HashEmbedder()
    for day in DAYS:
        varro_step(db, cfg, "v", run_dir("v", home), day, emb)
    for day in DAYS:
        walter_step(db, cfg, "w", run_dir("w", home), day, emb, ingest_sample_day)
    db.conn.close()
    return home


@pytest.fixture
def db(home):
    conn = dbm.open_db(db_path(home))
    yield conn
    conn.conn.close()


def cli_for(app: str) -> click.Group:
    from varro.engine.core.app import get_app
    from varro.engine.cli.commands import EngineGroup

    @click.group(cls=EngineGroup)
    def cli() -> None:
        """A throwaway group."""

    register(cli, get_app(app))
    return cli


def invoke(app: str, args: list[str], **kw):
    return CliRunner().invoke(cli_for(app), args, **kw)


def db_rows(db, sql, args=()):
    return list(db.query(sql, list(args)))


# --- rollouts list -------------------------------------------------------------------------------


def test_list_sorts_by_reward_and_matches_the_db(db):
    rows = list_rollouts(db, "varro", "v", day=DAYS[1])
    expect = db_rows(db, "select id, reward, advantage, completion, components_json from rollouts "
                         "where run = 'v' and day = ?", [DAYS[1]])
    assert len(rows) == len(expect) == 32
    assert [r["reward"] for r in rows] == sorted((e["reward"] for e in expect), reverse=True)
    by_id = {e["id"]: e for e in expect}
    for r in rows:
        assert r["app"] == "varro" and r["day"] == DAYS[1]
        assert r["completion"] == by_id[r["id"]]["completion"]
        assert r["components"] == json.loads(by_id[r["id"]]["components_json"])
    # unscored rollouts (the last day's forecasts) still list, after the scored ones
    last = list_rollouts(db, "varro", "v", day=DAYS[2])
    assert len(last) == 32 and all(r["reward"] is None for r in last)


def test_best_and_worst_by_advantage_and_reward(db):
    adv = sorted(db_rows(db, "select id, advantage from rollouts where run = 'v' and day = ?", [DAYS[0]]),
                 key=lambda r: (-r["advantage"], r["id"]))
    best = list_rollouts(db, "varro", "v", day=DAYS[0], sort="advantage", best=3)
    assert [r["id"] for r in best] == [r["id"] for r in adv[:3]]
    rewards = sorted(r["reward"] for r in db_rows(db, "select reward from rollouts where run = 'v' and day = ?",
                                                  [DAYS[0]]))
    worst = list_rollouts(db, "varro", "v", day=DAYS[0], worst=4)
    assert [r["reward"] for r in worst] == rewards[:4]  # lowest first
    # across days, best skips the unscored rollouts
    top = list_rollouts(db, "varro", "v", best=5)
    assert [r["reward"] for r in top] == sorted(
        (r["reward"] for r in db_rows(db, "select reward from rollouts where run = 'v' and reward is not null")),
        reverse=True)[:5]


def test_prompt_filter_app_isolation_and_bad_arguments(db):
    pid = db_rows(db, "select prompt_id from rollouts where run = 'v' and day = ? order by id limit 1",
                  [DAYS[0]])[0]["prompt_id"]
    rows = list_rollouts(db, "varro", "v", prompt=pid[:24])
    assert len(rows) == 8 and {r["prompt_id"] for r in rows} == {pid}
    assert list_rollouts(db, "walter", "v") == []
    walter = list_rollouts(db, "walter", "w")
    assert len(walter) == 64 and {r["app"] for r in walter} == {"walter"}
    with pytest.raises(SortKeyError, match="'loss'.*reward, advantage"):
        list_rollouts(db, "varro", "v", sort="loss")
    with pytest.raises(ValueError, match="best=2, worst=3"):
        list_rollouts(db, "varro", "v", best=2, worst=3)


def test_cli_list_json_and_table_match_the_library(home, db):
    out = invoke("varro", ["rollouts", "--home", str(home), "--run", "v", "--date", DAYS[1], "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == json.loads(json.dumps(list_rollouts(db, "varro", "v", day=DAYS[1])))
    # group options given before the subcommand apply to it
    sub = invoke("varro", ["rollouts", "--home", str(home), "--run", "v", "list", "--date", DAYS[1], "--sort",
                           "advantage", "--best", "2", "--json"])
    assert sub.exit_code == 0, sub.output
    assert [r["id"] for r in json.loads(sub.output)] == [
        r["id"] for r in list_rollouts(db, "varro", "v", day=DAYS[1], sort="advantage", best=2)]
    table = invoke("varro", ["rollouts", "--home", str(home), "--run", "v", "--date", DAYS[1], "--best", "4"],
                   env={"COLUMNS": "100"})
    assert table.exit_code == 0, table.output
    lines = table.output.rstrip("\n").split("\n")
    assert lines[0].split()[:4] == ["id", "day", "prompt", "completion"]
    best = list_rollouts(db, "varro", "v", day=DAYS[1], best=4)
    assert [int(line.split()[0]) for line in lines[1:]] == [r["id"] for r in best]
    assert [float(line.split()[-6]) for line in lines[1:]] == [round(r["reward"], 3) for r in best]
    assert max(len(line) for line in lines) <= 100


def test_cli_list_walter_and_usage_errors(home):
    out = invoke("walter", ["rollouts", "--home", str(home), "--run", "w", "--worst", "2", "--json"])
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert len(got) == 2 and got[0]["reward"] <= got[1]["reward"] and "transfer" in got[0]["components"]
    both = invoke("varro", ["rollouts", "--home", str(home), "--run", "v", "--best", "1", "--worst", "1"])
    assert both.exit_code == 2 and "not both" in both.output
    bad_date = invoke("varro", ["rollouts", "--home", str(home), "--date", "03/11/2026"])
    assert bad_date.exit_code == 2 and "03/11/2026" in bad_date.output
    bad_sort = invoke("varro", ["rollouts", "list", "--home", str(home), "--sort", "loss"])
    assert bad_sort.exit_code == 2 and "reward" in bad_sort.output and "advantage" in bad_sort.output
    empty = invoke("varro", ["rollouts", "--home", str(home), "--run", "nothing"])
    assert empty.exit_code == 1 and "the varro runs are: v" in empty.output


def test_format_table_flattens_shortens_and_escapes():
    row = {"id": 7, "app": "walter", "day": "2026-11-03", "prompt": "Article: x\nmore",
           "completion": "line one\nline two\x1b[2J " + "word " * 60, "reward": 0.25, "advantage": -1.5,
           "components": {"transfer": 0.3, "copy": 0.0, "hashtags": 2.0, "graphemes": 140.0}}
    text = format_table([row], width=130, components=("transfer", "copy", "hashtags", "graphemes"))
    lines = text.split("\n")
    assert len(lines) == 2 and all(len(line) <= 130 for line in lines)
    assert "Article: x ↵ more" in lines[1]
    assert "line one ↵ line two\\x1b[2J word word" in lines[1] and "\x1b" not in text
    assert lines[1].split()[-7].endswith("…")  # the completion was cut
    assert lines[1].split()[-6:] == ["0.250", "0.300", "0.000", "2.000", "140.000", "-1.500"]


# --- rollouts show -------------------------------------------------------------------------------


def test_detail_has_every_component_and_the_whole_group(db):
    rid = db_rows(db, "select id from rollouts where run = 'w' order by id limit 1 offset 5")[0]["id"]
    d = rollout_detail(db, rid)
    row = db_rows(db, "select * from rollouts where id = ?", [rid])[0]
    assert d["components"] == json.loads(row["components_json"])
    assert d["prompt"] == db_rows(db, "select text from prompts where id = ?", [row["prompt_id"]])[0]["text"]
    group = db_rows(db, "select id, reward, advantage from rollouts where run = ? and day = ? and prompt_id = ? "
                        "order by group_index", [row["run"], row["day"], row["prompt_id"]])
    assert [(g["id"], g["reward"], g["advantage"]) for g in d["group"]] == [
        (g["id"], g["reward"], g["advantage"]) for g in group]
    assert [g["this"] for g in d["group"]].count(True) == 1
    assert np.mean([g["advantage"] for g in d["group"]]) == pytest.approx(0.0, abs=1e-6)


def test_cli_show_prints_every_component_and_the_group(home, db):
    rid = db_rows(db, "select id from rollouts where run = 'v' and day = ? order by id limit 1 offset 9",
                  [DAYS[1]])[0]["id"]
    d = rollout_detail(db, rid)
    out = invoke("varro", ["rollouts", "show", str(rid), "--home", str(home)], env={"COLUMNS": "120"})
    assert out.exit_code == 0, out.output
    text = out.output
    for name, value in d["components"].items():
        shown = "-" if value is None else f"{value:.3f}"  # a component that could not be computed is NULL
        assert re.search(rf"^  {re.escape(name)}\s+{re.escape(shown)}$", text, re.M), name
    for g in d["group"]:
        assert re.search(rf"^ [ *]\s*{g['group_index']}\s+{g['id']}\s+{g['reward']:.3f}\s+{g['advantage']:.3f}",
                         text, re.M), g
    assert re.search(rf"^ \*\s*{d['group_index']}\s+{rid}\s", text, re.M)
    assert d["prompt"].split("\n")[0] in text
    as_json = invoke("varro", ["rollouts", "--home", str(home), "show", str(rid), "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.output) == json.loads(json.dumps(d))
    assert format_detail(d, width=120) in text


def test_unknown_id_is_a_clear_error(home, db):
    with pytest.raises(RolloutNotFound, match="987654") as err:
        rollout_detail(db, 987654)
    assert isinstance(err.value, LookupError) and err.value.rollout_id == 987654
    out = invoke("walter", ["rollouts", "show", "987654", "--home", str(home)])
    assert out.exit_code == 1
    assert "error: no rollout with id 987654" in out.output + (out.stderr or "")


# --- report --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def varro_report(home, tmp_path_factory):
    db = dbm.open_db(db_path(home))
    out = build_report(db, "varro", "v", tmp_path_factory.mktemp("report") / "v.html")
    data = report_data(db, "varro", "v")
    db.conn.close()
    return out, data


def test_report_is_self_contained_with_real_pngs(varro_report):
    out, data = varro_report
    page = out.read_text(encoding="utf-8")
    files = sorted((out.parent / "v_files").glob("*.png"))
    names = {p.stem for p in files}
    assert {"reward", "kl", "clip_fraction", "quality", "zeros", "leak", "words", "monitor_len_words",
            "monitor_repeat3gram", "monitor_distinct_2", "monitor_instr_echo"} <= names
    assert page.count("data:image/png;base64,") == len(files)
    for p in files:
        png = p.read_bytes()
        assert png[:8] == PNG_MAGIC and len(png) > 8000, p.name
        assert base64.b64encode(png).decode() in page, p.name  # the page embeds the very same image
    from matplotlib.image import imread

    pixels = imread(files[0])
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 20  # lines and text, not a blank


def test_report_numbers_equal_day_metrics_and_the_db(varro_report, db):
    out, data = varro_report
    assert [d["day"] for d in data["days"]] == DAYS
    for d in data["days"]:
        assert d["metrics"] == varro_day_metrics(db, "v", d["day"])
        rows = db_rows(db, "select r.reward, r.completion, p.split from rollouts r join prompts p "
                           "on p.id = r.prompt_id where r.run = 'v' and r.day = ?", [d["day"]])
        train = [r["reward"] for r in rows if r["split"] == "train" and r["reward"] is not None]
        if train:
            assert d["metrics"]["reward_mean"] == pytest.approx(sum(train) / len(train))
            rewards = [r["reward"] for r in rows]
            assert (d["best"]["reward"], d["worst"]["reward"]) == (max(rewards), min(rewards))
        else:
            assert d["best"] is None and d["metrics"]["reward_mean"] is None
        assert d["monitors"]["len_words"] == pytest.approx(np.mean([len(words(r["completion"])) for r in rows]))
        assert d["monitors"]["hashtags"] == pytest.approx(
            np.mean([bool(re.search(r"(?<![\w#])#\w", r["completion"])) for r in rows]))
    # the page's per-day table shows those numbers
    page = out.read_text(encoding="utf-8")
    metrics_table = page.split("<h2>Per-day metrics</h2>")[1].split("</table>")[0]
    cells = {m[0]: re.findall(r"<td>([^<]*)</td>", m[1]) for m in
             re.findall(r"<tr[^>]*><td>(\d{4}-\d\d-\d\d)</td>(.*?)</tr>", metrics_table)}
    for d in data["days"]:
        want = ["-" if d["metrics"][c] is None else f"{d['metrics'][c]:.3f}" if isinstance(d["metrics"][c], float)
                else str(d["metrics"][c]) for c in data["columns"][1:]]
        assert cells[d["day"]] == want
    # the flags the report raised are exactly the train-up/eval-down days of day_metrics
    ms = [varro_day_metrics(db, "v", day) for day in DAYS]
    expect = [b["day"] for a, b in zip(ms, ms[1:]) if None not in (a["reward_mean"], b["reward_mean"],
              a["eval_reward"], b["eval_reward"]) and b["reward_mean"] > a["reward_mean"]
              and b["eval_reward"] < a["eval_reward"]]
    assert [f["day"] for f in data["flags"]] == expect
    assert page.count('<div class="flag">') == len(expect)


def test_walter_report_uses_walter_metrics(home, db, tmp_path):
    data = report_data(db, "walter", "w")
    assert [d["day"] for d in data["days"]] == DAYS[1:]  # the first sample day has no article with a history
    for d in data["days"]:
        assert d["metrics"] == walter_day_metrics(db, "w", d["day"])
        comps = [json.loads(r["components_json"]) for r in db_rows(
            db, "select components_json from rollouts where run = 'w' and day = ?", [d["day"]])]
        assert d["monitors"]["instr_echo"] == pytest.approx(np.mean([c["pen_echo"] > 0 for c in comps]))
    out = build_report(db, "walter", "w", tmp_path / "w.html")
    assert {"hashtag_rate", "copy_rate", "graphemes"} <= {p.stem for p in (tmp_path / "w_files").glob("*.png")}
    assert "<th>hashtag_rate</th>" in out.read_text(encoding="utf-8")


def test_completions_are_html_escaped(home, tmp_path):
    path = tmp_path / "copy.db"
    src = sqlite3.connect(str(db_path(home)))
    dst = sqlite3.connect(str(path))
    src.backup(dst)
    src.close(), dst.close()
    db = dbm.open_db(path)
    row = db_rows(db, "select * from rollouts where run = 'v' and day = ? limit 1", [DAYS[0]])[0]
    evil = '<script>alert(1)</script> & "quoted" <img src=x onerror=alert(2)>'
    db["rollouts"].insert({**row, "id": None, "group_index": 99, "completion": evil, "reward": 5.0})
    db.conn.commit()
    page = build_report(db, "varro", "v", tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quoted&quot; &lt;img src=x onerror=alert(2)&gt;" \
        in page


def test_report_cli_prints_summary_flags_and_path(home, db):
    out = invoke("varro", ["report", "--home", str(home), "--run", "v"])
    assert out.exit_code == 0, out.output
    html_path = run_dir("v", home) / "report.html"
    assert f"report: {html_path}" in out.output and html_path.is_file()
    data = report_data(db, "varro", "v")
    for f in data["flags"]:
        assert f"FLAG {f['day']}: {f['reason']}" in out.output
    if not data["flags"]:
        assert "no flags" in out.output
    for d in data["days"]:
        assert d["day"] in out.output
    as_json = invoke("varro", ["report", "--home", str(home), "--run", "v", "--json", "--html",
                               str(home / "elsewhere.html")])
    assert as_json.exit_code == 0, as_json.output
    got = json.loads(as_json.output)
    assert got.pop("html") == str(home / "elsewhere.html") and (home / "elsewhere.html").is_file()
    assert got == json.loads(json.dumps(data))
    missing = invoke("walter", ["report", "--home", str(home), "--run", "nope"])
    assert missing.exit_code == 1 and "no walter rollouts for run 'nope'" in missing.output + (missing.stderr or "")


# --- monitors and the flag on hand-made databases --------------------------------------------------


FLAG_DAYS = {  # train mean 0.2, 0.3, 0.4, 0.35; eval mean 0.5, 0.4, 0.45, 0.3
    "2026-11-02": ([0.1, 0.3], [0.5, 0.5]),
    "2026-11-03": ([0.2, 0.4], [0.3, 0.5]),  # train up, eval down: flagged
    "2026-11-04": ([0.4, 0.4], [0.45, 0.45]),  # both up
    "2026-11-05": ([0.3, 0.4], [0.3, 0.3]),  # both down
}


@pytest.mark.parametrize("app", ["varro", "walter"])
def test_flag_fires_when_train_rises_and_eval_falls_and_only_then(app, tmp_path):
    db = handmade(tmp_path / "h.db", app, FLAG_DAYS)
    data = report_data(db, app, "h")
    assert [f["day"] for f in data["flags"]] == ["2026-11-03"]
    f = data["flags"][0]
    assert (f["reward_mean_before"], f["reward_mean"]) == pytest.approx((0.2, 0.3))
    assert (f["eval_reward_before"], f["eval_reward"]) == pytest.approx((0.5, 0.4))
    assert f["previous_day"] == "2026-11-02" and "eval reward fell 0.500 -> 0.400" in f["reason"]
    assert [d["flag"] is not None for d in data["days"]] == [False, True, False, False]
    page = build_report(db, app, "h", tmp_path / "h.html").read_text(encoding="utf-8")
    assert page.count('<div class="flag">') == 1 and "2026-11-03: training reward rose 0.200 -&gt; 0.300" in page
    db.conn.close()


def test_no_flag_without_a_fall_or_without_an_eval(tmp_path):
    days = {"2026-11-02": ([0.1, 0.1], [0.5, 0.5]), "2026-11-03": ([0.3, 0.3], [0.5, 0.5]),
            "2026-11-04": ([0.5, 0.5], [])}
    db = handmade(tmp_path / "h.db", "varro", days)
    assert report_data(db, "varro", "h")["flags"] == []  # equal eval is no fall; no eval cannot fall
    base = {"day": "a", "reward_mean": 0.1, "eval_reward": 0.5}
    assert train_up_eval_down([base, {"day": "b", "reward_mean": 0.2, "eval_reward": 0.4}])[0]["day"] == "b"
    assert train_up_eval_down([base, {"day": "b", "reward_mean": 0.1, "eval_reward": 0.4}]) == []
    assert train_up_eval_down([{**base, "eval_reward": None}, {"day": "b", "reward_mean": 0.2,
                                                              "eval_reward": 0.4}]) == []


def test_cli_report_flags_on_a_handmade_run(tmp_path):
    home = tmp_path / "home"
    handmade(db_path(home), "walter", FLAG_DAYS).conn.close()
    out = invoke("walter", ["report", "--home", str(home), "--run", "h"])
    assert out.exit_code == 0, out.output
    assert "FLAG 2026-11-03: training reward rose 0.200 -> 0.300 (+0.100) while eval reward fell 0.500 -> 0.400" \
        in out.output
    assert out.output.count("FLAG") == 1


def test_monitors_against_hand_computed_values(tmp_path):
    day = "2026-11-02"
    texts = {(day, "train", 0): "the cat sat on the mat the cat sat",  # 9 words, 1 of 7 3-grams repeats
             (day, "train", 1): "Big news today #economy #markets",  # 5 words, a hashtag
             (day, "train", 2): "Prices rise \U0001F680 fast",  # 3 words, an emoji
             (day, "train", 3): "",
             (day, "eval", 0): "go up now", (day, "eval", 1): "go up now"}
    db = handmade(tmp_path / "h.db", "varro", {day: ([0.1] * 4, [0.2, 0.2])}, texts)
    db.execute("update rollouts set components_json = json_set(components_json, '$.leak_instruction', 1.0) "
               "where prompt_id like '%train' and group_index = 0")
    db.execute("update rollouts set components_json = null, reward = null "
               "where prompt_id like '%train' and group_index = 3")
    db.conn.commit()
    m = report_data(db, "varro", "h")["days"][0]["monitors"]
    assert m["len_words"] == pytest.approx(23 / 6)
    assert m["repeat3gram"] == pytest.approx((1 / 7) / 6)
    assert m["hashtags"] == pytest.approx(1 / 6)
    assert m["emoji"] == pytest.approx(1 / 6)
    assert m["instr_echo"] == pytest.approx(1 / 5)  # over the 5 scored completions only
    # group 1: 12 distinct of 14 two-grams; group 2: the same text twice, 2 of 4
    assert m["distinct_2"] == pytest.approx((12 / 14 + 2 / 4) / 2)
    walter_rows = [{"completion": "a post", "prompt_id": "p", "components_json": json.dumps({"pen_echo": x})}
                   for x in (0.3, 0.0, 0.0, 0.0)]
    assert day_monitors(walter_rows, "pen_echo")["instr_echo"] == 0.25


# --- views and help ------------------------------------------------------------------------------


def test_reading_views_exist_and_agree_with_the_tables(db):
    assert {"rollouts_by_day", "day_summary", "steps_by_day", "rollouts_readable"} <= set(db.view_names())
    assert db.execute("select count(*) from rollouts_by_day").fetchone()[0] == db["rollouts"].count
    r = db_rows(db, "select * from rollouts_by_day where app = 'varro' and reward is not null limit 1")[0]
    comps = json.loads(db_rows(db, "select components_json from rollouts where id = ?", [r["id"]])[0]
                       ["components_json"])
    assert (r["semantic"], r["format"], r["leak"], r["echo"], r["transfer"]) == (
        comps["semantic"], comps["format"], comps["leak"], comps["echo"], None)
    summary = {(s["run"], s["app"], s["day"]): s for s in db_rows(db, "select * from day_summary")}
    assert set(summary) == {("v", "varro", d) for d in DAYS} | {("w", "walter", d) for d in DAYS[1:]}
    for day in DAYS[:2]:
        s = summary[("v", "varro", day)]
        assert (s["rollouts"], s["prompts"], s["scored"]) == (32, 4, 32)
        assert s["train_reward_mean"] == pytest.approx(varro_day_metrics(db, "v", day)["reward_mean"])
    assert summary[("v", "varro", DAYS[2])]["scored"] == 0
    steps = {(s["run"], s["day"]): s["steps"] for s in db_rows(db, "select * from steps_by_day")}
    assert steps == {(r["run"], r["day"]): r["n"] for r in db_rows(
        db, "select run, day, count(*) as n from steps group by run, day")}


@pytest.mark.parametrize("app", ["varro", "walter"])
def test_every_command_has_help_with_an_example(app):
    for args in (["rollouts"], ["rollouts", "list"], ["rollouts", "show"], ["report"]):
        out = invoke(app, [*args, "--help"])
        assert out.exit_code == 0, out.output
        assert f"Example: {app} {' '.join(args[:1])}" in out.output, args


def test_the_report_counts_the_records_an_ingest_skipped(home, tmp_path):
    from varro.engine.eval.report import format_summary

    db = dbm.open_db(db_path(home))  # its own connection: the rows are rolled back at the end
    try:
        with db.conn:
            db["walter_skips"].insert_all([
                {"day": DAYS[1], "kind": "post", "key": f"at://x/{i}", "reason": "no author",
                 "created_utc": "2026-11-03T00:00:00Z"} for i in range(3)])
        data = report_data(db, "walter", "w")
        assert [d["skipped"] for d in data["days"]] == [3, 0]
        assert f"SKIPPED {DAYS[1]}: 3 records its ingest could not use (table walter_skips)" in format_summary(data)
        page = build_report(db, "walter", "w", tmp_path / "w.html").read_text(encoding="utf-8")
        assert "3 records the ingest could not use (table walter_skips)" in page
        assert [d["skipped"] for d in report_data(db, "varro", "v")["days"]] == [0, 0, 0]  # Varro records none
    finally:
        with db.conn:
            db.execute("delete from walter_skips")
        db.conn.close()
