"""tally, the third application: its nightly from a file through the command line, rewards that equal an
independent recomputation from the raw file, malformed rows that cost those rows only, and the reading
commands on what it wrote."""

import csv
import json
import math
import re
import statistics

import numpy as np
import pytest
from click.testing import CliRunner

from tally.cli import cli
from tally.sample import SAMPLE_FILE
from varro.engine import store as dbm
from varro.engine.run.checkpoints import list_checkpoints
from varro.engine.embed.embedders import HashEmbedder
from varro.engine.core.paths import db_path
from varro.engine.core.paths import run_dir

TINY = ["--embedder", "hash", "--max-tokens", "8", "--lora-layers", "2", "--group-size", "2",
        "--groups-per-day", "2"]
RUN = "mine"
DAYS = ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]
WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’\-]*")  # the engine's definition of a word
BAD_ROWS = [  # each would change the weights if it were kept: lu's 400 saves, mara's huge count
    json.dumps({"group": "https://fieldnotes.example/n/night-trains", "author": "lu", "created": "last Tuesday",
                "text": "Night trains are back.", "saves": 400, "shares": 90}),
    '{"group": "https://fieldnotes.example/n/tree-canopy", "author": "mara", "text": "unterminated',
    json.dumps({"group": "https://fieldnotes.example/n/tree-canopy", "author": "mara",
                "created": "2026-11-02T10:00:00Z", "text": "Shade!", "saves": "lots", "shares": 1}),
]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# -- an independent reference of the reward, from the raw file ------------------------------------------------


def trigamma_ref(x: float, n: int = 2000) -> float:
    """Euler-Maclaurin: sum of 1/(x+j)^2 for j < n, then the tail's integral and corrections."""
    y = x + n
    return sum(1.0 / (x + j) ** 2 for j in range(n)) + 1 / y + 1 / (2 * y * y) + 1 / (6 * y ** 3)


def weight_ref(e: float, others: list[float], k: float = 2.0, sat: float = 4.0) -> float:
    b, n = statistics.fmean(others), len(others)
    level = k + b
    var = level * level / k if n == 1 else statistics.stdev(others) ** 2
    rho = trigamma_ref(k) / (trigamma_ref(k) + (var + level) / (n * level * level))
    return min(1.0, max(0.0, rho * math.log((k + e) / (k + b)) / math.log(sat)))


def lcs_ref(a: list[str], b: list[str]) -> int:
    t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            t[i + 1][j + 1] = t[i][j] + 1 if x == y else max(t[i][j + 1], t[i + 1][j])
    return t[-1][-1]


def run_ref(a: list[str], b: list[str]) -> int:
    """The longest run of tokens shared by a and b."""
    best, t = 0, [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            if x == y:
                t[i + 1][j + 1] = t[i][j] + 1
                best = max(best, t[i + 1][j + 1])
    return best


def ramp_ref(v, lo, hi):
    return min(1.0, max(0.0, (v - lo) / (hi - lo)))


def copy_ref(text: str, cosines: list[float], items: list[str]) -> float:
    """The graded copy score with the default knobs (0.8-1.0, 0.3-0.7, 0.4-0.8, 8 words)."""
    tok = [w.lower() for w in WORD.findall(text)]
    grams = {tuple(tok[i:i + 3]) for i in range(len(tok) - 2)}
    contain = order = shared = 0.0
    for item in items:
        it = [w.lower() for w in WORD.findall(item)]
        contain = max(contain, len(grams & {tuple(it[i:i + 3]) for i in range(len(it) - 2)})
                      / max(len(tok) - 2, 6, 1))
        order = max(order, lcs_ref(tok, it) / max(len(tok), 8))
        shared = max(shared, run_ref(tok, it))
    return max(ramp_ref(max(cosines), 0.8, 1.0), ramp_ref(contain, 0.3, 0.7), ramp_ref(order, 0.4, 0.8),
               1.0 if shared >= min(8, max(4, len(tok))) else 0.0)


def reward_ref(text: str, group: str, day: str, rows: list[dict]) -> tuple[float, float]:
    """(reward, transfer) of `text` for `group` on `day`, from the file's rows alone."""
    before = [r for r in rows if r["created"][:10] < day]
    eng = {id(r): r["saves"] + 2 * r["shares"] if "shares" in r else None for r in before}
    history = []
    for r in before:
        others = [eng[id(o)] for o in before if o["author"] == r["author"] and o is not r and eng[id(o)] is not None]
        if r["group"] == group and eng[id(r)] is not None and others:
            history.append((r["text"], weight_ref(eng[id(r)], others)))
    assert history
    if not text.strip():
        return 0.0, 0.0
    emb = HashEmbedder()
    vecs = emb.encode([text] + [t for t, _ in history]).astype(np.float64)
    cos = [float(v @ vecs[0] / (np.linalg.norm(v) * np.linalg.norm(vecs[0]) + 1e-12)) for v in vecs[1:]]
    transfer = max(c * w for c, (_, w) in zip(cos, history))
    instruction = [w.lower() for w in WORD.findall("Write a short post about:")]
    echo = 0.3 if run_ref([w.lower() for w in WORD.findall(text)], instruction) >= 4 else 0.0
    return transfer - copy_ref(text, cos, [t for t, _ in history]) - echo, transfer


# -- the tests --------------------------------------------------------------------------------------------------


def test_tally_nightly_from_a_file_scores_as_the_file_says(tiny_model_path, varro_home, tmp_path):
    lines = SAMPLE_FILE.read_text(encoding="utf-8").splitlines()
    items = tmp_path / "my-items.jsonl"
    items.write_text("\n".join(lines[:3] + BAD_ROWS[:2] + lines[3:20] + BAD_ROWS[2:] + lines[20:]) + "\n")
    nightly = ["nightly", "--from", DAYS[0], "--to", DAYS[-1], "--source", "file", "--items", items, "--run", RUN,
               "--home", varro_home, "--model", tiny_model_path, *TINY]
    out = run(*nightly)
    assert out.exit_code == 0, out.output
    assert [p.name for p in list_checkpoints(run_dir(RUN, varro_home))] == DAYS[1:]  # day 1 has no past

    db = dbm.open_db(db_path(varro_home))
    assert db["tally_items"].count == len(lines)  # the malformed rows cost those rows only
    rejects = list(db.query("select line, reason from tally_rejects order by line"))
    assert [r["line"] for r in rejects] == [4, 5, 23]
    assert "not ISO 8601" in rejects[0]["reason"] and "not valid JSON" in rejects[1]["reason"]
    assert "'saves' is 'lots', not a number" in rejects[2]["reason"]

    rows = [json.loads(line) for line in lines]
    scored = list(db.query("select r.completion, r.reward, r.components_json, p.day, p.source_json, p.split "
                           "from rollouts r join prompts p on p.id = r.prompt_id where r.reward is not null"))
    assert len(scored) == 3 * 2 * 2 and {r["split"] for r in scored} == {"train", "eval"}
    for r in scored:  # every group of every day, against the raw file
        reward, transfer = reward_ref(r["completion"], json.loads(r["source_json"])["group"], r["day"], rows)
        comps = json.loads(r["components_json"])
        assert r["reward"] == pytest.approx(reward, abs=1e-6)
        assert comps["transfer"] == pytest.approx(transfer, abs=1e-6)
    assert max(json.loads(r["components_json"])["transfer"] for r in scored) > 0.01  # not all zero

    metrics = run("metrics", "--run", RUN, "--home", varro_home, "--json")
    metrics = [json.loads(line) for line in metrics.output.splitlines()]
    assert [m["day"] for m in metrics] == DAYS[1:]
    for m in metrics:
        day = [json.loads(r["components_json"]) for r in scored if r["day"] == m["day"]]
        assert m["scored"] == 4 and m["transfer"] == pytest.approx(np.mean([c["transfer"] for c in day]))
    listed = json.loads(run("rollouts", "--run", RUN, "--home", varro_home, "--json").output)
    assert sorted(x["reward"] for x in listed) == pytest.approx(sorted(r["reward"] for r in scored))
    table = run("rollouts", "list", "--run", RUN, "--home", varro_home, "--best", "1")
    assert table.exit_code == 0 and "transfer" in table.output and "pen_echo" in table.output

    again = run(*nightly)  # a second night over the same days does nothing twice
    assert again.exit_code == 0, again.output
    assert (db["rollouts"].count, db["tally_items"].count, db["tally_rejects"].count) == (12, len(lines), 3)


def test_tally_reads_csv_like_jsonl_and_refuses_a_file_it_cannot_read(varro_home, tmp_path):
    rows = [json.loads(line) for line in SAMPLE_FILE.read_text(encoding="utf-8").splitlines()]
    path = tmp_path / "items.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["group", "author", "created", "text", "title", "description", "saves", "shares"])
        w.writeheader()
        w.writerows(rows)
    assert run("ingest", "--date", DAYS[1], "--source", "sample", "--home", varro_home).exit_code == 0
    db = dbm.open_db(db_path(varro_home))
    from_jsonl = {r["id"]: r["counts_json"] for r in db.query("select id, counts_json from tally_items")}
    assert len(from_jsonl) == 28  # the first two days: a day's ingest stores nothing from a later day
    out = run("ingest", "--date", DAYS[-1], "--source", "file", "--items", path, "--home", varro_home)
    assert out.exit_code == 0, out.output
    assert "56 items" in out.output and "28 new" in out.output
    both = {r["id"]: r["counts_json"] for r in db.query("select id, counts_json from tally_items")}
    assert len(both) == 56 and all(both[k] == v for k, v in from_jsonl.items())  # same natural keys
    assert json.loads(both[next(k for k in both if k not in from_jsonl)]).keys() == {"saves", "shares"}

    for bad, says in [(tmp_path / "missing.jsonl", "no items file at"), (tmp_path / "items.txt", ".jsonl"),
                      (path.with_name("short.csv"), "lacks the columns ['text']")]:
        if bad.suffix == ".csv":
            bad.write_text("group,author,created,saves,shares\nx,y,2026-11-02,1,1\n")
        out = run("ingest", "--date", DAYS[-1], "--source", "file", "--items", bad, "--home", varro_home)
        assert out.exit_code == 1 and says in out.output and out.output.startswith("error: "), out.output
    assert db["tally_items"].count == 56
